"""The jbd2 journal of ext3/ext4, read for what it still remembers, not for replay.

Layout (kernel ``Documentation/filesystems/ext4/journal.rst``, ``include/linux/jbd2.h``): every
journal metadata block starts with a big-endian header (magic ``0xC03B3998``, block type,
transaction sequence).  Block 0 of the journal is its superblock (type 3 or 4: block size, length,
first log block, sequence and start of the live log, feature flags).  A transaction is a
descriptor block (type 1) whose tags name, in order, the filesystem block each following journal
block is a copy of; revoke blocks (type 5) and a commit block (type 2) follow.  Tags are
``journal_block_tag3_t`` (16 bytes: blocknr, flags, blocknr_high, checksum) with CSUM_V3, else
``journal_block_tag_t`` (blocknr, 16-bit checksum, 16-bit flags, blocknr_high only with 64BIT,
2 more bytes with CSUM_V2); a 16-byte UUID follows a tag without SAME_UUID; LAST_TAG ends the
list; an ESCAPE'd data block had its first four bytes (the magic) zeroed.

The live log is only the part from ``s_start``; older transactions stay in the journal area until
it wraps over them.  :func:`scan` therefore reads the WHOLE area and reports every descriptor it
can parse, whatever its sequence number: old copies of directory and inode-table blocks are what
deleted files are recovered from.  Nothing here trusts a count: tags are bounded by the block,
data blocks by the journal, and whatever does not parse is a problem, never an exception.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

MAGIC = 0xC03B3998
DESCRIPTOR, COMMIT, SB_V1, SB_V2, REVOKE = 1, 2, 3, 4, 5

FLAG_ESCAPE, FLAG_SAME_UUID, FLAG_DELETED, FLAG_LAST_TAG = 1, 2, 4, 8

INCOMPAT_REVOKE = 0x1
INCOMPAT_64BIT = 0x2
INCOMPAT_ASYNC_COMMIT = 0x4
INCOMPAT_CSUM_V2 = 0x8
INCOMPAT_CSUM_V3 = 0x10
INCOMPAT_FAST_COMMIT = 0x20

_MAGIC_BYTES = struct.pack(">I", MAGIC)


class JournalError(Exception):
    """The journal superblock is missing or unusable."""


class JournalSuper:
    """The fields of the journal superblock that reading the log needs."""

    __slots__ = (
        "blocksize",
        "maxlen",
        "first",
        "sequence",
        "start",
        "incompat",
        "uuid",
        "version",
        "fc_blocks",
    )

    def __init__(self, block: bytes) -> None:
        if len(block) < 0x60:
            raise JournalError("journal superblock truncated")
        magic, btype = struct.unpack_from(">II", block, 0)
        if magic != MAGIC:
            raise JournalError(f"no journal superblock (magic {magic:#010x}, expected {MAGIC:#010x})")
        if btype not in (SB_V1, SB_V2):
            raise JournalError(f"journal superblock of unknown block type {btype}")
        self.version = 1 if btype == SB_V1 else 2
        self.blocksize, self.maxlen, self.first, self.sequence, self.start = struct.unpack_from(
            ">5I", block, 12
        )
        self.incompat = struct.unpack_from(">I", block, 0x28)[0] if self.version == 2 else 0
        self.uuid = bytes(block[0x30:0x40])
        self.fc_blocks = struct.unpack_from(">I", block, 0x54)[0] if self.version == 2 else 0
        if self.blocksize < 1024 or self.blocksize > 65536 or self.blocksize & (self.blocksize - 1):
            raise JournalError(f"implausible journal block size {self.blocksize}")
        if self.first < 1 or self.maxlen <= self.first:
            raise JournalError(f"implausible journal extent: first block {self.first}, length {self.maxlen}")

    @property
    def is_64bit(self) -> bool:
        return bool(self.incompat & INCOMPAT_64BIT)

    def tag_bytes(self) -> int:
        """Size of one block tag without its UUID (the kernel's journal_tag_bytes)."""
        if self.incompat & INCOMPAT_CSUM_V3:
            return 16
        size = 12
        if self.incompat & INCOMPAT_CSUM_V2:
            size += 2
        return size if self.is_64bit else size - 4

    def features(self) -> list[str]:
        names = [
            (INCOMPAT_REVOKE, "revoke"),
            (INCOMPAT_64BIT, "64bit"),
            (INCOMPAT_ASYNC_COMMIT, "async_commit"),
            (INCOMPAT_CSUM_V2, "csum_v2"),
            (INCOMPAT_CSUM_V3, "csum_v3"),
            (INCOMPAT_FAST_COMMIT, "fast_commit"),
        ]
        return [n for bit, n in names if self.incompat & bit]


class Tag:
    """One journalled block: journal block JBLOCK holds a copy of filesystem block FSBLOCK as
    transaction SEQUENCE wrote it (ESCAPED: restore the magic in its first four bytes)."""

    __slots__ = ("jblock", "fsblock", "sequence", "escaped")

    def __init__(self, jblock: int, fsblock: int, sequence: int, escaped: bool) -> None:
        self.jblock = jblock
        self.fsblock = fsblock
        self.sequence = sequence
        self.escaped = escaped

    def __repr__(self) -> str:
        return f"Tag(j{self.jblock} -> fs{self.fsblock}, seq {self.sequence})"


def parse_descriptor(block: bytes, jsb: JournalSuper, jblock: int) -> tuple[list[Tag], list[str]]:
    """The tags of descriptor block BLOCK (at journal block JBLOCK): data blocks follow it in
    order, wrapping from the end of the log to its first block.  (tags, problems)."""
    sequence = struct.unpack_from(">I", block, 8)[0]
    tag_size = jsb.tag_bytes()
    csum = jsb.incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3)
    end = len(block) - (4 if csum else 0)  # jbd2_journal_block_tail
    span = jsb.maxlen - jsb.first
    tags: list[Tag] = []
    problems: list[str] = []
    pos = 12
    nxt = jblock
    last = False
    while pos + tag_size <= end and not last:
        if jsb.incompat & INCOMPAT_CSUM_V3:
            lo, flags, hi = struct.unpack_from(">III", block, pos)
        else:
            lo, flags = struct.unpack_from(">IxxH", block, pos)
            hi = struct.unpack_from(">I", block, pos + 8)[0] if jsb.is_64bit else 0
        pos += tag_size
        if not flags & FLAG_SAME_UUID:
            pos += 16
        last = bool(flags & FLAG_LAST_TAG)
        fsblock = lo | (hi << 32 if jsb.is_64bit else 0)
        nxt += 1
        if nxt >= jsb.maxlen:
            nxt = jsb.first
        if len(tags) >= span - 1:
            problems.append(f"descriptor at journal block {jblock}: more tags than the journal has blocks")
            break
        tags.append(Tag(nxt, fsblock, sequence, bool(flags & FLAG_ESCAPE)))
    if not last and tags and len(tags) < span - 1:
        problems.append(f"descriptor at journal block {jblock} (transaction {sequence}): no last tag")
    return tags, problems


def parse_revoke(block: bytes, jsb: JournalSuper) -> list[int]:
    """Filesystem block numbers a revoke block revokes (bounded by the block)."""
    count = struct.unpack_from(">I", block, 12)[0]
    count = min(count, len(block))
    width = 8 if jsb.is_64bit else 4
    fmt = ">Q" if width == 8 else ">I"
    return [struct.unpack_from(fmt, block, p)[0] for p in range(16, count - width + 1, width)]


def commit_time(block: bytes) -> int | None:
    """h_commit_sec of a commit block (None when unset)."""
    if len(block) < 0x3C:
        return None
    sec = struct.unpack_from(">Q", block, 0x30)[0]
    return sec or None


class Scan:
    """Everything the journal area holds: tags of every parsable descriptor, commit times and
    revoked blocks by transaction, and the problems met."""

    def __init__(self, jsb: JournalSuper) -> None:
        self.jsb = jsb
        self.tags: list[Tag] = []
        self.commits: dict[int, int | None] = {}  # sequence -> commit time (s)
        self.revoked: dict[int, list[int]] = {}
        self.descriptors = 0
        self.problems: list[str] = []


def scan(read_blocks: Callable[[int, int], bytes], jsb: JournalSuper, progress=None) -> Scan:
    """Scan journal blocks ``first .. maxlen-1``: READ_BLOCKS(first_jblock, count) returns the
    bytes of COUNT consecutive journal blocks.  Read 1 MiB at a time; memory holds tags only."""
    out = Scan(jsb)
    bs = jsb.blocksize
    per = max(1, (1 << 20) // bs)
    data_blocks: set[int] = set()
    j = jsb.first
    while j < jsb.maxlen:
        n = min(per, jsb.maxlen - j)
        chunk = read_blocks(j, n)
        for i in range(len(chunk) // bs):
            jb = j + i
            if chunk[i * bs : i * bs + 4] != _MAGIC_BYTES or jb in data_blocks:
                continue
            block = chunk[i * bs : (i + 1) * bs]
            btype, seq = struct.unpack_from(">II", block, 4)
            if btype == DESCRIPTOR:
                tags, problems = parse_descriptor(block, jsb, jb)
                out.descriptors += 1
                out.problems.extend(problems)
                for t in tags:
                    data_blocks.add(t.jblock)
                out.tags.extend(tags)
            elif btype == COMMIT:
                out.commits[seq] = commit_time(block)
            elif btype == REVOKE:
                out.revoked.setdefault(seq, []).extend(parse_revoke(block, jsb))
        if len(chunk) < n * bs:
            out.problems.append(f"journal block {j + len(chunk) // bs} unreadable: the image ends")
            break
        j += n
        if progress is not None:
            progress(n * bs)
    return out


def unescape(block: bytes, tag: Tag) -> bytes:
    return _MAGIC_BYTES + block[4:] if tag.escaped else block


def iter_runs(jblocks: list[int], max_run: int) -> Iterator[tuple[int, int]]:
    """Sorted journal block numbers as (start, count) runs of consecutive blocks."""
    start = prev = None
    for jb in jblocks:
        if start is None:
            start = prev = jb
        elif jb == prev + 1 and jb - start < max_run:
            prev = jb
        else:
            yield start, prev - start + 1
            start = prev = jb
    if start is not None:
        yield start, prev - start + 1
