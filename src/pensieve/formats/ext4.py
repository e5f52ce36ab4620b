"""ext2/3/4, parsed once: superblock, group descriptors, inodes, extents and block maps,
directory blocks, extended attributes -- over a ``read(offset, size) -> bytes`` callable.

Layout from the kernel's ``Documentation/filesystems/ext4/`` (``super.rst``, ``group_descr.rst``,
``inodes.rst``, ``ifork.rst``, ``directory.rst``, ``attributes.rst``, ``blockgroup.rst``):

* the superblock is 1024 bytes at byte 1024 of the filesystem (magic ``0xEF53`` at 0x38);
* group descriptors follow the superblock's block (``meta_bg``: in the first block of each
  meta group, after its backup superblock), 32 bytes each, ``s_desc_size`` with ``64BIT``
  (the high halves of the block numbers at 0x20..0x2C);
* inode N lives in group ``(N-1) // s_inodes_per_group`` of the inode table named by that group's
  descriptor, ``s_inode_size`` bytes each;
* ``i_block`` (60 bytes at 0x28) holds an extent tree (magic ``0xF30A``) with ``EXTENTS_FL``,
  otherwise 12 direct, one indirect, one double and one triple indirect block number;
* a directory block is a chain of ``ext4_dir_entry_2`` (inode, rec_len, name_len, file_type,
  name); an unlinked entry is merged into its predecessor's rec_len and stays in the slack;
* extended attributes sit after ``i_extra_isize`` in the inode and in the block ``i_file_acl``
  (header magic ``0xEA020000``), values optionally in an EA inode.

Times are integer nanoseconds since the epoch as the kernel decodes them.  Nothing is trusted:
every count is bounded by the buffer it describes; what does not parse raises :class:`Ext4Error`
(or returns None where noted).  Reads are cached in small LRUs, never the filesystem.
"""

from __future__ import annotations

import bisect
import os
import re
import stat as statmod
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator

Read = Callable[[int, int], bytes]

MAGIC = 0xEF53
XATTR_MAGIC = 0xEA020000
EXTENT_MAGIC = 0xF30A

COMPAT_HAS_JOURNAL = 0x4
COMPAT_SPARSE_SUPER2 = 0x200
INCOMPAT_FILETYPE = 0x2
INCOMPAT_META_BG = 0x10
INCOMPAT_64BIT = 0x80
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_GDT_CSUM = 0x10
RO_COMPAT_METADATA_CSUM = 0x400
BG_INODE_UNINIT, BG_BLOCK_UNINIT = 0x1, 0x2

EXTENTS_FL = 0x80000
INLINE_DATA_FL = 0x10000000
ENCRYPT_FL = 0x800

#: ext4_dir_entry_2.file_type -> S_IFMT
FILE_TYPES = {
    1: statmod.S_IFREG,
    2: statmod.S_IFDIR,
    3: statmod.S_IFCHR,
    4: statmod.S_IFBLK,
    5: statmod.S_IFIFO,
    6: statmod.S_IFSOCK,
    7: statmod.S_IFLNK,
}
#: e_name_index -> prefix, as the kernel lists them (system.data, richacl, encryption: hidden)
_XATTR_PREFIX = {
    1: "user.",
    2: "system.posix_acl_access",
    3: "system.posix_acl_default",
    4: "trusted.",
    6: "security.",
    10: "gnu.",
}
_ACL_SHORT_TAGS = {0x01, 0x04, 0x10, 0x20}  # USER_OBJ, GROUP_OBJ, MASK, OTHER


class Ext4Error(ValueError):
    """The bytes are not (or no longer) the ext2/3/4 structure they should be."""


# ---- the superblock ------------------------------------------------------------------------------


class Superblock:
    """The fields of the ext2/3/4 superblock pensieve uses (``super.rst``)."""

    __slots__ = (
        "inodes_count",
        "blocks_count",
        "free_blocks",
        "first_data_block",
        "block_size",
        "blocks_per_group",
        "inodes_per_group",
        "rev",
        "first_ino",
        "inode_size",
        "compat",
        "incompat",
        "ro_compat",
        "uuid",
        "journal_inum",
        "journal_dev",
        "last_orphan",
        "desc_size",
        "first_meta_bg",
        "backup_bgs",
    )

    def __init__(self, sb: bytes) -> None:
        if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != MAGIC:
            raise Ext4Error("no ext2/3/4 superblock")
        self.inodes_count, blocks_lo, _r, free_lo, _fi, self.first_data_block, log_bs = struct.unpack_from(
            "<7I", sb, 0
        )
        self.block_size = 1024 << min(log_bs, 16)
        self.blocks_per_group = struct.unpack_from("<I", sb, 0x20)[0]
        self.inodes_per_group = struct.unpack_from("<I", sb, 0x28)[0]
        self.rev = struct.unpack_from("<I", sb, 0x4C)[0]
        self.first_ino = struct.unpack_from("<I", sb, 0x54)[0] if self.rev else 11
        self.inode_size = struct.unpack_from("<H", sb, 0x58)[0] if self.rev >= 1 else 128
        self.compat, self.incompat, self.ro_compat = struct.unpack_from("<III", sb, 0x5C)
        self.uuid = bytes(sb[0x68:0x78])
        self.journal_inum, self.journal_dev, self.last_orphan = struct.unpack_from("<III", sb, 0xE0)
        self.desc_size = 32
        self.blocks_count, self.free_blocks = blocks_lo, free_lo
        if self.incompat & INCOMPAT_64BIT:
            self.desc_size = max(32, struct.unpack_from("<H", sb, 0xFE)[0])
            self.blocks_count |= struct.unpack_from("<I", sb, 0x150)[0] << 32
        self.first_meta_bg = struct.unpack_from("<I", sb, 0x104)[0]
        self.backup_bgs = struct.unpack_from("<II", sb, 0x24C)
        if not self.inodes_per_group or not self.blocks_per_group or self.inode_size < 128:
            raise Ext4Error("implausible ext2/3/4 superblock")
        if self.desc_size > self.block_size or self.inode_size > self.block_size:
            raise Ext4Error("implausible ext2/3/4 superblock (descriptor or inode larger than a block)")

    @property
    def groups(self) -> int:
        return max(1, -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group))

    @property
    def csum_groups(self) -> bool:
        """Whether the UNINIT group flags are to be believed (gdt_csum or metadata_csum)."""
        return bool(self.ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM))

    def has_super(self, group: int) -> bool:
        """Whether GROUP holds a superblock backup (sparse_super, sparse_super2)."""
        if self.compat & COMPAT_SPARSE_SUPER2:
            return group == 0 or group in self.backup_bgs
        if group in (0, 1) or not self.ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def desc_location(self, group: int) -> tuple[int, int]:
        """(block, index in that block) of GROUP's descriptor (flat or meta_bg layout)."""
        per_block = self.block_size // self.desc_size
        meta_group = group // per_block
        if self.incompat & INCOMPAT_META_BG and meta_group >= self.first_meta_bg:
            first = meta_group * per_block
            block = self.first_data_block + first * self.blocks_per_group
            return block + (1 if self.has_super(first) else 0), group % per_block
        return self.first_data_block + 1 + meta_group, group % per_block


class GroupDesc:
    """One block group descriptor (``group_descr.rst``), 64-bit halves joined."""

    __slots__ = ("block_bitmap", "inode_bitmap", "inode_table", "flags", "itable_unused")

    def __init__(self, d: bytes, desc_size: int) -> None:
        if len(d) < 32:
            raise Ext4Error("group descriptor truncated")
        bb, ib, it = struct.unpack_from("<III", d, 0)
        self.flags = struct.unpack_from("<H", d, 0x12)[0]
        unused = struct.unpack_from("<H", d, 0x1C)[0]
        if desc_size >= 64 and len(d) >= 64:
            bbh, ibh, ith = struct.unpack_from("<III", d, 0x20)
            bb, ib, it = bb | bbh << 32, ib | ibh << 32, it | ith << 32
            unused |= struct.unpack_from("<H", d, 0x32)[0] << 16
        self.block_bitmap, self.inode_bitmap, self.inode_table = bb, ib, it
        self.itable_unused = unused


# ---- inodes --------------------------------------------------------------------------------------


def inode_times_ns(raw: bytes, inode_size: int) -> tuple[int, int, int]:
    """(atime, mtime, ctime) in ns as the kernel decodes them: the 32-bit seconds are signed,
    the extra fields (inodes over 128 bytes) add 2 epoch bits and the nanoseconds."""
    atime, ctime, mtime = struct.unpack_from("<iii", raw, 0x08)
    extra_isize = struct.unpack_from("<H", raw, 0x80)[0] if inode_size > 128 and len(raw) > 0x82 else 0
    out = []
    for base, off in ((atime, 0x8C), (mtime, 0x88), (ctime, 0x84)):
        ns = 0
        if extra_isize >= off + 4 - 0x80 and len(raw) >= off + 4:
            extra = struct.unpack_from("<I", raw, off)[0]
            base += (extra & 3) << 32
            ns = extra >> 2
        out.append(base * 1_000_000_000 + ns)
    return out[0], out[1], out[2]


def inode_rdev(raw: bytes) -> int:
    """st_rdev of a device inode (i_block[0] old encoding, else i_block[1] new encoding)."""
    old, new = struct.unpack_from("<II", raw, 0x28)
    if old:
        return os.makedev((old >> 8) & 0xFF, old & 0xFF)
    return os.makedev((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))


#: the 128 bytes every inode has, to 0x7C: mode, uid, size_lo, atime, ctime, mtime, dtime, gid,
#: links, (blocks), flags, (osd1), i_block, generation, file_acl_lo, size_hi, (faddr, blocks_hi),
#: file_acl_hi, uid_hi, gid_hi
_INODE_BASE = struct.Struct("<HHIiiiIHH4xI4x60sIII4x2xHHH")
#: from 0x80: extra_isize, (pad), ctime_extra, mtime_extra, atime_extra, crtime, crtime_extra
_INODE_EXTRA = struct.Struct("<H2xIIIiI")


class Inode:
    """The fields of one on-disk inode (``inodes.rst``)."""

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
        "file_acl",
    )

    def __init__(self, ino: int, raw: bytes, inode_size: int) -> None:
        self.ino = ino
        (
            self.mode,
            uid_lo,
            size_lo,
            atime,
            ctime,
            mtime,
            self.dtime,
            gid_lo,
            self.links,
            self.flags,
            self.iblock,
            self.generation,
            acl_lo,
            size_hi,
            acl_hi,
            uid_hi,
            gid_hi,
        ) = _INODE_BASE.unpack_from(raw, 0)
        self.file_acl = acl_lo | acl_hi << 32
        self.uid = uid_lo | uid_hi << 16
        self.gid = gid_lo | gid_hi << 16
        self.size = size_lo | size_hi << 32
        self.crtime_ns: int | None = None
        if inode_size > 128 and len(raw) >= 0x98:
            extra, c_ex, m_ex, a_ex, cr, cr_ex = _INODE_EXTRA.unpack_from(raw, 0x80)
            if extra >= 0x18:  # every extra time field is there (the common 256-byte inode)
                self.atime_ns = (atime + ((a_ex & 3) << 32)) * 1_000_000_000 + (a_ex >> 2)
                self.mtime_ns = (mtime + ((m_ex & 3) << 32)) * 1_000_000_000 + (m_ex >> 2)
                self.ctime_ns = (ctime + ((c_ex & 3) << 32)) * 1_000_000_000 + (c_ex >> 2)
                self.crtime_ns = (cr + ((cr_ex & 3) << 32)) * 1_000_000_000 + (cr_ex >> 2)
                return
        self.atime_ns, self.mtime_ns, self.ctime_ns = inode_times_ns(raw, inode_size)

    @property
    def key(self) -> tuple[int, int | None]:
        """What tells one incarnation of an inode number from the next."""
        return self.generation, self.crtime_ns

    @property
    def fmt(self) -> int:
        return statmod.S_IFMT(self.mode)

    @property
    def inline(self) -> bool:
        """Content in i_block itself: inline data, or a fast symlink."""
        return bool(self.flags & INLINE_DATA_FL) or (
            self.fmt == statmod.S_IFLNK and self.size < 60 and not self.flags & EXTENTS_FL
        )

    def has_mapping(self) -> bool:
        """Whether i_block still maps data (kernel deletion clears it)."""
        if self.flags & EXTENTS_FL:
            if self.iblock[:2] != b"\x0a\xf3":
                return False
            return struct.unpack_from("<H", self.iblock, 2)[0] > 0
        if self.flags & INLINE_DATA_FL or self.fmt == statmod.S_IFLNK and self.size < 60:
            return self.size > 0
        return any(self.iblock)


# ---- data mapping: extent trees and block maps --------------------------------------------------

Run = tuple[int, int, int, bool]  # (logical block, physical block, count, unwritten)


def _extent_runs(
    node: bytes,
    depth_left: int,
    read_meta: Callable[[int], bytes | None],
    out: list,
    problems: list,
    budget: list,
) -> None:
    if len(node) < 12 or struct.unpack_from("<H", node, 0)[0] != EXTENT_MAGIC:
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
            continue
        budget[0] -= 1
        if budget[0] < 0:
            problems.append("extent tree too large")
            return
        _lblk, lo, hi = struct.unpack_from("<IIH", node, p)
        child = read_meta(lo | hi << 32)
        if child is None:
            problems.append(f"extent tree block {lo | hi << 32} unreadable")
            continue
        _extent_runs(child, depth - 1, read_meta, out, problems, budget)


class _BlockMap:
    """The ext2/3 block map walk: 12 direct pointers, then single, double, triple indirect."""

    def __init__(
        self, block_size: int, read_meta: Callable[[int], bytes | None], nblocks: int, problems: list
    ):
        self.per = block_size // 4
        self.block_size = block_size
        self.read_meta = read_meta
        self.nblocks = nblocks
        self.problems = problems
        self.lblk = 0
        self.out: list[Run] = []

    def add(self, pblk: int) -> None:
        out = self.out
        if pblk:
            if out and out[-1][0] + out[-1][2] == self.lblk and out[-1][1] + out[-1][2] == pblk:
                last = out[-1]
                out[-1] = (last[0], last[1], last[2] + 1, False)
            else:
                out.append((self.lblk, pblk, 1, False))
        self.lblk += 1

    def indirect(self, pblk: int, level: int) -> None:
        span = self.per**level
        if self.lblk >= self.nblocks:
            return
        if not pblk:
            self.lblk += span
            return
        data = self.read_meta(pblk)
        if data is None or len(data) < self.block_size:
            self.problems.append(f"indirect block {pblk} unreadable")
            self.lblk += span
            return
        for p in struct.unpack(f"<{self.per}I", data[: self.block_size]):
            if self.lblk >= self.nblocks:
                return
            if level == 1:
                self.add(p)
            else:
                self.indirect(p, level - 1)

    def walk(self, iblock: bytes) -> list[Run]:
        ptrs = struct.unpack("<15I", iblock)
        for p in ptrs[:12]:
            if self.lblk >= self.nblocks:
                break
            self.add(p)
        for level, p in ((1, ptrs[12]), (2, ptrs[13]), (3, ptrs[14])):
            self.indirect(p, level)
        return self.out


def mapping(
    inode: Inode, block_size: int, read_meta: Callable[[int], bytes | None], nblocks: int, problems: list[str]
) -> list[Run]:
    """[(logical block, physical block, count, unwritten)] of INODE's data, from its extent tree
    or ext2/3 block map (the first NBLOCKS logical blocks); tree and indirect blocks through
    READ_META(block) -> bytes | None.  What does not parse is appended to PROBLEMS."""
    if inode.flags & EXTENTS_FL:
        out: list[Run] = []
        _extent_runs(inode.iblock, 5, read_meta, out, problems, [4096])
        out.sort()
        return out
    return _BlockMap(block_size, read_meta, nblocks, problems).walk(inode.iblock)


# ---- directory blocks ----------------------------------------------------------------------------

DirEntry = tuple[bytes, int, int, bool]  # (name, inode, file type, deleted)


def _entry_head(block: bytes, pos: int, filetype: bool) -> tuple[int, int, int, int]:
    ino, rec_len, name_len, ftype = struct.unpack_from("<IHBB", block, pos)
    if not filetype:
        return ino, rec_len, name_len | ftype << 8, 0
    return ino, rec_len, name_len, ftype


def parse_dir_block(block: bytes, filetype: bool, max_ino: int) -> list[DirEntry] | None:
    """Entries of a directory block: [(name, inode, file type, deleted)], deleted ones found in
    the slack of a predecessor's rec_len; None when BLOCK is not a directory block."""
    bs = len(block)
    out: list[DirEntry] = []
    pos = 0
    while pos < bs:
        if pos + 8 > bs:
            return None
        ino, rec_len, name_len, ftype = _entry_head(block, pos, filetype)
        if rec_len in (0, 65535) and bs == 65536:
            rec_len = 65536
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
        used = (8 + name_len + 3) & ~3 if ino else 0
        if ino == 0 and pos == 0 and 0 < name_len <= rec_len - 8:
            used = 0  # a first entry deleted in place: its name is still there, its inode is 0
        _slack(block, pos + max(used, 12 if ino else 0), pos + rec_len, filetype, max_ino, out)
        pos += rec_len
    return out or None


def _slack(block: bytes, start: int, end: int, filetype: bool, max_ino: int, out: list) -> None:
    """Deleted entries inside [start, end): merged into the predecessor's rec_len on unlink."""
    pos = (start + 3) & ~3
    while pos + 12 <= end:
        if not block[pos] and not block[pos + 1] and not block[pos + 2] and not block[pos + 3]:
            # inode 0: no entry here; jump to the word holding the next non-zero byte
            m = _NONZERO.search(block, pos + 4, end)
            if m is None:
                return
            pos = m.start() & ~3
            continue
        ino, rec_len, name_len, ftype = _entry_head(block, pos, filetype)
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


def live_names(data: bytes, block_size: int, filetype: bool) -> list[str] | None:
    """Names of the live entries in DATA (whole directory blocks), in on-disk order; None when a
    block does not parse.  Linear and htree directories alike: htree index blocks present
    themselves as unused entries ('Hash Tree Directories')."""
    names: list[str] = []
    for start in range(0, len(data), block_size):
        block = data[start : start + block_size]
        pos = 0
        while pos + 8 <= len(block):
            inode, rec_len = struct.unpack_from("<IH", block, pos)
            name_len = block[pos + 6] if filetype else struct.unpack_from("<H", block, pos + 6)[0]
            if rec_len < 8 or rec_len % 4 or pos + rec_len > len(block) or 8 + name_len > rec_len:
                return None
            if inode:
                raw = block[pos + 8 : pos + 8 + name_len]
                if raw not in (b".", b".."):
                    names.append(raw.decode("utf-8", "surrogateescape"))
            pos += rec_len
    return names


# ---- extended attributes -------------------------------------------------------------------------


def acl_to_xattr(value: bytes) -> bytes:
    """ext4's on-disk POSIX ACL (version 1, short entries) in the kernel's xattr format (version 2)."""
    if len(value) < 4 or struct.unpack_from("<I", value)[0] != 1:
        return value
    out = [struct.pack("<I", 2)]
    pos = 4
    while pos + 4 <= len(value):
        tag, perm = struct.unpack_from("<HH", value, pos)
        if tag in _ACL_SHORT_TAGS:
            ident = 0xFFFFFFFF
            pos += 4
        else:
            if pos + 8 > len(value):
                break
            ident = struct.unpack_from("<I", value, pos + 4)[0]
            pos += 8
        out.append(struct.pack("<HHI", tag, perm, ident))
    return b"".join(out)


def xattr_entries(
    buf: bytes, pos: int, values: bytes, out: dict[str, bytes], read_ea_inode: Callable[[int, int], bytes]
) -> None:
    """Parse the xattr entries of BUF from POS into OUT (values at offsets in VALUES, or in an EA
    inode read with READ_EA_INODE(inum, size))."""
    while pos + 16 <= len(buf):
        if struct.unpack_from("<I", buf, pos)[0] == 0:
            break
        name_len, index, value_offs, value_inum, value_size = struct.unpack_from("<BBHII", buf, pos)
        name = buf[pos + 16 : pos + 16 + name_len]
        pos += (16 + name_len + 3) & ~3
        prefix = _XATTR_PREFIX.get(index)
        if prefix is None:
            continue
        if value_inum:
            value = read_ea_inode(value_inum, value_size)
        else:
            value = values[value_offs : value_offs + value_size]
        if index in (2, 3):
            value = acl_to_xattr(value)
        out[prefix + name.decode("utf-8", "surrogateescape")] = value


# ---- the filesystem ------------------------------------------------------------------------------


class Ext4:
    """An ext2/3/4 filesystem at byte OFFSET of what READ(offset, size) reads."""

    def __init__(self, read: Read, offset: int = 0) -> None:
        self._read = read
        self.offset = offset
        self.sb = sb = Superblock(read(offset + 1024, 1024))
        self.block_size = sb.block_size
        self.inode_size = sb.inode_size
        self.inodes_per_group = sb.inodes_per_group
        self.blocks_per_group = sb.blocks_per_group
        self.inodes_count = sb.inodes_count
        self.blocks_count = sb.blocks_count
        self.first_ino = sb.first_ino
        self.groups = sb.groups
        self.itable_blocks = -(-sb.inodes_per_group * sb.inode_size // sb.block_size)
        self.filetype = bool(sb.incompat & INCOMPAT_FILETYPE)
        self._gd: dict[int, GroupDesc] = {}
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._bitmaps: OrderedDict[int, bytes] = OrderedDict()
        self._itable_index: tuple[list[int], list[int]] | None = None

    # ---- blocks and groups ----------------------------------------------------------------
    def read_blocks(self, block: int, count: int = 1) -> bytes:
        """COUNT blocks from BLOCK (clipped to the filesystem; b"" beyond it)."""
        if block < 0 or block + count > self.blocks_count:
            count = max(0, min(count, self.blocks_count - block))
        if count <= 0:
            return b""
        return self._read(self.offset + block * self.block_size, count * self.block_size)

    def group_desc(self, group: int) -> GroupDesc:
        gd = self._gd.get(group)
        if gd is None:
            block, index = self.sb.desc_location(group)
            at = self.offset + block * self.block_size + index * self.sb.desc_size
            d = self._read(at, self.sb.desc_size)
            if len(d) < 32:
                raise Ext4Error(f"group descriptor {group} beyond the image")
            gd = GroupDesc(d, self.sb.desc_size)
            if len(self._gd) > 1 << 16:
                self._gd.clear()
            self._gd[group] = gd
        return gd

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

    def block_in_use(self, block: int) -> bool:
        """The block bitmap's bit for BLOCK (outside the filesystem: in use)."""
        if block < self.sb.first_data_block or block >= self.blocks_count:
            return True
        group, index = divmod(block - self.sb.first_data_block, self.blocks_per_group)
        gd = self.group_desc(group)
        if gd.flags & BG_BLOCK_UNINIT and self.sb.csum_groups:
            return False
        bm = self._bitmap(gd.block_bitmap)
        return bool(index // 8 < len(bm) and bm[index // 8] >> (index % 8) & 1)

    def used_blocks(self, first: int, count: int) -> list[int]:
        """The blocks of [FIRST, FIRST+COUNT) :meth:`block_in_use` calls in use, found a bitmap
        slice at a time (one integer per group's part of the range, not one call per block)."""
        out: list[int] = []
        end = first + count
        fdb, bpg = self.sb.first_data_block, self.blocks_per_group
        b = first
        while b < end:
            if b < fdb or b >= self.blocks_count:
                stop = min(end, fdb) if b < fdb else end
                out.extend(range(b, stop))
                b = stop
                continue
            group, index = divmod(b - fdb, bpg)
            stop = min(end, fdb + (group + 1) * bpg, self.blocks_count)
            n = stop - b
            gd = self.group_desc(group)
            if not (gd.flags & BG_BLOCK_UNINIT and self.sb.csum_groups):
                lo = index // 8
                bits = int.from_bytes(self._bitmap(gd.block_bitmap)[lo : (index + n - 1) // 8 + 1], "little")
                bits = (bits >> (index - lo * 8)) & ((1 << n) - 1)
                while bits:
                    low = bits & -bits
                    out.append(b + low.bit_length() - 1)
                    bits ^= low
            b = stop
        return out

    def inode_in_use(self, ino: int) -> bool:
        group, index = divmod(ino - 1, self.inodes_per_group)
        gd = self.group_desc(group)
        if gd.flags & BG_INODE_UNINIT and self.sb.csum_groups:
            return False
        bm = self._bitmap(gd.inode_bitmap)
        return bool(index // 8 < len(bm) and bm[index // 8] >> (index % 8) & 1)

    def free_runs(self) -> tuple[list[tuple[int, int]], int]:
        """Free block runs [(first, end)] from every group's block bitmap (a ``BLOCK_UNINIT``
        group counts as free), merged; also the number of BLOCK_UNINIT groups."""
        runs: list[tuple[int, int]] = []
        bpg, first = self.blocks_per_group, self.sb.first_data_block

        def add(b0: int, b1: int) -> None:
            if runs and runs[-1][1] == b0:
                runs[-1] = (runs[-1][0], b1)
            else:
                runs.append((b0, b1))

        uninit = 0
        for g in range(self.groups):
            gd = self.group_desc(g)
            g0 = first + g * bpg
            n = min(bpg, self.blocks_count - g0)
            if gd.flags & BG_BLOCK_UNINIT:  # nothing allocated but the group's own metadata
                uninit += 1
                add(g0, g0 + n)
                continue
            bits = self._read(self.offset + gd.block_bitmap * self.block_size, (n + 7) // 8)
            for b0, b1 in _zero_bits(bits, n):
                add(g0 + b0, g0 + b1)
        return runs, uninit

    # ---- inodes ----------------------------------------------------------------------------
    def inode_table(self, group: int) -> int:
        return self.group_desc(group).inode_table

    def raw_inode(self, ino: int) -> bytes:
        """The on-disk inode; inode-table blocks are read whole and kept in a small LRU (a
        directory's inodes are usually neighbours)."""
        if ino < 1:
            raise Ext4Error(f"inode {ino} does not exist")
        group, index = divmod(ino - 1, self.inodes_per_group)
        block_no, within = divmod(index * self.inode_size, self.block_size)
        key = self.inode_table(group) + block_no
        block = self._blocks.get(key)
        if block is None:
            block = self._read(self.offset + key * self.block_size, self.block_size)
            self._blocks[key] = block
            if len(self._blocks) > 256:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(key)
        data = block[within : within + self.inode_size]
        if len(data) < 128:
            raise Ext4Error(f"inode {ino} beyond the image")
        return data

    def inode(self, ino: int) -> Inode | None:
        """Inode INO as the inode table holds it now; None when unreadable."""
        try:
            return Inode(ino, self.raw_inode(ino), self.inode_size)
        except (Ext4Error, struct.error):
            return None

    def parse_inode(self, ino: int, raw: bytes) -> Inode:
        """An inode from RAW bytes (a journalled copy of its inode-table block)."""
        return Inode(ino, raw, self.inode_size)

    def times_ns(self, raw: bytes) -> tuple[int, int, int]:
        return inode_times_ns(raw, self.inode_size)

    def itable_first_inode(self, block: int) -> int | None:
        """The first inode number held by inode-table block BLOCK, None if it is not one."""
        if self._itable_index is None:
            pairs = sorted((self.group_desc(g).inode_table, g) for g in range(self.groups))
            self._itable_index = ([p[0] for p in pairs], [p[1] for p in pairs])
        starts, groups = self._itable_index
        i = bisect.bisect_right(starts, block) - 1
        if i < 0 or block >= starts[i] + self.itable_blocks:
            return None
        per_block = self.block_size // self.inode_size
        return groups[i] * self.inodes_per_group + (block - starts[i]) * per_block + 1

    def mapping(
        self,
        inode: Inode,
        read_meta: Callable[[int], bytes | None] | None = None,
        problems: list | None = None,
    ) -> list[Run]:
        """:func:`mapping` of INODE's first i_size bytes (metadata read from the disk by default)."""
        nblocks = -(-inode.size // self.block_size)
        return mapping(
            inode,
            self.block_size,
            read_meta or (lambda b: self.read_blocks(b) or None),
            nblocks,
            [] if problems is None else problems,
        )

    # ---- directories and attributes --------------------------------------------------------
    def dir_names(self, ino: int, size: int, read: Read) -> list[str] | None:
        """Names of the live entries of directory INO from its content (READ(offset, n)), in
        on-disk order; None when the layout is one to leave to another reader (inline data,
        encrypted, or a block that does not parse)."""
        flags = struct.unpack_from("<I", self.raw_inode(ino), 0x20)[0]
        if flags & (INLINE_DATA_FL | ENCRYPT_FL):
            return None
        bs = self.block_size
        names: list[str] = []
        step = max(bs, (1 << 20) // bs * bs)
        for base in range(0, size, step):
            got = live_names(read(base, min(step, size - base)), bs, self.filetype)
            if got is None:
                return None
            names.extend(got)
        return names

    def xattrs(self, ino: int, read_ea_inode: Callable[[int, int], bytes]) -> dict[str, bytes]:
        """Extended attributes of inode INO: in-inode ones first, then the xattr block's."""
        raw = self.raw_inode(ino)
        out: dict[str, bytes] = {}
        if self.inode_size > 128 and len(raw) >= 132:
            extra = struct.unpack_from("<H", raw, 0x80)[0]
            start = 128 + extra
            if extra and start + 4 <= len(raw) and struct.unpack_from("<I", raw, start)[0] == XATTR_MAGIC:
                body = raw[start + 4 :]
                xattr_entries(body, 0, body, out, read_ea_inode)
        acl = struct.unpack_from("<I", raw, 0x68)[0] | (struct.unpack_from("<H", raw, 0x76)[0] << 32)
        if acl:
            block = self._read(self.offset + acl * self.block_size, self.block_size)
            if len(block) >= 32 and struct.unpack_from("<I", block, 0)[0] == XATTR_MAGIC:
                xattr_entries(block, 32, block, out, read_ea_inode)
        return out


_FREE = re.compile(rb"\x00+|[^\xff]")
_NONZERO = re.compile(rb"[^\x00]")


def _zero_bits(bits: bytes, n: int) -> Iterator[tuple[int, int]]:
    """Runs [b0, b1) of clear bits among the first N bits of the bitmap BITS."""
    for m in _FREE.finditer(bits):
        i = m.start()
        if m.group()[0] == 0:
            yield i * 8, min(m.end() * 8, n)
            continue
        byte = m.group()[0]
        for bit in range(8):
            k = i * 8 + bit
            if k < n and not byte >> bit & 1:
                yield k, k + 1
