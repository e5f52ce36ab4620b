"""The XFS free-space reader (pensieve.formats.xfs_space) against xfsprogs' own view of the same
real images (expected/xfs_db_freesp.txt: `xfs_db -r` agf prints, bnobt roots, `freesp -d`, by
fixtures/capture/xfs_space_reference.sh); hostile AGFs and btree blocks give problems or
XfsSpaceError, never a wrong extent or an endless walk."""

from __future__ import annotations

import re
import struct
from collections import Counter

import pytest
import zstandard
from conftest import FIXTURE_ROOT

from pensieve.formats import xfs_log
from pensieve.formats.xfs import Superblock
from pensieve.formats.xfs_space import FreeSpace, XfsSpaceError, read_ag

FIXTURES = {"xfs_deleted": "xfs_deleted.img.zst", "xfs": "xfs.img.zst", "xfs_busy": "xfs_busy.img.zst"}


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def case(request) -> tuple[str, bytes]:
    name = request.param
    with open(FIXTURE_ROOT / name / FIXTURES[name], "rb") as fh:
        return name, zstandard.ZstdDecompressor().stream_reader(fh).read()


def _reference(name: str) -> tuple[dict[int, dict[str, str]], dict[int, list[tuple[int, int]]], Counter]:
    """(AGF fields per AG, bnobt root leaf records per AG, freesp -d extents) from the xfs_db text."""
    text = (FIXTURE_ROOT / name / "expected" / "xfs_db_freesp.txt").read_text()
    agfs: dict[int, dict[str, str]] = {}
    roots: dict[int, list[tuple[int, int]]] = {}
    freesp: Counter = Counter()
    for section in re.split(r"^== ", text, flags=re.M)[1:]:
        head, _, body = section.partition("\n")
        if m := re.fullmatch(r"agf (\d+)", head):
            agfs[int(m[1])] = dict(re.findall(r"^(\w+) = (.*)$", body, re.M))
        elif m := re.fullmatch(r"agf (\d+) bnoroot", head):
            roots[int(m[1])] = [(int(a), int(b)) for a, b in re.findall(r"\d+:\[(\d+),(\d+)\]", body)]
        elif head == "freesp -d":
            for a, b, c in re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)$", body, re.M):
                freesp[(int(a), int(b), int(c))] += 1
    return agfs, roots, freesp


def _read(img: bytes):
    return lambda off, n: img[off : off + n]


def test_every_ag_matches_xfs_db(case) -> None:
    name, img = case
    agfs, roots, freesp = _reference(name)
    sb = Superblock(img[:512])
    fs = FreeSpace(_read(img), sb)
    assert not fs.problems and len(fs.ags) == sb.agcount == len(agfs)
    mine: Counter = Counter()
    for ag in fs.ags:
        ref = agfs[ag.agno]
        assert (ag.length, ag.freeblks, ag.longest, ag.flcount) == tuple(
            int(ref[k]) for k in ("length", "freeblks", "longest", "flcount")
        )
        assert not ag.problems
        if ref["bnolevel"] == "1":  # a leaf root: its records are every free extent
            assert ag.extents == roots[ag.agno] and ag.btree_blocks == 1
        else:  # a node root (xfs_busy AG 0): several leaves walked, all of freesp's extents found
            assert ag.btree_blocks > 1 and len(ag.extents) > 505
        mine.update((ag.agno, b, c) for b, c in ag.extents)
        mine.update((ag.agno, b, 1) for b in ag.agfl)  # freesp counts the AGFL blocks too
    assert mine == freesp and sum(ag.freeblks for ag in fs.ags) == fs.free_blocks
    if name == "xfs_busy":
        assert any(a["bnolevel"] != "1" for a in agfs.values())


def test_deleted_blocks_are_free_live_blocks_are_not() -> None:
    """On xfs_deleted nothing was written after the rm: every block the log shows a deleted file
    mapping is in the bnobt, every block of a kept file's last logged version is not."""
    import json

    with open(FIXTURE_ROOT / "xfs_deleted" / "xfs_deleted.img.zst", "rb") as fh:
        img = zstandard.ZstdDecompressor().stream_reader(fh).read()
    truth = json.loads((FIXTURE_ROOT / "xfs_deleted" / "expected" / "truth.json").read_text())["files"]
    sb = Superblock(img[:512])
    fs = FreeSpace(_read(img), sb)
    log = xfs_log.walk(xfs_log.open_internal(_read(img), img[:512], ftype=True))
    checked = {True: 0, False: 0}
    for f in truth:
        versions = [v for v in log.inodes.get(f["inode"], []) if v.extents]
        if not versions:
            continue
        v = max(versions, key=lambda v: v.lsn)
        for _off, start, count, _u in v.extents:
            for b in range(start, start + count):
                assert fs.is_free(b) is f["deleted"], (f["path"], b)
                checked[f["deleted"]] += 1
    assert checked[True] > 100 and checked[False] > 10


def _patched(img: bytes, sb: Superblock, agno: int, rel: int, data: bytes) -> bytes:
    at = agno * sb.agblocks * sb.blocksize + rel
    return img[:at] + data + img[at + len(data) :]


def _bnoroot(img: bytes, sb: Superblock, agno: int) -> int:
    return struct.unpack_from(">I", img, agno * sb.agblocks * sb.blocksize + sb.sectsize + 16)[0]


def test_hostile_agf_and_btree_blocks(case) -> None:
    _name, img = case
    sb = Superblock(img[:512])
    root = _bnoroot(img, sb, 0) * sb.blocksize
    bad_magic = _patched(img, sb, 0, root, b"XXXX")
    fs = FreeSpace(_read(bad_magic), sb)
    assert len(fs.ags) == sb.agcount - 1 and "bad magic" in fs.problems[0]
    assert fs.is_free(10) is None  # AG 0 unknown: neither free nor allocated
    # the root claims to be a node pointing at itself: a loop, refused
    node = struct.pack(">HH", 1, 1)
    looped = _patched(img, sb, 0, root + 4, node)
    hdr = 56 if sb.version == 5 else 16
    looped = _patched(
        looped, sb, 0, root + hdr + 8 * ((sb.blocksize - hdr) // 12), struct.pack(">I", root // sb.blocksize)
    )
    agf = bytearray(looped[sb.sectsize : sb.sectsize + 64])
    struct.pack_into(">I", agf, 28, 2)  # bnolevel 2
    looped = _patched(looped, sb, 0, sb.sectsize, bytes(agf))
    with pytest.raises(XfsSpaceError, match="twice|level"):
        read_ag(_read(looped), sb, 0)
    # a leaf record past the AG end is left out with a problem; the count mismatch is said
    leaf = next(a for a in range(sb.agcount) if read_ag(_read(img), sb, a).btree_blocks == 1)
    lroot = _bnoroot(img, sb, leaf) * sb.blocksize
    past = _patched(img, sb, leaf, lroot + hdr, struct.pack(">II", sb.agblocks - 1, 50))
    ag = read_ag(_read(past), sb, leaf)
    assert any("outside the AG" in p for p in ag.problems) and any("AGF says" in p for p in ag.problems)
    assert all(b + c <= ag.length for b, c in ag.extents)
    # a record count that cannot fit, an AGF of another AG
    huge = _patched(img, sb, 0, root + 6, struct.pack(">H", 0xFFFF))
    with pytest.raises(XfsSpaceError, match="do not fit"):
        read_ag(_read(huge), sb, 0)
    with pytest.raises(XfsSpaceError, match="sequence number"):
        read_ag(lambda o, n: img[o + sb.agblocks * sb.blocksize : o + sb.agblocks * sb.blocksize + n], sb, 0)
