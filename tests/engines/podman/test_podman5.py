"""PodmanHost on a real Podman 5.8 graphroot (tests/fixtures/podman5, see its README: SQLite
libpod state in ``db.sql`` at the graphroot's top), compared with what podman itself answered at
capture time (podman-5-expected.json)."""

from __future__ import annotations

import pytest
from conftest import FIXTURE_ROOT, load_json, tree_digest, unpack

from pensieve import api
from pensieve.engines.podman import PodmanHost, find_podman_roots
from pensieve.evidence import DirectoryEvidence
from pensieve.times import parse_rfc3339

FIX = FIXTURE_ROOT / "podman5"
EXPECTED = load_json(FIX / "podman-5-expected.json")
INSPECT = {c["Id"]: c for c in EXPECTED["containers"]}
IDS = sorted(INSPECT)
DIFF_CHANGES = {"added": "added", "changed": "modified", "deleted": "deleted"}


def when(text: str | None) -> int | None:
    """podman's Go time as pensieve keeps it (the zero time is "never": None)."""
    return None if not text or text.startswith("0001-01-01") else parse_rfc3339(text)


def podman_diff(cid: str) -> set[tuple[str, str]]:
    """`podman diff --format json` of container CID as (change, path) pairs."""
    return {(DIFF_CHANGES[k], p) for k, paths in EXPECTED["diff"][cid].items() for p in paths or []}


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    return unpack(FIX / "podman-5-storage.tar.xz", tmp_path_factory.mktemp("podman5"))


@pytest.fixture(scope="module")
def host(unpacked) -> PodmanHost:
    return PodmanHost(DirectoryEvidence(str(unpacked / "storage")))


def test_sqlite_state_at_the_graphroot_top(host, unpacked):
    assert find_podman_roots(host.evidence) == ["/"]
    state = host.roots[0].state
    assert (state.backend, state.path) == ("sqlite", "/db.sql")
    assert host.containers() and host.images() and host.pods()
    assert host.problems == []
    tree_digest(unpacked / "storage")  # the first walk itself moves directory atimes (relatime)
    before = tree_digest(unpacked / "storage")
    PodmanHost(DirectoryEvidence(str(unpacked / "storage"))).containers()
    assert tree_digest(unpacked / "storage") == before  # no -wal / -shm / journal, no atime moved


def test_every_container_podman_listed(host):
    by_id = {c.id: c for c in host.containers()}
    assert sorted(by_id) == sorted(p["Id"] for p in EXPECTED["ps"]) == IDS
    for ps in EXPECTED["ps"]:
        c, want = by_id[ps["Id"]], INSPECT[ps["Id"]]
        assert c.engine == "podman" and c.problems == []
        assert c.name == want["Name"] == ps["Names"][0]
        assert (c.image or "") == want["ImageName"]
        assert (c.image_id or "") == want["Image"] == ps["ImageID"]
        assert c.state == ps["State"] == want["State"]["Status"]
        assert c.exit_code == want["State"]["ExitCode"] == ps["ExitCode"]
        assert c.pid == (want["State"]["Pid"] or None)
        assert c.oom_killed == want["State"]["OOMKilled"]
        assert c.created == parse_rfc3339(want["Created"])
        assert c.started == when(want["State"]["StartedAt"])
        assert c.finished == when(want["State"]["FinishedAt"])
        assert c.command[0] == want["Path"]
        assert c.command[1:] == want["Args"] or c.command == want["Args"]
        assert c.cmd == want["Config"]["Cmd"]
        assert sorted(c.env) == sorted(want["Config"]["Env"])
        assert c.labels == (want["Config"]["Labels"] or {}) == (ps["Labels"] or {})
        assert c.working_dir == want["Config"]["WorkingDir"]
        assert c.hostname == want["Config"]["Hostname"]
        assert c.log_driver == want["HostConfig"]["LogConfig"]["Type"]
        assert c.log_path == want["HostConfig"]["LogConfig"]["Path"]
        assert c.privileged == want["HostConfig"]["Privileged"]
        assert c.rw_layer and want["GraphDriver"]["Data"]["UpperDir"].endswith(f"/{c.rw_layer}/diff")
        assert c.storage_driver == want["GraphDriver"]["Name"] == "overlay"
        assert sorted((m.type, m.destination) for m in c.mounts) == sorted(
            (m["Type"], m["Destination"]) for m in want["Mounts"]
        )


def test_layer_chain_is_podmans(host):
    for cid in IDS:
        c = host.container(cid)
        data = INSPECT[cid]["GraphDriver"]["Data"]
        lower = [p.rsplit("/", 2)[-2] for p in data.get("LowerDir", "").split(":") if p]
        assert [layer.cache_id for layer in c.layers] == list(reversed(lower)) + [c.rw_layer]
        assert [layer.role for layer in c.layers] == ["image"] * len(lower) + ["rw"]
        assert all(layer.path for layer in c.layers)


def test_pods(host):
    inspect = [p[0] if isinstance(p, list) else p for p in EXPECTED["pod_inspect"]]
    assert sorted(p.id for p in host.pods()) == sorted(p["Id"] for p in inspect)
    assert sorted(p.id for p in host.pods()) == sorted(p["Id"] for p in EXPECTED["pods"])
    for want in inspect:
        pod = next(p for p in host.pods() if p.id == want["Id"])
        assert pod.name == want["Name"]
        assert pod.infra_id == want["InfraContainerID"]
        assert pod.labels == (want.get("Labels") or {})
        assert pod.created == parse_rfc3339(want["Created"])
        assert pod.containers == sorted(c["Id"] for c in want["Containers"])
    for cid in IDS:
        pod = host.pod_of(host.container(cid))
        assert (pod.id if pod else "") == INSPECT[cid]["Pod"]


def test_images(host):
    by_id = {i.id: i for i in host.images()}
    assert sorted(by_id) == sorted(i["Id"] for i in EXPECTED["images"])
    for want in EXPECTED["image_inspect"]:
        img = by_id[want["Id"]]
        assert img.engine == "podman"
        assert img.tags == want["RepoTags"]
        assert img.digests == want["RepoDigests"]
        assert img.parent == (want.get("Parent") or None)
        assert img.diff_ids == want["RootFS"]["Layers"]
        assert img.created == parse_rfc3339(want["Created"])
        assert (img.os, img.architecture) == (want["Os"], want["Architecture"])
        cfg = want["Config"]
        assert img.cmd == cfg.get("Cmd") and img.env == cfg.get("Env", [])
        assert img.labels == (cfg.get("Labels") or {})
        assert [s.created_by for s in img.history] == [h.get("created_by") for h in want["History"]]
        layers = host.image_layers(img)
        assert [layer.diff_id for layer in layers] == want["RootFS"]["Layers"]
        assert want["GraphDriver"]["Data"]["UpperDir"].endswith(f"/{layers[-1].cache_id}/diff")
        assert img.size == want["Size"]
        assert host.image(want["RepoTags"][0]) is img


@pytest.mark.parametrize("cid", IDS)
def test_diff_agrees_with_podman_diff(host, cid):
    result = api.diff(host, cid)
    got = {(c.change, c.path) for c in result.changes if c.engine_reports}
    assert got == podman_diff(cid)
    assert result.problems == []


def test_merged_view_of_the_running_container(host):
    web = next(c for c in host.containers() if c.name == "web")
    view = api.view(host, web)
    with view.open("/root/evidence.txt") as fh:
        assert fh.read()
    assert "motd" not in view.listdir("/etc")
    assert "work" in view.listdir("/tmp")
    with view.open("/srv/app/version.txt") as fh:  # from the image layer
        assert fh.read()
    job = next(c for c in host.containers() if c.name == "job")
    with api.view(host, job).open("/tmp/result.txt") as fh:
        assert fh.read() == b"finished\n"


def test_runtime_paths_are_the_ones_podman_info_gave(host, unpacked):
    """db.sql's DBConfig row: the graph root, run root, driver and volume path podman ran with
    (``podman info`` at capture time), keyed as bolt's runtime-config bucket keys them."""
    store = EXPECTED["info"]["store"]
    runtime = host.roots[0].state.runtime
    assert runtime["graph-root"] == store["graphRoot"]
    assert runtime["run-root"] == store["runRoot"]
    assert runtime["graph-driver-name"] == store["graphDriverName"]
    assert runtime["volume-path"] == store["volumePath"]
