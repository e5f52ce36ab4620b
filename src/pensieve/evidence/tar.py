"""Evidence that is a tar archive: a ``docker save``/``docker export`` tar, an OCI archive, or one
image layer inside any of them.

One streaming pass over the headers builds an index (name -> type, metadata, offset of the data);
nothing of a member's data is read until it is opened, and then through a reader bounded to that
member's bytes.  The archive is read with ``pread`` on one descriptor, so any number of members
(and tars nested in members: the layer tars of a ``docker save``) can be open at once.

Compressed tars (gzip, zstd, xz, bzip2; sniffed from the magic bytes) cannot be read at random
offsets: they are decompressed once, streaming, into an anonymous temporary *spool* file in the
system temp directory (``tempfile.gettempdir()``, ``TMPDIR``; never next to the evidence; unlinked
at creation, so it goes away with the process), and the spool is indexed.  Memory stays bounded
by the index: one small record per member.  The sha256 of the decompressed stream is kept
(``stream_sha256``): for a layer blob it is the layer's diff id.

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
import bz2
import hashlib
import io
import lzma
import os
import posixpath
import shutil
import stat as statmod
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import BinaryIO
from urllib.parse import unquote

from pensieve.evidence.base import DirEntry, Evidence, EvidenceError, FileStat, NotFound, normalize
from pensieve.records import Problem
from pensieve.util import BZIP2, GZIP, XZ, ZSTD, open_noatime, sniff_compression

_CHUNK = 1 << 20
_MAX_SYMLINKS = 40
#: problems recorded per archive before only counting them
_MAX_PROBLEMS = 200


class DecompressError(EvidenceError):
    """A compressed stream is corrupt or cut short."""


def _decompressor(kind: str):
    if kind == GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == ZSTD:
        try:
            import zstandard
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise DecompressError("zstd-compressed data: the zstandard package is not installed") from exc
        return zstandard.ZstdDecompressor().decompressobj()
    if kind == XZ:
        return lzma.LZMADecompressor()
    if kind == BZIP2:
        return bz2.BZ2Decompressor()
    raise DecompressError(f"unknown compression {kind}")


def decompress_stream(read: Callable[[int], bytes], kind: str, chunk: int = _CHUNK) -> Iterator[bytes]:
    """Decompress KIND from READ, chunk by chunk; concatenated members/frames are followed and
    zero padding after the last one ignored.  Raises DecompressError naming the compressed offset
    when the stream is corrupt or ends early."""
    d = _decompressor(kind)
    consumed = 0
    pending = b""
    while True:
        data = pending or read(chunk)
        pending = b""
        if not data:
            break
        if d is None:  # between members: only zero padding may follow the last one
            if not data.strip(b"\0"):
                consumed += len(data)
                continue
            d = _decompressor(kind)
        try:
            out = d.decompress(data)
        except Exception as exc:  # zlib.error, lzma.LZMAError, OSError, zstandard.ZstdError
            raise DecompressError(f"corrupt {kind} data near compressed byte {consumed}: {exc}") from exc
        if out:
            yield out
        if d.eof:
            pending = d.unused_data
            consumed += len(data) - len(pending)
            d = None
        else:
            consumed += len(data)
    if d is not None:
        raise DecompressError(f"{kind} stream ends early (truncated after {consumed} compressed bytes)")


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


def spool(read: Callable[[int], bytes], kind: str, what: str) -> tuple[BinaryIO, str, int]:
    """Decompress into an anonymous temp file: (file, sha256 of the decompressed bytes, size)."""
    tmpdir = tempfile.gettempdir()
    out = tempfile.TemporaryFile(prefix="pensieve-spool-", dir=tmpdir)  # noqa: SIM115 - returned open
    sha = hashlib.sha256()
    size = 0
    check_at = 256 << 20
    try:
        for block in decompress_stream(read, kind):
            out.write(block)
            sha.update(block)
            size += len(block)
            if size >= check_at:
                check_at += 256 << 20
                if shutil.disk_usage(tmpdir).free < (512 << 20):
                    raise EvidenceError(
                        f"{what}: temp dir {tmpdir} is nearly full after {size} decompressed bytes "
                        "(point TMPDIR at a larger disk)"
                    )
    except BaseException:
        out.close()
        raise
    out.flush()
    return out, sha.hexdigest(), size


# ---- the index ----------------------------------------------------------------------------


class TarMember:
    """One indexed name: its metadata and where its data is."""

    __slots__ = (
        "name",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime_ns",
        "atime_ns",
        "ctime_ns",
        "offset",
        "linkname",
        "hardlink",
        "rdev",
        "xattrs",
        "ino",
        "nlink",
        "synthetic",
        "unreadable",
    )

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
    tarfile.REGTYPE: statmod.S_IFREG,
    tarfile.AREGTYPE: statmod.S_IFREG,
    tarfile.CONTTYPE: statmod.S_IFREG,
    tarfile.GNUTYPE_SPARSE: statmod.S_IFREG,
    tarfile.LNKTYPE: statmod.S_IFREG,
    tarfile.DIRTYPE: statmod.S_IFDIR,
    tarfile.SYMTYPE: statmod.S_IFLNK,
    tarfile.CHRTYPE: statmod.S_IFCHR,
    tarfile.BLKTYPE: statmod.S_IFBLK,
    tarfile.FIFOTYPE: statmod.S_IFIFO,
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
    """Read-only view of a tar archive, by path or over a file object of other evidence."""

    #: stop indexing past this many members (each costs a few hundred bytes of memory)
    max_members = 5_000_000

    def __init__(
        self,
        source: str | BinaryIO,
        name: str | None = None,
        max_members: int | None = None,
    ) -> None:
        self.problems: list[Problem] = []
        self._problem_count = 0
        if max_members is not None:
            self.max_members = max_members
        self.name = name or (source if isinstance(source, str) else getattr(source, "name", "tar"))
        self.path = os.path.realpath(source) if isinstance(source, str) else None
        self._spool: BinaryIO | None = None
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
        self.compression = sniff_compression(raw.pread(8, 0))
        self.stream_sha256: str | None = None  # sha256 of the (decompressed) tar stream, if computed
        self.compressed_size = raw.size
        if self.compression:
            reader = SliceReader(raw, 0, raw.size, self.name)
            self._spool, digest, _size = spool(reader.read, self.compression, self.name)
            self.stream_sha256 = "sha256:" + digest
            self.source: _Source = _FdSource(self._spool.fileno(), keep=self._spool)
        else:
            self.source = raw
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
        self._index()

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

    # ---- indexing ------------------------------------------------------------------------
    def _index(self) -> None:
        root = TarMember("/", statmod.S_IFDIR | 0o755, 1)
        root.synthetic = True
        self._members["/"] = root
        self._children["/"] = {}
        reader = io.BufferedReader(SliceReader(self.source, 0, self.size, self.name), 1 << 16)
        ino = 1
        hardlinks: list[TarMember] = []
        try:
            tf = tarfile.open(  # noqa: SIM115 - closed with the evidence (it only reads headers)
                fileobj=reader, mode="r:", encoding="utf-8", errors="surrogateescape"
            )
        except tarfile.ReadError as exc:
            if self.size == 0 or not reader.peek(1):
                raise EvidenceError(f"{self.name}: empty file, not a tar archive") from exc
            raise EvidenceError(f"{self.name}: not a tar archive ({exc})") from exc
        try:
            while True:
                try:
                    info = tf.next()
                except tarfile.ReadError as exc:
                    self.end_offset = tf.offset
                    self._problem(f"archive unreadable from byte {tf.offset}: {exc} (truncated or corrupt)")
                    self._mark_truncated()
                    return
                tf.members.clear()  # the index below is the only per-member memory kept
                if info is None:
                    break
                self.member_count += 1
                if self.member_count > self.max_members:
                    self.end_offset = info.offset
                    self._problem(f"more than {self.max_members} members: the rest are not indexed")
                    return
                ino += 1
                m = self._add(info, ino)
                if m is not None and m.hardlink is not None:
                    hardlinks.append(m)
            self.end_offset = tf.offset
            self._check_end()
        finally:
            for m in hardlinks:
                self._link(m)

    def _add(self, info: tarfile.TarInfo, ino: int) -> TarMember | None:
        raw = info.name
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
        kind = _TYPES.get(info.type)
        if kind is None:
            if info.type in (
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
            ):
                return None
            kind = statmod.S_IFREG
            self._problem(f"unknown member type {info.type!r}: read as a regular file", raw)
        if name == "/" and kind != statmod.S_IFDIR:
            self._problem("a non-directory member names the archive root: not indexed", raw)
            return None
        m = TarMember(name, kind | (info.mode & 0o7777), ino)
        pax = info.pax_headers
        m.uid, m.gid = info.uid, info.gid
        m.mtime_ns = _pax_ns(pax.get("mtime")) or int(info.mtime) * 1_000_000_000
        m.atime_ns = _pax_ns(pax.get("atime")) or 0
        m.ctime_ns = _pax_ns(pax.get("ctime")) or 0
        if pax:
            m.xattrs = _xattrs(pax)
        if info.type == tarfile.LNKTYPE:
            target = normalize(info.linkname)
            m.hardlink = target
            m.linkname = info.linkname
        elif kind == statmod.S_IFREG:
            m.size = info.size
            m.offset = info.offset_data
            if info.sparse:
                m.unreadable = "GNU sparse member: its data layout is not supported"
            elif info.offset_data + info.size > self.size:
                m.unreadable = (
                    f"data truncated: the archive holds {max(0, self.size - info.offset_data)} "
                    f"of its {info.size} bytes"
                )
        elif kind == statmod.S_IFLNK:
            m.linkname = info.linkname
            m.size = len(info.linkname.encode("utf-8", "surrogateescape"))
        elif kind in (statmod.S_IFCHR, statmod.S_IFBLK):
            m.rdev = os.makedev(info.devmajor, info.devminor)
        old = self._members.get(name)
        if old is not None:
            if not (old.synthetic or (statmod.S_ISDIR(old.mode) and kind == statmod.S_IFDIR)):
                self._problem("duplicate member name: the last copy wins, as extraction leaves it", name)
            if name == "/" and old.synthetic:
                pass
        self._members[name] = m
        if kind == statmod.S_IFDIR:
            self._children.setdefault(name, {})
        if name != "/":
            self._attach(name)
        return m

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
        while target is not None and target.hardlink is not None and seen < _MAX_SYMLINKS:
            target = self._members.get(target.hardlink)
            seen += 1
        if target is None or not statmod.S_ISREG(target.mode) or target.hardlink is not None:
            m.unreadable = f"hard link to {m.linkname!r}, which the archive does not hold (before it)"
            self._problem(m.unreadable, m.name)
            return
        for slot in (
            "mode",
            "uid",
            "gid",
            "size",
            "mtime_ns",
            "atime_ns",
            "ctime_ns",
            "offset",
            "xattrs",
            "ino",
        ):
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
            if depth >= _MAX_SYMLINKS:
                raise EvidenceError(f"too many levels of symbolic links: {path}")
            target = m.linkname or ""
            resolved = normalize(target if target.startswith("/") else posixpath.join(real, target))
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
