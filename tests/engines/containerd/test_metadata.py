"""ContainerdMetadata on real containerd 1.6 and 1.7 roots of one scenario (tests/fixtures/containerd,
containerd17: see their READMEs), compared with what ctr itself answered at capture time
(containerd-X.Y-expected.json)."""

from __future__ import annotations

import base64
import os

import pytest
from conftest import FIXTURE_ROOT, load_json, unpack

from pensieve.engines.containerd import ContainerdMetadata
from pensieve.evidence import DirectoryEvidence
from pensieve.times import parse_rfc3339

#: the captures of the same scenario (fixtures/capture/containerd_capture.sh): version -> fixture dir
CAPTURES = {"1.6": FIXTURE_ROOT / "containerd", "1.7": FIXTURE_ROOT / "containerd17"}


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def expected(version) -> dict:
    """ctr's answers at capture time (containerd-X.Y-expected.json)."""
    return load_json(CAPTURES[version] / f"containerd-{version}-expected.json")


@pytest.fixture(scope="module")
def root_dir(version, tmp_path_factory):
    tarball = CAPTURES[version] / f"containerd-{version}-root.tar.xz"
    return unpack(tarball, tmp_path_factory.mktemp(f"containerd-root-{version}"))


@pytest.fixture(scope="module")
def meta(root_dir) -> ContainerdMetadata:
    with ContainerdMetadata(DirectoryEvidence(str(root_dir)), "/root") as m:
        yield m


def namespaces():
    return ["default", "k8s.io"]  # both captures


def test_no_problems_and_every_namespace(meta, expected):
    assert meta.problems == []
    assert sorted(ns.name for ns in meta.namespaces) == namespaces()
    for ns in meta.namespaces:
        assert ns.labels == expected["namespaces"][ns.name]["namespace_labels"]


@pytest.mark.parametrize("ns_name", namespaces())
def test_containers_match_ctr_info(meta, ns_name, expected):
    want = expected["namespaces"][ns_name]["containers"]
    got = {c.id: c for c in meta.namespace(ns_name).containers}
    assert sorted(got) == sorted(want)
    for cid, info in want.items():
        c = got[cid]
        assert c.problems == []
        assert c.image == info["Image"]
        assert c.labels == info["Labels"]
        assert c.snapshotter == info["Snapshotter"] and c.snapshot_key == info["SnapshotKey"]
        assert c.created == parse_rfc3339(info["CreatedAt"])
        assert c.updated == parse_rfc3339(info["UpdatedAt"])
        assert c.runtime.name == info["Runtime"]["Name"]
        options = info["Runtime"].get("Options") or {}
        assert c.runtime.options_type == options.get("type_url")
        raw_options = base64.b64decode(options.get("value", ""))
        if "root" in c.runtime.options:  # runc's Options field 7 (root), as bytes in the Any
            assert c.runtime.options["root"].encode() in raw_options
        else:
            assert raw_options == b""
        check_spec(c.spec, info["Spec"])
        # the scenario: the created-but-never-started containers were made --privileged
        assert c.spec.privileged == (info["Labels"]["org.pensieve.role"] == "created")


def check_spec(spec, want: dict) -> None:
    process, linux = want["process"], want.get("linux", {})
    assert spec.version == want["ociVersion"]
    assert spec.args == process["args"]
    assert spec.env == process.get("env", [])
    assert spec.cwd == process["cwd"]
    assert (spec.uid, spec.gid) == (process["user"]["uid"], process["user"]["gid"])
    assert spec.no_new_privileges == process.get("noNewPrivileges", False)
    assert spec.capabilities == process.get("capabilities", {})
    assert spec.hostname == want.get("hostname")
    assert spec.root_path == want["root"]["path"]
    assert spec.annotations == want.get("annotations", {})
    assert [(n.type, n.path) for n in spec.namespaces] == [
        (n["type"], n.get("path")) for n in linux["namespaces"]
    ]
    assert spec.masked_paths == linux.get("maskedPaths", [])
    assert spec.readonly_paths == linux.get("readonlyPaths", [])
    assert spec.cgroups_path == linux.get("cgroupsPath")
    got_mounts = [(m.destination, m.type, m.source, m.mode, m.rw) for m in spec.mounts]
    want_mounts = [
        (
            m["destination"],
            m["type"],
            m["source"],
            ",".join(m.get("options", [])) or None,
            "ro" not in m.get("options", []),
        )
        for m in want["mounts"]
    ]
    assert got_mounts == want_mounts


@pytest.mark.parametrize("ns_name", namespaces())
def test_images_match_ctr(meta, ns_name, expected):
    want = {row["REF"]: row for row in expected["namespaces"][ns_name]["images"]}
    got = {img.name: img for img in meta.namespace(ns_name).images}
    assert sorted(got) == sorted(want)
    for name, row in want.items():
        img = got[name]
        assert img.problems == []
        assert img.target_digest == row["DIGEST"]
        assert img.target_media_type == row["TYPE"]
        assert img.labels == row["LABELS"]
        assert img.created is not None and img.updated >= img.created


@pytest.mark.parametrize("ns_name", namespaces())
def test_content_matches_ctr(meta, root_dir, ns_name, expected):
    want = {row["DIGEST"]: row for row in expected["namespaces"][ns_name]["content"]}
    got = {blob.digest: blob for blob in meta.namespace(ns_name).content}
    assert sorted(got) == sorted(want)
    for digest, row in want.items():
        blob = got[digest]
        assert blob.problems == []
        assert blob.labels == row["LABELS"]
        assert blob.size == row["size_bytes"]
        assert os.path.getsize(str(root_dir) + blob.path) == row["size_bytes"]


@pytest.mark.parametrize("ns_name", namespaces())
def test_snapshots_match_ctr(meta, ns_name, expected):
    expected_ns = expected["namespaces"][ns_name]
    want = {row["KEY"]: row for row in expected_ns["snapshots"]}
    got = {s.key: s for s in meta.namespace(ns_name).snapshots}
    assert sorted(got) == sorted(want)
    ids = set()
    for key, row in want.items():
        snap, info = got[key], expected_ns["snapshot_info"][key]
        assert snap.problems == []
        assert snap.parent == (row["PARENT"] or None)
        assert snap.kind == row["KIND"].lower()
        assert snap.labels == info.get("Labels", {})
        assert snap.created == parse_rfc3339(info["Created"])
        assert snap.updated == parse_rfc3339(info["Updated"])
        assert snap.path is not None and snap.path.endswith(f"/snapshots/{snap.id}/fs")
        ids.add(snap.id)
    assert len(ids) == len(want)  # one directory per snapshot
    # every container's snapshot key is a snapshot of its namespace
    for c in meta.namespace(ns_name).containers:
        assert c.snapshot_key in got


@pytest.mark.parametrize("ns_name", namespaces())
def test_leases_match_ctr(meta, ns_name, expected):
    want = {row["ID"]: row for row in expected["namespaces"][ns_name]["leases"]}
    got = {lease.id: lease for lease in meta.namespace(ns_name).leases}
    assert sorted(got) == sorted(want)
    for lid, row in want.items():
        assert got[lid].labels == row["LABELS"]
        assert got[lid].created // 10**9 == parse_rfc3339(row["CREATED AT"]) // 10**9


@pytest.mark.parametrize("ns_name", namespaces())
def test_running_container_snapshot_holds_its_changes(meta, root_dir, ns_name, expected):
    """The file planted into each RUNNING task's rootfs is in its active snapshot's upper dir,
    and the deleted /etc/motd is a whiteout there (tasks as ctr listed them)."""
    running = [t["TASK"] for t in expected["namespaces"][ns_name]["tasks"] if t["STATUS"] == "RUNNING"]
    assert running
    snaps = {s.key: s for s in meta.namespace(ns_name).snapshots}
    containers = {c.id: c for c in meta.namespace(ns_name).containers}
    for task in running:
        upper = str(root_dir) + snaps[containers[task].snapshot_key].path
        with open(os.path.join(upper, "root", "evidence.txt")) as fh:
            assert ns_name in fh.read()
        st = os.lstat(os.path.join(upper, "etc", "motd"))
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0)
