"""Deleted files on XFS, brought back through what the internal log still holds.

For each inode that is free on disk now (``di_mode`` 0 in its inode core) and whose last logged
version before the free had a data-fork extent list, the content is read from those extents
where the blocks are still free: in the by-block-number free-space btree of their AG
(:mod:`pensieve.formats.xfs_space`), the allocator's own record; a block the bnobt does not hold
has been reallocated since and is not read (zeros, counted in ``reused_blocks``, its runs named).
Where an AG's free space is unreadable, the blocks no live logged inode claims are read instead.
The file is named from the logged
directory entries (short-form directories in logged inode cores, logged directory data blocks),
to a full path where the parent chain resolves.  Paths under an overlay2 data root are
attributed to their layer (``overlay2/<id>/diff``).

References:
  "XFS Algorithms & Data Structures" (chapters "Journaling Log", "On-disk Inode", "Directories");
  see :mod:`pensieve.formats.xfs_log` for the log reader itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pensieve.formats import xfs_log, xfs_space
from pensieve.formats.xfs import Superblock
from pensieve.records.disk import RecoveredFile

_OVERLAY = re.compile(r"/overlay2/([^/]+)/diff(/.*)?$")
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
    layer: str | None
    layer_path: str | None
    content: bytes | None = None
    #: (file offset block, filesystem block, count, state) of every logged extent, state one of
    #: free (in the bnobt now: read), reallocated (not in the bnobt: not read), unwritten (never
    #: written: zeros), unknown (AG free space unreadable: read), claimed (AG free space unreadable
    #: and a live logged inode maps the block: not read)
    runs: list[tuple[int, int, int, str]] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return sum(c for _o, _s, c, _st in self.runs)

    @property
    def reused_blocks(self) -> int:
        return sum(c for _o, _s, c, st in self.runs if st == "reallocated")


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
        self._names: dict[int, tuple[int, bytes]] = {}
        for ino, versions in self.log.inodes.items():
            for v in sorted(versions, key=lambda v: v.lsn):
                for name, child in v.sf_entries:
                    self._names[child] = (ino, name)
        for parent, name, child, _lsn in sorted(self.log.dirents, key=lambda d: d[3]):
            if parent or child not in self._names:
                self._names[child] = (parent, name)

    def path(self, ino: int) -> str | None:
        parts: list[bytes] = []
        cur = ino
        for _ in range(_ROOT_DEPTH):
            if cur == self.sb.rootino:
                return "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in reversed(parts))
            hit = self._names.get(cur)
            if hit is None or not hit[0]:
                break
            cur, name = hit
            parts.append(name)
        return (
            None
            if not parts
            else "?/" + "/".join(p.decode("utf-8", "surrogateescape") for p in reversed(parts))
        )

    def _free_now(self, ino: int) -> bool:
        try:
            core = self.read(self.sb.inode_offset(ino), 4)
        except ValueError:
            return False
        return core[:2] == b"IN" and core[2:4] == b"\0\0"

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

    def _fsb_offset(self, fsb: int) -> int:
        agno, agbno = fsb >> self.sb.agblklog, fsb & ((1 << self.sb.agblklog) - 1)
        return (agno * self.sb.agblocks + agbno) * self.sb.blocksize

    def _state(self, fsb: int, unwritten: bool, claims: set[int]) -> str:
        if unwritten:
            return "unwritten"
        free = self.space.is_free(fsb)
        if free is None:
            return "claimed" if fsb in claims else "unknown"
        return "free" if free else "reallocated"

    def _runs(self, v: xfs_log.LoggedInode, claims: set[int]) -> list[tuple[int, int, int, str]]:
        """V's extents split where the state of their blocks changes."""
        runs: list[tuple[int, int, int, str]] = []
        for off, start, count, unwritten in v.extents:
            for i in range(count):
                st = self._state(start + i, unwritten, claims)
                if (
                    runs
                    and runs[-1][3] == st
                    and runs[-1][0] + runs[-1][2] == off + i
                    and runs[-1][1] + runs[-1][2] == start + i
                ):
                    o, s0, c, _ = runs[-1]
                    runs[-1] = (o, s0, c + 1, st)
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
        """Every deleted regular file the log remembers, oldest inode number first."""
        deleted = {ino for ino, vs in self.log.inodes.items() if self._free_now(ino)}
        claims = self._live_claims(deleted)
        out = []
        for ino in sorted(deleted):
            alive = [v for v in self.log.inodes[ino] if v.mode & 0o170000 == 0o100000]
            if not alive:
                continue
            v = max(alive, key=lambda v: (bool(v.extents) or v.size == 0, v.lsn))
            runs = self._runs(v, claims)
            data, whole = self._content(v, runs) if v.extents else (b"", v.size == 0)
            status = "complete" if whole else ("partial" if v.extents else "metadata-only")
            path = self.path(ino)
            m = _OVERLAY.search(path or "")
            out.append(
                XfsRecovered(
                    ino,
                    path,
                    v.size,
                    v.mode,
                    v.uid,
                    v.gid,
                    v.mtime,
                    status,
                    hashlib.sha256(data).hexdigest() if status != "metadata-only" else None,
                    m.group(1) if m else None,
                    (m.group(2) or "/") if m else None,
                    data,
                    runs,
                )
            )
        return out


def _record(r: XfsRecovered) -> RecoveredFile:
    """The RecoveredFile of R, as ext4 recovery reports one (method ``xfs-log``)."""
    from pensieve.disk.recover import _time

    notes = [] if r.path and not r.path.startswith("?/") else ["no full path survives in the log"]
    gone = [(o, c) for o, _s, c, st in r.runs if st in ("reallocated", "claimed")]
    if gone:
        where = ", ".join(f"{o}-{o + c - 1}" for o, c in gone[:8]) + (" ..." if len(gone) > 8 else "")
        notes.append(f"file blocks {where} reallocated since (not in the free-space btree): read as zeros")
    return RecoveredFile(
        path=r.path if r.path and r.path.startswith("/") else f"$OrphanFiles/{r.path or f'ino{r.ino}'}",
        inode=r.ino,
        type="file",
        size=r.size,
        bytes_recovered=len(r.content or b""),
        confidence=r.status,
        sha256=r.sha256,
        method="xfs-log",
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
