"""Docker layouts the engine on the test machine cannot produce: aufs (v2), the pre-1.10 v1
graph, vfs, and a devicemapper container.

The data roots used here are HAND-MADE (tests/fixtures/handmade/build.py), written at test time
from the documented on-disk layouts, not captured from a real dockerd; see
tests/fixtures/handmade/README.md.  Every root holds the same story (two image layers, an init
layer, a RW layer with additions, a rewrite, whiteouts and an opaque directory), so the same
expectations apply to every union/snapshot driver.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys

import pytest
from conftest import FIXTURE_ROOT, run_cli

from pensieve import api
from pensieve.engines.docker.root import chain_ids
from pensieve.filesystem.layered import PathNotInView

_BUILD = FIXTURE_ROOT / "handmade" / "build.py"
_spec = importlib.util.spec_from_file_location("pensieve_handmade_build", _BUILD)
build = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = build  # dataclasses look their module up while the class is built
assert _spec.loader is not None
_spec.loader.exec_module(build)

UNION = ["aufs-v2", "v1-graph", "vfs-v2"]
APP_TAG = {"aufs-v2": "app:1.0", "vfs-v2": "app:1.0", "v1-graph": "myapp:1.0"}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("handmade")
    return {name: fn(base / name) for name, fn in build.BUILDERS.items()}


def _host(roots, name):
    sc = roots[name]
    return sc, api.open_docker(str(sc.root))


def _names_anywhere(view) -> list[str]:
    return [e.path for e in view.walk("/")]


# ---- aufs (v2) metadata ------------------------------------------------------------------


def test_aufs_v2_ids_are_real_digests(roots):
    sc, host = _host(roots, "aufs-v2")
    assert [r.layout for r in host.roots] == ["v2"]
    images = {i.tags[0]: i for i in host.images()}
    assert set(images) == {"busybox:latest", "app:1.0"}
    app = images["app:1.0"]
    raw = (sc.root / "image/aufs/imagedb/content/sha256" / app.id.removeprefix("sha256:")).read_bytes()
    assert app.id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert app.diff_ids == sc.diff_ids
    assert app.chain_ids == chain_ids(sc.diff_ids)
    assert app.cache_ids == sc.layer_ids
    assert app.parent == images["busybox:latest"].id
    assert images["busybox:latest"].digests and images["busybox:latest"].digests[0].startswith(
        "busybox@sha256:"
    )
    assert [s.empty_layer for s in app.history] == [False, True, False, True]
    assert not host.problems


def test_aufs_v2_container_layers(roots):
    sc, host = _host(roots, "aufs-v2")
    c = host.container("web")
    assert c.storage_driver == "aufs" and c.rw_layer == sc.rw_id and c.init_layer == sc.init_id
    assert [(lay.role, lay.cache_id) for lay in c.layers] == [
        ("image", sc.layer_ids[0]),
        ("image", sc.layer_ids[1]),
        ("init", sc.init_id),
        ("rw", sc.rw_id),
    ]
    assert all(lay.path == f"/aufs/diff/{lay.cache_id}" for lay in c.layers)
    assert c.layers[1].created_by == "/bin/sh -c " + build.APP_STEP
    assert any("docker socket" in r for r in c.risks)
    assert not c.problems


# ---- merged views ------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNION)
def test_container_view_hides_whiteouts_and_opaque_contents(roots, name):
    sc, host = _host(roots, name)
    _c, view = api.target_view(host, "web")
    everything = _names_anywhere(view)
    assert not [p for p in everything if ".wh." in p], "aufs whiteouts/housekeeping leaked into the view"
    assert "motd" not in view.listdir("/etc")  # whiteout in image layer 1
    assert view.listdir("/app/cache") == ["d.tmp"]  # opaque in RW hides c.tmp (and a/b.tmp below)
    assert "config.ini" not in view.listdir("/app")  # whiteout in RW
    assert view.listdir("/usr/share") == []  # directory whiteout in RW
    for gone in ("/etc/motd", "/app/config.ini", "/app/cache/a.tmp", "/app/cache/c.tmp", "/usr/share/doc"):
        with pytest.raises(PathNotInView):
            view.lookup(gone)
    with view.open("/etc/passwd") as fh:
        assert b"backdoor" in fh.read()
    with view.open("/app/run.sh") as fh:
        assert fh.read().startswith(b"#!/bin/sh")
    assert view.stat("/bin/ls").link_target == "sh"
    assert view.realpath("/bin/ls") == "/bin/sh"


@pytest.mark.parametrize("name", UNION)
def test_image_view_hides_lower_layer_entries(roots, name):
    sc, host = _host(roots, name)
    image, view = api.target_view(host, APP_TAG[name])
    assert image.id == sc.image_ids[APP_TAG[name]]
    assert view.listdir("/app/cache") == ["c.tmp"]  # opaque in layer 1 hides a.tmp, b.tmp
    assert "motd" not in view.listdir("/etc")
    with view.open("/app/config.ini") as fh:
        assert fh.read() == b"a=2\n"
    assert view.listdir("/usr/share/doc") == ["README"]
    assert not [p for p in _names_anywhere(view) if ".wh." in p]
    # the base image alone still has everything layer 1 removed
    _base, base_view = api.target_view(host, "busybox:latest")
    assert base_view.listdir("/app/cache") == ["a.tmp", "b.tmp"]
    assert "motd" in base_view.listdir("/etc")


@pytest.mark.parametrize("name", UNION)
def test_provenance(roots, name):
    sc, host = _host(roots, name)
    l0, l1 = sc.layer_ids[0], sc.layer_ids[1]
    _c, view = api.target_view(host, "web")
    passwd = view.stat("/etc/passwd")
    assert (passwd.layer, passwd.layer_role, passwd.shadows) == (sc.rw_id, "rw", [l0])
    hostname = view.stat("/etc/hostname")
    assert (hostname.layer, hostname.layer_role, hostname.shadows) == (sc.init_id, "init", [])
    run = view.stat("/app/run.sh")
    assert (run.layer, run.layer_role, run.shadows) == (l1, "image", [])
    assert run.created_by == "/bin/sh -c " + build.APP_STEP
    sh = view.stat("/bin/sh")
    assert (sh.layer, sh.layer_role) == (l0, "image")
    assert sh.created_by == "/bin/sh -c " + build.BASE_STEP
    assert view.stat("/tmp/evil.sh").layer == sc.rw_id
    assert view.stat("/tmp/evil.sh").host_path.endswith("/tmp/evil.sh")
    _i, iview = api.target_view(host, APP_TAG[name])
    cfg = iview.stat("/app/config.ini")
    assert (cfg.layer, cfg.layer_role, cfg.shadows) == (l1, "image", [l0])
    if name != "vfs-v2":
        # union drivers also name the lower copies an opaque directory hides
        assert view.stat("/app/cache").shadows == [l1, l0]
        assert iview.stat("/app/cache").shadows == [l0]


# ---- diff --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNION)
def test_diff(roots, name):
    sc, host = _host(roots, name)
    result = api.diff(host, "web")
    assert not result.problems
    changes = {c.path: c for c in result.changes}
    assert not [p for p in changes if ".wh." in p]
    got = {p: c.change for p, c in changes.items() if not (c.type == "dir" and c.change == "modified")}
    assert got == build.EXPECTED_CHANGES
    # directories holding changes are reported as modified, as docker diff does
    dirs = {p for p, c in changes.items() if c.type == "dir" and c.change == "modified"}
    assert {"/tmp", "/root", "/etc", "/app", "/app/cache", "/usr/share"} <= dirs
    assert dirs <= {"/tmp", "/root", "/etc", "/app", "/app/cache", "/usr", "/usr/share"}
    passwd = changes["/etc/passwd"]
    assert "content" in passwd.what_changed
    assert passwd.sha256 == hashlib.sha256(_spec_bytes(build.RW_LAYER, "/etc/passwd")).hexdigest()
    assert passwd.lower["sha256"] == hashlib.sha256(_spec_bytes(build.BASE_LAYER, "/etc/passwd")).hexdigest()
    assert changes["/tmp/evil.sh"].layer == sc.rw_id
    deleted = changes["/app/config.ini"]
    assert deleted.lower["size"] == len(b"a=2\n")
    assert deleted.lower_layer == sc.layer_ids[1]
    assert changes["/usr/share/doc"].lower_layer == sc.layer_ids[0]
    assert changes["/.build-info"].lower_layer == sc.layer_ids[0]  # a deletion at the root


# ---- v1 graph ------------------------------------------------------------------------------


def test_v1_images_history_and_tags(roots):
    sc, host = _host(roots, "v1-graph")
    assert [r.layout for r in host.roots] == ["v1"]
    l0, l1, l2 = sc.layer_ids
    app = host.image("myapp:1.0")
    assert app.id == l2 and not app.id.startswith("sha256:")  # v1 ids kept as in the evidence
    assert app.engine == "docker"
    assert app.tags == ["myapp:1.0"] and app.parent == l1
    assert app.cmd == ["/app/run.sh"] and app.workdir == "/app"
    assert app.labels == {"tier": "web"} and app.exposed_ports == ["8080/tcp"]
    assert app.os == "linux" and app.architecture == "amd64"
    assert app.cache_ids == [l0, l1, l2]
    assert [s.created_by for s in app.history] == [
        "/bin/sh -c " + build.BASE_STEP,
        "/bin/sh -c " + build.APP_STEP,
        '/bin/sh -c #(nop) CMD ["/app/run.sh"]',
    ]
    assert [s.cache_id for s in app.history] == [l0, l1, l2]
    assert app.history[0].author == "busybox maintainers"
    assert app.size == sum(s.size for s in app.history)
    busybox = host.image("busybox")
    assert busybox.id == l0 and busybox.parent is None and len(busybox.history) == 1
    assert busybox.digests and busybox.digests[0].startswith("busybox@sha256:")
    assert host.image(l2[:10]) is app
    layers = host.image_layers(app)
    assert [(lay.cache_id, lay.path) for lay in layers] == [(i, f"/aufs/diff/{i}") for i in (l0, l1, l2)]
    assert layers[1].created_by == "/bin/sh -c " + build.APP_STEP


def test_v1_corrupt_image_is_a_problem_not_a_crash(roots):
    sc, host = _host(roots, "v1-graph")
    bad = sc.notes["corrupt_image"]
    placeholder = next(i for i in host.images() if i.id == bad)
    assert placeholder.tags == [] and placeholder.history[0].comment == "(v1 image json unreadable)"
    assert any(p.subject == bad and "unreadable v1 image json" in p.message for p in host.problems)


def test_v1_containers(roots):
    sc, host = _host(roots, "v1-graph")
    l0, l1, l2 = sc.layer_ids
    c = host.container("web")
    assert (c.id, c.name, c.image, c.image_id, c.state, c.engine) == (
        sc.containers["web"],
        "web",
        "myapp:1.0",
        l2,
        "running",
        "docker",
    )
    assert c.command == ["/app/run.sh"] and c.pid == 4242 and c.storage_driver == "aufs"
    assert (c.rw_layer, c.init_layer) == (c.id, c.id + "-init")
    assert [(lay.role, lay.cache_id) for lay in c.layers] == [
        ("image", l0),
        ("image", l1),
        ("image", l2),
        ("init", c.id + "-init"),
        ("rw", c.id),
    ]
    assert all(lay.path == f"/aufs/diff/{lay.cache_id}" and lay.driver == "aufs" for lay in c.layers)
    assert [lay.size for lay in c.layers[:3]] == [s.size for s in host.image(l2).history]
    mounts = {m.destination: m for m in c.mounts}
    assert mounts["/data"].type == "volume" and mounts["/data"].name == sc.notes["volume"]
    assert mounts["/data"].host_path == f"/vfs/dir/{sc.notes['volume']}"
    assert mounts["/var/run/docker.sock"].type == "bind"
    assert "privileged" in c.risks and any("docker socket" in r for r in c.risks)
    assert c.networks["bridge"]["ip"] == "172.17.0.5"
    assert [(p.container_port, p.host_port) for p in c.published_ports][0] == ("8080/tcp", "80")
    assert c.restart_policy == "always"
    assert not c.problems


def test_v1_corrupt_container_keeps_its_layers(roots):
    sc, host = _host(roots, "v1-graph")
    bad = sc.notes["corrupt_container"]
    c = host.container(bad)
    assert c.state == "unknown" and c.name is None
    assert any("corrupt container config" in p.message for p in c.problems)
    assert any("rebuilt from aufs/layers" in p.message for p in c.problems)
    l0 = sc.layer_ids[0]
    assert [(lay.role, lay.cache_id) for lay in c.layers] == [
        ("image", l0),
        ("init", bad + "-init"),
        ("rw", bad),
    ]
    result = api.diff(host, bad)
    assert {ch.path: ch.change for ch in result.changes}["/tmp/left-behind"] == "added"


def test_v1_graph_layout_helpers(tmp_path):
    from pensieve.engines.docker.legacy import read_repositories_v1
    from pensieve.engines.docker.root import DockerRoot
    from pensieve.evidence import DirectoryEvidence

    sc = build.build_v1_graph(tmp_path / "v1", corrupt=False)
    root = DockerRoot(DirectoryEvidence(str(sc.root)), "/")
    tags, digests, drivers = read_repositories_v1(root)
    assert drivers == ["aufs"]
    assert tags[sc.layer_ids[2]] == ["myapp:1.0"] and tags[sc.layer_ids[0]] == ["busybox:latest"]
    assert len(digests[sc.layer_ids[0]]) == 1
    host = api.open_docker(str(sc.root))
    assert [c.name for c in host.containers()] == ["web"]
    assert not host.problems


def test_cli_containers_json_on_v1(roots, tmp_path):
    clean = build.build_v1_graph(tmp_path / "clean", corrupt=False)
    code, out, err = run_cli("containers", "--json", str(clean.root))
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 1
    row = rows[0]
    assert {"id", "name", "image", "image_id", "state", "engine"} <= set(row)
    assert (row["id"], row["name"], row["image"], row["image_id"], row["state"], row["engine"]) == (
        clean.containers["web"],
        "web",
        "myapp:1.0",
        clean.layer_ids[2],
        "running",
        "docker",
    )
    # with a corrupt container the listing still comes out, exit 5 and a warning on stderr
    sc = roots["v1-graph"]
    code, out, err = run_cli("containers", "--json", str(sc.root))
    assert code == 5
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows[sc.containers["web"]]["state"] == "running"
    assert rows[sc.notes["corrupt_container"]]["state"] == "unknown"
    assert "corrupt container config" in err


# ---- devicemapper ---------------------------------------------------------------------------


def test_devicemapper_container_is_listed_but_unsupported(roots):
    sc, host = _host(roots, "devicemapper-v2")
    c = host.container("db")
    assert c.id == sc.containers["db"] and c.storage_driver == "devicemapper"
    assert c.image == "app:1.0" and c.image_id == sc.image_ids["app:1.0"]
    assert c.state == "exited" and c.exit_code == 137
    assert c.layers == []
    assert any("unsupported storage driver devicemapper" in p.message for p in c.problems)
    assert {i.id for i in host.images()} == set(sc.image_ids.values())
    with pytest.raises(api.LookupFailed, match="unsupported storage driver"):
        api.diff(host, "db")
    with pytest.raises(api.LookupFailed):
        api.target_view(host, "db")


def _spec_bytes(spec: list[tuple], path: str) -> bytes:
    return next(item[2] for item in spec if item[0] == "file" and item[1] == path)


@pytest.mark.parametrize("name", ["aufs-v2", "vfs-v2"])
def test_whence_on_other_drivers(roots, name):
    sc, host = _host(roots, name)
    c = host.container("web")
    view = api.view(host, c)
    evil = view.stat("/tmp/evil.sh")
    a = api.whence(host, evil.host_path)
    assert (a.layer_kind, a.containers, a.container_path) == ("rw", [c.id], "/tmp/evil.sh")
    run = view.stat("/app/run.sh")
    a = api.whence(host, run.host_path)
    assert a.layer_kind == "image" and a.container_path == "/app/run.sh"
    assert c.image_id in a.images and c.id in a.containers
