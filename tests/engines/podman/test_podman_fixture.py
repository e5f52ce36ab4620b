"""PodmanHost on a real Podman 4.3 graphroot (tests/fixtures/podman, see its README), compared
with what podman itself answered at capture time (podman-4.3-expected.json)."""

from __future__ import annotations

import pytest
from conftest import FIXTURE_ROOT, load_json, unpack

from pensieve import api
from pensieve.engines.podman import PodmanHost, find_podman_roots
from pensieve.engines.podman.diff import mark_podman_silent
from pensieve.evidence import DirectoryEvidence
from pensieve.times import parse_rfc3339

FIX = FIXTURE_ROOT / "podman"
EXPECTED = load_json(FIX / "podman-4.3-expected.json")
NAMES = sorted(EXPECTED["containers"])
DIFF_CHANGES = {"added": "added", "changed": "modified", "deleted": "deleted"}


def when(text: str | None) -> int | None:
    """podman's Go time as pensieve keeps it (the zero time is "never": None)."""
    return None if not text or text.startswith("0001-01-01") else parse_rfc3339(text)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    return unpack(FIX / "podman-4.3-root.tar.xz", tmp_path_factory.mktemp("podman-root"))


@pytest.fixture(scope="module")
def host(unpacked) -> PodmanHost:
    return PodmanHost(DirectoryEvidence(str(unpacked / "storage")))


def test_no_problems(host):
    assert host.containers() and host.images()
    assert host.problems == []


def test_every_container_podman_listed(host):
    by_id = {c.id: c for c in host.containers()}
    assert sorted(by_id) == sorted(p["Id"] for p in EXPECTED["ps"])
    for ps in EXPECTED["ps"]:
        c = by_id[ps["Id"]]
        want = EXPECTED["containers"][ps["Names"][0]]
        assert c.engine == "podman" and c.problems == []
        assert c.name == want["Name"] == ps["Names"][0]
        assert c.image == want["ImageName"] == ps["Image"]
        assert c.image_id == want["Image"] == ps["ImageID"]
        assert c.state == ps["State"] == want["State"]["Status"]
        assert c.exit_code == want["State"]["ExitCode"] == ps["ExitCode"]
        assert c.pid == (want["State"]["Pid"] or None)
        assert c.oom_killed == want["State"]["OOMKilled"]
        assert c.created == parse_rfc3339(want["Created"])
        assert c.started == when(want["State"]["StartedAt"])
        assert c.finished == when(want["State"]["FinishedAt"])
        # podman inspect: Path = args[0], Args = args[1:], except for a one-word command (Args = args)
        assert c.command[0] == want["Path"]
        assert c.command[1:] == want["Args"] or c.command == want["Args"]
        assert c.cmd == want["Config"]["Cmd"]
        assert sorted(c.env) == sorted(want["Config"]["Env"])
        assert c.labels == want["Config"]["Labels"] == ps["Labels"]
        assert c.working_dir == want["Config"]["WorkingDir"]
        assert c.hostname == want["Config"]["Hostname"]
        assert c.log_driver == want["HostConfig"]["LogConfig"]["Type"]
        assert c.privileged == want["HostConfig"]["Privileged"]
        assert c.rw_layer and want["GraphDriver"]["Data"]["UpperDir"].endswith(f"/{c.rw_layer}/diff")
        assert c.storage_driver == want["GraphDriver"]["Name"] == "overlay"
        mounts = sorted((m.type, m.name, m.destination, m.rw) for m in c.mounts)
        assert mounts == sorted((m["Type"], m["Name"], m["Destination"], m["RW"]) for m in want["Mounts"])
        ports = {(p.container_port, p.host_port) for p in c.published_ports}
        assert ports == {
            (k, b["HostPort"]) for k, bs in (want["HostConfig"]["PortBindings"] or {}).items() for b in bs
        }


def test_layer_chain_is_podmans(host):
    for name in NAMES:
        c = host.container(name)
        data = EXPECTED["containers"][name]["GraphDriver"]["Data"]
        lower = [p.rsplit("/", 2)[-2] for p in data.get("LowerDir", "").split(":") if p]
        assert [layer.cache_id for layer in c.layers] == list(reversed(lower)) + [c.rw_layer]
        assert [layer.role for layer in c.layers] == ["image"] * len(lower) + ["rw"]
        assert all(layer.path for layer in c.layers)


def test_pods(host):
    assert len(host.pods()) == len(EXPECTED["pods"])
    for name, answer in EXPECTED["pods"].items():
        want = answer[0] if isinstance(answer, list) else answer
        pod = next(p for p in host.pods() if p.name == name)
        assert pod.id == want["Id"]
        assert pod.infra_id == want["InfraContainerID"]
        assert pod.labels == (want.get("Labels") or {})
        assert pod.created == parse_rfc3339(want["Created"])
        assert pod.containers == sorted(c["Id"] for c in want["Containers"])
    for name in NAMES:
        c = host.container(name)
        pod = host.pod_of(c)
        assert (pod.id if pod else "") == EXPECTED["containers"][name]["Pod"]


def test_images(host):
    by_id = {i.id: i for i in host.images()}
    assert sorted(by_id) == sorted(i["Id"] for i in EXPECTED["images"])
    for image_id, want in EXPECTED["images_inspect"].items():
        img = by_id[image_id]
        assert img.engine == "podman"
        assert img.tags == want["RepoTags"]
        assert img.digests == want["RepoDigests"]
        assert img.parent == (want.get("Parent") or None)
        assert img.diff_ids == want["RootFS"]["Layers"]
        assert img.created == parse_rfc3339(want["Created"])
        assert (img.os, img.architecture) == (want["Os"], want["Architecture"])
        cfg = want["Config"]
        assert img.cmd == cfg.get("Cmd") and img.env == cfg.get("Env", [])
        assert img.labels == (cfg.get("Labels") or {}) and img.workdir == (cfg.get("WorkingDir") or None)
        assert len(img.history) == len(want["History"])
        assert [s.created_by for s in img.history] == [h.get("created_by") for h in want["History"]]
        layers = host.image_layers(img)
        assert [layer.diff_id for layer in layers] == want["RootFS"]["Layers"]
        upper = want["GraphDriver"]["Data"]["UpperDir"]
        assert upper.endswith(f"/{layers[-1].cache_id}/diff")
        assert img.size == want["Size"]
        assert host.image(want["RepoTags"][0]) is img


def test_volumes(host):
    vols = {v.name: v for v in host.volumes()}
    assert sorted(vols) == sorted(EXPECTED["volumes"])
    for name, want in EXPECTED["volumes"].items():
        v = vols[name]
        assert v.driver == want["Driver"] and v.labels == want["Labels"]
        assert v.created == parse_rfc3339(want["CreatedAt"])
        assert v.options == want["Options"]
        assert v.path and host.evidence.is_dir(v.path)
        users = {
            c["Id"]
            for c in EXPECTED["containers"].values()
            if any(m.get("Name") == name for m in c["Mounts"])
        }
        assert v.used_by == sorted(users)


@pytest.mark.parametrize("name", NAMES)
def test_diff_agrees_with_podman_diff(host, name):
    result = api.diff(host, name)
    mark_podman_silent(result.changes)
    got = {(c.change, c.path) for c in result.changes if c.engine_reports}
    want = {(DIFF_CHANGES[k], p) for k, paths in EXPECTED["diff"][name].items() for p in paths or []}
    assert got == want
    assert result.problems == []


def test_merged_view_of_the_running_container(host):
    c = host.container("web")
    view = api.view(host, c)
    with view.open("/root/evidence.txt") as fh:
        assert fh.read() == b"planted by the capture\n"
    assert "motd" not in view.listdir("/etc")
    with view.open("/srv/app/version") as fh:  # from the committed image layer
        assert fh.read() == b"app v2\n"


def test_driver_is_overlay_layout(host):
    c = host.container("web")
    drv = host.driver(c.layers[-1])
    assert drv.name == "overlay"
    assert drv.lowers(host.evidence, "/", c.rw_layer) == [layer.cache_id for layer in reversed(c.layers[:-1])]
    place = drv.place(f"overlay/{c.rw_layer}/diff/root/evidence.txt")
    assert place.layer_id == c.rw_layer and place.container_path == "/root/evidence.txt"


def test_layer_driver_is_containers_storage_name(host):
    """Layer.driver says ``overlay`` (containers/storage's name); the registry finds the overlay2
    rules by the layer's ``diff`` directory, and the bare name stays Docker's legacy driver."""
    from pensieve.engines.base import storage_driver
    from pensieve.engines.docker.drivers.overlay import Overlay
    from pensieve.engines.podman.driver import PODMAN_OVERLAY
    from pensieve.records import Layer

    c = host.container("web")
    assert {layer.driver for layer in c.layers} == {"overlay"}
    assert all(storage_driver(layer.driver, layer) is PODMAN_OVERLAY for layer in c.layers)
    assert storage_driver(c.layers[-1].driver).native_diff is False  # the name alone: Docker's
    assert isinstance(storage_driver("overlay"), Overlay)
    legacy = Layer("image", "abc", "/var/lib/docker/overlay/abc/root", driver="overlay")
    assert isinstance(storage_driver("overlay", legacy), Overlay)


def test_find_podman_roots(unpacked, tmp_path):
    assert find_podman_roots(DirectoryEvidence(str(unpacked / "storage"))) == ["/"]
    assert find_podman_roots(DirectoryEvidence(str(tmp_path))) == []
    # a host root whose storage.conf names the graphroot
    conf = unpacked / "etc" / "containers"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "storage.conf").write_text('[storage]\ndriver = "overlay"\ngraphroot = "/storage"\n')
    try:
        assert find_podman_roots(DirectoryEvidence(str(unpacked))) == ["/storage"]
    finally:
        (conf / "storage.conf").unlink()
