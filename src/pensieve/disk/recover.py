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
6. attributes every path below an engine's root -- a Docker data root, a containerd root (a
   snapshot's ``fs/``: snapshot, namespace, containers, images), a Podman graphroot (a layer's
   ``diff/``) -- with the host's ``whence`` (each engine's layout rules are its own), and for a
   Docker layer no container references any more (``docker rm``), looks for the container in
   what was recovered too: the engine's own deleted bookkeeping files naming the layer's
   container, its config, or the layers below it
   (:mod:`pensieve.engines.docker.drivers.remnants` knows where they live and what they say).

The image is only ever read (``pread`` through the evidence's image object); memory holds tags,
names and inode versions, never the journal or a file: content is streamed in 1 MiB runs.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import posixpath
import re
import stat as statmod
import struct
from collections.abc import Callable

from pensieve.engines.docker.drivers import (
    DEFAULT_DATA_ROOT,
    LAYER_REMNANT,
    RemovedContainers,
    link_names,
    overlay2_contents,
)
from pensieve.engines.docker.drivers.remnants import (
    MOUNT_RECORD_NOTE,
    mount_id_file,
    mount_record_container,
    removed_layer_kind,
)
from pensieve.errors import UsageError
from pensieve.evidence.base import EvidenceError, NotFound
from pensieve.evidence.disk import DiskImageEvidence
from pensieve.formats import jbd2
from pensieve.formats.ext4 import (
    BG_INODE_UNINIT,
    COMPAT_HAS_JOURNAL,
    FILE_TYPES,
    INLINE_DATA_FL,
    Ext4,
    Ext4Error,
    Inode,
    mapping,
    parse_dir_block,
)
from pensieve.output.sink import OutputSink, WrittenFile
from pensieve.records import Problem
from pensieve.records.core import Timestamp
from pensieve.records.disk import RecoveredFile, RecoverReport
from pensieve.times import iso_ns

__all__ = [
    "COMPLETE",
    "JOURNAL",
    "METADATA_ONLY",
    "ORPHAN",
    "PARTIAL",
    "RecoverReport",
    "RecoveredFile",
    "Recovery",
    "block_owners",
    "parse_dir_block",
    "recover",
]

COMPLETE, PARTIAL, METADATA_ONLY = "complete", "partial", "metadata-only"
JOURNAL, ORPHAN = "journal", "orphan"

_RUN = 1 << 20
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
_FT = FILE_TYPES
_NS = 1_000_000_000


def _time(ns: int | None) -> Timestamp | None:
    """A Timestamp, None for an unset time (0)."""
    return Timestamp(ns) if ns else None


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
    """A directory entry seen in a journalled directory block (BLOCK) of directory PARENT; one
    object per entry (compared and hashed by identity: a parse-time working object, not a record)."""

    __slots__ = ("parent", "name", "ino", "ftype", "seq", "deleted_slot", "block")

    def __init__(
        self, parent: int | None, name: bytes, ino: int, ftype: int, seq: int, deleted_slot: bool, block: int
    ) -> None:
        self.parent, self.name, self.ino, self.ftype = parent, name, ino, ftype
        self.seq, self.deleted_slot, self.block = seq, deleted_slot, block


class _ContentOut:
    """Where recovered content goes: its sha256, the output file (if any) and, for a small
    remnant, the bytes kept in memory."""

    __slots__ = ("hash", "fh", "kept")

    def __init__(self, fh: WrittenFile | None, keep: bool) -> None:
        self.hash = hashlib.sha256()
        self.fh = fh
        self.kept: list[bytes] | None = [] if keep else None

    def write(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        if self.fh is not None:
            self.fh.write(chunk)
        if self.kept is not None:
            self.kept.append(chunk)

    def zeros(self, n: int) -> int:
        """N zero bytes (a hole), in 1 MiB steps; returns N (0 when negative)."""
        left = n
        while left > 0:
            z = bytes(min(left, _RUN))
            self.write(z)
            left -= len(z)
        return max(0, n)

    def kept_bytes(self) -> bytes | None:
        return b"".join(self.kept) if self.kept is not None else None


# ---- progress ---------------------------------------------------------------------------------

Progress = Callable[[str, int, int], None]  # (phase, done, total)


# ---- recovery ---------------------------------------------------------------------------------


class Recovery:
    """Recover the deleted files of the ext2/3/4 filesystem of a DiskImageEvidence."""

    def __init__(self, evidence: DiskImageEvidence, progress: Progress | None = None) -> None:
        what = "recover reads ext2/3/4 filesystems in disk images, not"
        if not isinstance(evidence, DiskImageEvidence):
            raise EvidenceError(f"{what} {evidence.description}")
        if evidence.ext4 is None:
            raise EvidenceError(f"{what} {evidence.fs_type}")
        self.evidence = evidence
        self.fs: Ext4 = evidence.ext4
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
        self._journalled_sorted: list[int] | None = None
        self._cur: dict[int, Inode | None] = {}  # the inode table now, parsed once per inode
        self._parsed: dict[tuple[int, bytes], tuple[Inode, bool]] = {}  # inode copy -> (it, alive)

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

    def _current(self, ino: int) -> Inode | None:
        """Inode INO as the inode table holds it now (parsed once: the image is not written)."""
        try:
            return self._cur[ino]
        except KeyError:
            cur = self._cur[ino] = self.fs.inode(ino)
            return cur

    # ---- the journal ----------------------------------------------------------------------
    def _open_journal(self) -> None:
        fs = self.fs
        sb = fs.sb
        if not sb.compat & COMPAT_HAS_JOURNAL or not sb.journal_inum:
            self.problems.append("the filesystem has no journal: only the inode table is searched")
            return
        if sb.journal_dev:
            self.problems.append("external journal device: only the inode table is searched")
            return
        jino = fs.inode(sb.journal_inum)
        if jino is None or not jino.has_mapping():
            self.problems.append(f"journal inode {sb.journal_inum} unreadable")
            return
        probs: list[str] = []
        nblocks = max(1, -(-jino.size // fs.block_size))
        runs = mapping(jino, fs.block_size, lambda b: fs.read_blocks(b) or None, min(nblocks, 1 << 24), probs)
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
            "inode": sb.journal_inum,
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
        entries = parse_dir_block(block, fs.filetype, fs.inodes_count)
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
        key = (ino, raw)
        hit = self._parsed.get(key)
        if hit is None:  # the same bytes in another copy of the block: parsed and judged once
            try:
                v = fs.parse_inode(ino, raw)
            except struct.error:
                return
            live = False
            if v.mode:
                cur = self._current(ino)
                live = cur is not None and cur.key == v.key and cur.links > 0 and fs.inode_in_use(ino)
            if len(self._parsed) >= 1 << 16:
                self._parsed.clear()
            hit = self._parsed[key] = (v, live)
        v, live = hit
        if not v.mode:
            return
        if live:  # still this incarnation in the inode table
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
            cur = self._current(ino)
            if cur is not None and statmod.S_ISDIR(cur.mode) and cur.has_mapping():
                versions.append(cur)
            for v in versions:
                if not statmod.S_ISDIR(v.mode) or v.size > 1 << 30:
                    continue
                probs: list[str] = []
                n = -(-v.size // fs.block_size)
                for _lb, pb, cnt, _u in mapping(v, fs.block_size, self._meta_block, n, probs):
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
        ino = fs.sb.last_orphan
        while ino and ino not in seen and len(seen) < 1 << 20:
            if ino > fs.inodes_count or ino < 1:
                self.problems.append(f"orphan list points at inode {ino}, beyond the filesystem")
                break
            seen.add(ino)
            cur = self._current(ino)
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
        csum = fs.sb.csum_groups
        for g in range(fs.groups):
            try:
                gd = fs.group_desc(g)
            except Ext4Error as exc:
                self.problems.append(str(exc))
                break
            if csum and gd.flags & BG_INODE_UNINIT:
                continue
            table = gd.inode_table
            used = fs.inodes_per_group - (gd.itable_unused if csum else 0)
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
                    v = fs.parse_inode(n, raw)
                    inc = self._inc(n, v.key)
                    inc.add(_CURRENT, v)
                    inc.current = True
            self._tick("inode table", g + 1, total)

    # ---- names and paths ------------------------------------------------------------------
    def _live_dir(self, ino: int) -> Inode | None:
        fs = self.fs
        cur = self._current(ino)
        if cur is None or not statmod.S_ISDIR(cur.mode) or not cur.links or not fs.inode_in_use(ino):
            return None
        return cur

    def _dir_blocks(self, inode: Inode):
        fs = self.fs
        probs: list[str] = []
        n = -(-inode.size // fs.block_size)
        for _lb, pb, cnt, _u in mapping(inode, fs.block_size, lambda b: fs.read_blocks(b) or None, n, probs):
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
        filetype = self.fs.filetype
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
                    cur, self.fs.block_size, lambda b: self.fs.read_blocks(b) or None, n, []
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
        self, inc: Incarnation, rec: RecoveredFile, fh: WrittenFile | None, keep: bool
    ) -> bytes | None:
        """Read what survives of INC's content: fills bytes_recovered, confidence, sha256, blocks;
        writes it to FH (a file of the output sink) when given; returns the bytes when KEEP
        (small files only)."""
        if rec.size is None:
            rec.notes.append("size unknown: no version of the inode from before its deletion survives")
            return None
        out = _ContentOut(fh, keep)
        if inc.mapped is None:
            return self._unmapped_content(rec, out)
        src = inc.mapped[1]
        if src.inline:
            return self._inline_content(src, rec, out)
        return self._mapped_content(inc, src, rec, out)

    @staticmethod
    def _unmapped_content(rec: RecoveredFile, out: _ContentOut) -> bytes | None:
        """No version with a mapping survives: only an empty file or symlink is complete."""
        if rec.size == 0 and rec.type in ("file", "symlink"):
            rec.confidence = COMPLETE
            rec.sha256 = out.hash.hexdigest()
            return out.kept_bytes()
        rec.confidence = METADATA_ONLY
        if rec.size:
            rec.notes.append("no version of the inode with its extents survives")
        return None

    @staticmethod
    def _inline_content(src: Inode, rec: RecoveredFile, out: _ContentOut) -> bytes | None:
        """The content kept in i_block itself (inline data)."""
        size = rec.size or 0
        data = src.iblock[: min(size, 60)]
        out.write(data)
        rec.bytes_recovered = len(data)
        rec.confidence = COMPLETE if len(data) == size else PARTIAL
        if len(data) < size:
            rec.notes.append("inline data beyond i_block (system.data xattr) not read")
        rec.sha256 = out.hash.hexdigest()
        return out.kept_bytes()

    def _mapped_content(
        self, inc: Incarnation, src: Inode, rec: RecoveredFile, out: _ContentOut
    ) -> bytes | None:
        """The content through SRC's extents (or block map): holes as zeros, reused blocks as
        zeros (not counted as recovered)."""
        fs = self.fs
        size = rec.size or 0
        bs = fs.block_size
        probs: list[str] = []
        nblocks = -(-size // bs)
        runs = mapping(src, bs, self._meta_block, nblocks, probs)
        rec.notes.extend(probs[:5])
        lost = self._survival(inc, src, nblocks)
        got = 0
        pos = 0  # logical byte offset written so far
        for lb, pb, cnt, unwritten in runs:
            if lb >= nblocks:
                break
            cnt = min(cnt, nblocks - lb)
            start = lb * bs
            if start > pos:  # a hole: zeros, genuinely part of the file
                got += out.zeros(min(start, size) - pos)
                pos = min(start, size)
            if start < pos:
                continue  # overlapping extents (corrupt): keep the first
            run_got, pos = self._copy_run(rec, out, (lb, pb, cnt, unwritten), pos, lost)
            got += run_got
        if pos < size:
            mapped_end = runs[-1][0] + runs[-1][2] if runs else 0
            if mapped_end * bs >= size or size - pos <= 64 << 20:
                got += out.zeros(size - pos)  # a trailing hole
            else:
                rec.notes.append(f"size {size} far beyond the last mapped block: tail not written")
        self._settle(rec, out, got)
        return out.kept_bytes()

    def _survival(self, inc: Incarnation, src: Inode, nblocks: int) -> Callable[[int, int], set[int]]:
        """Which blocks mapped by INC's version SRC no longer hold its content: given a run
        (first, count), the set of its blocks that do not survive.  A block survives when the
        inode still owns it, or it is free and nothing mapped or journalled it since."""
        fs = self.fs
        assert inc.mapped is not None
        mapped_seq = inc.mapped[0]
        own: set[int] = set()
        cur = self._current(inc.ino)
        if cur is not None and cur.key == inc.key and cur.has_mapping():
            for _lb, pb, cnt, _u in mapping(cur, fs.block_size, self._meta_block, nblocks, []):
                own.update(range(pb, pb + min(cnt, 1 << 20)))
        # a block the journal shows as metadata after this version was reused (and maybe
        # freed again): what it holds now is not this file (a directory's own blocks are
        # journalled while it lives: for it, only copies after its last version count)
        since = inc.last if statmod.S_ISDIR(src.mode) else mapped_seq

        def lost(first: int, count: int) -> set[int]:
            bad = set(fs.used_blocks(first, count))
            bad.update(self._journalled_after_in(first, first + count, since))
            bad.update(self._claimed_later_in(first, first + count, mapped_seq, inc.ino))
            if own and bad:
                bad -= own
            return bad

        return lost

    def _copy_run(
        self,
        rec: RecoveredFile,
        out: _ContentOut,
        run: tuple[int, int, int, bool],
        pos: int,
        lost: Callable[[int, int], set[int]],
    ) -> tuple[int, int]:
        """Copy one mapped RUN (logical block, physical block, count, unwritten) from byte offset
        POS, in 1 MiB steps: (bytes recovered, new offset)."""
        lb, pb, cnt, unwritten = run
        bs = self.fs.block_size
        size = rec.size or 0
        got = 0
        b = 0
        while b < cnt:
            take = min(cnt - b, max(1, _RUN // bs))
            rec.blocks += take
            if unwritten:
                data, good = bytes(take * bs), take
            else:
                data, good = self._surviving_blocks(rec, pb + b, take, lost)
            end = min(size, (lb + b + take) * bs)
            n = max(0, end - pos)
            chunk = data[:n]
            out.write(chunk)
            got += n if good == take else min(n, good * bs)
            pos = end
            b += take
            self._bytes_done += len(chunk)
            self._tick("content", self._bytes_done, self._bytes_total)
        return got, pos

    def _surviving_blocks(
        self, rec: RecoveredFile, first: int, take: int, lost: Callable[[int, int], set[int]]
    ) -> tuple[bytes, int]:
        """TAKE blocks from FIRST, each one reused since (or beyond the filesystem) as zeros:
        (data, blocks that survive).  One read; blocks zeroed in place only where needed."""
        fs = self.fs
        bs = fs.block_size
        data = fs.read_blocks(first, take)
        inside = max(0, min(take, fs.blocks_count - first))  # blocks beyond the filesystem: zeros
        bad = lost(first, inside) if inside else set()
        if len(data) == take * bs and not bad and inside == take:
            return data, take
        buf = bytearray(data.ljust(take * bs, b"\0"))
        zero = bytes(bs)
        for blk in bad:
            k = blk - first
            buf[k * bs : (k + 1) * bs] = zero
        buf[inside * bs :] = bytes((take - inside) * bs)
        rec.reused_blocks += len(bad)
        return bytes(buf), inside - len(bad)

    @staticmethod
    def _settle(rec: RecoveredFile, out: _ContentOut, got: int) -> None:
        """REC's bytes recovered, confidence and sha256 (none without a recovered byte)."""
        size = rec.size or 0
        rec.bytes_recovered = got
        rec.sha256 = out.hash.hexdigest()
        rec.confidence = COMPLETE if got >= size else (PARTIAL if got else METADATA_ONLY)
        if rec.reused_blocks:
            rec.notes.append(f"{rec.reused_blocks} of {rec.blocks} blocks reused since: read as zeros")
        if rec.confidence == METADATA_ONLY:
            rec.sha256 = None

    def _build_claims(self, incs: list[Incarnation]) -> None:
        """Data runs of every deleted incarnation with a mapping, by start block: a block two of
        them mapped holds the content of the one that mapped it last."""
        fs = self.fs
        claims: list[tuple[int, int, int, int]] = []  # (start, end, sequence key, ino)
        for inc in incs:
            if inc.mapped is None:
                continue
            v = inc.mapped[1]
            if v.flags & INLINE_DATA_FL or (v.fmt == statmod.S_IFLNK and v.size < 60):
                continue
            n = -(-v.size // fs.block_size)
            for _lb, pb, cnt, _u in mapping(v, fs.block_size, self._meta_block, n, []):
                claims.append((pb, pb + cnt, inc.mapped[0], inc.ino))
        claims.sort()
        self._claim_starts = [c[0] for c in claims]
        self._claims = claims
        maxend, m = [], 0
        for c in claims:
            m = max(m, c[1])
            maxend.append(m)
        self._claim_maxend = maxend

    def _claimed_later_in(self, first: int, end: int, seq: int, ino: int) -> list[int]:
        """Blocks of [FIRST, END) another deleted file mapped in a version newer than SEQ."""
        out: list[int] = []
        i = bisect.bisect_left(self._claim_starts, end) - 1
        while i >= 0 and self._claim_maxend[i] > first:
            start, cend, cseq, cino = self._claims[i]
            if cend > first and cseq > seq and cino != ino:
                out.extend(range(max(start, first), min(cend, end)))
            i -= 1
        return out

    def _journalled_after_in(self, first: int, end: int, seq: int) -> list[int]:
        """Blocks of [FIRST, END) the journal holds a copy of newer than SEQ."""
        fsblocks = self._journalled_sorted
        if fsblocks is None:
            fsblocks = self._journalled_sorted = sorted(self.by_fs)
        out = []
        i = bisect.bisect_left(fsblocks, first)
        while i < len(fsblocks) and fsblocks[i] < end:
            if self.by_fs[fsblocks[i]][-1][0] > seq:
                out.append(fsblocks[i])
            i += 1
        return out

    # ---- the whole run --------------------------------------------------------------------
    def run(self, out: OutputSink | None = None, include_all: bool = False) -> list[RecoveredFile]:
        """Every deleted file found; each regular file and symlink written to OUT when given."""
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
            cur = self._current(ino)
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
        results.extend(self._names_only({(r.inode, r.path) for r, _ in results}))
        results.sort(key=lambda x: (x[0].path, x[0].inode))
        self._build_claims([inc for _r, inc in results if inc.key is not None])
        files = []
        names = _OutNames()
        for rec, inc in results:
            if not include_all and rec.path.startswith("/$OrphanFiles/") and not inc.mapped:
                continue
            fh = None
            if out is not None and rec.type in ("file", "symlink"):
                fh = _create(out, names.name(rec), rec)
            keep = bool(LAYER_REMNANT.search(rec.path)) and (rec.size or 0) <= 1 << 20
            try:
                data = self._content(inc, rec, fh, keep) if inc.key is not None or inc.mapped else None
            finally:
                if fh is not None:
                    fh.close()
            if data is not None:
                self.remnants[rec.path] = data
            files.append(rec)
        return files

    def _names_only(self, seen: set[tuple[int, str]]) -> list[tuple[RecoveredFile, Incarnation]]:
        """Names of deleted entries whose inode left no version anywhere (not in SEEN): still
        worth a line each."""
        fs = self.fs
        out: list[tuple[RecoveredFile, Incarnation]] = []
        for ino, lst in self.names.items():
            if ino in self.incs or ino < fs.first_ino:
                continue
            cur = self._current(ino)
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
                out.append((rec, Incarnation(ino, None)))
        return out

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
            atime=_time(meta.atime_ns),
            mtime=_time(meta.mtime_ns),
            ctime=_time((deleted or v).ctime_ns),
            crtime=_time(meta.crtime_ns),
            dtime=_time(deleted.dtime * _NS) if deleted else None,
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
                rec.deleted_before = _time(when * _NS) if when else None
                rec.notes.append(
                    f"no dtime survives: the inode was reused by transaction {seq_no}"
                    + (f", committed {iso_ns(rec.deleted_before)}" if rec.deleted_before else "")
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


class _OutNames:
    """Names in the output directory: the recovered path mirrored ('..' and empty parts
    neutralised); a second file with the same path gets a '.inoN' suffix, a directory component
    that is already a written file gets '.d'."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def name(self, rec: RecoveredFile) -> str:
        rel = rec.path.lstrip("/").replace("\\", "_")
        parts = [p if p not in ("", ".", "..") else "_" for p in rel.split("/")]
        for k in range(len(parts) - 1):
            if "/".join(parts[: k + 1]) in self.files:
                parts[k] += ".d"
        rel = "/".join(parts)
        if rel in self.files or rel in self.dirs:
            rel = f"{rel}.ino{rec.inode}"
        self.files.add(rel)
        for k in range(1, len(parts)):
            self.dirs.add("/".join(parts[:k]))
        return rel


def _create(out: OutputSink, rel: str, rec: RecoveredFile) -> WrittenFile | None:
    """A new file REL in OUT for REC (its out_path set), or None with a note when refused."""
    try:
        fh = out.create(rel)
    except (OSError, UsageError) as exc:
        rec.notes.append(f"not written to the output: {exc}")
        return None
    rec.out_path = os.path.join(out.dest, rel)
    return fh


# ---- attribution --------------------------------------------------------------------------------


def attribute(files: list[RecoveredFile], host, remnants: dict[str, bytes]) -> list[str]:
    """Fill container, layer, images and container path of every file below an engine's root
    (Docker data root, containerd root, Podman graphroot), through the host's ``whence``; for
    Docker layers no container references (``docker rm``), recovered remnants name it."""
    problems: list[str] = []
    if host is None:
        return problems
    removed = RemovedContainers(remnants)
    lowers = _LowerLayers(host)
    below_root = re.compile("/(?:{})/".format("|".join(re.escape(n) for n in host.data_root_dirs())))
    for rec in files:
        if not below_root.search(rec.path):
            continue
        try:
            a = host.whence(rec.path)
        except NotFound:
            continue  # a name like a root's directory, below no root of any engine
        except (EvidenceError, OSError, ValueError) as exc:
            problems.append(f"{rec.path}: attribution failed: {exc}")
            continue
        _take_attribution(rec, a)
        if rec.container is None and a.layer and a.layer_kind == "unreferenced":
            _removed_container_layer(rec, a, removed, lowers)
        _container_of_record(rec, removed)
    return problems


def _take_attribution(rec: RecoveredFile, a) -> None:
    """REC's data root, layer, container and images as ``whence`` attributed its path (A)."""
    rec.data_root = a.data_root
    rec.layer = a.layer
    rec.layer_kind = a.layer_kind
    rec.container_path = a.container_path
    rec.images = list(a.images)
    if a.containers:
        rec.container = a.containers[0]
        rec.container_name = (a.container_names or [None])[0] or None
    rec.notes.extend(n for n in a.notes if n not in rec.notes and not n.startswith("layer directory itself"))


def _removed_container_layer(rec: RecoveredFile, a, removed: RemovedContainers, lowers: _LowerLayers) -> None:
    """REC is in a layer no container references: the recovered remnants name the removed
    container it was mounted for, else the layer it sat on (and that layer's images)."""
    layer = a.layer
    cid = removed.container_of(layer)
    if cid is not None:
        rec.container = cid
        rec.layer_kind = removed_layer_kind(layer)
        rec.notes.append(
            f"layer of a removed container: its id is in the deleted {mount_id_file(cid)} recovered from "
            "the journal"
        )
        rec.container_name = removed.name(cid)
        img = removed.image(cid)
        if img and img not in rec.images:
            rec.images.append(img)
        return
    top = removed.top_lower(layer)
    below = lowers.layer_of_link(top) if top is not None else None
    wa = lowers.attribution(a.data_root, below) if below else None
    if wa is not None:
        for i in wa.images:
            if i not in rec.images:
                rec.images.append(i)
        rec.notes.append(f"layer of a removed container (recovered lower chain): it sat on layer {below}")


def _container_of_record(rec: RecoveredFile, removed: RemovedContainers) -> None:
    """The container of a file of a mount record, and a container's name from its recovered
    config when the live metadata gave none."""
    cid = mount_record_container(rec.path)
    if cid and rec.container is None:
        rec.container = cid
        rec.notes.append(MOUNT_RECORD_NOTE)
    if rec.container and not rec.container_name:
        rec.container_name = removed.name(rec.container) or rec.container_name


class _LowerLayers:
    """The live layers a recovered lower chain points at: short link names read once from the
    host's data roots, each layer attributed once."""

    def __init__(self, host) -> None:
        self.host = host
        self._links: dict[str, str] | None = None
        self._seen: dict[str, object] = {}

    def layer_of_link(self, short: str) -> str | None:
        if self._links is None:
            self._links = {}
            for root in getattr(self.host, "roots", []):  # Docker's data roots
                self._links.update(link_names(self.host.evidence, root.path))
        return self._links.get(short)

    def attribution(self, data_root: str | None, layer: str):
        if layer not in self._seen:
            contents = overlay2_contents(data_root or DEFAULT_DATA_ROOT, layer)
            self._seen[layer] = self.host.whence(contents)
        return self._seen[layer]


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
    INCLUDE_ALL: also nameless inodes with nothing to read.  HOST: a Host over the same evidence
    for attribution (every engine root found there when None: :func:`engines_host`; no
    attribution when it holds none)."""
    xfs = getattr(evidence, "fs_type", None) == "xfs" and isinstance(evidence, DiskImageEvidence)
    r = None if xfs else Recovery(evidence, progress)
    sink = OutputSink(out_dir, evidence.boundaries()) if out_dir else None
    try:
        if r is None:
            from pensieve.disk.recover_xfs import recover_xfs

            files, found, journal = recover_xfs(evidence, sink)
        else:
            files, found = r.run(sink, include_all), r.problems
    finally:
        if sink is not None:
            sink.close({"evidence": evidence.description, "command": "recover"})
    problems = [Problem(evidence.description, p) for p in found]
    if host is None:
        host, why = engines_host(evidence)
        if why is not None:
            problems.append(Problem(evidence.description, why))
    if host is not None:
        remnants = r.remnants if r is not None else {}
        problems.extend(Problem(evidence.description, p) for p in attribute(files, host, remnants))
    if r is not None:
        journal = dict(r.journal_info)
        journal["orphan_list"] = r._orphans
    return RecoverReport(files=files, journal=journal, problems=problems)


def engines_host(evidence):
    """(a Host over every engine root of EVIDENCE, None) -- Docker, containerd and Podman roots
    (:func:`pensieve.engines.discover.open_engines`); (None, None) when it holds none; (None,
    why) when opening them failed (attribution must not cost the recovery or the carving)."""
    from pensieve.engines.discover import open_engines

    try:
        return open_engines(evidence), None
    except EvidenceError:  # NotADataRoot among them: no engine root, nothing to attribute to
        return None, None
    except Exception as exc:  # noqa: BLE001 - a reader's failure: said, and the rest goes on
        return None, f"no attribution: {type(exc).__name__}: {exc}"


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
