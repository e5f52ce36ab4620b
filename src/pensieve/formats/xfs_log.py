"""The XFS journal (internal log), read record by record over the whole circular log.

What it yields is what the log still holds of the past: every logged inode core (older versions
of inodes since freed: mode, size, times, owners, the data-fork extent list or short-form
directory), every logged directory block's entries (name -> inode number), AGI unlinked buckets
and the extents that extent-free intents (EFI) released.  Records of earlier cycles that the
head has not yet overwritten are read too: the log is scanned block by block for record headers,
not only from tail to head (which is all a cleanly unmounted log has, and empty).

References:
  "XFS Algorithms & Data Structures" (3rd ed., kernel Documentation/filesystems/xfs), chapters
  "Journaling Log" (xlog_rec_header magic 0xFEEDBABE, cycle stamping in h_cycle_data,
  xlog_op_header, xfs_trans_header 'TRAN', log item types XFS_LI_*, xfs_inode_log_format,
  xfs_buf_log_format with blf_data_map in 128-byte chunks, xfs_log_dinode in host byte order),
  "On-disk Inode" (data fork extent records, 128-bit bmbt records), "Directories" (XDB3/XDD3
  data blocks, short-form directories), "AG Inode Management" (agi_unlinked[64]);
  the kernel's fs/xfs/libxfs/xfs_log_format.h for field offsets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

BBSIZE = 512
REC_MAGIC = 0xFEEDBABE
_CYCLE_WORDS = 32768 // BBSIZE  # h_cycle_data entries per header (XLOG_HEADER_CYCLE_SIZE / BBSIZE)
#: xlog_op_header flags
OP_START, OP_COMMIT, OP_CONTINUE, OP_WAS_CONT, OP_END, OP_UNMOUNT = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
CLIENT_TRANS = 0x69
TRANS_MAGIC = 0x5452414E  # 'TRAN' (host order)
LI_EFI, LI_INODE, LI_BUF = 0x1236, 0x123B, 0x123C
#: ilf_fields
ILOG_CORE, ILOG_DDATA, ILOG_DEXT = 0x1, 0x2, 0x4
BLF_CHUNK = 128
DIR_DATA_MAGICS = (b"XDB3", b"XDD3", b"XD2B", b"XD2D")
AGI_MAGIC = b"XAGI"
_BIGTIME_EPOCH = 1 << 31  # XFS_BIGTIME_EPOCH_OFFSET
_DIFLAG2_BIGTIME = 0x8
#: records past this many bytes (h_size is at most 256 KiB) are refused as corrupt
_MAX_REC = 256 * 1024


@dataclass
class LoggedInode:
    """One logged version of an inode (xfs_log_dinode + data fork)."""

    ino: int
    lsn: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    mtime: float
    ctime: float
    atime: float
    crtime: float | None
    fmt: int
    next_unlinked: int
    #: (file offset block, filesystem block, block count, unwritten) from the data fork
    extents: list[tuple[int, int, int, bool]] = field(default_factory=list)
    #: short-form directory entries (name, inode) when this is a local-format directory
    sf_entries: list[tuple[bytes, int]] = field(default_factory=list)
    sf_parent: int = 0
    gen: int = 0  # di_gen: changes when the inode number is freed and allocated again


@dataclass
class LogContents:
    """What a walk of the log found, with the problems met on the way."""

    inodes: dict[int, list[LoggedInode]] = field(default_factory=dict)
    #: (directory inode or 0 when unknown, name, inode, lsn) from logged directory data blocks
    dirents: list[tuple[int, bytes, int, int]] = field(default_factory=list)
    #: (agno, bucket, agino) non-empty agi_unlinked buckets seen in logged AGI buffers
    unlinked: set[tuple[int, int, int]] = field(default_factory=set)
    #: (fsblock, length) released by extent-free intents
    freed: list[tuple[int, int]] = field(default_factory=list)
    records: int = 0
    transactions: int = 0
    problems: list[str] = field(default_factory=list)

    def latest(self, ino: int) -> LoggedInode | None:
        versions = self.inodes.get(ino)
        return max(versions, key=lambda v: v.lsn) if versions else None


@dataclass
class _Record:
    lsn: int
    ops: list[tuple[int, int, int, bytes]]  # (tid, flags, clientid, region)


def _restore_cycles(hdr: bytes, data: bytearray, nblocks: int) -> None:
    """Put back the first word of each data block, which the cycle number overwrote."""
    for i in range(min(nblocks, _CYCLE_WORDS)):
        data[i * BBSIZE : i * BBSIZE + 4] = hdr[44 + 4 * i : 48 + 4 * i]


def parse_record(read: Callable[[int, int], bytes], bb: int, log_bbs: int) -> tuple[_Record, int]:
    """The log record whose header is at basic block BB of the log: (record, blocks it spans);
    ValueError when the header is not sane.  READ(bb, count) returns COUNT log blocks (wrapping)."""
    hdr = read(bb, 1)
    magic, _cycle, version, length = struct.unpack_from(">IIII", hdr, 0)
    if magic != REC_MAGIC or version not in (1, 2):
        raise ValueError("no record header")
    lsn, _tail = struct.unpack_from(">QQ", hdr, 16)
    (num_ops,) = struct.unpack_from(">I", hdr, 40)
    h_size = struct.unpack_from(">I", hdr, 320)[0] if version == 2 else 32768
    if length == 0:
        raise ValueError("no record header")  # the headers mkfs/log clearing writes hold nothing
    if length > _MAX_REC or h_size > _MAX_REC:
        raise ValueError(f"record length {length} out of range")
    hblocks = max(1, -(-h_size // 32768)) if version == 2 else 1
    dblocks = -(-length // BBSIZE)
    if hblocks + dblocks > log_bbs:
        raise ValueError("record longer than the log")
    if hblocks > 1:  # extended headers hold further cycle words; only the first 32 KiB is fixed up
        dblocks_fixed = _CYCLE_WORDS
    else:
        dblocks_fixed = dblocks
    data = bytearray(read(bb + hblocks, dblocks))
    if len(data) < length:
        raise ValueError(f"record truncated ({len(data)} of {length} bytes)")
    _restore_cycles(hdr, data, dblocks_fixed)
    if hblocks > 1:
        ext = read(bb + 1, hblocks - 1)
        for i in range(_CYCLE_WORDS, dblocks):
            j = i - _CYCLE_WORDS
            off = (j // _CYCLE_WORDS) * BBSIZE + 4 + 4 * (j % _CYCLE_WORDS)
            data[i * BBSIZE : i * BBSIZE + 4] = ext[off : off + 4]
    ops: list[tuple[int, int, int, bytes]] = []
    pos = 0
    for _ in range(num_ops):
        if pos + 12 > length:
            raise ValueError("operation header past the record end")
        tid, olen, client, flags = struct.unpack_from(">IIBB", data, pos)
        pos += 12
        if pos + olen > length:
            raise ValueError("operation past the record end")
        ops.append((tid, flags, client, bytes(data[pos : pos + olen])))
        pos += olen
    return _Record(lsn, ops), hblocks + dblocks


def _ts(raw: bytes, off: int, bigtime: bool) -> float:
    if bigtime:
        ns = struct.unpack_from("<Q", raw, off)[0]
        return ns / 1e9 - _BIGTIME_EPOCH
    sec, nsec = struct.unpack_from("<iI", raw, off)
    return sec + nsec / 1e9


def bmbt_extents(fork: bytes, count: int) -> list[tuple[int, int, int, bool]]:
    """Extent records (xfs_bmbt_rec, 128 bits big-endian) of a data fork in extent format."""
    out = []
    for i in range(min(count, len(fork) // 16)):
        hi, lo = struct.unpack_from(">QQ", fork, 16 * i)
        unwritten = bool(hi >> 63)
        startoff = (hi >> 9) & ((1 << 54) - 1)
        startblock = ((hi & 0x1FF) << 43) | (lo >> 21)
        out.append((startoff, startblock, lo & 0x1FFFFF, unwritten))
    return out


def shortform_dir(fork: bytes, ftype: bool) -> tuple[int, list[tuple[bytes, int]]]:
    """(parent, [(name, inode)]) of a short-form directory (xfs_dir2_sf_hdr + entries)."""
    if len(fork) < 6:
        return 0, []
    count, i8 = fork[0], fork[1]
    isz = 8 if i8 else 4
    parent = int.from_bytes(fork[2 : 2 + isz], "big")
    pos, out = 2 + isz, []
    for _ in range(count or i8):
        if pos + 3 > len(fork):
            break
        nlen = fork[pos]
        name = fork[pos + 3 : pos + 3 + nlen]
        pos += 3 + nlen + (1 if ftype else 0)
        if nlen == 0 or pos + isz > len(fork):
            break
        out.append((name, int.from_bytes(fork[pos : pos + isz], "big")))
        pos += isz
    return parent, out


def dir_data_entries(block: bytes, ftype: bool) -> Iterator[tuple[bytes, int]]:
    """(name, inode) of the live entries in a (possibly partial) directory data block image."""
    hdr = 64 if block[:4] in (b"XDB3", b"XDD3") else 16
    pos, end = hdr, len(block)
    while pos + 16 <= end:
        if block[pos : pos + 2] == b"\xff\xff":
            ln = struct.unpack_from(">H", block, pos + 2)[0]
            pos += ln if ln >= 8 and ln % 8 == 0 else 8
            continue
        ino = struct.unpack_from(">Q", block, pos)[0]
        nlen = block[pos + 8]
        size = (8 + 1 + nlen + (1 if ftype else 0) + 2 + 7) & ~7
        name = block[pos + 9 : pos + 9 + nlen]
        tag = block[pos + size - 2 : pos + size] if pos + size <= end else b""
        plausible = ino and nlen and len(name) == nlen and b"/" not in name and b"\0" not in name
        if plausible and len(tag) == 2 and struct.unpack(">H", tag)[0] == pos:
            yield name, ino
            pos += size
            continue
        pos += 8


class LogReader:
    """Walks an internal XFS log read through READ(byte offset, length) (an evidence reader)."""

    def __init__(
        self, read: Callable[[int, int], bytes], log_offset: int, log_bytes: int, *, ftype: bool
    ) -> None:
        self._read = read
        self.offset, self.bbs, self.ftype = log_offset, log_bytes // BBSIZE, ftype

    def _blocks(self, bb: int, count: int) -> bytes:
        out = bytearray()
        while count > 0:
            bb %= self.bbs
            n = min(count, self.bbs - bb)
            out += self._read(self.offset + bb * BBSIZE, n * BBSIZE)
            bb, count = bb + n, count - n
        return bytes(out)

    def records(self, problems: list[str]) -> list[_Record]:
        """Every record header found in the log, in LSN order (scanned 1 MiB at a time)."""
        found: list[_Record] = []
        chunk = 2048
        bb = 0
        while bb < self.bbs:
            buf = self._blocks(bb, min(chunk, self.bbs - bb))
            if len(buf) < BBSIZE:
                problems.append(f"log truncated at block {bb} of {self.bbs}: the rest is not on the evidence")
                break
            skip_to = bb + len(buf) // BBSIZE
            i = 0
            while i < len(buf) // BBSIZE:
                if buf[i * BBSIZE : i * BBSIZE + 4] != b"\xfe\xed\xba\xbe":
                    i += 1
                    continue
                try:
                    rec, span = parse_record(self._blocks, bb + i, self.bbs)
                except ValueError as exc:
                    if str(exc) != "no record header":
                        problems.append(f"log block {bb + i}: {exc}")
                    i += 1
                    continue
                found.append(rec)
                i += span
            bb = max(skip_to, bb + i)
        found.sort(key=lambda r: r.lsn)
        return found


def _transactions(records: list[_Record]) -> Iterator[tuple[int, list[bytes]]]:
    """(lsn, regions) of each committed transaction, op regions split over records joined."""
    open_: dict[int, tuple[int, list[bytes], bool]] = {}
    for rec in records:
        for tid, flags, client, region in rec.ops:
            if client != CLIENT_TRANS:
                continue
            lsn, regions, cont = open_.get(tid, (rec.lsn, [], False))
            if flags & OP_START:
                open_[tid] = (rec.lsn, [], False)
                continue
            if flags & OP_COMMIT:
                open_.pop(tid, None)
                yield lsn, regions
                continue
            if flags & OP_WAS_CONT and cont and regions:
                regions[-1] += region
            else:
                regions.append(region)
            open_[tid] = (lsn, regions, bool(flags & OP_CONTINUE))


def _inode_item(fmt: bytes, regions: list[bytes], lsn: int, out: LogContents, ftype: bool) -> None:
    """XFS_LI_INODE: xfs_inode_log_format, then the xfs_log_dinode, then the data fork."""
    if len(fmt) < 24 or len(regions) < 1:
        return
    fields = struct.unpack_from("<I", fmt, 4)[0]
    ino = struct.unpack_from("<Q", fmt, 16)[0]
    core = regions[0]
    if not fields & ILOG_CORE or len(core) < 100 or core[:2] != b"NI":  # "IN" in host (LE) order
        return
    mode, _ver, dfmt, _onl = struct.unpack_from("<HbbH", core, 2)
    uid, gid, nlink = struct.unpack_from("<III", core, 8)
    size = struct.unpack_from("<q", core, 56)[0]
    nextents = struct.unpack_from("<I", core, 76)[0]
    next_unlinked = struct.unpack_from("<I", core, 96)[0]
    flags2 = struct.unpack_from("<Q", core, 120)[0] if len(core) >= 176 else 0
    big = bool(flags2 & _DIFLAG2_BIGTIME)
    crtime = _ts(core, 144, big) if len(core) >= 176 else None
    li = LoggedInode(
        ino,
        lsn,
        mode,
        uid,
        gid,
        nlink,
        size,
        _ts(core, 40, big),
        _ts(core, 48, big),
        _ts(core, 32, big),
        crtime,
        dfmt,
        next_unlinked,
    )
    fork = regions[1] if len(regions) > 1 else b""
    if fields & ILOG_DEXT:
        li.extents = bmbt_extents(fork, nextents)
    elif fields & ILOG_DDATA and mode & 0o170000 == 0o040000:
        li.sf_parent, li.sf_entries = shortform_dir(fork, ftype)
    li.gen = struct.unpack_from("<I", core, 92)[0]
    out.inodes.setdefault(ino, []).append(li)


def _buf_item(
    fmt: bytes, regions: list[bytes], lsn: int, out: LogContents, ftype: bool, agblocks_bb: int
) -> None:
    """XFS_LI_BUF: rebuild the logged chunks of the buffer from blf_data_map, then read it."""
    if len(fmt) < 20:
        return
    blen, _blkno, map_size = (
        struct.unpack_from("<HqI", fmt, 6)[0],
        struct.unpack_from("<q", fmt, 8)[0],
        struct.unpack_from("<I", fmt, 16)[0],
    )
    words = struct.unpack_from(f"<{min(map_size, (len(fmt) - 20) // 4)}I", fmt, 20)
    image = bytearray(min(blen * BBSIZE, 64 * 1024))
    bits = [b for w_i, w in enumerate(words) for b in range(32) if w >> b & 1 for b in [w_i * 32 + b]]
    runs: list[list[int]] = []
    for b in bits:
        if runs and runs[-1][1] == b:
            runs[-1][1] += 1
        else:
            runs.append([b, b + 1])
    for (start, end), reg in zip(runs, regions, strict=False):
        at = start * BLF_CHUNK
        piece = reg[: (end - start) * BLF_CHUNK]
        image[at : at + len(piece)] = piece[: max(0, len(image) - at)]
    magic = bytes(image[:4])
    if magic in DIR_DATA_MAGICS:
        owner = struct.unpack_from(">Q", image, 40)[0] if magic in (b"XDB3", b"XDD3") else 0
        for name, ino in dir_data_entries(bytes(image), ftype):
            out.dirents.append((owner, name, ino, lsn))
    elif magic == AGI_MAGIC:
        agno = struct.unpack_from(">I", image, 8)[0]
        for i in range(64):
            agino = struct.unpack_from(">I", image, 40 + 4 * i)[0]
            if agino not in (0, 0xFFFFFFFF):
                out.unlinked.add((agno, i, agino))


def _efi_item(fmt: bytes, out: LogContents) -> None:
    """XFS_LI_EFI: xfs_efi_log_format (64-bit extents: u64 start, u32 len, u32 pad)."""
    if len(fmt) < 16:
        return
    n = struct.unpack_from("<I", fmt, 4)[0]
    for i in range(min(n, (len(fmt) - 16) // 16)):
        start, ln = struct.unpack_from("<QI", fmt, 16 + 16 * i)
        out.freed.append((start, ln))


def walk(reader: LogReader) -> LogContents:
    """Every item of every committed transaction still in the log."""
    out = LogContents()
    recs = reader.records(out.problems)
    out.records = len(recs)
    for lsn, regions in _transactions(recs):
        out.transactions += 1
        i = (
            1
            if regions and len(regions[0]) >= 16 and struct.unpack_from("<I", regions[0])[0] == TRANS_MAGIC
            else 0
        )
        while i < len(regions):
            fmt = regions[i]
            if len(fmt) < 4:
                i += 1
                continue
            itype, nreg = struct.unpack_from("<HH", fmt, 0)
            nreg = max(1, nreg)
            body = regions[i + 1 : i + nreg]
            try:
                if itype == LI_INODE:
                    _inode_item(fmt, body, lsn, out, reader.ftype)
                elif itype == LI_BUF:
                    _buf_item(fmt, body, lsn, out, reader.ftype, 0)
                elif itype == LI_EFI:
                    _efi_item(fmt, out)
            except (struct.error, IndexError, ValueError) as exc:
                out.problems.append(f"lsn {lsn >> 32},{lsn & 0xFFFFFFFF}: item {itype:#x}: {exc}")
            i += nreg
    return out


def open_internal(read: Callable[[int, int], bytes], sb_raw: bytes, *, ftype: bool) -> LogReader:
    """The internal log of the filesystem whose primary superblock is SB_RAW (sb_logstart at 48,
    sb_logblocks at 96, sb_blocksize at 4, sb_agblocks at 84, sb_agblklog at 124)."""
    blocksize = struct.unpack_from(">I", sb_raw, 4)[0]
    logstart = struct.unpack_from(">Q", sb_raw, 48)[0]
    logblocks = struct.unpack_from(">I", sb_raw, 96)[0]
    agblocks = struct.unpack_from(">I", sb_raw, 84)[0]
    agblklog = sb_raw[124]
    if logstart == 0:
        raise ValueError("external log (sb_logstart 0): not in this image")
    agno, agbno = logstart >> agblklog, logstart & ((1 << agblklog) - 1)
    return LogReader(read, (agno * agblocks + agbno) * blocksize, logblocks * blocksize, ftype=ftype)
