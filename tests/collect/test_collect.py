"""``pensieve collect`` on the captured overlay2 data root (a crashed host whose configs still say
running): the bundle's contents, its manifest and custody, ``collect verify``, the bundle as a
SOURCE agreeing with the data root, the evidence left as it was, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli, tree_digest

from pensieve.collect import collect, verify_bundle

NAME = "c-modified"
NOPROC = "/nonexistent-proc"


def _live_only(problems) -> bool:
    """Every problem is about the live snapshot: these tests read no proc (NOPROC)."""
    return all(str(getattr(p, "source", p.get("source") if isinstance(p, dict) else "")).startswith(
               ("live/", NOPROC)) for p in problems)  # fmt: skip


@pytest.fixture(scope="module")
def bundle(overlay2_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "bundle"
    result = collect(NAME, str(out), roots=[str(overlay2_root)], proc=NOPROC, argv=["pensieve", "collect"])
    assert [b["name"] for b in result.bundles] == [NAME]
    assert _live_only(result.problems), result.problems
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_bundle_holds_metadata_layers_image_and_custody(bundle, overlay2_root):
    doc = _manifest(bundle)
    assert doc["pensieve_bundle"] == 1 and doc["engine"] == "docker"
    cid = doc["container"]["id"]
    by_path = {f["path"]: f for f in doc["files"]}
    for name in ("config.v2.json", "hostconfig.json", "hostname", "hosts", "resolv.conf", f"{cid}-json.log"):
        entry = by_path[f"root/containers/{cid}/{name}"]
        assert entry["source"] == f"/containers/{cid}/{name}"
        assert (bundle / entry["path"]).read_bytes() == (
            overlay2_root / "containers" / cid / name
        ).read_bytes()
    assert f"root/image/overlay2/layerdb/mounts/{cid}/mount-id" in by_path
    assert "root/image/overlay2/repositories.json" in by_path
    for layer in doc["layers"]:
        assert by_path[layer["tar"]]["source"] == "generated"
        if layer["role"] == "image":
            hexid = layer["chain_id"].split(":")[1]
            for name in ("diff", "cache-id", "size", "tar-split.json.gz"):
                assert f"root/image/overlay2/layerdb/sha256/{hexid}/{name}" in by_path
    image_hex = doc["image"].split(":")[1]
    assert f"root/image/overlay2/imagedb/content/sha256/{image_hex}" in by_path
    assert by_path["image.tar"]["source"] == "generated"
    chain = doc["custody"]
    for key in ("collector", "started", "finished", "hostname", "kernel", "tool", "command_line"):
        assert chain[key], key
    assert chain["collector"]["uid"] == os.getuid() and "sudo_user" in chain["collector"]
    assert chain["started"]["utc"].endswith("Z") and chain["tool"]["name"] == "pensieve"
    assert chain["container_before"]["state"] == chain["container_after"]["state"] == "running"
    assert chain["container_unchanged"] is True
    digest = (bundle / "manifest.json.sha256").read_text().split()[0]
    import hashlib

    assert digest == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def test_rw_layer_tar_keeps_whiteouts_xattrs_and_times(bundle, overlay2_root):
    doc = _manifest(bundle)
    rw = next(x for x in doc["layers"] if x["role"] == "rw")
    upper = overlay2_root / "overlay2" / rw["cache_id"] / "diff"
    with tarfile.open(bundle / rw["tar"]) as tar:
        members = {m.name.rstrip("/"): m for m in tar}
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            m = members["./" + str(p.relative_to(upper))]
            assert (m.mode, m.uid, m.gid) == (st.st_mode & 0o7777, st.st_uid, st.st_gid), p
            assert m.pax_headers["mtime"] == f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}", p
            if m.ischr():
                assert (m.devmajor, m.devminor) == (os.major(st.st_rdev), os.minor(st.st_rdev))
            for x in os.listxattr(p, follow_symlinks=False):
                got = m.pax_headers["SCHILY.xattr." + x].encode("utf-8", "surrogateescape")
                assert got == os.getxattr(p, x, follow_symlinks=False), (p, x)
    assert any(m.ischr() and m.devmajor == m.devminor == 0 for m in members.values()), "no whiteout"
    assert any(m.pax_headers.get("SCHILY.xattr.trusted.overlay.opaque") == "y" for m in members.values())


def test_collect_verify_passes_then_names_the_changed_and_missing(bundle, tmp_path):
    code, out, err = run_cli("collect", "verify", bundle)
    assert code == 0, err
    assert all(r["status"] == "ok" for r in verify_bundle(str(bundle)))
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy, symlinks=True)
    doc = _manifest(copy)
    victim = next(f["path"] for f in doc["files"] if f["path"].endswith("config.v2.json"))
    data = bytearray((copy / victim).read_bytes())
    data[10] ^= 1
    (copy / victim).write_bytes(bytes(data))
    code, out, err = run_cli("collect", "verify", copy)
    assert code == 6 and f"changed: {victim}" in err, (code, out, err)
    gone = next(f["path"] for f in doc["files"] if f["path"].endswith("image.tar"))
    (copy / gone).unlink()
    (copy / "planted").write_text("x")
    results = {r["path"]: r["status"] for r in verify_bundle(str(copy))}
    assert results[victim] == "changed" and results[gone] == "missing" and results["planted"] == "extra"
    code, out, _ = run_cli("collect", "verify", copy, "--json")
    assert code == 6 and json.loads(out)


def test_collect_verify_catches_a_changed_manifest(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy, symlinks=True)
    text = (copy / "manifest.json").read_text().replace('"hostname": "', '"hostname": "x', 1)
    (copy / "manifest.json").write_text(text)
    code, out, err = run_cli("collect", "verify", copy)
    assert code == 6 and "changed: manifest.json" in err


def test_bundle_is_a_source_that_agrees_with_the_data_root(bundle, overlay2_root, tmp_path):
    for args in (
        ["containers", "--json"],
        ["diff", NAME, "--json"],
        ["fs", NAME, "find", "--layer", "rw", "--hash"],
    ):
        a = run_cli(args[0], bundle, *args[1:], *(["--json"] if args[0] == "fs" else []))
        b = run_cli(args[0], overlay2_root, *args[1:], *(["--json"] if args[0] == "fs" else []))
        assert a[0] == 0, a
        got, want = json.loads(a[1]), json.loads(b[1])
        if args[0] == "containers":
            want = [c for c in want if c["name"] == NAME]
        if args[0] == "fs":  # inode numbers are the filesystem's; directory atimes move when listed
            got, want = ([{k: v for k, v in e.items() if k not in ("inode", "nlink", "atime")} for e in x]
                         for x in (got, want))  # fmt: skip
        assert got == want, args
    code, out, err = run_cli("verify", bundle / "image.tar")
    assert code == 0 and "tampered" not in out, err
    code, out, err = run_cli("verify", bundle)
    assert code == 0, err
    code, _, err = run_cli("fs", bundle, NAME, "export", bundle / "x.tar")
    assert code == 2 and "evidence" in err


def test_second_collect_gives_the_same_rw_layer(bundle, overlay2_root, tmp_path):
    again = tmp_path / "again"
    collect(NAME, str(again), roots=[str(overlay2_root)], proc=NOPROC)
    first, second = _manifest(bundle), _manifest(again)
    rw = next(x for x in first["layers"] if x["role"] == "rw")["cache_id"]

    def files(b: Path) -> dict:
        index = json.loads((b / f"layers/{rw}.index.json").read_text())
        return {e["path"]: e.get("sha256") for e in index}

    assert files(bundle) == files(again)
    # (the tars themselves may differ: a directory's atime moves when it is listed under relatime)
    hashes = [
        {f["path"]: f["sha256"] for f in m["files"] if f["path"].startswith("root/")} for m in (first, second)
    ]
    assert hashes[0] == hashes[1]


def _settled_digest(root: Path) -> str:
    """tree_digest of ROOT once two passes agree (its own first walk may move directory atimes
    under relatime; the strictatime check of every command is tests/test_evidence_untouched.py)."""
    last = None
    for _ in range(4):
        now = tree_digest(root)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{root} keeps changing by itself")


def test_evidence_untouched_and_writes_only_under_out(overlay2_root, tmp_path):
    before = _settled_digest(overlay2_root)
    parent = tmp_path / "outside"
    parent.mkdir()
    code, _, err = run_cli("collect", NAME, "--root", overlay2_root, "--out", parent / "b", "--proc", NOPROC)
    assert code in (0, 5), err
    assert tree_digest(overlay2_root) == before
    assert sorted(os.listdir(parent)) == ["b"]


def test_bad_input(overlay2_root, tmp_path):
    code, _, err = run_cli("collect", "no-such-container", "--root", overlay2_root, "--out", tmp_path / "x")
    assert code == 4, err
    code, _, err = run_cli("collect", NAME, "--root", overlay2_root, "--out", overlay2_root / "inside")
    assert code == 2 and "evidence" in err
    assert not (overlay2_root / "inside").exists()
    code, _, err = run_cli("collect", "--root", overlay2_root, "--out", tmp_path / "y")
    assert code == 2
    code, _, err = run_cli("collect", "verify", tmp_path / "nothing")
    assert code == 3


def test_missing_engine_file_is_a_problem_and_the_rest_is_collected(overlay2_root, tmp_path):
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(overlay2_root), str(root)], check=True)
    cid = next(
        c
        for c in os.listdir(root / "containers")
        if NAME in (root / "containers" / c / "config.v2.json").read_text()
    )
    (root / "containers" / cid / "hostconfig.json").unlink()
    code, out, err = run_cli("collect", NAME, "--root", root, "--out", tmp_path / "b", "--proc", NOPROC)
    assert code == 5 and "hostconfig.json" in err, err
    doc = _manifest(tmp_path / "b")
    paths = {f["path"] for f in doc["files"]}
    assert f"root/containers/{cid}/config.v2.json" in paths and "image.tar" in paths
    assert any("hostconfig.json" in p["source"] for p in doc["problems"])
    assert run_cli("collect", "verify", tmp_path / "b")[0] == 0


def test_all_collects_each_running_container(overlay2_root, tmp_path):
    result = collect(None, str(tmp_path / "all"), roots=[str(overlay2_root)], proc=NOPROC, every=True)
    names = sorted(b["name"] for b in result.bundles)
    assert names == ["c-modified", "c-paused", "c-priv", "c-restarting", "c-running"]
    for b in result.bundles:
        assert all(r["status"] == "ok" for r in verify_bundle(b["bundle"]))
