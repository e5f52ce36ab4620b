"""On-disk XFS inodes (the inode core and its data fork's block map) and the AGI unlinked lists.

An inode on an AGI unlinked bucket has link count 0 and is still allocated: a file some process
held open when its last name was removed (or, after a crash, one the kernel had not yet
inactivated).  Its data fork still maps its blocks, so its content is read in full from the
inode itself; only its name has to come from elsewhere (the log).

References:
  "XFS Algorithms & Data Structures" (3rd ed.), chapters "On-disk Inode" (struct xfs_dinode,
  big-endian: di_magic "IN" 0, di_mode 2, di_version 4, di_format 5, di_uid 8, di_gid 12,
  di_nlink 16, di_big_nextents 24 (nrext64), di_atime 32, di_mtime 40, di_ctime 48, di_size 56,
  di_nblocks 64, di_nextents 76, di_forkoff 82, di_next_unlinked 96, v3: di_flags2 120,
  di_crtime 144, literal area at 176 (v3) / 100 (v2)), "Data Extents" (xfs_bmbt_rec: 128 bits),
  "Extent B+tree" (xfs_bmdr_block root in the fork, long-form blocks "BMA3" with a 72-byte header
  / "BMAP" with 24, keys then pointers at header + maxrecs * 8), "AG Inode Management" (struct
  xfs_agi: magic "XAGI", agi_seqno 8, agi_unlinked[64] at 40; the AGI in the AG's third sector).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pensieve.formats.xfs import Superblock
from pensieve.formats.xfs_log import bmbt_extents

AGI_MAGIC = b"XAGI"
NULLAGINO = 0xFFFFFFFF
FMT_EXTENTS, FMT_BTREE = 2, 3
_BMAP_MAGICS = {b"BMA3": 72, b"BMAP": 24}
_DIFLAG2_BIGTIME = 0x8
_DIFLAG2_NREXT64 = 0x10
_BIGTIME_EPOCH = 1 << 31
#: extents read from one file's btree at most (a hostile tree is cut there, with a problem)
MAX_EXTENTS = 1 << 20
#: inodes followed along one unlinked chain at most
MAX_CHAIN = 1 << 16


class XfsInodeError(ValueError):
    """An inode or AGI that cannot be trusted (why, in words)."""


@dataclass
class DiskInode:
    """The fields of an on-disk inode that recovery needs, with its data extents."""

    ino: int
    mode: int
    fmt: int
    uid: int
    gid: int
    nlink: int
    size: int
    atime: float
    mtime: float
    ctime: float
    crtime: float | None
    next_unlinked: int
    #: (file offset block, filesystem block, block count, unwritten)
    extents: list[tuple[int, int, int, bool]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _ts(raw: bytes, off: int, big: bool) -> float:
    if big:
        return struct.unpack_from(">Q", raw, off)[0] / 1e9 - _BIGTIME_EPOCH
    sec, nsec = struct.unpack_from(">iI", raw, off)
    return sec + nsec / 1e9


def read_inode(read: Callable[[int, int], bytes], sb: Superblock, ino: int) -> DiskInode:
    """Inode INO of the filesystem (its core and, for extent and btree forks, every extent)."""
    raw = read(sb.inode_offset(ino), sb.inodesize)
    if len(raw) < 100 or raw[:2] != b"IN":
        raise XfsInodeError(f"inode {ino}: bad magic {raw[:2]!r}")
    mode, version, fmt = struct.unpack_from(">HBB", raw, 2)
    uid, gid, nlink = struct.unpack_from(">III", raw, 8)
    size = struct.unpack_from(">q", raw, 56)[0]
    nextents = struct.unpack_from(">I", raw, 76)[0]
    forkoff = raw[82]
    next_unlinked = struct.unpack_from(">I", raw, 96)[0]
    v3 = version >= 3 and len(raw) >= 176
    flags2 = struct.unpack_from(">Q", raw, 120)[0] if v3 else 0
    big = bool(flags2 & _DIFLAG2_BIGTIME)
    if flags2 & _DIFLAG2_NREXT64:
        nextents = struct.unpack_from(">Q", raw, 24)[0]
    lit = 176 if v3 else 100
    fork_end = lit + forkoff * 8 if forkoff else len(raw)
    fork = raw[lit:fork_end]
    di = DiskInode(
        ino,
        mode,
        fmt,
        uid,
        gid,
        nlink,
        size,
        _ts(raw, 32, big),
        _ts(raw, 40, big),
        _ts(raw, 48, big),
        _ts(raw, 144, big) if v3 else None,
        next_unlinked,
    )
    if fmt == FMT_EXTENTS:
        di.extents = bmbt_extents(fork, nextents)
    elif fmt == FMT_BTREE:
        di.extents = _btree_extents(read, sb, fork, di.problems)
    return di


def _fsb_offset(sb: Superblock, fsb: int) -> int:
    agno, agbno = fsb >> sb.agblklog, fsb & ((1 << sb.agblklog) - 1)
    if agno >= sb.agcount or agbno >= sb.agblocks:
        raise XfsInodeError(f"block {fsb} outside the filesystem")
    return (agno * sb.agblocks + agbno) * sb.blocksize


def _btree_extents(
    read: Callable[[int, int], bytes], sb: Superblock, fork: bytes, problems: list[str]
) -> list[tuple[int, int, int, bool]]:
    """Every extent of a btree-format data fork: the root in the inode (xfs_bmdr_block: level,
    numrecs, keys, pointers at 4 + maxrecs * 8), long-form blocks below, leaves in key order."""
    level, numrecs = struct.unpack_from(">HH", fork, 0)
    maxrecs = (len(fork) - 4) // 16
    if not 1 <= level <= 9 or numrecs > maxrecs:
        problems.append(f"data fork btree root: level {level}, {numrecs} records: not read")
        return []
    stack = [(p, level - 1) for p in reversed(struct.unpack_from(f">{numrecs}Q", fork, 4 + maxrecs * 8))]
    out: list[tuple[int, int, int, bool]] = []
    seen: set[int] = set()
    while stack and len(out) < MAX_EXTENTS:
        fsb, want = stack.pop()
        try:
            if fsb in seen:
                raise XfsInodeError(f"bmbt block {fsb} reached twice")
            seen.add(fsb)
            blk = read(_fsb_offset(sb, fsb), sb.blocksize)
            hdr = _BMAP_MAGICS.get(blk[:4])
            if hdr is None:
                raise XfsInodeError(f"bmbt block {fsb}: bad magic {blk[:4]!r}")
            lvl, n = struct.unpack_from(">HH", blk, 4)
            if lvl != want:
                raise XfsInodeError(f"bmbt block {fsb}: level {lvl}, expected {want}")
            if lvl == 0:
                out.extend(bmbt_extents(blk[hdr:], min(n, (sb.blocksize - hdr) // 16)))
                continue
            mr = (sb.blocksize - hdr) // 16
            ptrs = struct.unpack_from(f">{min(n, mr)}Q", blk, hdr + 8 * mr)
            stack.extend((p, lvl - 1) for p in reversed(ptrs))
        except (XfsInodeError, struct.error) as exc:
            problems.append(f"data fork btree: {exc}; the extents below it are missing")
    if len(out) >= MAX_EXTENTS:
        problems.append(f"data fork btree: more than {MAX_EXTENTS} extents, cut there")
    return out


def unlinked_inodes(read: Callable[[int, int], bytes], sb: Superblock) -> tuple[list[int], list[str]]:
    """(inode numbers on every AG's AGI unlinked buckets, chains followed through
    di_next_unlinked, problems)."""
    out: list[int] = []
    problems: list[str] = []
    for agno in range(sb.agcount):
        raw = read(agno * sb.agblocks * sb.blocksize + 2 * sb.sectsize, sb.sectsize)
        if raw[:4] != AGI_MAGIC or struct.unpack_from(">I", raw, 8)[0] != agno:
            problems.append(f"AG {agno}: AGI unreadable (magic {raw[:4]!r}): its unlinked lists unknown")
            continue
        for bucket in range(64):
            agino = struct.unpack_from(">I", raw, 40 + 4 * bucket)[0]
            seen: set[int] = set()
            while agino != NULLAGINO and len(seen) < MAX_CHAIN:
                ino = (agno << (sb.agblklog + sb.inopblog)) | agino
                if agino in seen:
                    problems.append(f"AG {agno} unlinked bucket {bucket}: chain loops at {ino}")
                    break
                seen.add(agino)
                try:
                    di = read_inode(read, sb, ino)
                except (XfsInodeError, ValueError, struct.error) as exc:
                    problems.append(f"AG {agno} unlinked bucket {bucket}: {exc}")
                    break
                out.append(ino)
                agino = di.next_unlinked
    return out, problems
