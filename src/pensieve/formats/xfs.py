"""The XFS superblock, parsed and checked before any other XFS structure is trusted.

pensieve reads the files of an XFS filesystem through libfsxfs (``pyfsxfs`` from
libfsxfs-python, see :mod:`pensieve.evidence.xfs`), not through a reader of its own: the binding
exposes what the container engines and overlay need (extended attributes by full name
with their namespace prefix -- ``trusted.overlay.opaque``, ``user.*`` -- in short-form and leaf
forks, device numbers, so whiteouts are char 0/0, nanosecond timestamps including ``bigtime``,
owners, link counts, short-form/block/leaf/node directories, local and remote symlinks; its gaps
are listed in that module's docstring), reads through a file object
that pensieve opens read-only, and survived the mutation fuzzing of metadata blocks in
``tests/evidence/test_xfs_evidence.py``.
What it does not do is say *why* a filesystem is unreadable in words a responder can act on,
nor refuse features it silently misreads.  This module does that part: the primary superblock
(sector 0 of the filesystem) checked the way the kernel's ``xfs_validate_sb_common`` does.

Layout: ``struct xfs_dsb`` in the kernel's ``fs/xfs/libxfs/xfs_format.h`` (all fields
big-endian); the version-5 CRC is CRC32c over the sector with the ``sb_crc`` field (offset 224)
taken as zero, stored little-endian (``xfs_update_cksum``).
"""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Callable

MAGIC = b"XFSB"

#: sb_features_incompat bits (xfs_format.h XFS_SB_FEAT_INCOMPAT_*)
INCOMPAT_FTYPE = 0x1
INCOMPAT_SPINODES = 0x2
INCOMPAT_META_UUID = 0x4
INCOMPAT_BIGTIME = 0x8
INCOMPAT_NEEDSREPAIR = 0x10
INCOMPAT_NREXT64 = 0x20
INCOMPAT_EXCHRANGE = 0x40
INCOMPAT_PARENT = 0x80
INCOMPAT_METADIR = 0x100
_INCOMPAT_NAMES = {
    INCOMPAT_FTYPE: "ftype",
    INCOMPAT_SPINODES: "sparse inodes",
    INCOMPAT_META_UUID: "meta_uuid",
    INCOMPAT_BIGTIME: "bigtime",
    INCOMPAT_NEEDSREPAIR: "needsrepair",
    INCOMPAT_NREXT64: "nrext64",
    INCOMPAT_EXCHRANGE: "exchange-range",
    INCOMPAT_PARENT: "parent pointers",
    INCOMPAT_METADIR: "metadata directory",
}
#: incompatible features whose on-disk changes libfsxfs is not known to read; refused by name
#: (metadir moves the realtime and quota inodes, which pensieve does not read, but also changes
#: the inode core's flags2 meaning for them: refused until tested)
_INCOMPAT_UNREAD = INCOMPAT_METADIR
#: sb_features_ro_compat bits (XFS_SB_FEAT_RO_COMPAT_*)
_RO_COMPAT_NAMES = {0x1: "finobt", 0x2: "rmapbt", 0x4: "reflink", 0x8: "inobtcount"}

_VERSION_NUMBITS = 0x000F
_FEATURES2_FTYPE = 0x200  # XFS_SB_VERSION2_FTYPE on version 4


class XfsError(ValueError):
    """Not an XFS superblock pensieve can read (why, in words)."""


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


@functools.cache
def _crc32c_table_cached() -> tuple[int, ...]:
    return tuple(_crc32c_table())


def _crc32c_python(data: bytes) -> int:
    """CRC32c (Castagnoli, reflected), where anycrc is not installed."""
    table = _crc32c_table_cached()
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _crc32c_function() -> Callable[[bytes], int]:
    try:
        import anycrc
    except ImportError:  # pragma: no cover - anycrc is a declared dependency
        return _crc32c_python
    return anycrc.Model("CRC32-ISCSI").calc


crc32c = _crc32c_function()


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Superblock:
    """The fields of the primary superblock that say what the filesystem is and whether it is sane."""

    __slots__ = (
        "blocksize",
        "dblocks",
        "uuid",
        "rootino",
        "agblocks",
        "agcount",
        "version",
        "sectsize",
        "inodesize",
        "label",
        "features2",
        "features_ro_compat",
        "features_incompat",
        "crc_ok",
        "agblklog",
        "inopblog",
    )

    def __init__(self, raw: bytes) -> None:
        """Parse and check RAW (the first sector of the filesystem, at least 512 bytes): XfsError
        naming the first field that is out of range (the kernel's xfs_validate_sb_common order)."""
        if len(raw) < 512:
            raise XfsError(f"truncated superblock ({len(raw)} bytes)")
        if raw[:4] != MAGIC:
            raise XfsError(f"bad superblock magic {raw[:4]!r}")
        self.blocksize, self.dblocks = struct.unpack_from(">IQ", raw, 4)
        self.uuid = str(uuid.UUID(bytes=raw[32:48]))
        self.rootino = struct.unpack_from(">Q", raw, 56)[0]
        self.agblocks, self.agcount = struct.unpack_from(">II", raw, 84)
        versionnum, self.sectsize, self.inodesize, inopblock = struct.unpack_from(">HHHH", raw, 100)
        self.label = raw[108:120].split(b"\0", 1)[0].decode("utf-8", "replace")
        blocklog, sectlog, inodelog, inopblog, agblklog = raw[120:125]
        self.agblklog, self.inopblog = agblklog, inopblog
        self.features2 = struct.unpack_from(">I", raw, 200)[0]
        self.version = versionnum & _VERSION_NUMBITS
        self.features_ro_compat = self.features_incompat = 0
        self.crc_ok = None
        if self.version == 5:
            self.features_ro_compat, self.features_incompat = struct.unpack_from(">II", raw, 212)
            stored = struct.unpack_from("<I", raw, 224)[0]
            self.crc_ok = crc32c(raw[:224] + b"\0\0\0\0" + raw[228 : self.sectsize or 512]) == stored
        elif self.version != 4:
            raise XfsError(f"unknown superblock version {self.version}")
        checks = (
            (_power_of_two(self.sectsize) and 512 <= self.sectsize <= 32768, "sector size", self.sectsize),
            (1 << sectlog == self.sectsize, "sector log", sectlog),
            (_power_of_two(self.blocksize) and 512 <= self.blocksize <= 65536, "block size", self.blocksize),
            (1 << blocklog == self.blocksize, "block log", blocklog),
            (_power_of_two(self.inodesize) and 256 <= self.inodesize <= 2048, "inode size", self.inodesize),
            (1 << inodelog == self.inodesize, "inode log", inodelog),
            (self.inodesize <= self.blocksize, "inode size above block size", self.inodesize),
            (inopblock == self.blocksize // max(1, self.inodesize), "inodes per block", inopblock),
            (1 << inopblog == inopblock, "inodes-per-block log", inopblog),
            (self.agcount > 0 and self.agblocks >= 5, "allocation groups", (self.agcount, self.agblocks)),
            (1 << agblklog >= self.agblocks > 1 << max(0, agblklog - 1), "AG block log", agblklog),
            (0 < self.dblocks <= self.agcount * self.agblocks, "data blocks", self.dblocks),
            (self.dblocks > (self.agcount - 1) * self.agblocks, "data blocks for the AG count", self.dblocks),
            (self.rootino != 0, "root inode", self.rootino),
        )
        for ok, what, value in checks:
            if not ok:
                raise XfsError(f"superblock {what} out of range: {value}")

    @property
    def size(self) -> int:
        """Bytes the filesystem spans."""
        return self.dblocks * self.blocksize

    @property
    def has_ftype(self) -> bool:
        return bool(self.features_incompat & INCOMPAT_FTYPE or self.features2 & _FEATURES2_FTYPE)

    def features(self) -> list[str]:
        """Names of the incompatible and read-only-compatible features set."""
        names = [n for bit, n in _INCOMPAT_NAMES.items() if self.features_incompat & bit]
        names += [n for bit, n in _RO_COMPAT_NAMES.items() if self.features_ro_compat & bit]
        return names

    def unreadable(self) -> str | None:
        """Why pensieve refuses to read this filesystem's files, or None."""
        unknown = self.features_incompat & ~(max(_INCOMPAT_NAMES) * 2 - 1)
        if unknown:
            return f"unknown incompatible features {unknown:#x}"
        if self.features_incompat & _INCOMPAT_UNREAD:
            refused = self.features_incompat & _INCOMPAT_UNREAD
            names = [n for bit, n in _INCOMPAT_NAMES.items() if refused & bit]
            return f"feature not supported: {', '.join(names)}"
        return None

    def inode_offset(self, ino: int) -> int:
        """Byte offset of inode INO in the filesystem (``XFS_INO_TO_AGNO/AGBNO/OFFSET``), XfsError
        for a number outside it."""
        agno = ino >> (self.agblklog + self.inopblog)
        agbno = (ino >> self.inopblog) & ((1 << self.agblklog) - 1)
        slot = ino & ((1 << self.inopblog) - 1)
        if agno >= self.agcount or agbno >= self.agblocks:
            raise XfsError(f"inode {ino} outside the filesystem")
        return (agno * self.agblocks + agbno) * self.blocksize + slot * self.inodesize

    def describe(self) -> str:
        label = f" label {self.label!r}" if self.label else ""
        return (
            f"XFS v{self.version}{label}, {self.blocksize}-byte blocks, {self.agcount} AGs, "
            f"{self.size} bytes, features: {', '.join(self.features()) or 'none'}"
        )


#: inode core (``struct xfs_dinode``): di_magic "IN" at 0, di_size (big-endian u64) at 56
INODE_MAGIC = b"IN"
_DI_SIZE = 56


def inode_size(core: bytes) -> int:
    """``di_size`` of an inode core CORE (at least 64 bytes); XfsError when it is not one."""
    if len(core) < _DI_SIZE + 8 or core[:2] != INODE_MAGIC:
        raise XfsError("not an inode core (bad magic)")
    return struct.unpack_from(">Q", core, _DI_SIZE)[0]
