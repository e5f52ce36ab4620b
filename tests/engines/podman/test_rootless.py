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
from pensieve.engines.podman.idmap import IdMap, IdRange, rootless_idmap
from pensieve.engines.podman.roots import podman_roots
from pensieve.evidence import DirectoryEvidence
from pensieve.times import parse_rfc3339

FIX = FIXTURE_ROOT / "podman-rootless"
VERSIONS = ("4.3", "5.8")
NAMES = ("idle", "job", "web")
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
