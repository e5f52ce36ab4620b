"""Deleted files of an ext2/3/4 filesystem in a disk image, back from the jbd2 journal and the
orphan list, each attributed to the container, layer and image it belonged to.

A kernel ``rm`` on ext4 removes the directory entry and clears the inode's size and extent tree;
The Sleuth Kit then sees only a nameless, empty inode.  The journal remembers more: every
transaction copied the metadata blocks it changed — directory blocks (names -> inode numbers)
and inode-table blocks (size, times, extents) — into the journal area, where they stay until the
log wraps over them.  This module

1. scans the WHOLE journal area (:mod:`pensieve.formats.jbd2`), not only the live log, and reads
   every journalled copy of an inode-table block (which group and inodes follow from the block
   number) and of a directory block (live entries and deleted ones hidden in ``rec_len`` slack);
2. groups inode versions into incarnations (inode number + ``i_generation`` + creation time: an
   inode number reused for another file is another incarnation) and drops the ones still alive;
3. adds what the inode table itself shows: deleted inodes (links 0, dtime set) and the orphan list
   (``s_last_orphan``: unlinked while still open, content intact);
4. names each incarnation from the directory entries (matching the file type and the time it was
   seen), and builds its path through parent directories: the current tree for a directory still
   alive (and not reused since), journal names for deleted ones;
5. reads the content from the extents (or ext2/3 block map) of the newest version that still had
   them; a block counts as recovered when the block bitmap shows it free today (or it still
   belongs to the same inode), otherwise it was reused and reads as zeros.  ``complete``: every
   byte recovered; ``partial``: some; ``metadata-only``: none (or no mapping survived);
6. attributes every path below a Docker data root with :func:`pensieve.filesystem.whence.whence`,
   and for a layer no container references any more (``docker rm``), looks for the container in
   what was recovered too: the deleted ``layerdb/mounts/<id>/mount-id`` naming the layer, the
   deleted ``containers/<id>/config.v2.json``, or the layer's deleted ``lower`` chain.

The image is only ever read (``pread`` through the evidence's image object); memory holds tags,
names and inode versions, never the journal or a file: content is streamed in 1 MiB runs.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import posixpath
import re
import stat as statmod
import struct
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from pensieve.evidence.base import EvidenceError
from pensieve.evidence.disk import ExtInodes
from pensieve.formats import jbd2
from pensieve.records import Problem
from pensieve.records.core import field, record

COMPLETE, PARTIAL, METADATA_ONLY = "complete", "partial", "metadata-only"
JOURNAL, ORPHAN, CARVE = "journal", "orphan", "carve"

_RUN = 1 << 20
_EXTENTS_FL = 0x80000
_INLINE_DATA_FL = 0x10000000
_EXT_MAGIC = 0xF30A
_HAS_JOURNAL = 0x4
_FILETYPE = 0x2
_BG_INODE_UNINIT, _BG_BLOCK_UNINIT = 0x1, 0x2
_RO_GDT_CSUM, _RO_METADATA_CSUM = 0x10, 0x400
_CURRENT = 1 << 40  # sequence key of what the filesystem shows now (newer than any transaction)

_TYPES = {
    statmod.S_IFREG: "file",
    statmod.S_IFDIR: "dir",
    statmod.S_IFLNK: "symlink",
    statmod.S_IFIFO: "fifo",
    statmod.S_IFSOCK: "socket",
    statmod.S_IFCHR: "char",
    statmod.S_IFBLK: "block",
}
#: ext4_dir_entry_2.file_type -> S_IFMT
_FT = {
    1: statmod.S_IFREG,
    2: statmod.S_IFDIR,
    3: statmod.S_IFCHR,
    4: statmod.S_IFBLK,
    5: statmod.S_IFIFO,
    6: statmod.S_IFSOCK,
    7: statmod.S_IFLNK,
}


@record
class RecoveredFile:
    """One deleted file (or directory ...) and what came back of it."""

    path: str  # full path on the filesystem ($OrphanFiles/... when no name survived)
    inode: int
    type: str  # file | dir | symlink | fifo | socket | char | block | unknown
    size: int | None  # i_size before deletion (None: unknown)
    bytes_recovered: int
    confidence: str  # complete | partial | metadata-only
    sha256: str | None  # of the recovered content (missing blocks as zeros); None if nothing
    method: str  # journal | orphan | carve
    container: str | None = None  # container id (also of a removed container) or None
    container_name: str | None = None
    container_path: str | None = None  # the path inside the container
    layer: str | None = None  # storage driver layer id
    layer_kind: str | None = None  # rw | init | image | unreferenced | volume | ...
    images: list[str] = field(default_factory=list)
    data_root: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: str | None = None
    mtime: str | None = None
    ctime: str | None = None
    crtime: str | None = None
    dtime: str | None = None  # deletion time (inode dtime)
    deleted_before: str | None = None  # no dtime: commit time of the transaction that reused the inode
    links_seen: list[str] = field(default_factory=list)  # every name the journal shows for it
    journal_transaction: int | None = None  # newest transaction holding its inode or name
    blocks: int = 0  # data blocks it mapped
    reused_blocks: int = 0  # of those, allocated to something else now
    out_path: str | None = None
    notes: list[str] = field(default_factory=list)


@record
class RecoverReport:
    """What `recover` found: the files, the journal it read them from, and the problems."""

    files: list[RecoveredFile]
    journal: dict = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _iso(seconds: int | None, ns: int = 0) -> str | None:
    if not seconds and not ns:
        return None
    try:
        t = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    frac = f".{ns:09d}" if ns else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _iso_ns(value: int | None) -> str | None:
    if value is None:
        return None
    return _iso(value // 1_000_000_000, value % 1_000_000_000)


# ---- the filesystem ---------------------------------------------------------------------------


class Inode:
    """The fields of one on-disk inode that recovery uses."""

    __slots__ = (
        "ino",
        "mode",
        "uid",
        "gid",
        "size",
        "links",
        "flags",
        "dtime",
        "generation",
        "crtime_ns",
        "atime_ns",
        "mtime_ns",
        "ctime_ns",
        "iblock",
    )

    def __init__(self, ino: int, raw: bytes, fs: Ext4) -> None:
        self.ino = ino
        self.mode, uid_lo, size_lo = struct.unpack_from("<HHI", raw, 0)
        self.dtime = struct.unpack_from("<I", raw, 0x14)[0]
        gid_lo, self.links = struct.unpack_from("<HH", raw, 0x18)
        self.flags = struct.unpack_from("<I", raw, 0x20)[0]
        self.iblock = bytes(raw[0x28:0x64])
        self.generation = struct.unpack_from("<I", raw, 0x64)[0]
        size_hi = struct.unpack_from("<I", raw, 0x6C)[0]
        uid_hi, gid_hi = struct.unpack_from("<HH", raw, 0x78)
        self.uid = uid_lo | uid_hi << 16
        self.gid = gid_lo | gid_hi << 16
        self.size = size_lo | size_hi << 32
        self.atime_ns, self.mtime_ns, self.ctime_ns = fs.times_ns(raw)
        self.crtime_ns = None
        if len(raw) >= 0x98 and fs.inode_size > 128:
            extra = struct.unpack_from("<H", raw, 0x80)[0]
            if extra >= 0x18:
                sec, ex = struct.unpack_from("<iI", raw, 0x90)
                self.crtime_ns = (sec + ((ex & 3) << 32)) * 1_000_000_000 + (ex >> 2)

    @property
    def key(self) -> tuple[int, int | None]:
        """What tells one incarnation of an inode number from the next."""
        return self.generation, self.crtime_ns

    @property
    def fmt(self) -> int:
        return statmod.S_IFMT(self.mode)

    def has_mapping(self) -> bool:
        """Whether i_block still maps data (kernel deletion clears it)."""
        if self.flags & _EXTENTS_FL:
            if self.iblock[:2] != b"\x0a\xf3":
                return False
            return struct.unpack_from("<H", self.iblock, 2)[0] > 0
        if self.flags & _INLINE_DATA_FL or self.fmt == statmod.S_IFLNK and self.size < 60:
            return self.size > 0
        return any(self.iblock)


class Ext4(ExtInodes):
    """ExtInodes plus what recovery needs: group descriptors, bitmaps, blocks, the journal inode."""

    def __init__(self, read, offset: int) -> None:
        super().__init__(read, offset)
        sb = read(offset + 1024, 1024)
        self.inodes_count = struct.unpack_from("<I", sb, 0)[0]
        self.blocks_count = struct.unpack_from("<I", sb, 4)[0]
        if self.incompat & 0x80:
            self.blocks_count |= struct.unpack_from("<I", sb, 0x150)[0] << 32
        self.first_ino = struct.unpack_from("<I", sb, 0x54)[0] if struct.unpack_from("<I", sb, 76)[0] else 11
        self.uuid = bytes(sb[0x68:0x78])
        self.journal_inum, self.journal_dev, self.last_orphan = struct.unpack_from("<III", sb, 0xE0)
        self.groups = max(1, -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group))
        self.itable_blocks = -(-self.inodes_per_group * self.inode_size // self.block_size)
        self._gd: dict[int, tuple[int, int, int, int, int]] = {}
        self._bitmaps: OrderedDict[int, bytes] = OrderedDict()
        self._itable_index: tuple[list[int], list[int]] | None = None

    def group_desc(self, group: int) -> tuple[int, int, int, int, int]:
        """(block bitmap, inode bitmap, inode table, flags, itable_unused) of GROUP."""
        gd = self._gd.get(group)
        if gd is None:
            block, index = self._desc_block(group)
            d = self._read(self._offset + block * self.block_size + index * self.desc_size, self.desc_size)
            if len(d) < 32:
                raise EvidenceError(f"group descriptor {group} beyond the image")
            bb, ib, it = struct.unpack_from("<III", d, 0)
            flags = struct.unpack_from("<H", d, 0x12)[0]
            unused = struct.unpack_from("<H", d, 0x1C)[0]
            if self.desc_size >= 64 and len(d) >= 64:
                bbh, ibh, ith = struct.unpack_from("<III", d, 0x20)
                bb, ib, it = bb | bbh << 32, ib | ibh << 32, it | ith << 32
                unused |= struct.unpack_from("<H", d, 0x32)[0] << 16
            gd = (bb, ib, it, flags, unused)
            self._gd[group] = gd
        return gd

    def read_blocks(self, block: int, count: int = 1) -> bytes:
        if block < 0 or block + count > self.blocks_count:
            count = max(0, min(count, self.blocks_count - block))
        if count <= 0:
            return b""
        return self._read(self._offset + block * self.block_size, count * self.block_size)

    def _bitmap(self, block: int) -> bytes:
        bm = self._bitmaps.get(block)
        if bm is None:
            bm = self.read_blocks(block)
            self._bitmaps[block] = bm
            if len(self._bitmaps) > 512:
                self._bitmaps.popitem(last=False)
        else:
            self._bitmaps.move_to_end(block)
        return bm

    def _csum_groups(self) -> bool:
        return bool(self.ro_compat & (_RO_GDT_CSUM | _RO_METADATA_CSUM))

    def block_in_use(self, block: int) -> bool:
        if block < self.first_data_block or block >= self.blocks_count:
            return True
        group, index = divmod(block - self.first_data_block, self.blocks_per_group)
        bb, _ib, _it, flags, _u = self.group_desc(group)
        if flags & _BG_BLOCK_UNINIT and self._csum_groups():
            return False
        bm = self._bitmap(bb)
        return bool(index // 8 < len(bm) and bm[index // 8] >> (index % 8) & 1)

    def inode_in_use(self, ino: int) -> bool:
        group, index = divmod(ino - 1, self.inodes_per_group)
        _bb, ib, _it, flags, _u = self.group_desc(group)
        if flags & _BG_INODE_UNINIT and self._csum_groups():
            return False
        bm = self._bitmap(ib)
        return bool(index // 8 < len(bm) and bm[index // 8] >> (index % 8) & 1)

    def inode(self, ino: int) -> Inode | None:
        try:
            return Inode(ino, self.raw_inode(ino), self)
        except (EvidenceError, struct.error):
            return None

    def itable_first_inode(self, block: int) -> int | None:
        """The first inode number held by inode-table block BLOCK, None if it is not one."""
        if self._itable_index is None:
            pairs = sorted((self.group_desc(g)[2], g) for g in range(self.groups))
            self._itable_index = ([p[0] for p in pairs], [p[1] for p in pairs])
        starts, groups = self._itable_index
        i = bisect.bisect_right(starts, block) - 1
        if i < 0 or block >= starts[i] + self.itable_blocks:
            return None
        return (
            groups[i] * self.inodes_per_group + (block - starts[i]) * (self.block_size // self.inode_size) + 1
        )


def mapping(
    fs: Ext4, inode: Inode, read_meta: Callable[[int], bytes | None], nblocks: int, problems: list[str]
):
    """[(logical block, physical block, count, unwritten)] of INODE's data, from its extent tree
    or ext2/3 block map; tree and indirect blocks through READ_META (journal copy or disk)."""
    out: list[tuple[int, int, int, bool]] = []
    if inode.flags & _EXTENTS_FL:
        budget = [4096]

        def walk(node: bytes, depth_left: int) -> None:
            if len(node) < 12 or struct.unpack_from("<H", node, 0)[0] != _EXT_MAGIC:
                problems.append("extent node without its magic")
                return
            entries, _max, depth = struct.unpack_from("<HHH", node, 2)
            entries = min(entries, (len(node) - 12) // 12)
            if depth > depth_left:
                problems.append(f"extent tree depth {depth} implausible")
                return
            for k in range(entries):
                p = 12 + 12 * k
                if depth == 0:
                    lblk, length, hi, lo = struct.unpack_from("<IHHI", node, p)
                    unwritten = length > 32768
                    if unwritten:
                        length -= 32768
                    if length:
                        out.append((lblk, lo | hi << 32, length, unwritten))
                else:
                    budget[0] -= 1
                    if budget[0] < 0:
                        problems.append("extent tree too large")
                        return
                    _lblk, lo, hi = struct.unpack_from("<IIH", node, p)
                    child = read_meta(lo | hi << 32)
                    if child is None:
                        problems.append(f"extent tree block {lo | hi << 32} unreadable")
                        continue
                    walk(child, depth - 1)

        walk(inode.iblock, 5)
        out.sort()
        return out
    ptrs = struct.unpack("<15I", inode.iblock)
    per = fs.block_size // 4
    lblk = 0

    def add(pblk: int) -> None:
        nonlocal lblk
        if pblk:
            if out and out[-1][0] + out[-1][2] == lblk and out[-1][1] + out[-1][2] == pblk:
                last = out[-1]
                out[-1] = (last[0], last[1], last[2] + 1, False)
            else:
                out.append((lblk, pblk, 1, False))
        lblk += 1

    def indirect(pblk: int, level: int) -> None:
        nonlocal lblk
        span = per**level
        if lblk >= nblocks:
            return
        if not pblk:
            lblk += span
            return
        data = read_meta(pblk)
        if data is None or len(data) < fs.block_size:
            problems.append(f"indirect block {pblk} unreadable")
            lblk += span
            return
        for p in struct.unpack(f"<{per}I", data):
            if lblk >= nblocks:
                return
            if level == 1:
                add(p)
            else:
                indirect(p, level - 1)

    for p in ptrs[:12]:
        if lblk >= nblocks:
            break
        add(p)
    for level, p in ((1, ptrs[12]), (2, ptrs[13]), (3, ptrs[14])):
        indirect(p, level)
    return out


def parse_dir_block(block: bytes, filetype: bool, max_ino: int) -> list[tuple[bytes, int, int, bool]] | None:
    """Entries of a directory block: [(name, inode, file type, deleted)], deleted ones found in
    the slack of a predecessor's rec_len; None when BLOCK is not a directory block."""
    bs = len(block)
    out: list[tuple[bytes, int, int, bool]] = []
    pos = 0
    live = 0
    while pos < bs:
        if pos + 8 > bs:
            return None
        ino, rec_len, name_len, ftype = struct.unpack_from("<IHBB", block, pos)
        if rec_len in (0, 65535) and bs == 65536:
            rec_len = 65536
        if not filetype:
            name_len |= ftype << 8
            ftype = 0
        if rec_len < 12 or rec_len % 4 or pos + rec_len > bs:
            return None
        if ino == 0 and name_len == 0 and ftype == 0xDE and rec_len == 12 and pos + 12 == bs:
            break  # metadata_csum tail
        if ino:
            if ino > max_ino or 8 + name_len > rec_len or not name_len or (filetype and ftype > 7):
                return None
            name = block[pos + 8 : pos + 8 + name_len]
            if b"\0" in name or b"/" in name:
                return None
            out.append((name, ino, ftype, False))
            live += 1
        used = (8 + name_len + 3) & ~3 if ino else 0
        if ino == 0 and pos == 0 and 0 < name_len <= rec_len - 8:
            used = 0  # a first entry deleted in place: its name is still there, its inode is 0
        _slack(block, pos + max(used, 12 if ino else 0), pos + rec_len, filetype, max_ino, out)
        pos += rec_len
    if not live and not out:
        return None
    return out


def _slack(block: bytes, start: int, end: int, filetype: bool, max_ino: int, out: list) -> None:
    """Deleted entries inside [start, end): merged into the predecessor's rec_len on unlink."""
    pos = (start + 3) & ~3
    while pos + 12 <= end:
        ino, rec_len, name_len, ftype = struct.unpack_from("<IHBB", block, pos)
        if not filetype:
            name_len |= ftype << 8
            ftype = 0
        ok = (
            0 < ino <= max_ino
            and name_len > 0
            and rec_len >= 8 + name_len
            and rec_len % 4 == 0
            and pos + 8 + name_len <= end
            and (not filetype or 1 <= ftype <= 7)
        )
        if ok:
            name = block[pos + 8 : pos + 8 + name_len]
            if b"\0" not in name and b"/" not in name and name not in (b".", b".."):
                out.append((name, ino, ftype, True))
                pos += (8 + name_len + 3) & ~3
                continue
        pos += 4


# ---- incarnations -----------------------------------------------------------------------------


class Incarnation:
    """One life of an inode number, as the journal (and the inode table) show it."""

    __slots__ = (
        "ino",
        "key",
        "first",
        "last",
        "newest",
        "mapped",
        "sized",
        "deleted",
        "alive_seen",
        "current",
        "orphan_list",
    )

    def __init__(self, ino: int, key) -> None:
        self.ino = ino
        self.key = key
        self.first = self.last = -1
        self.newest: tuple[int, Inode] | None = None  # (sequence key, version)
        self.mapped: tuple[int, Inode] | None = None  # newest version with a data mapping
        self.sized: tuple[int, Inode] | None = None  # newest version with a non-zero size
        self.deleted: tuple[int, Inode] | None = None  # newest version with links 0 and dtime
        self.alive_seen = False  # a version from before the deletion (links > 0) was seen
        self.current = False  # the inode table still holds this incarnation
        self.orphan_list = False

    def add(self, seq: int, inode: Inode) -> None:
        if self.first < 0 or seq < self.first:
            self.first = seq
        self.last = max(self.last, seq)
        if self.newest is None or seq >= self.newest[0]:
            self.newest = (seq, inode)
        if inode.has_mapping() and (self.mapped is None or seq >= self.mapped[0]):
            self.mapped = (seq, inode)
        if inode.size and (self.sized is None or seq >= self.sized[0]):
            self.sized = (seq, inode)
        if inode.links:
            self.alive_seen = True
        if inode.links == 0 and inode.dtime and (self.deleted is None or seq >= self.deleted[0]):
            self.deleted = (seq, inode)


class NameEntry:
    """A directory entry seen in a journalled directory block (BLOCK) of directory PARENT."""

    __slots__ = ("parent", "name", "ino", "ftype", "seq", "deleted_slot", "block")

    def __init__(
        self, parent: int | None, name: bytes, ino: int, ftype: int, seq: int, deleted_slot: bool, block: int
    ) -> None:
        self.block = block
        self.parent = parent
        self.name = name
        self.ino = ino
        self.ftype = ftype
        self.seq = seq
        self.deleted_slot = deleted_slot


# ---- progress ---------------------------------------------------------------------------------

Progress = Callable[[str, int, int], None]  # (phase, done, total)


# ---- recovery ---------------------------------------------------------------------------------


class Recovery:
    """Recover the deleted files of the ext2/3/4 filesystem of a DiskImageEvidence."""

    def __init__(self, evidence, progress: Progress | None = None) -> None:
        img = getattr(evidence, "image", None)
        if img is None or not str(getattr(evidence, "fs_type", "")).startswith("ext"):
            kind = getattr(evidence, "fs_type", None) or type(evidence).__name__
            raise EvidenceError(f"recover reads ext2/3/4 filesystems in disk images, not {kind}")
        self.evidence = evidence
        self.fs = Ext4(img.read, evidence.offset)
        self.progress = progress
        self.problems: list[str] = []
        self.jsb: jbd2.JournalSuper | None = None
        self._jmap: list[tuple[int, int, int]] = []  # journal (logical, physical, count)
        self.by_fs: dict[int, list[tuple[int, jbd2.Tag]]] = {}
        self.incs: dict[int, dict] = {}  # ino -> {key: Incarnation}
        self.live_first: dict[int, int] = {}  # ino -> first seq of its live incarnation
        self.names: dict[int, list[NameEntry]] = {}  # ino -> entries naming it
        self.dir_entries: dict[int, list[NameEntry]] = {}  # parent dir -> entries
        self._unowned: list[tuple[int, NameEntry]] = []  # (fs block, entry) of blocks without "."
        self._live_paths: dict[int, str | None] = {}
        self.journal_info: dict = {}
        self._seq_base = 0
        self._orphans: list[int] = []
        self._dotdot: dict[int, tuple[int, int]] = {}  # dir inode -> (sequence key, '..' inode)
        self.remnants: dict[str, bytes] = {}  # small Docker bookkeeping files recovered
        self.commits: dict[int, int | None] = {}
        self._bytes_done = 0
        self._bytes_total = 0
        self._live_block_cache: dict[int, set[int]] = {}

    # -- sequences: u32, wrapping; ordered relative to the journal superblock's
    def seqkey(self, seq: int) -> int:
        return (seq - self._seq_base) & 0xFFFFFFFF

    def sequence(self, key: int) -> int | None:
        if key >= _CURRENT:
            return None
        return (key + self._seq_base) & 0xFFFFFFFF

    def _tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    # ---- the journal ----------------------------------------------------------------------
    def _open_journal(self) -> None:
        fs = self.fs
        if not fs.compat & _HAS_JOURNAL or not fs.journal_inum:
            self.problems.append("the filesystem has no journal: only the inode table is searched")
            return
        if fs.journal_dev:
            self.problems.append("external journal device: only the inode table is searched")
            return
        jino = fs.inode(fs.journal_inum)
        if jino is None or not jino.has_mapping():
            self.problems.append(f"journal inode {fs.journal_inum} unreadable")
            return
        probs: list[str] = []
        nblocks = max(1, -(-jino.size // fs.block_size))
        runs = mapping(fs, jino, lambda b: fs.read_blocks(b) or None, min(nblocks, 1 << 24), probs)
        self.problems.extend(f"journal inode: {p}" for p in probs)
        self._jmap = [(lb, pb, n) for lb, pb, n, _u in runs]
        mapped = sum(n for _lb, _pb, n in self._jmap)
        try:
            jsb = jbd2.JournalSuper(self._read_journal(0, 1))
        except jbd2.JournalError as exc:
            self.problems.append(f"journal: {exc}")
            return
        if jsb.blocksize != fs.block_size:
            self.problems.append(
                f"journal block size {jsb.blocksize} differs from the filesystem's {fs.block_size}: not read"
            )
            return
        if jsb.maxlen > mapped:
            self.problems.append(
                f"journal superblock claims {jsb.maxlen} blocks, the journal inode maps {mapped}: "
                "reading those"
            )
            jsb.maxlen = mapped
            if jsb.maxlen <= jsb.first:
                return
        self.jsb = jsb
        self._seq_base = (jsb.sequence - 0x80000000) & 0xFFFFFFFF
        self.journal_info = {
            "inode": fs.journal_inum,
            "blocks": jsb.maxlen,
            "block_size": jsb.blocksize,
            "first": jsb.first,
            "sequence": jsb.sequence,
            "live_log_start": jsb.start,
            "features": jsb.features(),
        }

    def _read_journal(self, jblock: int, count: int) -> bytes:
        """COUNT journal blocks from JBLOCK, through the journal inode's extents."""
        out = []
        bs = self.fs.block_size
        while count > 0:
            i = bisect.bisect_right(self._jmap, (jblock, 1 << 62, 0)) - 1
            if i < 0:
                break
            lb, pb, n = self._jmap[i]
            if jblock >= lb + n:
                break
            take = min(count, lb + n - jblock)
            data = self.fs.read_blocks(pb + jblock - lb, take)
            out.append(data)
            if len(data) < take * bs:
                break
            jblock += take
            count -= take
        return b"".join(out)

    def _scan_journal(self) -> None:
        jsb = self.jsb
        if jsb is None:
            return
        total = (jsb.maxlen - jsb.first) * jsb.blocksize
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            self._tick("journal", done[0], total)

        sc = jbd2.scan(self._read_journal, jsb, tick)
        self.problems.extend(f"journal: {p}" for p in sc.problems[:50])
        if len(sc.problems) > 50:
            self.problems.append(f"journal: {len(sc.problems) - 50} more problems")
        self.commits = sc.commits
        seqs = [self.seqkey(t.sequence) for t in sc.tags]
        self.journal_info.update(
            descriptors=sc.descriptors,
            journalled_blocks=len(sc.tags),
            transactions=len({t.sequence for t in sc.tags}),
            committed=len(sc.commits),
            oldest_transaction=self.sequence(min(seqs)) if seqs else None,
            newest_transaction=self.sequence(max(seqs)) if seqs else None,
        )
        fs = self.fs
        for t in sc.tags:
            if t.fsblock < fs.blocks_count:
                self.by_fs.setdefault(t.fsblock, []).append((self.seqkey(t.sequence), t))
        for lst in self.by_fs.values():
            lst.sort(key=lambda x: x[0])
        order = sorted((t for t in sc.tags if t.fsblock < fs.blocks_count), key=lambda t: t.jblock)
        by_j: dict[int, list[jbd2.Tag]] = {}
        for t in order:
            by_j.setdefault(t.jblock, []).append(t)
        jblocks = sorted(by_j)
        bs = fs.block_size
        done[0] = 0
        for start, count in jbd2.iter_runs(jblocks, max(1, _RUN // bs)):
            data = self._read_journal(start, count)
            for k in range(len(data) // bs):
                for t in by_j.get(start + k, ()):
                    self._journalled_block(t, jbd2.unescape(data[k * bs : (k + 1) * bs], t))
            done[0] += count * bs
            self._tick("journal blocks", done[0], len(jblocks) * bs)

    def _journalled_block(self, tag: jbd2.Tag, block: bytes) -> None:
        fs = self.fs
        seq = self.seqkey(tag.sequence)
        first = fs.itable_first_inode(tag.fsblock)
        if first is not None:
            for k in range(fs.block_size // fs.inode_size):
                raw = block[k * fs.inode_size : (k + 1) * fs.inode_size]
                if raw[:2] == b"\0\0" or not raw.strip(b"\0"):
                    continue
                self._inode_version(first + k, seq, raw)
            return
        entries = parse_dir_block(block, bool(fs.incompat & _FILETYPE), fs.inodes_count)
        if not entries:
            return
        owner = None
        if entries[0][0] == b"." and not entries[0][3]:
            owner = entries[0][1]
        for name, ino, ftype, deleted in entries:
            if name in (b".", b".."):
                if name == b".." and owner is not None and not deleted:
                    self._parent_hint(owner, ino, seq)
                continue
            e = NameEntry(owner, name, ino, ftype, seq, deleted, tag.fsblock)
            if owner is None:
                self._unowned.append((tag.fsblock, e))
            else:
                self._add_name(e)

    def _parent_hint(self, dir_ino: int, parent: int, seq: int) -> None:
        old = self._dotdot.get(dir_ino)
        if old is None or seq >= old[0]:
            self._dotdot[dir_ino] = (seq, parent)

    def _add_name(self, e: NameEntry) -> None:
        lst = self.names.setdefault(e.ino, [])
        for other in lst:
            if other.parent == e.parent and other.name == e.name:
                if e.seq > other.seq:
                    other.seq = e.seq
                    other.ftype = e.ftype or other.ftype
                other.deleted_slot = other.deleted_slot and e.deleted_slot
                return
        lst.append(e)
        if e.parent is not None:
            self.dir_entries.setdefault(e.parent, []).append(e)

    def _inode_version(self, ino: int, seq: int, raw: bytes) -> None:
        fs = self.fs
        if ino < fs.first_ino and ino != 2:
            return
        try:
            v = Inode(ino, raw, fs)
        except struct.error:
            return
        if not v.mode:
            return
        cur = fs.inode(ino)
        if cur is not None and cur.key == v.key and cur.links > 0 and fs.inode_in_use(ino):
            old = self.live_first.get(ino)
            if old is None or seq < old:
                self.live_first[ino] = seq
            if statmod.S_ISDIR(v.mode):
                self._inc(ino, v.key).add(seq, v)  # live directories: their blocks own entries
            return
        self._inc(ino, v.key).add(seq, v)

    def _inc(self, ino: int, key) -> Incarnation:
        d = self.incs.setdefault(ino, {})
        inc = d.get(key)
        if inc is None:
            inc = d[key] = Incarnation(ino, key)
        return inc

    def _meta_block(self, block: int) -> bytes | None:
        """A metadata block (extent node, indirect block) as the journal last held it with
        something in it (truncation empties extent nodes: an empty one is skipped), else as the
        disk holds it now."""
        for _seq, t in reversed(self.by_fs.get(block, [])):
            data = self._read_journal(t.jblock, 1)
            if len(data) != self.fs.block_size:
                continue
            data = jbd2.unescape(data, t)
            if data[:2] == b"\x0a\xf3":
                if struct.unpack_from("<H", data, 2)[0]:
                    return data
            elif data.strip(b"\0"):
                return data
        data = self.fs.read_blocks(block)
        return data or None

    def _own_unowned(self) -> None:
        """Entries from directory blocks after the first: their directory is the one whose extents
        (live, or as the journal remembers them) map that block."""
        if not self._unowned:
            return
        fs = self.fs
        want = {b for b, _e in self._unowned}
        owner: dict[int, int] = {}
        dirs: set[int] = set(self.dir_entries)
        for ino, d in self.incs.items():
            if any(inc.newest and statmod.S_ISDIR(inc.newest[1].mode) for inc in d.values()):
                dirs.add(ino)
        for lst in self.names.values():
            dirs.update(e.ino for e in lst if e.ftype == 2)
        for ino in dirs:
            versions = [inc.mapped[1] for inc in self.incs.get(ino, {}).values() if inc.mapped]
            cur = fs.inode(ino)
            if cur is not None and statmod.S_ISDIR(cur.mode) and cur.has_mapping():
                versions.append(cur)
            for v in versions:
                if not statmod.S_ISDIR(v.mode) or v.size > 1 << 30:
                    continue
                probs: list[str] = []
                n = -(-v.size // fs.block_size)
                for _lb, pb, cnt, _u in mapping(fs, v, self._meta_block, n, probs):
                    for b in range(pb, pb + min(cnt, 1 << 16)):
                        if b in want:
                            owner.setdefault(b, ino)
        for b, e in self._unowned:
            e.parent = owner.get(b)
            self._add_name(e)
        self._unowned = []

    # ---- the inode table ------------------------------------------------------------------
    def _scan_inode_table(self) -> None:
        """Deleted inodes (links 0, dtime set) and the orphan list, from the inode table now."""
        fs = self.fs
        seen: set[int] = set()
        ino = fs.last_orphan
        while ino and ino not in seen and len(seen) < 1 << 20:
            if ino > fs.inodes_count or ino < 1:
                self.problems.append(f"orphan list points at inode {ino}, beyond the filesystem")
                break
            seen.add(ino)
            cur = fs.inode(ino)
            if cur is None:
                break
            self._orphans.append(ino)
            inc = self._inc(ino, cur.key)
            inc.add(_CURRENT, cur)
            inc.current = True
            inc.orphan_list = True
            ino = cur.dtime  # the next orphan
        if ino and ino in seen:
            self.problems.append(f"orphan list loops at inode {ino}")
        per_block = fs.block_size // fs.inode_size
        total = fs.groups
        csum = fs._csum_groups()
        for g in range(fs.groups):
            try:
                _bb, _ib, table, flags, unused = fs.group_desc(g)
            except EvidenceError as exc:
                self.problems.append(str(exc))
                break
            if csum and flags & _BG_INODE_UNINIT:
                continue
            used = fs.inodes_per_group - (unused if csum else 0)
            nblocks = -(-max(0, used) // per_block)
            step = max(1, _RUN // fs.block_size)
            for off in range(0, nblocks, step):
                data = fs.read_blocks(table + off, min(step, nblocks - off))
                for k in range(len(data) // fs.inode_size):
                    raw = data[k * fs.inode_size : (k + 1) * fs.inode_size]
                    (mode,) = struct.unpack_from("<H", raw, 0)
                    (links,) = struct.unpack_from("<H", raw, 0x1A)
                    (dtime,) = struct.unpack_from("<I", raw, 0x14)
                    if not mode or links or not dtime:
                        continue
                    n = g * fs.inodes_per_group + off * per_block + k + 1
                    if n < fs.first_ino or n in seen:
                        continue
                    v = Inode(n, raw, fs)
                    inc = self._inc(n, v.key)
                    inc.add(_CURRENT, v)
                    inc.current = True
            self._tick("inode table", g + 1, total)

    # ---- names and paths ------------------------------------------------------------------
    def _live_dir(self, ino: int) -> Inode | None:
        fs = self.fs
        cur = fs.inode(ino)
        if cur is None or not statmod.S_ISDIR(cur.mode) or not cur.links or not fs.inode_in_use(ino):
            return None
        return cur

    def _dir_blocks(self, inode: Inode):
        fs = self.fs
        probs: list[str] = []
        n = -(-inode.size // fs.block_size)
        for _lb, pb, cnt, _u in mapping(fs, inode, lambda b: fs.read_blocks(b) or None, n, probs):
            for b in range(pb, pb + cnt):
                yield fs.read_blocks(b)

    def live_path(self, ino: int, depth: int = 0) -> str | None:
        """Path of directory INO in the current tree ('..' up, its name in the parent)."""
        if ino == 2:
            return "/"
        if ino in self._live_paths:
            return self._live_paths[ino]
        self._live_paths[ino] = None  # cycle guard
        if depth > 64:
            return None
        cur = self._live_dir(ino)
        if cur is None:
            return None
        filetype = bool(self.fs.incompat & _FILETYPE)
        parent = None
        for block in self._dir_blocks(cur):
            entries = parse_dir_block(block, filetype, self.fs.inodes_count) or []
            parent = next((i for n, i, _f, d in entries if n == b".." and not d), None)
            break
        if parent is None or parent == ino:
            return None
        pcur = self._live_dir(parent)
        if pcur is None:
            return None
        name = None
        for block in self._dir_blocks(pcur):
            for n, i, _f, d in parse_dir_block(block, filetype, self.fs.inodes_count) or []:
                if i == ino and not d and n not in (b".", b".."):
                    name = n
                    break
            if name is not None:
                break
        if name is None:
            return None
        ppath = self.live_path(parent, depth + 1)
        if ppath is None:
            return None
        path = posixpath.join(ppath, name.decode("utf-8", "surrogateescape"))
        self._live_paths[ino] = path
        return path

    def _pick_name(
        self, ino: int, fmt: int | None, near: tuple[int, int] | None, before: int | None = None
    ) -> NameEntry | None:
        """The name of INO (file type FMT) for the incarnation seen between NEAR's sequence keys,
        or (directories) as it was at sequence key BEFORE: an inode number reused for another
        directory in the meantime has the other name later."""
        cands = self.names.get(ino, [])
        if fmt is not None:
            cands = [e for e in cands if not e.ftype or _FT.get(e.ftype) == fmt]
        if not cands:
            return None
        if near is not None:
            lo, hi = near
            inside = [e for e in cands if lo <= e.seq <= hi]
            if inside:
                cands = inside
        if before is not None:
            earlier = [e for e in cands if e.seq <= before]
            if earlier:
                return max(earlier, key=lambda e: (e.seq, not e.deleted_slot))
            return min(cands, key=lambda e: (e.seq, e.deleted_slot))
        # a name in a live entry beats one found in slack; then the newest
        return max(cands, key=lambda e: (not e.deleted_slot, e.seq))

    def _live_blocks(self, ino: int) -> set[int]:
        blocks = self._live_block_cache.get(ino)
        if blocks is None:
            blocks = set()
            cur = self._live_dir(ino)
            if cur is not None and cur.size <= 1 << 30:
                n = -(-cur.size // self.fs.block_size)
                for _lb, pb, cnt, _u in mapping(
                    self.fs, cur, lambda b: self.fs.read_blocks(b) or None, n, []
                ):
                    blocks.update(range(pb, pb + min(cnt, 1 << 16)))
            self._live_block_cache[ino] = blocks
        return blocks

    def dir_path(self, ino: int, seq: int, depth: int = 0, block: int | None = None) -> str:
        """Path of directory INO as it was at journal sequence key SEQ (when an entry was seen in
        its directory block BLOCK)."""
        if ino == 2:
            return "/"
        if depth > 64:
            return f"/$OrphanFiles/dir-{ino}"
        first = self.live_first.get(ino)
        if self._live_dir(ino) is not None:
            live = first is None or first < seq
            if not live and first == seq and block is not None:
                live = block in self._live_blocks(ino)
            if live:
                p = self.live_path(ino)
                if p is not None:
                    return p
        e = self._pick_name(ino, statmod.S_IFDIR, None, before=seq)
        if e is not None and e.parent is not None and e.parent != ino:
            return posixpath.join(
                self.dir_path(e.parent, e.seq, depth + 1, e.block), e.name.decode("utf-8", "surrogateescape")
            )
        hint = self._dotdot.get(ino)
        if hint is not None and hint[1] != ino:
            return posixpath.join(self.dir_path(hint[1], hint[0], depth + 1), f"$dir-{ino}")
        return f"/$OrphanFiles/dir-{ino}"

    # ---- content --------------------------------------------------------------------------
    def _content(
        self, inc: Incarnation, rec: RecoveredFile, out_path: str | None, keep: bool
    ) -> bytes | None:
        """Read what survives of INC's content: fills bytes_recovered, confidence, sha256, blocks;
        writes OUT_PATH when given; returns the bytes when KEEP (small files only)."""
        fs = self.fs
        src = inc.mapped[1] if inc.mapped else None
        if rec.size is None:
            rec.notes.append("size unknown: no version of the inode from before its deletion survives")
            return None
        size = rec.size
        h = hashlib.sha256()
        kept: list[bytes] | None = [] if keep else None
        fh = open(out_path, "wb") if out_path else None  # noqa: SIM115 - closed below
        try:
            if src is None:
                if size == 0 and rec.type in ("file", "symlink"):
                    rec.confidence = COMPLETE
                    rec.sha256 = h.hexdigest()
                    return b"" if keep else None
                rec.confidence = METADATA_ONLY
                if size:
                    rec.notes.append("no version of the inode with its extents survives")
                return None
            if src.flags & _INLINE_DATA_FL or (
                src.fmt == statmod.S_IFLNK and src.size < 60 and not src.flags & _EXTENTS_FL
            ):
                data = src.iblock[: min(size, 60)]
                h.update(data)
                if fh:
                    fh.write(data)
                rec.bytes_recovered = len(data)
                rec.confidence = COMPLETE if len(data) == size else PARTIAL
                if len(data) < size:
                    rec.notes.append("inline data beyond i_block (system.data xattr) not read")
                rec.sha256 = h.hexdigest()
                return data if keep else None
            probs: list[str] = []
            nblocks = -(-size // fs.block_size)
            runs = mapping(fs, src, self._meta_block, nblocks, probs)
            rec.notes.extend(probs[:5])
            own: set[int] = set()
            cur = fs.inode(inc.ino)
            if cur is not None and cur.key == inc.key and cur.has_mapping():
                for _lb, pb, cnt, _u in mapping(fs, cur, self._meta_block, nblocks, []):
                    own.update(range(pb, pb + min(cnt, 1 << 20)))
            # a block the journal shows as metadata after this version was reused (and maybe
            # freed again): what it holds now is not this file (a directory's own blocks are
            # journalled while it lives: for it, only copies after its last version count)
            since = inc.last if statmod.S_ISDIR(src.mode) else inc.mapped[0]
            bs = fs.block_size
            got = 0
            pos = 0  # logical byte offset written so far
            for lb, pb, cnt, unwritten in runs:
                if lb >= nblocks:
                    break
                cnt = min(cnt, nblocks - lb)
                start = lb * bs
                if start > pos:  # a hole: zeros, genuinely part of the file
                    got += self._zeros(h, fh, kept, min(start, size) - pos)
                    pos = min(start, size)
                if start < pos:
                    continue  # overlapping extents (corrupt): keep the first
                b = 0
                while b < cnt:
                    take = min(cnt - b, max(1, _RUN // bs))
                    first = pb + b
                    rec.blocks += take
                    if unwritten:
                        data = bytes(take * bs)
                        good = take
                    else:
                        data = fs.read_blocks(first, take).ljust(take * bs, b"\0")
                        good = 0
                        parts = []
                        for k in range(take):
                            blk = first + k
                            if blk >= fs.blocks_count:
                                parts.append(bytes(bs))
                                continue
                            if blk in own or not (
                                fs.block_in_use(blk)
                                or self._journalled_after(blk, since)
                                or self._claimed_later(blk, inc.mapped[0], inc.ino)
                            ):
                                good += 1
                                parts.append(data[k * bs : (k + 1) * bs])
                            else:
                                rec.reused_blocks += 1
                                parts.append(bytes(bs))
                        data = b"".join(parts)
                    end = min(size, (lb + b + take) * bs)
                    n = max(0, end - pos)
                    chunk = data[:n]
                    h.update(chunk)
                    if fh:
                        fh.write(chunk)
                    if kept is not None:
                        kept.append(chunk)
                    got += n if good == take else min(n, good * bs)
                    pos = end
                    b += take
                    self._bytes_done += len(chunk)
                    self._tick("content", self._bytes_done, self._bytes_total)
            if pos < size:
                mapped_end = runs[-1][0] + runs[-1][2] if runs else 0
                if mapped_end * bs >= size or size - pos <= 64 << 20:
                    got += self._zeros(h, fh, kept, size - pos)  # a trailing hole
                else:
                    rec.notes.append(f"size {size} far beyond the last mapped block: tail not written")
            rec.bytes_recovered = got
            rec.sha256 = h.hexdigest()
            rec.confidence = COMPLETE if got >= size else (PARTIAL if got else METADATA_ONLY)
            if rec.reused_blocks:
                rec.notes.append(f"{rec.reused_blocks} of {rec.blocks} blocks reused since: read as zeros")
            if rec.confidence == METADATA_ONLY:
                rec.sha256 = None
            return b"".join(kept) if kept is not None else None
        finally:
            if fh:
                fh.close()

    def _build_claims(self, incs: list[Incarnation]) -> None:
        """Data runs of every deleted incarnation with a mapping, by start block: a block two of
        them mapped holds the content of the one that mapped it last."""
        fs = self.fs
        claims: list[tuple[int, int, int, int]] = []  # (start, end, sequence key, ino)
        for inc in incs:
            if inc.mapped is None:
                continue
            v = inc.mapped[1]
            if v.flags & _INLINE_DATA_FL or (v.fmt == statmod.S_IFLNK and v.size < 60):
                continue
            n = -(-v.size // fs.block_size)
            for _lb, pb, cnt, _u in mapping(fs, v, self._meta_block, n, []):
                claims.append((pb, pb + cnt, inc.mapped[0], inc.ino))
        claims.sort()
        self._claim_starts = [c[0] for c in claims]
        self._claims = claims
        maxend, m = [], 0
        for c in claims:
            m = max(m, c[1])
            maxend.append(m)
        self._claim_maxend = maxend

    def _claimed_later(self, block: int, seq: int, ino: int) -> bool:
        """Whether another deleted file mapped BLOCK in a version newer than SEQ."""
        i = bisect.bisect_right(self._claim_starts, block) - 1
        while i >= 0 and self._claim_maxend[i] > block:
            start, end, cseq, cino = self._claims[i]
            if start <= block < end and cseq > seq and cino != ino:
                return True
            i -= 1
        return False

    def _journalled_after(self, block: int, seq: int) -> bool:
        tags = self.by_fs.get(block)
        return bool(tags) and tags[-1][0] > seq

    @staticmethod
    def _zeros(h, fh, kept, n: int) -> int:
        left = n
        while left > 0:
            z = bytes(min(left, _RUN))
            h.update(z)
            if fh:
                fh.write(z)
            if kept is not None:
                kept.append(z)
            left -= len(z)
        return max(0, n)

    # ---- the whole run --------------------------------------------------------------------
    def run(self, out_dir: str | None = None, include_all: bool = False) -> list[RecoveredFile]:
        self._open_journal()
        self._scan_journal()
        self._own_unowned()
        self._scan_inode_table()
        fs = self.fs
        results: list[tuple[RecoveredFile, Incarnation]] = []
        self._bytes_done = 0
        self._bytes_total = 0
        for ino, d in self.incs.items():
            if ino < fs.first_ino and ino != 2:
                continue
            cur = fs.inode(ino)
            alive = cur is not None and cur.links > 0 and fs.inode_in_use(ino)
            for inc in d.values():
                if alive and cur.key == inc.key:
                    continue  # still there (a live directory kept for its blocks, a rename)
                rec = self._describe(inc)
                if rec is None:
                    continue
                results.append((rec, inc))
                if rec.size and inc.mapped:
                    self._bytes_total += rec.size
        # names of deleted entries whose inode left no version anywhere: still worth a line
        seen = {(r.inode, r.path) for r, _ in results}
        for ino, lst in self.names.items():
            if ino in self.incs or ino < fs.first_ino:
                continue
            cur = fs.inode(ino)
            if cur is not None and cur.links > 0 and fs.inode_in_use(ino):
                continue
            for e in lst:
                path = self._entry_path(e)
                if (ino, path) in seen:
                    continue
                rec = RecoveredFile(
                    path=path,
                    inode=ino,
                    type=_TYPES.get(_FT.get(e.ftype, 0), "unknown"),
                    size=None,
                    bytes_recovered=0,
                    confidence=METADATA_ONLY,
                    sha256=None,
                    method=JOURNAL,
                    journal_transaction=self.sequence(e.seq),
                    notes=["name only: no version of its inode survives in the journal"],
                )
                results.append((rec, Incarnation(ino, None)))
        results.sort(key=lambda x: (x[0].path, x[0].inode))
        self._build_claims([inc for _r, inc in results if inc.key is not None])
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        files = []
        used_out: set[str] = set()
        for rec, inc in results:
            if not include_all and rec.path.startswith("/$OrphanFiles/") and not inc.mapped:
                continue
            out_path = None
            if out_dir and rec.type in ("file", "symlink"):
                out_path = _out_name(out_dir, rec, used_out)
                rec.out_path = out_path
            keep = bool(_REMNANT.search(rec.path)) and (rec.size or 0) <= 1 << 20
            data = self._content(inc, rec, out_path, keep) if inc.key is not None or inc.mapped else None
            if data is not None:
                self.remnants[rec.path] = data
            files.append(rec)
        return files

    def _entry_path(self, e: NameEntry) -> str:
        name = e.name.decode("utf-8", "surrogateescape")
        if e.parent is None:
            return f"/$OrphanFiles/{name}"
        return posixpath.join(self.dir_path(e.parent, e.seq, 0, e.block), name)

    def _describe(self, inc: Incarnation) -> RecoveredFile | None:
        if inc.newest is None:
            return None
        seq, v = inc.newest
        meta = v
        # the newest version with a size (deletion zeroes it) describes the file best
        if inc.mapped is not None:
            meta = inc.mapped[1]
        span = (inc.first, inc.last if inc.last < _CURRENT else _CURRENT)
        name = self._pick_name(inc.ino, v.fmt, span)
        links = []
        if name is not None:
            path = self._entry_path(name)
            for e in self.names.get(inc.ino, []):
                if (not e.ftype or _FT.get(e.ftype) == v.fmt) and e is not name:
                    links.append(self._entry_path(e))
        else:
            path = f"/$OrphanFiles/OrphanFile-{inc.ino}"
        deleted = inc.deleted[1] if inc.deleted else None
        size: int | None = meta.size
        if inc.mapped is None:
            if inc.sized is not None:
                size = inc.sized[1].size
            elif not inc.alive_seen and v.fmt != statmod.S_IFDIR:
                size = None  # only the deleted inode (kernel rm zeroes i_size): size unknown
        method = ORPHAN if inc.orphan_list or (name is None and inc.first >= _CURRENT) else JOURNAL
        rec = RecoveredFile(
            path=path,
            inode=inc.ino,
            type=_TYPES.get(v.fmt, "unknown"),
            size=size,
            bytes_recovered=0,
            confidence=METADATA_ONLY,
            sha256=None,
            method=method,
            mode=v.mode & 0o7777,
            uid=meta.uid,
            gid=meta.gid,
            atime=_iso_ns(meta.atime_ns),
            mtime=_iso_ns(meta.mtime_ns),
            ctime=_iso_ns((deleted or v).ctime_ns),
            crtime=_iso_ns(meta.crtime_ns),
            dtime=_iso(deleted.dtime) if deleted else None,
            links_seen=sorted(set(links)),
            journal_transaction=self.sequence(max(inc.last, name.seq if name else -1)),
        )
        if deleted is None and not inc.orphan_list:
            later = [o.first for o in self.incs.get(inc.ino, {}).values() if o.first > inc.last]
            first_live = self.live_first.get(inc.ino)
            if first_live is not None and first_live > inc.last:
                later.append(first_live)
            if later:
                seq_no = self.sequence(min(later))
                when = self.commits.get(seq_no) if seq_no is not None else None
                rec.deleted_before = _iso(when) if when else None
                rec.notes.append(
                    f"no dtime survives: the inode was reused by transaction {seq_no}"
                    + (f", committed {rec.deleted_before}" if rec.deleted_before else "")
                )
        if inc.orphan_list:
            rec.notes.append(
                "on the orphan list: unlinked while still open, content kept until the last close"
            )
        elif inc.current and inc.first >= _CURRENT:
            rec.notes.append("deleted inode in the inode table; the journal holds no older version")
        if v.fmt == statmod.S_IFDIR:
            rec.size = meta.size
        return rec


_REMNANT = re.compile(
    r"/(?:layerdb/mounts/[0-9a-f]{64}/(?:mount-id|init-id)|containers/[0-9a-f]{64}/config\.v2\.json|overlay2/[^/]+/(?:lower|link))$"
)


def _out_name(out_dir: str, rec: RecoveredFile, used: set[str]) -> str:
    """OUT_DIR/<path> mirrored (no escape: '..' and absolute parts are neutralised); a second
    file with the same path gets a '.inoN' suffix."""
    rel = rec.path.lstrip("/").replace("\\", "_")
    parts = [p if p not in ("", ".", "..") else "_" for p in rel.split("/")]
    dest = os.path.join(out_dir, *parts)
    if dest in used or os.path.isdir(dest):
        dest = f"{dest}.ino{rec.inode}"
    used.add(dest)
    parent = os.path.dirname(dest)
    if os.path.isfile(parent):
        parent = parent + ".d"
        dest = os.path.join(parent, os.path.basename(dest))
    os.makedirs(parent, exist_ok=True)
    return dest


# ---- attribution --------------------------------------------------------------------------------


def attribute(files: list[RecoveredFile], host, remnants: dict[str, bytes]) -> list[str]:
    """Fill container, layer, images and container path of every file below a data root, through
    ``whence``; for layers no container references (``docker rm``), recovered remnants name it."""
    from pensieve.filesystem.whence import whence

    problems: list[str] = []
    if host is None:
        return problems
    mount_of: dict[str, str] = {}  # layer id -> container id (from recovered layerdb mounts)
    configs: dict[str, dict] = {}  # container id -> recovered config.v2.json
    lowers: dict[str, str] = {}  # layer id -> recovered lower chain
    for path, data in remnants.items():
        m = re.search(r"layerdb/mounts/([0-9a-f]{64})/(mount-id|init-id)$", path)
        if m:
            layer = data.decode("ascii", "replace").strip()
            if re.fullmatch(r"[0-9a-f]{64}(-init)?", layer):
                mount_of[layer] = m.group(1)
            continue
        m = re.search(r"containers/([0-9a-f]{64})/config\.v2\.json$", path)
        if m:
            try:
                configs[m.group(1)] = json.loads(data)
            except ValueError:
                pass
            continue
        m = re.search(r"overlay2/([^/]+)/lower$", path)
        if m:
            lowers[m.group(1)] = data.decode("ascii", "replace").strip()
    link_to_layer: dict[str, str] = {}
    cache: dict[str, object] = {}
    for rec in files:
        if not re.search(r"/(?:overlay2|overlay|aufs|vfs|btrfs|volumes|containers|image)/", rec.path):
            continue
        try:
            a = whence(host, rec.path)
        except (EvidenceError, OSError, ValueError) as exc:
            problems.append(f"{rec.path}: attribution failed: {exc}")
            continue
        rec.data_root = a.data_root
        rec.layer = a.layer
        rec.layer_kind = a.layer_kind
        rec.container_path = a.container_path
        rec.images = list(a.images)
        if a.containers:
            rec.container = a.containers[0]
            rec.container_name = (a.container_names or [None])[0] or None
        rec.notes.extend(
            n for n in a.notes if n not in rec.notes and not n.startswith("layer directory itself")
        )
        layer = a.layer
        if rec.container is None and layer and a.layer_kind == "unreferenced":
            cid = mount_of.get(layer) or mount_of.get(layer + "-init")
            base = layer.removesuffix("-init")
            if cid is None and base != layer:
                cid = mount_of.get(base)
            if cid is not None:
                rec.container = cid
                rec.layer_kind = (
                    "rw (removed container)" if not layer.endswith("-init") else "init (removed container)"
                )
                rec.notes.append(
                    "layer of a removed container: its id is in the deleted "
                    f"layerdb/mounts/{cid[:12]}/mount-id recovered from the journal"
                )
                cfg = configs.get(cid)
                if cfg:
                    rec.container_name = (cfg.get("Name") or "").lstrip("/") or None
                    img = cfg.get("Image")
                    if img and img not in rec.images:
                        rec.images.append(img)
            elif base in lowers or layer in lowers:
                chain = lowers.get(layer) or lowers.get(base) or ""
                if not link_to_layer:
                    link_to_layer.update(_links(host))
                top = chain.split(":")[0].removeprefix("l/")
                below = link_to_layer.get(top)
                key = f"lower:{below}"
                if below and key not in cache:
                    root = a.data_root or "/var/lib/docker"
                    cache[key] = whence(host, posixpath.join(root, "overlay2", below, "diff"))
                wa = cache.get(key)
                if wa is not None:
                    for i in wa.images:
                        if i not in rec.images:
                            rec.images.append(i)
                    rec.notes.append(
                        f"layer of a removed container (recovered lower chain): it sat on layer {below}"
                    )
        m = re.search(r"/layerdb/mounts/([0-9a-f]{64})(?:/|$)", rec.path)
        if m and rec.container is None:
            rec.container = m.group(1)
            rec.notes.append("layerdb mount record of the container")
        if rec.container and not rec.container_name:
            cfg = configs.get(rec.container)
            if cfg:
                rec.container_name = (cfg.get("Name") or "").lstrip("/") or None
    return problems


def _links(host) -> dict[str, str]:
    """overlay2 short link name -> layer id, from each live layer's ``link`` file."""
    out: dict[str, str] = {}
    for root in host.roots:
        ev = host.evidence
        base = posixpath.join(root.path, "overlay2")
        try:
            names = ev.listdir(base)
        except (EvidenceError, OSError):
            continue
        for name in names:
            try:
                link = (
                    ev.read_bytes(posixpath.join(base, name, "link"), 64).decode("ascii", "replace").strip()
                )
            except (EvidenceError, OSError):
                continue
            if link:
                out[link] = name
    return out


# ---- entry point --------------------------------------------------------------------------------


def recover(
    evidence,
    out_dir: str | None = None,
    include_all: bool = False,
    host=None,
    progress: Progress | None = None,
) -> RecoverReport:
    """Recover the deleted files of EVIDENCE (a DiskImageEvidence on ext2/3/4).

    OUT_DIR: write each recovered file there (its path mirrored; missing blocks as zeros).
    INCLUDE_ALL: also nameless inodes with nothing to read.  HOST: a DockerHost over the same
    evidence for attribution (made here when None; no attribution when it holds no data root)."""
    r = Recovery(evidence, progress)
    files = r.run(out_dir, include_all)
    problems = [Problem(evidence.description, p) for p in r.problems]
    if host is None:
        try:
            from pensieve.engines.docker import DockerHost, NotADataRoot

            host = DockerHost(evidence)
            if not host.roots:
                host = None
        except (NotADataRoot, EvidenceError):
            host = None
        except Exception as exc:  # noqa: BLE001 - attribution must not cost the recovery
            problems.append(Problem(evidence.description, f"no attribution: {type(exc).__name__}: {exc}"))
            host = None
    if host is not None:
        problems.extend(Problem(evidence.description, p) for p in attribute(files, host, r.remnants))
    journal = dict(r.journal_info)
    journal["orphan_list"] = r._orphans
    return RecoverReport(files=files, journal=journal, problems=problems)


def block_owners(evidence) -> Callable[[int], tuple[int, str] | None] | None:
    """Which deleted file the journal says last mapped a filesystem block: ``block -> (inode,
    path)`` or None.  For the carver: a carved run starting at a block a deleted file mapped gets
    that file's inode and path.  Content is not read; None when the filesystem has no journal."""
    r = Recovery(evidence)
    try:
        r._open_journal()
    except Exception:  # noqa: BLE001 - no journal (ext2) or unreadable: the carver goes without
        return None
    if r.jsb is None:
        return None
    r._scan_journal()
    r._own_unowned()
    r._scan_inode_table()
    fs = r.fs
    incs: list[Incarnation] = []
    paths: dict[tuple[int, int], str] = {}
    for ino, d in r.incs.items():
        if ino < fs.first_ino:
            continue
        for inc in d.values():
            if inc.mapped is None:
                continue
            rec = r._describe(inc)
            if rec is not None:
                incs.append(inc)
                paths[(ino, inc.mapped[0])] = rec.path
    r._build_claims(incs)
    claims, starts, maxend = r._claims, r._claim_starts, r._claim_maxend

    def owner(block: int) -> tuple[int, str] | None:
        best = None
        i = bisect.bisect_right(starts, block) - 1
        while i >= 0 and maxend[i] > block:
            s, e, seq, ino = claims[i]
            if s <= block < e and (best is None or seq > best[0]):
                best = (seq, ino)
            i -= 1
        if best is None:
            return None
        return best[1], paths.get((best[1], best[0]), f"<inode {best[1]}>")

    return owner
