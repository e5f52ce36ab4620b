"""XFS free space, read from each allocation group's AGF, its by-block-number free-space B+tree
(bnobt) and its free list (AGFL): which filesystem blocks hold no file now.

The bnobt is the authority the allocator itself uses: a block is free exactly when a bnobt leaf
record covers it.  AGFL blocks are held back for the free-space and reverse-map btrees to grow
into; they are not in the bnobt (``xfs_db freesp`` counts them, the allocator does not hand them
to files) and are reported apart.  Nothing here writes; every read goes through READ(offset,
length) on the filesystem, and every pointer is checked against the AG before it is followed.

References:
  "XFS Algorithms & Data Structures" (3rd ed.), chapters "Allocation Groups" (struct xfs_agf:
  magic "XAGF" at 0, agf_seqno 8, agf_length 12, agf_roots[] 16, agf_levels[] 28, agf_flfirst 40,
  agf_fllast 44, agf_flcount 48, agf_freeblks 52, agf_longest 56; the AGF in the AG's second
  sector, the AGFL in its fourth: "XAFL" header of 36 bytes on v5, none on v4), "AG Free Space
  B+trees" (short-form btree blocks: magic "AB3B" (v5, 56-byte header with CRC) / "ABTB" (v4,
  16-byte header), bb_level, bb_numrecs, leaf records xfs_alloc_rec {startblock, blockcount},
  node keys then pointers at header + maxrecs * 8, maxrecs = (blocksize - header) / 12).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pensieve.formats.xfs import Superblock

AGF_MAGIC = b"XAGF"
AGFL_MAGIC = b"XAFL"
BNO_MAGICS = {b"AB3B": 56, b"ABTB": 16}  # magic -> header bytes (v5 crc, v4)
_MAX_LEVELS = 9  # XFS_BTREE_MAXLEVELS is 9 for the AG btrees on any block size


class XfsSpaceError(ValueError):
    """An AGF or free-space btree block that cannot be trusted (why, in words)."""


@dataclass
class AgFree:
    """The free space of one allocation group, as its AGF and bnobt say."""

    agno: int
    length: int  # agf_length: blocks in this AG
    freeblks: int  # agf_freeblks (the AGF's own count of the bnobt's blocks; AGFL apart)
    longest: int
    flcount: int
    #: (agbno, blockcount) leaf records of the bnobt, in order
    extents: list[tuple[int, int]] = field(default_factory=list)
    #: AG block numbers on the free list (AGFL)
    agfl: list[int] = field(default_factory=list)
    btree_blocks: int = 0  # bnobt blocks read
    problems: list[str] = field(default_factory=list)


class FreeSpace:
    """Every AG's free space of the filesystem whose superblock is SB, read through READ."""

    def __init__(self, read: Callable[[int, int], bytes], sb: Superblock) -> None:
        self.read, self.sb = read, sb
        self.ags: list[AgFree] = []
        self.problems: list[str] = []
        for agno in range(sb.agcount):
            try:
                self.ags.append(read_ag(read, sb, agno))
            except (XfsSpaceError, struct.error) as exc:
                self.problems.append(f"AG {agno}: free space unknown: {exc}")
        self._starts: list[int] = []
        self._ends: list[int] = []
        for ag in self.ags:
            for agbno, count in ag.extents:
                fsb = (ag.agno << sb.agblklog) | agbno
                self._starts.append(fsb)
                self._ends.append(fsb + count)
        self.known = {ag.agno for ag in self.ags}

    def is_free(self, fsb: int) -> bool | None:
        """Whether filesystem block FSB (AG number shifted by agblklog | AG block) is in the bnobt;
        None when its AG's free space could not be read."""
        if fsb >> self.sb.agblklog not in self.known:
            return None
        i = bisect.bisect_right(self._starts, fsb) - 1
        return i >= 0 and fsb < self._ends[i]

    def byte_runs(self) -> list[tuple[int, int]]:
        """Free space as [start, end) byte offsets in the filesystem, in order."""
        bs, out = self.sb.blocksize, []
        for ag in self.ags:
            base = ag.agno * self.sb.agblocks
            for agbno, count in ag.extents:
                out.append(((base + agbno) * bs, (base + agbno + count) * bs))
        return out

    @property
    def free_blocks(self) -> int:
        return sum(c for ag in self.ags for _b, c in ag.extents)


def _ag_offset(sb: Superblock, agno: int) -> int:
    return agno * sb.agblocks * sb.blocksize


def read_agf(raw: bytes, sb: Superblock, agno: int) -> dict[str, int]:
    """The AGF fields free space needs, checked against the superblock."""
    if raw[:4] != AGF_MAGIC:
        raise XfsSpaceError(f"bad AGF magic {raw[:4]!r}")
    seqno, length, bnoroot = struct.unpack_from(">III", raw, 8)
    bnolevel = struct.unpack_from(">I", raw, 28)[0]
    flfirst, fllast, flcount, freeblks, longest = struct.unpack_from(">IIIII", raw, 40)
    if seqno != agno:
        raise XfsSpaceError(f"AGF sequence number {seqno}, expected {agno}")
    if not 0 < length <= sb.agblocks:
        raise XfsSpaceError(f"AGF length {length} out of range")
    if not 0 < bnoroot < length:
        raise XfsSpaceError(f"bnobt root {bnoroot} outside the AG")
    if not 1 <= bnolevel <= _MAX_LEVELS:
        raise XfsSpaceError(f"bnobt level {bnolevel} out of range")
    if freeblks > length:
        raise XfsSpaceError(f"AGF free block count {freeblks} above the AG length")
    return {
        "length": length,
        "bnoroot": bnoroot,
        "bnolevel": bnolevel,
        "flfirst": flfirst,
        "fllast": fllast,
        "flcount": flcount,
        "freeblks": freeblks,
        "longest": longest,
    }


def _agfl(read: Callable[[int, int], bytes], sb: Superblock, agno: int, agf: dict[str, int]) -> list[int]:
    """The AGFL entries flfirst..fllast (circular), each checked to lie in the AG."""
    raw = read(_ag_offset(sb, agno) + 3 * sb.sectsize, sb.sectsize)
    hdr = 36 if sb.version == 5 else 0
    if hdr and raw[:4] != AGFL_MAGIC:
        raise XfsSpaceError(f"bad AGFL magic {raw[:4]!r}")
    size = (sb.sectsize - hdr) // 4
    if agf["flcount"] > size or agf["flfirst"] >= size or agf["fllast"] >= size:
        raise XfsSpaceError(
            f"AGFL indices out of range ({agf['flfirst']}..{agf['fllast']}, {agf['flcount']})"
        )
    out = []
    for k in range(agf["flcount"]):
        bno = struct.unpack_from(">I", raw, hdr + 4 * ((agf["flfirst"] + k) % size))[0]
        if bno < agf["length"]:
            out.append(bno)
    return out


def read_ag(read: Callable[[int, int], bytes], sb: Superblock, agno: int) -> AgFree:
    """AG AGNO's AGF, bnobt leaf records (walked from the root, depth first, every block's magic,
    level and record count checked, no block visited twice) and AGFL."""
    agf = read_agf(read(_ag_offset(sb, agno) + sb.sectsize, sb.sectsize), sb, agno)
    ag = AgFree(agno, agf["length"], agf["freeblks"], agf["longest"], agf["flcount"])
    bs = sb.blocksize
    seen: set[int] = set()
    stack = [(agf["bnoroot"], agf["bnolevel"] - 1)]
    while stack:
        bno, level = stack.pop()
        if bno in seen:
            raise XfsSpaceError(f"bnobt block {bno} reached twice (a loop)")
        seen.add(bno)
        blk = read(_ag_offset(sb, agno) + bno * bs, bs)
        hdr = BNO_MAGICS.get(blk[:4])
        if hdr is None:
            raise XfsSpaceError(f"bnobt block {bno}: bad magic {blk[:4]!r}")
        blevel, numrecs = struct.unpack_from(">HH", blk, 4)
        if blevel != level:
            raise XfsSpaceError(f"bnobt block {bno}: level {blevel}, expected {level}")
        if level == 0:
            if numrecs > (bs - hdr) // 8:
                raise XfsSpaceError(f"bnobt leaf {bno}: {numrecs} records do not fit")
            for i in range(numrecs):
                start, count = struct.unpack_from(">II", blk, hdr + 8 * i)
                if count == 0 or start + count > agf["length"]:
                    ag.problems.append(f"bnobt leaf {bno}: record [{start},{count}] outside the AG, left out")
                    continue
                ag.extents.append((start, count))
            continue
        maxrecs = (bs - hdr) // 12
        if numrecs > maxrecs:
            raise XfsSpaceError(f"bnobt node {bno}: {numrecs} pointers do not fit")
        ptrs = struct.unpack_from(f">{numrecs}I", blk, hdr + 8 * maxrecs)
        for p in reversed(ptrs):  # depth first, leftmost child popped first: records stay in order
            if not 0 < p < agf["length"]:
                raise XfsSpaceError(f"bnobt node {bno}: pointer {p} outside the AG")
            stack.append((p, level - 1))
    ag.btree_blocks = len(seen)
    ag.extents.sort()
    try:
        ag.agfl = _agfl(read, sb, agno, agf)
    except XfsSpaceError as exc:
        ag.problems.append(str(exc))
    counted = sum(c for _s, c in ag.extents)
    if counted != ag.freeblks:
        ag.problems.append(f"the bnobt holds {counted} blocks, the AGF says {ag.freeblks} are free")
    return ag
