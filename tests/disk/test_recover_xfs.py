"""Deleted-file recovery on XFS (pensieve.disk.recover_xfs) against the truth the capture script
recorded before the kernel deleted the files; the evidence image is not changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zstandard
from conftest import FIXTURE_ROOT

from pensieve.disk.recover_xfs import XfsLogRecovery
from pensieve.evidence.disk_images import open_image

XD = FIXTURE_ROOT / "xfs_deleted"
TRUTH = json.loads((XD / "expected" / "truth.json").read_text())["files"]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    img = tmp_path_factory.mktemp("xfsd") / "xfs_deleted.img"
    with open(XD / "xfs_deleted.img.zst", "rb") as src, open(img, "wb") as out:
        reader = zstandard.ZstdDecompressor().stream_reader(src)
        while chunk := reader.read(1 << 20):
            out.write(chunk)
    return img


def _sha(p: Path) -> str:
    with open(p, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def test_every_deleted_file_with_name_and_content(image: Path) -> None:
    before = _sha(image)
    img = open_image(str(image))
    got = {r.ino: r for r in XfsLogRecovery(img.read).run()}
    deleted = [f for f in TRUTH if f["deleted"]]
    kept = {f["inode"] for f in TRUTH if not f["deleted"]}
    assert not kept & set(got), "a live file is not a deleted one"
    exact = [f for f in deleted if f["inode"] in got and got[f["inode"]].sha256 == f["sha256"]]
    named = [f for f in deleted if f["inode"] in got and got[f["inode"]].path == f["path"]]
    # the measured result on this fixture (bench/results/recover_xfs.md): all of them
    assert len(exact) == len(deleted) and len(named) == len(deleted)
    for f in deleted:
        r = got[f["inode"]]
        assert r.status == "complete" and r.size == f["size"] and r.source == "log"
        assert not hasattr(r, "layer")  # layers come from the recover command's attribute()
    assert _sha(image) == before


def test_recover_command_on_xfs_writes_every_deleted_file(image: Path, tmp_path: Path) -> None:
    """`pensieve recover IMAGE --out DIR` takes the XFS road: each deleted file written, exact."""
    from pensieve.disk.recover import recover
    from pensieve.evidence import open_evidence

    before = _sha(image)
    report = recover(open_evidence(str(image)), out_dir=str(tmp_path / "out"))
    by_ino = {f.inode: f for f in report.files}
    for f in (f for f in TRUTH if f["deleted"]):
        rec = by_ino[f["inode"]]
        assert rec.method == "xfs-log" and rec.path == f["path"] and rec.confidence == "complete"
        assert rec.out_path and _sha(Path(rec.out_path)) == f["sha256"]
        # overlay2-like directories, but no engine's data root on this image: nothing attributed
        assert rec.layer is None and rec.container is None
    assert _sha(image) == before


def test_blocks_the_bnobt_no_longer_holds_are_not_read(image: Path, tmp_path: Path) -> None:
    """Every block of every deleted file is free on the fixture (nothing was written after the rm);
    a copy whose bnobt leaf no longer lists one free extent (hand-made: that extent's record
    dropped, as if reallocated) gives those files' blocks as reallocated: zeros, partial."""
    import struct

    from pensieve.formats.xfs import Superblock
    from pensieve.formats.xfs_space import FreeSpace

    img = open_image(str(image))
    got = XfsLogRecovery(img.read).run()
    assert got and all(st == "free" for r in got for _o, _s, _c, st in r.runs)
    assert all(r.reused_blocks == 0 and r.blocks * 4096 >= r.size for r in got)
    sb = Superblock(img.read(0, 512))
    fs = FreeSpace(img.read, sb)
    big = next(r for r in got if r.path == "/notes/big.bin")
    fsb = big.runs[0][1]
    agno, agbno = fsb >> sb.agblklog, fsb & ((1 << sb.agblklog) - 1)
    ag = fs.ags[agno]
    victim = next(i for i, (b, c) in enumerate(ag.extents) if b <= agbno < b + c)
    copy = tmp_path / "realloc.img"
    with open(image, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    base = agno * sb.agblocks * sb.blocksize
    with open(copy, "r+b") as fh:
        fh.seek(base + sb.sectsize + 16)
        root = struct.unpack(">I", fh.read(4))[0]
        fh.seek(base + root * sb.blocksize + 4)
        level, numrecs = struct.unpack(">HH", fh.read(4))
        assert level == 0
        recs = [e for i, e in enumerate(ag.extents) if i != victim]
        fh.seek(base + root * sb.blocksize + 6)
        fh.write(struct.pack(">H", numrecs - 1))
        fh.seek(base + root * sb.blocksize + 56)
        fh.write(b"".join(struct.pack(">II", b, c) for b, c in recs) + bytes(8))
    img2 = open_image(str(copy))
    rec = XfsLogRecovery(img2.read)
    after = {r.ino: r for r in rec.run()}
    assert any("AGF says" in p for p in rec.problems)  # the AGF count no longer matches: said
    hit = after[big.ino]
    assert hit.status == "partial" and hit.reused_blocks > 0 and hit.sha256 != big.sha256
    assert all(st == "reallocated" for _o, s, _c, st in hit.runs if s == fsb)
    lo, hi = ag.extents[victim]
    for r in after.values():
        for _o, s, _c, st in r.runs:
            inside = s >> sb.agblklog == agno and lo <= s & ((1 << sb.agblklog) - 1) < lo + hi
            assert (st == "reallocated") == inside


def test_busy_filesystem_with_a_wrapped_log(tmp_path: Path) -> None:
    """xfs_busy: the log wrapped; what it still holds comes back, and nothing it lost is claimed.
    Measured (bench/results/recover_xfs.md): every deleted file named, content exact for the
    files whose allocation the log still holds (most of those deleted in the last round)."""
    busy = FIXTURE_ROOT / "xfs_busy"
    truth = json.loads((busy / "expected" / "truth.json").read_text())
    img_path = tmp_path / "busy.img"
    with open(busy / "xfs_busy.img.zst", "rb") as src, open(img_path, "wb") as out:
        zstandard.ZstdDecompressor().copy_stream(src, out)
    rec = XfsLogRecovery(open_image(str(img_path)).read)
    by: dict[int, list] = {}
    for r in rec.run():
        by.setdefault(r.ino, []).append(r)
    deleted = [f for f in truth["files"] if f["deleted_round"] is not None]
    named = exact = 0
    last = [0, 0]
    for f in deleted:
        mine = [r for r in by.get(f["inode"], []) if r.path == f["path"]]
        named += bool(mine)
        ok = any(r.sha256 == f["sha256"] for r in mine)
        exact += ok
        for r in mine:  # complete is only ever said of the exact content
            assert (r.status == "complete") == (r.sha256 == f["sha256"]), f["path"]
            if r.status == "metadata-only":
                assert r.size == f["size"] and r.sha256 is None
        if f["deleted_round"] == truth["rounds"] - 1:
            last[0] += 1
            last[1] += ok
    assert rec.log.records > 500 and not rec.problems
    assert named == len(deleted) == 160
    assert 20 <= exact < len(deleted) and last[1] >= 15
