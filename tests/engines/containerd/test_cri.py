"""Pod fields of the CRI containers of the real containerd 2.1 capture (tests/fixtures/containerd2),
compared with what the CRI answered at capture time (containerd-2.1-cri.json: ListContainers,
ContainerStatus, ListPodSandbox, PodSandboxStatus), and CRI metadata that is hostile."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli, unpack

from pensieve.engines.containerd.cri import (
    CONTAINER_EXT,
    SANDBOX_EXT,
    apply_cri,
    cri_metadata,
    log_candidates,
)
from pensieve.records.containerd import ContainerdContainer
from pensieve.records.host import Container
from pensieve.times import parse_rfc3339

FIX = FIXTURE_ROOT / "containerd2"
CRI = load_json(FIX / "containerd-2.1-cri.json")
#: CRI ContainerState -> pensieve's container state
STATES = {"CONTAINER_RUNNING": "running", "CONTAINER_EXITED": "exited", "CONTAINER_CREATED": "created"}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return str(unpack(FIX / "containerd-2.1-root.tar.xz", tmp_path_factory.mktemp("ctr2-cri")))


def cli_json(*args):
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_pod_fields_match_the_cri(source):
    got = {c["id"]: c for c in cli_json("containers", source) if c["namespace"] == "k8s.io"}
    sandboxes = {s["id"]: s for s in CRI["pod_sandboxes"]["items"]}
    listed = {c["id"]: c for c in CRI["containers"]["containers"]}
    assert sorted(got) == sorted(list(sandboxes) + list(listed))
    for sid, sandbox in sandboxes.items():
        c, meta = got[sid], CRI["pod_sandbox_status"][sid]["status"]["metadata"]
        assert c["is_sandbox"] is True and c["sandbox_id"] == sid and c["k8s_container"] is None
        assert (c["pod_name"], c["pod_namespace"], c["pod_uid"]) == (
            meta["name"],
            meta["namespace"],
            meta["uid"],
        )
        assert c["attempt"] == sandbox["metadata"]["attempt"]
        # meta.db's createdat is set a moment before the CRI plugin's own CreatedAt
        assert abs(parse_rfc3339(c["created"]) - int(sandbox["created_at"])) < 10**9
    for cid, want in listed.items():
        c = got[cid]
        status = CRI["container_status"][cid]["status"]
        assert c["is_sandbox"] is False and c["sandbox_id"] == want["pod_sandbox_id"]
        assert c["k8s_container"] == want["metadata"]["name"] == c["name"]
        assert c["attempt"] == want["metadata"]["attempt"] == status["metadata"]["attempt"]
        assert c["pod_name"] == want["labels"]["io.kubernetes.pod.name"]
        assert c["pod_namespace"] == want["labels"]["io.kubernetes.pod.namespace"]
        assert c["pod_uid"] == want["labels"]["io.kubernetes.pod.uid"]
        assert c["state"] == STATES[status["state"]]
        assert parse_rfc3339(c["started"]) == int(status["started_at"])
        if status["state"] == "CONTAINER_EXITED":
            assert c["exit_code"] == status["exit_code"]
            assert parse_rfc3339(c["finished"]) == int(status["finished_at"])
        assert c["log_path"] == status["log_path"] and c["log_driver"] == "cri"
        assert c["problems"] == []
    attempts = sorted((c["k8s_container"], c["attempt"]) for c in got.values() if c["is_sandbox"] is False)
    assert attempts == [("app", 0), ("migrate", 0), ("migrate", 1)]


def test_other_containers_have_null_pod_fields(source):
    web = next(c for c in cli_json("containers", source) if c["namespace"] == "default")
    for name in (
        "pod_name",
        "pod_namespace",
        "pod_uid",
        "k8s_container",
        "attempt",
        "sandbox_id",
        "is_sandbox",
    ):
        assert web[name] is None
    assert list(web)[-7:] == [
        "pod_name", "pod_namespace", "pod_uid", "k8s_container", "attempt", "sandbox_id", "is_sandbox",
    ]  # fmt: skip


def _src(ext: str, value: bytes, **labels: str) -> ContainerdContainer:
    return ContainerdContainer(
        namespace="k8s.io", id="c1", labels=labels, source="meta.db:/v1/k8s.io/containers/c1",
        extension_values={ext: value},
    )  # fmt: skip


HOSTILE = [
    b"",
    b"not json",
    b"[]",
    b'{"Version":"v9","Metadata":[]}',
    b'{"Version":"v1","Metadata":{"Config":{"metadata":{"name":7,"attempt":-1}}}}',
    b'{"Version":"v1","Metadata":{"Config":{"metadata":{"attempt":1e400}},"SandboxID":{}}}',
    b'{"Version":"v1","Metadata":{"Config":{"metadata":{"attempt":99999999999},"labels":[1]}}}',
    b'{"Version":"v1","Metadata":{"LogPath":"../../../../etc/shadow"}}',
    b"[" * 100000,
    b'{"Version":"v1","Metadata":{"Config":{"metadata":{"name":"\xff\xfe"}}}}',
]


@pytest.mark.parametrize("raw", HOSTILE)
@pytest.mark.parametrize("ext", [CONTAINER_EXT, SANDBOX_EXT])
def test_hostile_cri_metadata_is_a_problem(raw, ext):
    src = _src(ext, raw, **{"io.cri-containerd.kind": "container", "io.kubernetes.pod.name": "p"})
    problems: list = []
    meta = cri_metadata(src, problems)
    c = Container(id="c1", engine="containerd", namespace="k8s.io")
    apply_cri(c, src, meta, problems)
    assert c.pod_name == "p"
    assert c.attempt is None or 0 <= c.attempt < 1 << 32
    for path in log_candidates(c):
        assert path.startswith("/") and "/../" not in path + "/"
    if raw in (b"", b"not json", b"[]", b"[" * 100000) or b"v9" in raw or b"-1" in raw or b"1e400" in raw:
        assert problems


def test_a_cri_container_by_pod_and_name_is_its_latest_attempt(source):
    from pensieve import api

    host = api.open_host(source)
    migrate = [c for c in host.containers() if c.k8s_container == "migrate"]
    assert sorted(c.attempt for c in migrate) == [0, 1]
    latest = max(migrate, key=lambda c: c.attempt)
    assert host.container("web/migrate").id == latest.id
    assert host.container("web/app").k8s_container == "app"
