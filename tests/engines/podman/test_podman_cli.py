"""The commands on Podman sources (both real captures: Podman 4.3 bolt state, Podman 5.8 SQLite
state), given as the graphroot itself and as a host root holding /var/lib/containers/storage,
compared with what podman answered at capture time; a host root with Docker and Podman side by
side lists both."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, FIXTURES, load_json, run_cli, unpack

GRAPHROOT = "/var/lib/containers/storage"
DIFF_CHANGES = {"added": "added", "changed": "modified", "deleted": "deleted"}
#: (the capture's tarball, podman's recorded answers)
CAPTURES = {
    "podman4": (
        FIXTURE_ROOT / "podman/podman-4.3-root.tar.xz",
        FIXTURE_ROOT / "podman/podman-4.3-expected.json",
    ),
    "podman5": (
        FIXTURE_ROOT / "podman5/podman-5-storage.tar.xz",
        FIXTURE_ROOT / "podman5/podman-5-expected.json",
    ),
}


def podman_diffs(expected: dict) -> dict[str, set[tuple[str, str]]]:
    """`podman diff` of every container by id (4.3's answers are keyed by name, 5.8's by id)."""
    ids = {p["Names"][0]: p["Id"] for p in expected["ps"]}
    return {
        ids.get(key, key): {(DIFF_CHANGES[k], p) for k, paths in answer.items() for p in paths or []}
        for key, answer in expected["diff"].items()
    }


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def capture(request, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(the graphroot, a host root holding it at /var/lib/containers/storage, podman's answers)."""
    tarball, answers = CAPTURES[request.param]
    top = unpack(tarball, tmp_path_factory.mktemp(request.param))
    host = tmp_path_factory.mktemp(request.param + "-host")
    unpack(tarball, host / posixpath.dirname(GRAPHROOT).lstrip("/"))  # its storage/ lands there
    return top / "storage", host, (tarball, load_json(answers))


def cli_json(*args) -> object:
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("where", ["graphroot", "host root"])
def test_containers_and_diff_are_podmans(capture, where):
    graphroot, host, (_tarball, expected) = capture
    source = graphroot if where == "graphroot" else host
    listed = {c["id"]: c for c in cli_json("containers", source)}
    assert sorted(listed) == sorted(p["Id"] for p in expected["ps"])
    for ps in expected["ps"]:
        c = listed[ps["Id"]]
        assert c["engine"] == "podman"
        assert (c["name"], c["image"] or "", c["state"]) == (ps["Names"][0], ps["Image"] or "", ps["State"])
        assert c["data_root"] == ("/" if where == "graphroot" else GRAPHROOT)
    for cid, want in podman_diffs(expected).items():
        changes = cli_json("diff", source, cid)
        assert {(c["change"], c["path"]) for c in changes if c["engine_reports"]} == want
        code, out, _ = run_cli("diff", source, cid, "--engine-view")
        assert code == 0 and len(out.splitlines()) == len(want)
    code, out, _ = run_cli("diff", source, expected["ps"][0]["Id"])
    assert code == 0 and "not listed by `podman diff`" in out


def test_images_history_volumes_fs_whence(capture):
    graphroot, host, (_tarball, expected) = capture
    images = {i["id"]: i for i in cli_json("images", host)}
    assert sorted(images) == sorted(i["Id"] for i in expected["images"])
    for image_id, image in images.items():
        assert image["engine"] == "podman"
        steps = cli_json("history", host, image_id)
        assert steps and all(s["created_by"] for s in steps)
    volumes = cli_json("volumes", host)
    assert sorted(v["name"] for v in volumes) == sorted(expected.get("volumes", {}))
    running = next(p for p in expected["ps"] if p["State"] == "running" and p["Image"])
    code, out, err = run_cli("fs", host, running["Id"], "ls", "/etc")
    assert code == 0 and "passwd" in out, err
    top = cli_json("containers", host)
    rw = next(c for c in top if c["id"] == running["Id"])["rw_layer"]
    path = f"{GRAPHROOT}/overlay/{rw}/diff/etc"
    attribution = cli_json("whence", host, path)
    assert attribution["layer_kind"] == "rw" and attribution["containers"] == [running["Id"]]
    assert attribution["container_path"] == "/etc" and attribution["data_root"] == GRAPHROOT
    # the same path as the host named it: through the evidence's from_host_path
    assert cli_json("whence", host, str(host) + path)["layer"] == rw
    code, _, err = run_cli("whence", host, "/etc/passwd")
    assert code == 4, err


def test_docker_and_podman_side_by_side(capture, tmp_path):
    _graphroot, _host, (tarball, expected) = capture
    host = tmp_path / "host"
    unpack(FIXTURES / "overlay2-root.tar.gz", host / "var/lib/docker")
    unpack(tarball, host / posixpath.dirname(GRAPHROOT).lstrip("/"))
    listed = cli_json("containers", host)
    engines = {c["engine"] for c in listed}
    assert engines == {"docker", "podman"}
    podman = sorted(c["id"] for c in listed if c["engine"] == "podman")
    assert podman == sorted(p["Id"] for p in expected["ps"])
    assert all(c["data_root"] == "/var/lib/docker" for c in listed if c["engine"] == "docker")
    images = {i["engine"] for i in cli_json("images", host)}
    assert images == {"docker", "podman"}
    for cid, want in podman_diffs(expected).items():
        changes = cli_json("diff", host, cid)
        assert {(c["change"], c["path"]) for c in changes if c["engine_reports"]} == want
    rw = next(c for c in listed if c["engine"] == "podman" and c["id"] == podman[0])["rw_layer"]
    attribution = cli_json("whence", host, f"{GRAPHROOT}/overlay/{rw}/diff")
    assert attribution["layer"] == rw and attribution["containers"] == [podman[0]]


def test_roots_lists_the_graphroot(capture):
    graphroot, host, (tarball, _expected) = capture
    backend = "sqlite" if "podman-5" in tarball.name else "bolt"
    state = "db.sql" if backend == "sqlite" else "libpod/bolt_state.db"
    for source, path, how in ((graphroot, "/", "given"), (host, GRAPHROOT, "default path")):
        rows = cli_json("roots", source)
        assert rows == [
            {
                "engine": "podman",
                "path": path,
                "layout": f"libpod {backend}",
                "drivers": ["overlay"],
                "hints": [f"libpod state: {posixpath.join(path, state)}"],
                "found": how,
            }
        ]
    code, out, err = run_cli("roots", host)
    assert code == 0 and "podman" in out and f"libpod {backend}" in out, err


def test_roots_beside_docker_and_rootless(capture, tmp_path):
    _graphroot, _host, (tarball, _expected) = capture
    host = tmp_path / "host"
    unpack(FIXTURES / "overlay2-root.tar.gz", host / "var/lib/docker")
    unpack(tarball, host / "home/alice/.local/share/containers")
    rows = cli_json("roots", host)
    assert [(r["engine"], r["path"], r["found"]) for r in rows] == [
        ("docker", "/var/lib/docker", rows[0]["found"]),
        ("podman", "/home/alice/.local/share/containers/storage", "rootless user alice"),
    ]
    conf = host / "etc/containers/storage.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[storage]\ngraphroot = "/home/alice/.local/share/containers/storage"\n')
    found = {r["path"]: r["found"] for r in cli_json("roots", host) if r["engine"] == "podman"}
    rootless = "/home/alice/.local/share/containers/storage"
    assert found == {rootless: "graphroot in /etc/containers/storage.conf"}
