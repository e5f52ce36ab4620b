"""cgroup path -> container, for the shapes each engine and cgroup driver writes (live/attribution.py)."""

from __future__ import annotations

import pytest

from pensieve.live.attribution import cgroup_owner, container_path

ID = "3f1b0c9d2e4a5b6c7d8e9f00112233445566778899aabbccddeeff0011223344"
ID2 = "a" * 64
POD = "5e8a1c2b-3d4e-4f60-8a9b-0c1d2e3f4a5b"
POD_ = POD.replace("-", "_")

# (path, kind, engine, container id, pod uid, qos, namespace)
CASES = [
    # Docker: cgroupfs driver, systemd driver, a custom --cgroup-parent
    (f"/docker/{ID}", "container", "docker", ID, None, None, None),
    (f"/system.slice/docker-{ID}.scope", "container", "docker", ID, None, None, None),
    (f"/pensieve-live-x/{ID}", "container", None, ID, None, None, "pensieve-live-x"),
    # containerd standalone (ctr run): /<namespace>/<id>
    (f"/default/{ID}", "container", None, ID, None, None, "default"),
    (f"/k8s.io/{ID}", "container", None, ID, None, None, "k8s.io"),
    # Kubernetes, cgroupfs driver: guaranteed directly under kubepods, the others under a qos
    (f"/kubepods/pod{POD}/{ID}", "container", "kubernetes", ID, POD, None, None),
    (f"/kubepods/burstable/pod{POD}/{ID}", "container", "kubernetes", ID, POD, "burstable", None),
    (f"/kubepods/besteffort/pod{POD}/{ID}", "container", "kubernetes", ID, POD, "besteffort", None),
    # Kubernetes, systemd driver, each runtime's scope prefix
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/cri-containerd-{ID}.scope",
        "container",
        "containerd",
        ID,
        POD,
        "burstable",
        None,
    ),
    (
        f"/kubepods.slice/kubepods-pod{POD_}.slice/crio-{ID}.scope",
        "container",
        "crio",
        ID,
        POD,
        None,
        None,
    ),
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/docker-{ID}.scope",
        "container",
        "docker",
        ID,
        POD,
        "besteffort",
        None,
    ),
    # a pod's slice with no container scope (the pause/sandbox cgroup itself)
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice",
        "sandbox-unknown",
        "kubernetes",
        None,
        POD,
        "burstable",
        None,
    ),
    # Podman rootful (systemd), rootless (under the user's manager), conmon, cgroupfs driver
    (f"/machine.slice/libpod-{ID}.scope", "container", "podman", ID, None, None, None),
    (
        f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
        "container",
        "podman",
        ID,
        None,
        None,
        None,
    ),
    (f"/machine.slice/libpod-conmon-{ID}.scope", "conmon", "podman", ID, None, None, None),
    (f"/libpod_parent/libpod-{ID}", "container", "podman", ID, None, None, None),
    ("/libpod_parent/conmon", "host", None, None, None, None, None),
    # CRI-O outside Kubernetes' slices, and its monitor
    (f"/system.slice/crio-{ID}.scope", "container", "crio", ID, None, None, None),
    (f"/system.slice/crio-conmon-{ID}.scope", "conmon", "crio", ID, None, None, None),
    # systemd inside a container: the container's own cgroups nest below its scope
    (f"/system.slice/docker-{ID}.scope/init.scope", "container", "docker", ID, None, None, None),
    (f"/machine.slice/libpod-{ID}.scope/container/init.scope", "container", "podman", ID, None, None, None),
    # Docker in Docker: the innermost container wins
    (f"/docker/{ID2}/docker/{ID}", "container", "docker", ID, None, None, None),
    # host units and the root
    ("/", "host", None, None, None, None, None),
    ("/init.scope", "host", None, None, None, None, None),
    ("/system.slice/sshd.service", "host", None, None, None, None, None),
    ("/user.slice/user-1000.slice/session-3.scope", "host", None, None, None, None, None),
    ("/system.slice/containerd.service", "host", None, None, None, None, None),
    # a 32-hex id is no container's (this sandbox's /process_api/<32 hex>)
    ("/process_api/8aa137096c1f22f6251727b8a3ac09cb", "host", None, None, None, None, None),
]


@pytest.mark.parametrize(("path", "kind", "engine", "cid", "pod", "qos", "namespace"), CASES)
def test_cgroup_owner(path, kind, engine, cid, pod, qos, namespace) -> None:
    owner = cgroup_owner(path)
    assert (owner.kind, owner.engine, owner.container_id, owner.pod_uid, owner.qos) == (
        kind,
        engine,
        cid,
        pod,
        qos,
    ), owner
    assert owner.namespace == namespace


def test_units_are_kept() -> None:
    assert cgroup_owner("/system.slice/sshd.service").unit == "sshd.service"
    assert cgroup_owner(f"/system.slice/docker-{ID}.scope").unit == f"docker-{ID}.scope"


def test_unknown_prefix_is_not_guessed() -> None:
    owner = cgroup_owner(f"/system.slice/garden-{ID}.scope")
    assert (owner.kind, owner.engine, owner.container_id) == ("unknown", None, ID)


def test_container_path_innermost() -> None:
    assert container_path(f"/docker/{ID2}/x/{ID}") == (4, "", ID)  # "" before the first /
    assert container_path("/system.slice/sshd.service") is None
