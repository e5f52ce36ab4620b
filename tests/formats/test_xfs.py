"""The XFS superblock parser (pensieve.formats.xfs) on the real fixture's superblock, and on
every kind of damage a hostile image can hold: nothing but XfsError comes out."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
import zstandard
from conftest import FIXTURE_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve.formats import xfs

XFS = FIXTURE_ROOT / "xfs"


def _head(size: int) -> bytes:
    with open(XFS / "xfs.img.zst", "rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh).read(size)


HEAD = _head(1 << 20)
SECTOR = HEAD[:512]


def _patched(offset: int, fmt: str, value: int) -> bytes:
    raw = bytearray(SECTOR)
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


def test_fixture_superblock() -> None:
    sb = xfs.Superblock(SECTOR)
    assert sb.version == 5 and sb.blocksize == 4096 and sb.crc_ok is True
    assert sb.label == "pensieve-xfs" and sb.uuid == "5e45e5e0-0000-4000-8000-0000000f5f5f"
    assert sb.size == 300 << 20
    assert {"ftype", "bigtime", "finobt"} <= set(sb.features()) and sb.has_ftype
    assert sb.unreadable() is None
    assert "XFS v5" in sb.describe()


def test_root_inode_core() -> None:
    """The root inode sits where inode_offset says, and its di_size is what the kernel showed."""
    sb = xfs.Superblock(SECTOR)
    at = sb.inode_offset(sb.rootino)
    with gzip.open(XFS / "expected" / "manifest.json.gz") as fh:
        root = next(e for e in json.load(fh) if e["path"] == "/")
    assert xfs.inode_size(_head(at + 512)[at:]) == root["size"]
    with pytest.raises(xfs.XfsError):
        sb.inode_offset(1 << 62)
    with pytest.raises(xfs.XfsError):
        xfs.inode_size(b"\0" * 100)


def test_crc32c() -> None:
    assert xfs.crc32c(b"123456789") == 0xE3069283 == xfs._crc32c_python(b"123456789")


def test_checksum_mismatch_is_reported_not_fatal() -> None:
    raw = _patched(224, "<I", 0x12345678)
    assert xfs.Superblock(raw).crc_ok is False


@pytest.mark.parametrize(
    "offset,fmt,value,words",
    [
        (0, ">I", 0x58465343, "magic"),
        (4, ">I", 3000, "block size"),
        (88, ">I", 0, "allocation groups"),
        (8, ">Q", 1 << 50, "data blocks"),
        (104, ">H", 100, "inode size"),
        (100, ">H", 0xB4B7, "version"),
        (56, ">Q", 0, "root inode"),
    ],
)
def test_corrupt_fields_are_named(offset: int, fmt: str, value: int, words: str) -> None:
    with pytest.raises(xfs.XfsError, match=words):
        xfs.Superblock(_patched(offset, fmt, value))


def test_refused_features() -> None:
    metadir = xfs.Superblock(_patched(216, ">I", xfs.INCOMPAT_FTYPE | xfs.INCOMPAT_METADIR))
    assert "metadata directory" in metadir.unreadable()
    unknown = xfs.Superblock(_patched(216, ">I", 1 << 30))
    assert "unknown incompatible" in unknown.unreadable()


def test_truncated() -> None:
    with pytest.raises(xfs.XfsError, match="truncated"):
        xfs.Superblock(SECTOR[:100])


@settings(max_examples=400, deadline=1000)
@given(st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), min_size=1, max_size=16))
def test_fuzz_superblock(mutations: list[tuple[int, int]]) -> None:
    raw = bytearray(SECTOR)
    for at, byte in mutations:
        raw[at] = byte
    try:
        sb = xfs.Superblock(bytes(raw))
    except xfs.XfsError:
        return
    sb.describe()
    sb.unreadable()
    assert sb.size > 0
    try:
        sb.inode_offset(sb.rootino)
    except xfs.XfsError:
        pass
