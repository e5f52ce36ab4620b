"""The XFS log reader (pensieve.formats.xfs_log) on the real kernel-deleted fixture, compared
with xfs_logprint's view of the same log; hostile logs give problems, never an exception."""

from __future__ import annotations

import gzip
import re
import struct

import pytest
import zstandard
from conftest import FIXTURE_ROOT

from pensieve.formats import xfs_log

XD = FIXTURE_ROOT / "xfs_deleted"


@pytest.fixture(scope="module")
def image() -> bytes:
    with open(XD / "xfs_deleted.img.zst", "rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh).read()


def _walk(img: bytes) -> xfs_log.LogContents:
    def read(off: int, n: int) -> bytes:
        return img[off : off + n]

    return xfs_log.walk(xfs_log.open_internal(read, img[:512], ftype=True))


def _second_record(img: bytes) -> int:
    """Byte offset of the second non-empty record header in the log."""
    r = xfs_log.open_internal(lambda o, n: img[o : o + n], img[:512], ftype=True)
    hits = [
        r.offset + bb * 512
        for bb in range(r.bbs)
        if img[r.offset + bb * 512 : r.offset + bb * 512 + 4] == b"\xfe\xed\xba\xbe"
        and struct.unpack_from(">I", img, r.offset + bb * 512 + 12)[0]
    ]
    return hits[1]


def _logprint() -> str:
    with gzip.open(XD / "expected" / "xfs_logprint_physical.txt.gz", "rt") as fh:
        return fh.read()


def test_records_and_inodes_match_xfs_logprint(image: bytes) -> None:
    text = _logprint()
    c = _walk(image)
    # one "cycle: ... lsn:" header line per record in xfs_logprint's physical dump
    assert c.records == len(re.findall(r"^cycle: \d+\s+version", text, re.M))
    logged = {int(m, 16) for m in re.findall(r"INODE: #regs: \d+\s+ino: (0x[0-9a-f]+)", text)}
    assert logged and logged == set(c.inodes)


def test_deleted_inodes_keep_their_extents(image: bytes) -> None:
    import json

    truth = json.loads((XD / "expected" / "truth.json").read_text())["files"]
    c = _walk(image)
    for f in truth:
        versions = c.inodes[f["inode"]]
        files = [v for v in versions if v.mode & 0o170000 == 0o100000]
        assert files and max(v.size for v in files) == f["size"]
        if f["deleted"]:
            assert min(versions, key=lambda v: -v.lsn).mode == 0  # the free was logged last


def test_bmbt_record_decoding() -> None:
    # startoff 5, startblock 0x12345, blockcount 7, unwritten
    v = (1 << 127) | (5 << 73) | (0x12345 << 21) | 7
    assert xfs_log.bmbt_extents(v.to_bytes(16, "big"), 1) == [(5, 0x12345, 7, True)]


def test_truncated_log_is_a_problem_not_a_crash(image: bytes) -> None:
    c0 = _walk(image)
    # cut the log in the middle of its second record's data
    second = _second_record(image)
    cut = image[: second + 700]
    c = _walk(cut)
    assert c.records < c0.records and any("truncated" in p for p in c.problems)


@pytest.mark.parametrize("field,value", [(12, 0xFFFFFFF0), (40, 0xFFFF), (320, 1 << 30)])
def test_corrupt_record_header(image: bytes, field: int, value: int) -> None:
    bad = bytearray(image)
    second = _second_record(image)
    assert bad[second : second + 4] == b"\xfe\xed\xba\xbe"
    struct.pack_into(">I", bad, second + field, value)
    c = _walk(bytes(bad))
    assert c.problems, "a damaged record header must be reported"


def test_garbage_regions_do_not_raise(image: bytes) -> None:
    bad = bytearray(image)
    second = _second_record(image)
    bad[second + 512 + 40 : second + 512 + 3000] = bytes(range(256)) * 11 + bytes(2960 - 2816)
    _walk(bytes(bad))  # must not raise
