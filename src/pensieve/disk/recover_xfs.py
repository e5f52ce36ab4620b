"""Deleted files on XFS, brought back through what the internal log still holds.

For each inode that is free on disk now (``di_mode`` 0 in its inode core) and whose last logged
version before the free had a data-fork extent list, the content is read from those extents
where the blocks are still free: in the by-block-number free-space btree of their AG
(:mod:`pensieve.formats.xfs_space`), the allocator's own record; a block the bnobt does not hold
has been reallocated since and is not read (zeros, counted in ``reused_blocks``, its runs named);
nor is a free block the log shows another inode mapping after the file (written over, freed again).
Where an AG's free space is unreadable, the blocks no live logged inode claims are read instead.
The file is named from the logged
directory entries (short-form directories in logged inode cores, logged directory data blocks),
to a full path where the parent chain resolves.

Files open but unlinked when the image was taken (a process held them after ``rm``; the image of
a running or crashed host) are on the AGI unlinked lists: still allocated, nlink 0.  They are read
in full from their own on-disk inode (:mod:`pensieve.formats.xfs_inode`) and named from the log.

Layer, container and image come from the ``recover`` command's attribution (``attribute`` in
:mod:`pensieve.disk.recover`, through the host's ``whence``), as on ext4: nothing here guesses
them from the path.

References:
  "XFS Algorithms & Data Structures" (chapters "Journaling Log", "On-disk Inode", "Directories",
  "AG Free Space B+trees", "AG Inode Management"); see :mod:`pensieve.formats.xfs_log`,
  :mod:`pensieve.formats.xfs_space` and :mod:`pensieve.formats.xfs_inode` for the readers.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pensieve.formats import xfs_inode, xfs_log, xfs_space
from pensieve.formats.xfs import Superblock
from pensieve.records.disk import RecoveredFile

_MAX_FILE = 1 << 30  # content read per file is bounded whatever the logged size says
_ROOT_DEPTH = 64


@dataclass
class XfsRecovered:
    """One deleted inode the log remembers."""

    ino: int
    path: str | None
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    status: str  # complete | partial | metadata-only
    sha256: str | None
    content: bytes | None = None
    #: log (freed since, brought back from the log) | unlinked (on an AGI unlinked list: open
    #: but unlinked when the image was taken, read from its own inode)
    source: str = "log"
    #: (file offset block, filesystem block, count, state) of every extent, state one of
    #: free (in the bnobt now: read), reallocated (not in the bnobt: not read), unwritten (never
    #: written: zeros), unknown (AG free space unreadable: read), claimed (AG free space unreadable
    #: and a live logged inode maps the block: not read), overwritten (free now, but the log shows
    #: another inode mapping it after this file: not read), held (still the unlinked inode's: read)
    runs: list[tuple[int, int, int, str]] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return sum(c for _o, _s, c, _st in self.runs)

    @property
    def reused_blocks(self) -> int:
        return sum(c for _o, _s, c, st in self.runs if st in ("reallocated", "claimed", "overwritten"))


class XfsLogRecovery:
    """Recovery over an XFS image read through READ(offset, length)."""

    def __init__(self, read: Callable[[int, int], bytes]) -> None:
        self.read = read
        raw = read(0, 512)
        self.sb = Superblock(raw)
        self.log = xfs_log.walk(xfs_log.open_internal(read, raw, ftype=self.sb.has_ftype))
        self.problems = list(self.log.problems)
        self.space = xfs_space.FreeSpace(read, self.sb)
        self.problems.extend(self.space.problems)
        self.problems.extend(p for ag in self.space.ags for p in ag.problems)
        #: child inode -> [(lsn, parent, name)] every name the log shows it under, oldest first
        self._names: dict[int, list[tuple[int, int, bytes]]] = {}
        self._maps: dict[int, list[tuple[int, int, int]]] | None = None
        for ino, versions in self.log.inodes.items():
            for v in versions:
                for name, child in v.sf_entries:
                    self._add_name(child, v.lsn, ino, name)
        for parent, name, child, lsn in self.log.dirents:
            self._add_name(child, lsn, parent, name)
        for entries in self._names.values():
            entries.sort(key=lambda e: (e[0], bool(e[1])))  # a known parent wins at equal lsn

    def _add_name(self, child: int, lsn: int, parent: int, name: bytes) -> None:
        if name not in (b".", b"..") and child != parent:
            self._names.setdefault(child, []).append((lsn, parent, name))

    def _name_at(self, ino: int, at: int, after: int = -1) -> tuple[int, bytes] | None:
        """The last name INO had in the log at or before lsn AT and after lsn AFTER."""
        best = None
        for lsn, parent, name in self._names.get(ino, ()):
            if lsn > at:
                break
            if lsn > after:
                best = (parent, name)
        return best

    def path(self, ino: int, at: int | None = None, after: int = -1) -> str | None:
        """INO's path as the log shows it at lsn AT (the newest when None), its own name taken
        after lsn AFTER (the end of the previous incarnation of the inode number)."""
        at = (1 << 64) if at is None else at
        parts: list[bytes] = []
        cur = ino
        hit = self._name_at(cur, at, after)
        for _ in range(_ROOT_DEPTH):
            if cur == self.sb.rootino:
                return "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in reversed(parts))
            if hit is None or not hit[0]:
                break
            cur, name = hit
            parts.append(name)
            hit = self._name_at(cur, at) or self._name_at(cur, 1 << 64)
        return (
            None
            if not parts
            else "?/" + "/".join(p.decode("utf-8", "surrogateescape") for p in reversed(parts))
        )

    def _disk_core(self, ino: int) -> tuple[int, int, int] | None:
        """(mode, nlink, gen) of INO's on-disk inode now, None when unreadable."""
        try:
            core = self.read(self.sb.inode_offset(ino), 100)
        except ValueError:
            return None
        if core[:2] != b"IN" or len(core) < 100:
            return None
        return (
            struct.unpack_from(">H", core, 2)[0],
            struct.unpack_from(">I", core, 16)[0],
            struct.unpack_from(">I", core, 92)[0],
        )

    def _incarnations(self, ino: int) -> list[tuple[list[xfs_log.LoggedInode], int]]:
        """The freed incarnations of INO the log holds as regular files: (their versions, lsn the
        previous incarnation ended at).  An incarnation is one di_gen (xfs_ifree increments it);
        it is freed when a later generation was logged or the on-disk inode is free or of
        another generation now."""
        versions = sorted(self.log.inodes[ino], key=lambda v: v.lsn)
        disk = self._disk_core(ino)
        top = max(v.gen for v in versions)
        groups: dict[int, list[xfs_log.LoggedInode]] = {}
        for v in versions:
            if v.mode:
                groups.setdefault(v.gen, []).append(v)
        out, prev_end = [], -1
        for gen in sorted(groups, key=lambda g: groups[g][0].lsn):
            vs = groups[gen]
            freed = gen != top or (disk is not None and (disk[0] == 0 or disk[2] != gen))
            if freed and vs[-1].mode & 0o170000 == 0o100000:
                out.append((vs, prev_end))
            prev_end = vs[-1].lsn
        return out

    def _live_claims(self, deleted: set[int]) -> set[int]:
        """Blocks the latest logged version of a live (not freed) inode maps."""
        claims: set[int] = set()
        for ino, versions in self.log.inodes.items():
            last = max(versions, key=lambda v: v.lsn)
            if ino in deleted or last.mode == 0:
                continue
            for _off, start, count, _unw in last.extents:
                claims.update(range(start, start + count))
        return claims

    def _mappings(self) -> dict[int, list[tuple[int, int, int]]]:
        """block -> [(lsn, inode, generation)] of every logged version that mapped it."""
        if self._maps is None:
            self._maps = {}
            for ino, versions in self.log.inodes.items():
                for v in versions:
                    for _off, start, count, unwritten in v.extents:
                        if unwritten:
                            continue
                        for b in range(start, start + min(count, _MAX_FILE // self.sb.blocksize)):
                            self._maps.setdefault(b, []).append((v.lsn, ino, v.gen))
        return self._maps

    def _claimed_after(self, fsb: int, lsn: int, owner: tuple[int, int]) -> bool:
        """Whether another inode (or another incarnation of this one) mapped FSB after LSN: the
        block was written over since, even where it is free again now."""
        return any(m[0] > lsn and m[1:] != owner for m in self._mappings().get(fsb, ()))

    def _fsb_offset(self, fsb: int) -> int:
        agno, agbno = fsb >> self.sb.agblklog, fsb & ((1 << self.sb.agblklog) - 1)
        return (agno * self.sb.agblocks + agbno) * self.sb.blocksize

    def _state(self, fsb: int, unwritten: bool, claims: set[int], v: xfs_log.LoggedInode) -> str:
        if unwritten:
            return "unwritten"
        free = self.space.is_free(fsb)
        if free is False:
            return "reallocated"
        if self._claimed_after(fsb, v.lsn, (v.ino, v.gen)):
            return "overwritten"
        if free is None:
            return "claimed" if fsb in claims else "unknown"
        return "free"

    def _runs(self, v: xfs_log.LoggedInode, claims: set[int]) -> list[tuple[int, int, int, str]]:
        """V's extents split where the state of their blocks changes."""
        runs: list[tuple[int, int, int, str]] = []
        for off, start, count, unwritten in v.extents:
            for i in range(min(count, _MAX_FILE // self.sb.blocksize)):
                st = self._state(start + i, unwritten, claims, v)
                last = runs[-1] if runs else None
                if last and last[3] == st and last[0] + last[2] == off + i and last[1] + last[2] == start + i:
                    runs[-1] = (last[0], last[1], last[2] + 1, st)
                else:
                    runs.append((off + i, start + i, 1, st))
        return runs

    def _content(self, v: xfs_log.LoggedInode, runs: list[tuple[int, int, int, str]]) -> tuple[bytes, bool]:
        bs = self.sb.blocksize
        size = min(v.size, _MAX_FILE)
        buf = bytearray(size)
        whole = True
        for off, start, count, state in runs:
            if off * bs >= size:
                continue
            if state not in ("free", "unknown"):
                whole = False
                continue
            n = min(count * bs, size - off * bs)
            piece = self.read(self._fsb_offset(start), n)
            buf[off * bs : off * bs + len(piece)] = piece
        covered = sum(c for _o, _s, c, _st in runs) * bs >= size
        return bytes(buf), whole and covered

    def run(self) -> list[XfsRecovered]:
        """Every deleted regular file the log remembers (each freed incarnation of an inode
        number), then the open-but-unlinked files of the AGI unlinked lists."""
        incs = {ino: self._incarnations(ino) for ino in sorted(self.log.inodes)}
        claims = self._live_claims({ino for ino, i in incs.items() if i and self._disk_free(ino)})
        out = []
        for ino, found in incs.items():
            for vs, prev_end in found:
                alive = [v for v in vs if v.mode & 0o170000 == 0o100000]
                v = max(alive, key=lambda v: (bool(v.extents) or v.size == 0, v.lsn))
                runs = self._runs(v, claims)
                data, whole = self._content(v, runs) if v.extents else (b"", v.size == 0)
                status = "complete" if whole else ("partial" if v.extents else "metadata-only")
                out.append(
                    XfsRecovered(
                        ino,
                        self.path(ino, vs[-1].lsn, prev_end),
                        v.size,
                        v.mode,
                        v.uid,
                        v.gid,
                        v.mtime,
                        status,
                        hashlib.sha256(data).hexdigest() if status != "metadata-only" else None,
                        data,
                        runs=runs,
                    )
                )
        out.extend(self._unlinked())
        return out

    def _disk_free(self, ino: int) -> bool:
        core = self._disk_core(ino)
        return core is not None and core[0] == 0

    def _unlinked(self) -> list[XfsRecovered]:
        """The regular files on the on-disk AGI unlinked lists, read from their own inodes."""
        inos, problems = xfs_inode.unlinked_inodes(self.read, self.sb)
        self.problems.extend(problems)
        out = []
        bs = self.sb.blocksize
        for ino in inos:
            try:
                di = xfs_inode.read_inode(self.read, self.sb, ino)
            except (xfs_inode.XfsInodeError, ValueError) as exc:
                self.problems.append(f"unlinked inode {ino}: {exc}")
                continue
            self.problems.extend(f"unlinked inode {ino}: {p}" for p in di.problems)
            if di.mode & 0o170000 != 0o100000:
                continue
            runs = [(o, s, c, "unwritten" if u else "held") for o, s, c, u in di.extents]
            size = min(di.size, _MAX_FILE)
            buf = bytearray(size)
            for off, start, count, state in runs:
                if state == "held" and off * bs < size:
                    piece = self.read(self._fsb_offset(start), min(count * bs, size - off * bs))
                    buf[off * bs : off * bs + len(piece)] = piece
            covered = sum(c for _o, _s, c, _st in runs) * bs >= size and not di.problems
            data = bytes(buf)
            out.append(
                XfsRecovered(
                    ino,
                    self.path(ino),
                    di.size,
                    di.mode,
                    di.uid,
                    di.gid,
                    di.mtime,
                    "complete" if covered and di.size <= _MAX_FILE else "partial",
                    hashlib.sha256(data).hexdigest(),
                    data,
                    source="unlinked",
                    runs=runs,
                )
            )
        return out


def _record(r: XfsRecovered) -> RecoveredFile:
    """The RecoveredFile of R, as ext4 recovery reports one (method ``xfs-log``)."""
    from pensieve.disk.recover import _time

    notes = [] if r.path and not r.path.startswith("?/") else ["no full path survives in the log"]
    if r.source == "unlinked":
        notes.append(
            "on an AGI unlinked list: open but unlinked (link count 0) when the image was taken; "
            "read from its own inode"
        )
    gone = [(o, c) for o, _s, c, st in r.runs if st in ("reallocated", "claimed", "overwritten")]
    if gone:
        where = ", ".join(f"{o}-{o + c - 1}" for o, c in gone[:8]) + (" ..." if len(gone) > 8 else "")
        notes.append(
            f"file blocks {where} reallocated since (not in the free-space btree, or mapped by "
            "another inode later in the log): read as zeros"
        )
    return RecoveredFile(
        path=r.path if r.path and r.path.startswith("/") else f"$OrphanFiles/{r.path or f'ino{r.ino}'}",
        inode=r.ino,
        type="file",
        size=r.size,
        bytes_recovered=len(r.content or b""),
        confidence=r.status,
        sha256=r.sha256,
        method="xfs-log" if r.source == "log" else "xfs-unlinked",
        blocks=r.blocks,
        reused_blocks=r.reused_blocks,
        mode=r.mode & 0o7777,
        uid=r.uid,
        gid=r.gid,
        mtime=_time(round(r.mtime * 1e9)) if r.mtime else None,
        notes=notes,
    )


def recover_xfs(evidence, out=None) -> tuple[list, list[str], dict]:
    """(RecoveredFile records, problems, log summary) of the XFS filesystem of EVIDENCE (an
    XfsEvidence); each file's content written to OUT (an OutputSink) when given."""
    from pensieve.disk.recover import _create, _OutNames

    def read(offset: int, length: int) -> bytes:
        return evidence.image.read(evidence.offset + offset, length)

    rec = XfsLogRecovery(read)
    files, names = [], _OutNames()
    for r in rec.run():
        f = _record(r)
        if out is not None and r.content is not None and r.status != "metadata-only":
            fh = _create(out, names.name(f), f)
            if fh is not None:
                with fh:
                    fh.write(r.content)
        files.append(f)
    info = {"filesystem": "xfs", "log_records": rec.log.records, "log_transactions": rec.log.transactions}
    return files, rec.problems, info
