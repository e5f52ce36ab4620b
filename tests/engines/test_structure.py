"""Engine roots found by their structure (engines/structure.py): real captured roots copied to
places no default and no config names -- /srv/x/docker, /data/containerd,
/mnt/disk2/containers/storage -- on a host-root-shaped tree, found, said so by `pensieve roots`,
and opened; a disk holding only a data-root volume; the search's bounds on a wide tree."""

from __future__ import annotations

import json
import time

import pytest
from conftest import FIXTURE_ROOT, FIXTURES, run_cli, time_bound, unpack

from pensieve.engines import structure
from pensieve.engines.discover import engine_hosts, open_engines, root_rows
from pensieve.evidence import DirectoryEvidence

DOCKER_AT = "/srv/x/docker"
CTR_AT = "/data/containerd"
PODMAN_AT = "/mnt/disk2/containers/storage"


@pytest.fixture(scope="module")
def host_root(tmp_path_factory):
    """A host root with the three real roots at unusual places, and decoys of each marker."""
    top = tmp_path_factory.mktemp("structure-host")
    for d in ("etc", "usr/lib/docker/image", "proc/1", "home/u", "srv/empty/containers", "var/log", "data"):
        (top / d).mkdir(parents=True)
    (top / "etc/hostname").write_text("structure-host\n")
    unpack(FIXTURES / "overlay2-root.tar.gz", top / DOCKER_AT.lstrip("/"))
    ctr = unpack(FIXTURE_ROOT / "containerd2" / "containerd-2.1-root.tar.xz", tmp_path_factory.mktemp("c"))
    (ctr / "root").rename(top / CTR_AT.lstrip("/"))
    pod = unpack(FIXTURE_ROOT / "podman5" / "podman-5-storage.tar.xz", tmp_path_factory.mktemp("p"))
    (top / PODMAN_AT.lstrip("/")).parent.mkdir(parents=True)
    (pod / "storage").rename(top / PODMAN_AT.lstrip("/"))
    return top


def test_search_finds_each_root_at_its_depth(host_root):
    result = structure.search(DirectoryEvidence(str(host_root)))
    assert {(r.engine, r.path, r.depth) for r in result.roots} == {
        ("docker", DOCKER_AT, 3),
        ("containerd", CTR_AT, 2),
        ("podman", PODMAN_AT, 4),
    }
    assert not result.exhausted


def test_open_engines_opens_them_and_roots_says_how(host_root):
    ev = DirectoryEvidence(str(host_root))
    host = open_engines(ev)
    assert sorted(h.engine for h in engine_hosts(host)) == ["containerd", "docker", "podman"]
    rows = {r["path"]: r for r in root_rows(host)}
    assert rows[DOCKER_AT]["found"] == "found by structure at depth 3"
    assert rows[CTR_AT]["found"] == "found by structure at depth 2"
    assert rows[PODMAN_AT]["found"] == "found by structure at depth 4"
    engines = {c.engine for c in host.containers()}
    assert engines == {"docker", "containerd", "podman"}
    assert host.container("82f2d7ac6a1b").engine == "podman"  # Podman's web, by id prefix
    assert host.container("default/web").engine == "containerd"
    code, out, _err = run_cli("roots", str(host_root), "--json")
    assert code == 0
    assert {r["path"]: r["found"] for r in json.loads(out)} == {
        DOCKER_AT: "found by structure at depth 3",
        CTR_AT: "found by structure at depth 2",
        PODMAN_AT: "found by structure at depth 4",
    }


def test_roots_at_default_places_are_not_found_twice(tmp_path):
    unpack(FIXTURES / "overlay2-root.tar.gz", tmp_path / "var/lib/docker")
    host = open_engines(DirectoryEvidence(str(tmp_path)))
    assert [r["found"] for r in root_rows(host)] == ["default location"]


def test_a_volume_filesystem_holding_only_a_data_root(tmp_path):
    """The top of the source holds docker/ (a data-root volume's filesystem)."""
    unpack(FIXTURES / "overlay2-root.tar.gz", tmp_path / "docker")
    pod = unpack(FIXTURE_ROOT / "podman5" / "podman-5-storage.tar.xz", tmp_path / "p")
    (tmp_path / "containers").mkdir()
    (pod / "storage").rename(tmp_path / "containers/storage")
    host = open_engines(DirectoryEvidence(str(tmp_path)))
    assert {(r["path"], r["found"]) for r in root_rows(host)} == {
        ("/docker", "found by structure at depth 1"),
        ("/containers/storage", "found by structure at depth 2"),
    }


def test_skipped_trees_and_symlinks_are_not_searched(tmp_path):
    for d in ("proc/x/image", "usr/docker/image/overlay2", "run/c/io.containerd.metadata.v1.bolt"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "usr/docker/containers").mkdir()
    (tmp_path / "run/c/io.containerd.metadata.v1.bolt/meta.db").write_bytes(b"")
    real = tmp_path / "elsewhere"
    (real / "io.containerd.metadata.v1.bolt").mkdir(parents=True)
    (real / "io.containerd.metadata.v1.bolt/meta.db").write_bytes(b"")
    (tmp_path / "link").symlink_to(real)
    result = structure.search(DirectoryEvidence(str(tmp_path)))
    assert [r.path for r in result.roots] == ["/elsewhere"]


def test_deeper_than_the_depth_is_not_found(tmp_path):
    db = tmp_path / "a/b/c/d/e/io.containerd.metadata.v1.bolt/meta.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")
    assert structure.search(DirectoryEvidence(str(tmp_path))).roots == []
    assert [r.depth for r in structure.search(DirectoryEvidence(str(tmp_path)), depth=5).roots] == [5]


def test_budget_bounds_a_wide_tree(tmp_path):
    """200 x 200 directories (40,000 at depth 2) with a root at the far end: the search stops at
    its budget of directories, in bounded time, and says it stopped early."""
    for i in range(200):
        base = tmp_path / f"d{i:03d}"
        base.mkdir()
        for j in range(200):
            (base / f"e{j:03d}").mkdir()
    db = tmp_path / "d199/e199/io.containerd.metadata.v1.bolt/meta.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    ev = DirectoryEvidence(str(tmp_path))
    with time_bound(30, "structure search on a wide tree"):
        start = time.monotonic()
        result = structure.search(ev, max_dirs=1000)
        elapsed = time.monotonic() - start
    assert result.exhausted and result.dirs_listed == 1000 and result.roots == []
    assert elapsed < 10
    small = structure.search(ev, max_entries=500)
    assert small.exhausted and small.roots == []
    assert structure.search(ev, max_dirs=50_000).roots[0].path == "/d199/e199"
