"""Real ROOTLESS Podman 4.3 (bolt state) and 5.8 (sqlite state) stores (tests/fixtures/podman-rootless,
see its README) found below a user's home in a host-root-shaped SOURCE, compared with what podman
answered as that user; owners mapped through the user's namespace (engines/podman/idmap.py) as
`podman exec stat` saw them."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli, unpack

from pensieve import api
from pensieve.engines.podman import PodmanHost
from pensieve.engines.podman.idmap import IdMap, IdRange, Owners, from_storage, owners, rootless_idmap
from pensieve.engines.podman.roots import podman_roots
from pensieve.evidence import DirectoryEvidence
from pensieve.times import parse_rfc3339

FIX = FIXTURE_ROOT / "podman-rootless"
VERSIONS = ("4.3", "5.8")
NAMES = ("idle", "job", "mapped", "web")
DIFF_CHANGES = {"added": "added", "changed": "modified", "deleted": "deleted"}


@pytest.fixture(scope="module", params=VERSIONS)
def version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def expected(version) -> dict:
    """podman's answers as the throw-away user (podman-X.Y-rootless-expected.json)."""
    return load_json(FIX / f"podman-{version}-rootless-expected.json")


@pytest.fixture(scope="module")
def rootless(expected) -> dict:
    return expected["rootless"]


@pytest.fixture(scope="module")
def graphroot(rootless) -> str:
    return f"/home/{rootless['user']}/.local/share/containers/storage"


@pytest.fixture(scope="module")
def source(version, tmp_path_factory):
    """The unpacked host root: etc/{passwd,group,subuid,subgid} and home/<user>/.local/share/..."""
    tarball = FIX / f"podman-{version}-rootless-root.tar.xz"
    return unpack(tarball, tmp_path_factory.mktemp(f"podman-rootless-{version}"))


@pytest.fixture(scope="module")
def host(source) -> PodmanHost:
    return api.open_host(str(source))


def test_rootless_root_found_below_the_home(source, host, rootless, graphroot, version):
    user = rootless["user"]
    assert podman_roots(DirectoryEvidence(str(source))) == [(graphroot, f"rootless user {user}")]
    assert host.problems == []
    code, out, _err = run_cli("roots", str(source), "--json")
    assert code == 0
    rows = [r for r in json.loads(out) if r["engine"] == "podman"]
    assert [(r["path"], r["found"]) for r in rows] == [(graphroot, f"rootless user {user}")]
    assert rows[0]["layout"] == ("libpod bolt" if version == "4.3" else "libpod sqlite")


def test_containers_agree_with_podman(host, expected, graphroot):
    by_id = {c.id: c for c in host.containers()}
    assert sorted(by_id) == sorted(p["Id"] for p in expected["ps"])
    assert sorted(expected["containers"]) == list(NAMES)
    for ps in expected["ps"]:
        c, want = by_id[ps["Id"]], expected["containers"][ps["Names"][0]]
        assert c.engine == "podman" and c.problems == []
        assert c.data_root == graphroot
        assert c.name == want["Name"] and c.image == want["ImageName"] and c.image_id == want["Image"]
        assert c.state == ps["State"] == want["State"]["Status"]
        assert c.exit_code == want["State"]["ExitCode"]
        assert c.created == parse_rfc3339(want["Created"])
        assert c.labels == want["Config"]["Labels"]
        assert want["GraphDriver"]["Data"]["UpperDir"].endswith(f"/{c.rw_layer}/diff")


def test_images_agree_with_podman(host, expected):
    by_id = {i.id: i for i in host.images()}
    assert sorted(by_id) == sorted(i["Id"] for i in expected["images"])
    for image_id, want in expected["images_inspect"].items():
        img = by_id[image_id]
        assert img.tags == want["RepoTags"] and img.diff_ids == want["RootFS"]["Layers"]
        assert img.size == want["Size"]


@pytest.mark.parametrize("name", NAMES)
def test_diff_agrees_with_podman_diff(host, expected, name):
    result = api.diff(host, name)
    got = {(c.change, c.path) for c in result.changes if c.engine_reports}
    want = {(DIFF_CHANGES[k], p) for k, paths in expected["diff"][name].items() for p in paths or []}
    assert got == want
    assert result.problems == []


def test_the_map_is_the_one_podman_unshare_showed(source, rootless, graphroot):
    idmap = rootless_idmap(DirectoryEvidence(str(source)), graphroot)
    assert idmap is not None and idmap.user == rootless["user"]
    assert [[r.inside, r.outside, r.count] for r in idmap.uids] == rootless["uid_map"]
    assert [[r.inside, r.outside, r.count] for r in idmap.gids] == rootless["gid_map"]


def test_on_disk_owners_are_sub_ids(host, source, rootless, graphroot):
    """The fixture keeps the host's view: files written by container users other than root are
    owned on disk by the user's sub-ids (what `stat` on the host said at capture time)."""
    c = host.container("web")
    upper = source / graphroot.lstrip("/") / "overlay" / c.rw_layer / "diff"
    lower = source / graphroot.lstrip("/") / "overlay" / c.layers[0].cache_id / "diff"
    for path, (uid, gid) in rootless["owners_on_disk"].items():
        f = upper / path.lstrip("/")
        st = (f if f.exists() else lower / path.lstrip("/")).lstat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path
    assert rootless["owners_on_disk"]["/srv/www/index.html"][0] != 33


def test_diff_shows_owners_as_the_container_sees_them(host, rootless):
    by_path = {c.path: c for c in api.diff(host, "web").changes}
    for path, (uid, gid) in rootless["owners_in_container"].items():
        if path in by_path:
            assert (by_path[path].uid, by_path[path].gid) == (uid, gid), path
    assert (by_path["/srv/www/index.html"].uid, by_path["/home/app"].uid) == (33, 1000)


def test_idmap_rules():
    m = IdMap("u", (IdRange(0, 1001, 1), IdRange(1, 100000, 10)), (IdRange(0, 1001, 1),))
    assert [m.uid(x) for x in (1001, 100000, 100009, 100010, 5, None)] == [0, 1, 10, 100010, 5, None]
    assert m.gid(100000) == 100000  # outside the gid map: kept as on disk


def test_no_map_for_rootful_or_unknown_roots(tmp_path):
    (tmp_path / "etc").mkdir()
    passwd = "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n"
    (tmp_path / "etc" / "passwd").write_text(passwd)
    (tmp_path / "etc" / "subuid").write_text("bob:100000:65536\n")
    ev = DirectoryEvidence(str(tmp_path))
    assert rootless_idmap(ev, "/var/lib/containers/storage") is None
    assert rootless_idmap(ev, "/root/.local/share/containers/storage") is None
    m = rootless_idmap(ev, "/home/bob/.local/share/containers/storage")
    assert m is not None and m.uid(100000) == 1 and m.gid(1000) == 0
    (tmp_path / "etc" / "subuid").write_text("bob:100000:x\n# junk\n::\n")
    assert rootless_idmap(ev, "/home/bob/.local/share/containers/storage") is None


def _seen_inside(host, name: str, paths) -> dict[str, tuple[int | None, int | None]]:
    """(uid, gid) of each of PATHS in the merged view of container NAME (what `fs stat` says)."""
    _, v = api.target_view(host, name)
    return {p: (e.uid, e.gid) for p in paths for e in [v.stat(p)]}


def test_fs_shows_owners_as_the_container_sees_them(host, rootless):
    """`fs` entries through the store's map: what `podman exec web stat` printed at capture time."""
    want = {p: tuple(ids) for p, ids in rootless["owners_in_container"].items()}
    assert _seen_inside(host, "web", want) == want


def test_a_container_with_its_own_uidmap(host, rootless, graphroot):
    """`podman run --uidmap 0:1:2000`: its RW layer is shifted by its own map on top of the
    user's (container root = host sub-id 100000, not the user), the image layer it sees through
    an id-mapped mount keeps the store's ids; both read as `podman exec mapped stat` said."""
    mapped = rootless["mapped"]
    assert mapped["owners_on_disk"]["/root/mapped.txt"] == [100000, 100000]  # not the user's uid
    assert mapped["owners_on_disk"]["/etc/motd"] == [rootless["uid"], rootless["gid"]]
    want = {p: tuple(ids) for p, ids in mapped["owners_in_container"].items()}
    assert _seen_inside(host, "mapped", want) == want
    c = host.container("mapped")
    ids = host.layer_owners(graphroot, c.rw_layer, c)
    assert ids is not None and len(ids.steps) == 2  # the store's, then the container's own
    assert ids.on_disk(33, 33) == (100033, 100033) and ids.uid(100033) == 33
    by_path = {ch.path: ch for ch in api.diff(host, "mapped").changes}
    for path, (uid, gid) in want.items():
        if path in by_path and by_path[path].change != "deleted":
            assert (by_path[path].uid, by_path[path].gid) == (uid, gid), path
    www = by_path["/srv/www"]  # copied up: 100033 on disk over the image's 100032, 33 both inside
    assert www.lower is not None and (www.lower["uid"], www.uid) == (33, 33)
    assert "owner" not in www.what_changed


def test_verify_compares_owners_through_the_map(host):
    """The tar-split record says 0, 33, 1000; on disk they are the user and its sub-ids: the image
    layer verifies (compared unshifted, every owner differed).  The empty copy c/storage made of
    it for `mapped` (mapped-layers; shown through an id-mapped mount) is not verifiable itself."""
    layers, images = host.verify_layers()
    (image,) = host.images()
    by_id = {v.cache_id: v for v in layers}
    top = by_id.pop(image.cache_ids[-1])
    assert top.status == "ok" and top.problems == []
    (copy,) = by_id.values()
    assert copy.status == "unverifiable" and "mapped-layers" in (copy.reason or "")
    assert images and all(iv.status == "ok" for iv in images)


def test_owners_compose_store_then_own():
    store = IdMap("u", (IdRange(0, 1001, 1), IdRange(1, 100000, 65536)), (IdRange(0, 1001, 1),))
    own = from_storage([(0, 1, 2000)], [(0, 1, 2000)])
    assert own is not None and from_storage([], []) is None
    ids = owners(store, own)
    assert ids is not None
    assert [ids.uid(x) for x in (100000, 100033, 1001, 5, None)] == [0, 33, 1001, 5, None]
    assert ids.on_disk(0, 0) == (100000, 0)  # gid 0 -> 1 (own), which the store does not map: kept
    for uid in (0, 33, 1000, 1999):
        assert ids.uid(ids.on_disk(uid, 0)[0]) == uid
    assert owners(None, None) is None and owners(store, None) == Owners((store,))


@pytest.mark.parametrize(
    "ranges",
    [
        [{"container_id": 0, "host_id": 1}],
        [{"container_id": -1, "host_id": 1, "size": 5}],
        [{"container_id": 0, "host_id": 1 << 32, "size": 5}],
        [{"container_id": 0, "host_id": 1, "size": 0}],
        [{"container_id": 0, "host_id": 1, "size": True}],
        [{"container_id": 0, "host_id": 1, "size": 1}] * 341,
        ["0:1:5"],
    ],
)
def test_unusable_id_maps_are_a_problem_and_ignored(ranges):
    from pensieve.engines.podman.storage import _id_map
    from pensieve.formats.untrusted_json import Doc

    problems: list = []
    assert _id_map(Doc({"uidmap": ranges}, "containers.json", problems), "uidmap") == []
    assert problems and "uidmap" in problems[0].message
