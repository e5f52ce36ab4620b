"""Evidence that is a tar archive: a ``docker save``/``docker export`` tar, an OCI archive, one
image layer inside any of them, or a checkpoint archive (Podman / CRI-O / containerd export) and
the ``rootfs-diff.tar`` inside it.  The one tar reader of pensieve.

One streaming pass over the headers builds an index (name -> type, metadata, offset of the data);
nothing of a member's data is read until it is opened, and then through a reader bounded to that
member's bytes.  The archive is read with ``pread`` on one descriptor, so any number of members
(and tars nested in members: the layer tars of a ``docker save``) can be open at once.

Headers are parsed by :mod:`pensieve.formats.tar` (ustar, GNU, PAX; extension records bounded).
Compressed tars (gzip, zstd, xz, bzip2; :mod:`pensieve.formats.compression`) cannot be read at
random offsets: they are decompressed once, streaming with bounded buffers, into an anonymous
temporary *spool* (:mod:`pensieve.evidence.spool`: the system temp dir, never next to the
evidence, unlinked at creation, under the process's spool budget), and the spool is indexed.
Memory stays bounded by the index: one small record per member.  Over the budget the archive is
refused with ``SpoolTooLarge`` ("too large to spool"); with ``partial=True`` (checkpoint
archives) a stream that is corrupt, cut short or over the budget keeps what came before, with a
problem.  The sha256 of the decompressed stream is kept (``stream_sha256``): for a layer blob it
is the layer's diff id.

API beyond :class:`~pensieve.evidence.base.Evidence`: ``entry(path)`` / ``entries()`` (the
indexed :class:`TarMember` records), ``open_raw(path)`` (an unbuffered :class:`SliceReader` of a
member, for hashing or nesting), ``nested(path)`` (the tar held in a member, read in place),
``pread_member`` / ``map_member`` (slices and read-only maps of a member, for CRIU pages),
``open_stored()`` (the archive's bytes as stored, compressed or not), ``where(path)``.

What the index does with hostile archives, the way tar extraction (GNU tar, moby pkg/archive)
would, and always recorded in ``problems``:

* absolute names (``/etc/passwd``) are taken relative to the archive root, ``./`` dropped;
* a name climbing out of the root (``../../etc/cron.d/x``) is not indexed at all (moby refuses
  such a layer with a "breakout" error): it can never be read as if it were inside;
* duplicate names: the last copy wins, as extraction leaves it;
* missing parent directories are synthesised (mode 0755, root, time 0);
* a hard link reads its target's data and metadata (extraction makes them one inode);
* more than ``max_members`` members, an unreadable header or a missing end-of-archive marker
  stop the index there: what came before stays readable.

Symlinks are followed only in directory components, chroot-style inside the archive, like
``DirectoryEvidence``; ``open`` refuses a final symlink.
"""

from __future__ import annotations

import base64
import io
import mmap
import os
import posixpath
import stat as statmod
from collections.abc import Iterator
from functools import lru_cache
from typing import BinaryIO
from urllib.parse import unquote

from pensieve.evidence.base import (
    MAX_SYMLINKS,
    DirEntry,
    Evidence,
    EvidenceError,
    FileStat,
    NotFound,
    file_kind,
    follow_dir_link,
    normalize,
    open_noatime,
)
from pensieve.evidence.spool import Spooled, SpoolTooLarge, spool
from pensieve.formats import tar as tarfmt
from pensieve.formats.compression import DecompressError, decompress_stream, sniff
from pensieve.records import Problem

__all__ = [
    "DecompressError",
    "SliceReader",
    "SpoolTooLarge",
    "TarEvidence",
    "TarMember",
    "decompress_stream",
    "sniff",
]

#: problems recorded per archive before only counting them
_MAX_PROBLEMS = 200


# ---- byte sources read with pread ---------------------------------------------------------


class _Source:
    size: int

    def pread(self, n: int, offset: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError


class _FdSource(_Source):
    """A file descriptor (the archive, a spool, or an evidence file object kept open)."""

    def __init__(self, fd: int, keep: object = None) -> None:
        self.fd = fd
        self.keep = keep  # the file object owning FD, kept alive with the source
        self.size = os.fstat(fd).st_size

    def pread(self, n: int, offset: int) -> bytes:
        return os.pread(self.fd, n, offset)


class _SeekSource(_Source):
    """Any seekable file object without a descriptor."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        fh.seek(0, os.SEEK_END)
        self.size = fh.tell()

    def pread(self, n: int, offset: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(n)


class _SliceSource(_Source):
    def __init__(self, parent: _Source, offset: int, size: int) -> None:
        self.parent, self.offset = parent, offset
        self.size = max(0, min(size, parent.size - offset))

    def pread(self, n: int, offset: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        return self.parent.pread(n, self.offset + offset) if n else b""


class SliceReader(io.RawIOBase):
    """A read-only, seekable file over one member's bytes (never past them)."""

    def __init__(self, source: _Source, offset: int = 0, size: int | None = None, name: str = "") -> None:
        super().__init__()
        self.source = _SliceSource(source, offset, source.size - offset if size is None else size)
        self.name = name
        self.pos = 0

    @property
    def size(self) -> int:
        return self.source.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.source.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buf) -> int:
        data = self.source.pread(len(buf), self.pos)
        n = len(data)
        buf[:n] = data
        self.pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.source.size - self.pos
        data = self.source.pread(n, self.pos)
        self.pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


def _source_of(fh: BinaryIO) -> _Source:
    if isinstance(fh, SliceReader):
        return fh.source
    try:
        return _FdSource(fh.fileno(), keep=fh)
    except (OSError, AttributeError, io.UnsupportedOperation):
        return _SeekSource(fh)


def _open_path(path: str) -> int:
    return open_noatime(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)


# ---- the index ----------------------------------------------------------------------------


#: what a hard link takes over from the member it links to (extraction makes them one inode)
_LINK_SHARED = ("mode", "uid", "gid", "size", "mtime_ns", "atime_ns", "ctime_ns", "offset", "xattrs", "ino")


class TarMember:
    """One indexed name: its metadata and where its data is."""

    __slots__ = ("name", *_LINK_SHARED, "linkname", "hardlink", "rdev", "nlink", "synthetic", "unreadable")

    def __init__(self, name: str, mode: int, ino: int) -> None:
        self.name = name
        self.mode = mode
        self.uid = self.gid = self.size = self.mtime_ns = self.atime_ns = self.ctime_ns = self.rdev = 0
        self.offset = -1
        self.linkname: str | None = None
        self.hardlink: str | None = None  # normalised target name for a hard link
        self.xattrs: dict[str, bytes] | None = None
        self.ino = ino
        self.nlink = 1
        self.synthetic = False
        self.unreadable: str | None = None  # why open() must refuse (truncated, sparse, dangling)

    @property
    def kind(self) -> str:
        """file | dir | symlink | hardlink | char | block | fifo."""
        if self.hardlink is not None:
            return "hardlink"
        return file_kind(self.mode)  # a member's type is always one of _TYPES

    def stat(self) -> FileStat:
        return FileStat(
            mode=self.mode,
            ino=self.ino,
            nlink=self.nlink,
            uid=self.uid,
            gid=self.gid,
            size=self.size,
            atime_ns=self.atime_ns,
            mtime_ns=self.mtime_ns,
            ctime_ns=self.ctime_ns,
            rdev=self.rdev,
        )


_TYPES = {
    tarfmt.REG: statmod.S_IFREG,
    tarfmt.AREG: statmod.S_IFREG,
    tarfmt.CONT: statmod.S_IFREG,
    tarfmt.GNU_SPARSE: statmod.S_IFREG,
    tarfmt.LINK: statmod.S_IFREG,
    tarfmt.DIR: statmod.S_IFDIR,
    tarfmt.SYM: statmod.S_IFLNK,
    tarfmt.CHR: statmod.S_IFCHR,
    tarfmt.BLK: statmod.S_IFBLK,
    tarfmt.FIFO: statmod.S_IFIFO,
}


def _pax_ns(value: str | None) -> int | None:
    """A PAX time ("1700000000.123456789") in nanoseconds, exactly."""
    if not value:
        return None
    try:
        neg = value.startswith("-")
        whole, _, frac = value.lstrip("-").partition(".")
        ns = int(whole or 0) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
        return -ns if neg else ns
    except ValueError:
        return None


def _xattrs(pax: dict[str, str]) -> dict[str, bytes] | None:
    out: dict[str, bytes] = {}
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            out[key[13:]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            try:
                out[unquote(key[17:])] = base64.b64decode(value + "=" * (-len(value) % 4))
            except (ValueError, TypeError):
                continue
    return out or None


class TarEvidence(Evidence):
    """Read-only view of a tar archive, by path or over a file object of other evidence.

    PARTIAL: a compressed stream that is corrupt, cut short or over the spool budget is a
    problem and what came before it is indexed (otherwise the archive is refused)."""

    #: stop indexing past this many members (each costs a few hundred bytes of memory)
    max_members = 5_000_000

    def __init__(
        self,
        source: str | BinaryIO,
        name: str | None = None,
        max_members: int | None = None,
        partial: bool = False,
    ) -> None:
        self.problems: list[Problem] = []
        self._problem_count = 0
        if max_members is not None:
            self.max_members = max_members
        self.name = name or (source if isinstance(source, str) else getattr(source, "name", "tar"))
        self.path = os.path.realpath(source) if isinstance(source, str) else None
        self._spool: Spooled | None = None
        self._fd: int | None = None
        if isinstance(source, str):
            try:
                self._fd = _open_path(source)
            except OSError as exc:
                raise EvidenceError(f"cannot open {source}: {exc.strerror}") from exc
            if not statmod.S_ISREG(os.fstat(self._fd).st_mode):
                os.close(self._fd)
                raise EvidenceError(f"not a regular file: {source}")
            raw: _Source = _FdSource(self._fd)
        else:
            raw = _source_of(source)
        self.raw = raw
        self.compression = sniff(raw.pread(8, 0))
        self.stream_sha256: str | None = None  # sha256 of the (decompressed) tar stream, if computed
        self.compressed_size = raw.size
        try:
            self.source: _Source = self._decompressed(raw, partial)
        except BaseException:
            self.close()
            raise
        self.size = self.source.size
        self.description = f"tar {self.name}" + (
            f" ({self.compression}, spooled)" if self.compression else ""
        )
        self._members: dict[str, TarMember] = {}
        self._children: dict[str, dict[str, None]] = {}
        self.member_count = 0
        self.complete = False  # the index reached the end-of-archive marker
        self.end_offset = 0  # where the index stopped (end marker or the bad header)
        self._resolve_dir = lru_cache(maxsize=1 << 14)(self._resolve_dir_uncached)
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def _decompressed(self, raw: _Source, partial: bool) -> _Source:
        """RAW itself, or for a compressed archive its spool (under the budget)."""
        if not self.compression:
            return raw
        reader = SliceReader(raw, 0, raw.size, self.name)
        self._spool = spool(decompress_stream(reader.read, self.compression), self.name, partial)
        if self._spool.error is not None:
            self._problem(f"{self._spool.error}: indexed what came before")
        else:
            self.stream_sha256 = "sha256:" + self._spool.sha256
        return _FdSource(self._spool.file.fileno(), keep=self._spool)

    # ---- problems ------------------------------------------------------------------------
    def _problem(self, message: str, subject: str | None = None) -> None:
        self._problem_count += 1
        if self._problem_count <= _MAX_PROBLEMS:
            self.problems.append(Problem(f"{self.name}:{subject or '/'}", message))
        elif self._problem_count == _MAX_PROBLEMS + 1:
            self.problems.append(
                Problem(self.name, f"more than {_MAX_PROBLEMS} problems: the rest not listed")
            )

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def boundaries(self) -> list[str]:
        """The archive file, when the tar is one (a tar nested in other evidence has none)."""
        return [self.path] if self.path else []

    def __enter__(self) -> TarEvidence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- indexing ------------------------------------------------------------------------
    def _index(self) -> None:
        root = TarMember("/", statmod.S_IFDIR | 0o755, 1)
        root.synthetic = True
        self._members["/"] = root
        self._children["/"] = {}
        if self.size == 0:
            raise EvidenceError(f"{self.name}: empty file, not a tar archive")
        if self.size < tarfmt.BLOCK:
            raise EvidenceError(f"{self.name}: not a tar archive (truncated header)")
        walk = tarfmt.HeaderWalk(self.source.pread, self.size)
        ino = 1
        hardlinks: list[TarMember] = []
        try:
            for h in walk:
                self.member_count += 1
                if self.member_count > self.max_members:
                    self.end_offset = h.offset
                    self._problem(f"more than {self.max_members} members: the rest are not indexed")
                    return
                ino += 1
                m = self._add(h, ino)
                if m is not None and m.hardlink is not None:
                    hardlinks.append(m)
            self.end_offset = walk.offset
            self._check_end()
        except tarfmt.TarFormatError as exc:
            self._bad_header(exc)
        finally:
            for m in hardlinks:
                self._link(m)

    def _bad_header(self, exc: tarfmt.TarFormatError) -> None:
        self.end_offset = exc.offset
        if exc.offset == 0:
            raise EvidenceError(f"{self.name}: not a tar archive ({exc})") from None
        if exc.truncated:
            self._problem(f"archive unreadable from byte {exc.offset}: {exc} (truncated or corrupt)")
            self._mark_truncated()
        else:
            self._problem(
                f"unreadable tar header at byte {exc.offset} ({exc}): the rest of the archive is not indexed"
            )

    def _add(self, h: tarfmt.TarHeader, ino: int) -> TarMember | None:
        raw = h.name
        if raw.startswith("/"):
            self._problem("absolute member name: taken relative to the archive root", raw)
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        depth = 0
        for p in parts:
            depth += -1 if p == ".." else 1
            if depth < 0:
                self._problem("member name climbs out of the archive root: not indexed", raw)
                return None
        name = normalize("/".join(parts))
        kind = _TYPES.get(h.type)
        if kind is None:
            kind = statmod.S_IFREG
            self._problem(f"unknown member type {h.type!r}: read as a regular file", raw)
        if name == "/" and kind != statmod.S_IFDIR:
            self._problem("a non-directory member names the archive root: not indexed", raw)
            return None
        m = TarMember(name, kind | (h.mode & 0o7777), ino)
        pax = h.pax
        m.uid, m.gid = h.uid, h.gid
        m.mtime_ns = _pax_ns(pax.get("mtime")) or h.mtime * 1_000_000_000
        m.atime_ns = _pax_ns(pax.get("atime")) or 0
        m.ctime_ns = _pax_ns(pax.get("ctime")) or 0
        if pax:
            m.xattrs = _xattrs(pax)
        self._fill_kind(m, h, kind)
        old = self._members.get(name)
        if old is not None and not (old.synthetic or (statmod.S_ISDIR(old.mode) and kind == statmod.S_IFDIR)):
            self._problem("duplicate member name: the last copy wins, as extraction leaves it", name)
        self._members[name] = m
        if kind == statmod.S_IFDIR:
            self._children.setdefault(name, {})
        if name != "/":
            self._attach(name)
        return m

    def _fill_kind(self, m: TarMember, h: tarfmt.TarHeader, kind: int) -> None:
        """The fields that depend on the member's type: data extent, link target, device."""
        if h.type == tarfmt.LINK:
            m.hardlink = normalize(h.linkname)
            m.linkname = h.linkname
        elif kind == statmod.S_IFREG:
            m.size = h.size
            m.offset = h.offset_data
            if h.sparse:
                m.unreadable = "GNU sparse member: its data layout is not supported"
            elif h.offset_data + h.size > self.size:
                m.unreadable = (
                    f"data truncated: the archive holds {max(0, self.size - h.offset_data)} "
                    f"of its {h.size} bytes"
                )
        elif kind == statmod.S_IFLNK:
            m.linkname = h.linkname
            m.size = len(h.linkname.encode("utf-8", "surrogateescape"))
        elif kind in (statmod.S_IFCHR, statmod.S_IFBLK):
            try:
                m.rdev = os.makedev(h.devmajor, h.devminor)
            except (OverflowError, ValueError):
                m.rdev = 0

    def _attach(self, name: str) -> None:
        parent, base = posixpath.split(name)
        while True:
            kids = self._children.get(parent)
            if kids is None:
                kids = self._children[parent] = {}
                if parent not in self._members:
                    d = TarMember(parent, statmod.S_IFDIR | 0o755, 0)
                    d.synthetic = True
                    self._members[parent] = d
                kids[base] = None
                if parent == "/":
                    return
                parent, base = posixpath.split(parent)
                continue
            kids[base] = None
            return

    def _link(self, m: TarMember) -> None:
        seen = 0
        target = self._members.get(m.hardlink or "")
        while target is not None and target.hardlink is not None and seen < MAX_SYMLINKS:
            target = self._members.get(target.hardlink)
            seen += 1
        if target is None or not statmod.S_ISREG(target.mode) or target.hardlink is not None:
            m.unreadable = f"hard link to {m.linkname!r}, which the archive does not hold (before it)"
            self._problem(m.unreadable, m.name)
            return
        for slot in _LINK_SHARED:
            setattr(m, slot, getattr(target, slot))
        m.unreadable = target.unreadable
        target.nlink += 1
        m.nlink = target.nlink

    def _check_end(self) -> None:
        tail = self.source.pread(1024, self.end_offset)
        if len(tail) == 1024 and not tail.strip(b"\0"):
            self.complete = True
            return
        if not tail.strip(b"\0"):
            self._problem(f"no end-of-archive marker at byte {self.end_offset}: the archive is truncated")
            self._mark_truncated()
        else:
            self._problem(
                f"unreadable tar header at byte {self.end_offset}: the rest of the archive is not indexed"
            )

    def _mark_truncated(self) -> None:
        for m in self._members.values():
            if m.offset >= 0 and m.offset + m.size > self.size and m.unreadable is None:
                m.unreadable = (
                    f"data truncated: the archive holds {max(0, self.size - m.offset)} of {m.size} bytes"
                )

    # ---- path resolution ---------------------------------------------------------------
    def _resolve_dir_uncached(self, path: str, depth: int) -> str:
        """PATH with every symlink in it resolved inside the archive (PATH itself included)."""
        if path == "/":
            return "/"
        parent, base = posixpath.split(path)
        real = self._resolve_dir(parent, depth)
        here = posixpath.join(real, base)
        m = self._members.get(here)
        if m is not None and statmod.S_ISLNK(m.mode):
            resolved = follow_dir_link(path, real, depth, lambda: m.linkname or "")
            return self._resolve_dir(resolved, depth + 1)
        return here

    def _member(self, path: str) -> TarMember:
        path = normalize(path)
        if path == "/":
            return self._members["/"]
        parent, base = posixpath.split(path)
        real_parent = self._resolve_dir(parent, 0)
        pm = self._members.get(real_parent)
        if pm is None or not statmod.S_ISDIR(pm.mode):
            raise NotFound(f"no such path in {self.name}: {path}")
        m = self._members.get(posixpath.join(real_parent, base))
        if m is None:
            raise NotFound(f"no such path in {self.name}: {path}")
        return m

    def realpath(self, path: str) -> str:
        """PATH with every symlink (the last component too) resolved inside the archive."""
        return self._resolve_dir(normalize(path), 0)

    # ---- primitives --------------------------------------------------------------------
    def lstat(self, path: str) -> FileStat:
        return self._member(path).stat()

    def scandir(self, path: str) -> Iterator[DirEntry]:
        m = self._member(path)
        if not statmod.S_ISDIR(m.mode):
            raise EvidenceError(f"not a directory in {self.name}: {path}")
        kids = self._children.get(m.name, {})
        out = []
        for name in kids:
            child = self._members.get(posixpath.join(m.name, name))
            if child is not None:
                out.append(DirEntry(name, child.stat()))
        return iter(out)

    def listdir(self, path: str) -> list[str]:
        m = self._member(path)
        if not statmod.S_ISDIR(m.mode):
            raise EvidenceError(f"not a directory in {self.name}: {path}")
        return list(self._children.get(m.name, {}))

    def open(self, path: str) -> BinaryIO:
        m = self._member(path)
        if statmod.S_ISLNK(m.mode):
            raise EvidenceError(f"refusing to follow symlink: {path}")
        if not statmod.S_ISREG(m.mode):
            raise EvidenceError(f"not a regular file: {path}")
        if m.unreadable:
            raise EvidenceError(f"cannot read {path} from {self.name}: {m.unreadable}")
        if m.offset < 0:  # a synthetic or empty entry
            return io.BufferedReader(SliceReader(self.source, 0, 0, path))
        return io.BufferedReader(SliceReader(self.source, m.offset, m.size, path), 1 << 16)

    def open_raw(self, path: str) -> SliceReader:
        """Like open(), unbuffered: a SliceReader another TarEvidence can nest on with pread."""
        m = self._member(path)
        if not statmod.S_ISREG(m.mode) or statmod.S_ISLNK(m.mode):
            raise EvidenceError(f"not a regular file: {path}")
        if m.unreadable:
            raise EvidenceError(f"cannot read {path} from {self.name}: {m.unreadable}")
        return SliceReader(self.source, max(m.offset, 0), m.size if m.offset >= 0 else 0, path)

    def readlink(self, path: str) -> str:
        m = self._member(path)
        if not statmod.S_ISLNK(m.mode):
            raise EvidenceError(f"not a symlink: {path}")
        return m.linkname or ""

    def xattrs(self, path: str) -> dict[str, bytes]:
        m = self._member(path)
        return dict(m.xattrs) if m.xattrs else {}

    # ---- the index, for callers that read an archive as an archive -----------------------
    def where(self, path: str) -> str:
        """PATH of this archive for people and problems: ``<archive>:<member>``."""
        return f"{self.name}:{normalize(path).lstrip('/')}"

    def entry(self, path: str) -> TarMember:
        """The indexed member at PATH (directory symlinks resolved, a final symlink not)."""
        return self._member(path)

    def entries(self) -> Iterator[TarMember]:
        """Every indexed member but the root, in archive order (synthesised parents included,
        ``synthetic`` set)."""
        return (m for name, m in self._members.items() if name != "/")

    def nested(self, path: str, partial: bool = False) -> TarEvidence:
        """The tar held in member PATH (``rootfs-diff.tar``, a layer), read in place."""
        return TarEvidence(self.open_raw(path), name=self.where(path), partial=partial)

    def _regular(self, path: str) -> TarMember:
        m = self._member(path)
        if not statmod.S_ISREG(m.mode):
            raise EvidenceError(f"not a regular file: {self.where(path)}")
        if m.unreadable:
            raise EvidenceError(f"cannot read {self.where(path)}: {m.unreadable}")
        return m

    def pread_member(self, path: str, offset: int, size: int) -> bytes:
        """SIZE bytes at OFFSET of member PATH (fewer at its end)."""
        m = self._regular(path)
        size = max(0, min(size, m.size - offset))
        return self.source.pread(size, m.offset + offset) if size and m.offset >= 0 else b""

    def map_member(self, path: str) -> tuple[mmap.mmap, int, int] | None:
        """(mapping, base, size): member PATH is ``mapping[base : base + size]`` of a read-only map
        of the archive (or its spool) from the page boundary below it; None when it cannot be
        mapped (empty, nested in another member, cut short): read it with ``pread_member``."""
        m = self._regular(path)
        if m.size == 0 or m.offset < 0 or not isinstance(self.source, _FdSource):
            return None
        aligned = m.offset - m.offset % mmap.ALLOCATIONGRANULARITY
        try:
            length = m.offset - aligned + m.size
            mapping = mmap.mmap(self.source.fd, length, access=mmap.ACCESS_READ, offset=aligned)
        except (OSError, ValueError):
            return None
        return mapping, m.offset - aligned, m.size

    def open_stored(self) -> SliceReader:
        """The archive's bytes as they are stored (compressed or not), from the start."""
        return SliceReader(self.raw, 0, self.raw.size, self.name)

    # ---- summaries -----------------------------------------------------------------------
    def content_size(self) -> int:
        """Bytes a storage driver would count for this tree (Docker's layer size): regular files
        once per inode, plus symlink target lengths."""
        total = 0
        seen: set[int] = set()
        for m in self._members.values():
            if statmod.S_ISREG(m.mode) and not m.synthetic:
                if m.ino not in seen:
                    seen.add(m.ino)
                    total += m.size
            elif statmod.S_ISLNK(m.mode):
                total += m.size
        return total
