"""Checkpoint archives (Podman ``--export``, CRI-O / kubelet, containerd), read in place.

A checkpoint archive is a tar -- plain, gzip or zstd (xz and bzip2 are accepted too) -- holding
``config.dump``, ``spec.dump``, ``network.status``, ``stats-dump``, ``checkpoint/`` (the CRIU
images), ``rootfs-diff.tar`` and ``deleted.files``.  Nothing is extracted: one pass over the tar
headers builds an index (name -> offset and size of the data), and members are read with
``pread`` through that index, ``rootfs-diff.tar`` as a tar nested in its member's byte range.

A compressed archive cannot be read at random offsets: it is decompressed once, streaming, into
an anonymous temporary file in the system temp directory (``TMPDIR``; unlinked at creation, never
next to the evidence), and that spool is indexed.  Memory stays bounded by the index.

Hostile names are handled the way extraction would: ``./`` and a leading ``/`` are dropped, a name
climbing out of the archive (``../x``) is not indexed (and recorded in ``problems``), the last of
duplicate names wins, a hard link reads its target's data.
"""

from __future__ import annotations

import bz2
import lzma
import mmap
import os
import posixpath
import tarfile
import tempfile
import zlib

from pensieve.formats.criu.checkpoint import CheckpointStore
from pensieve.formats.criu.images import MAX_IMAGE_SIZE, CriuImageError
from pensieve.records.core import record
from pensieve.util import BZIP2, XZ, ZSTD, open_noatime, sniff_compression

_CHUNK = 1 << 20
#: members indexed at most (an archive of millions of empty members is an attack, not a checkpoint)
MAX_MEMBERS = 1_000_000


def open_readonly(path: str) -> int:
    """A read-only descriptor of PATH: no final symlink, no access-time update where allowed."""
    try:
        return open_noatime(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CriuImageError(f"cannot open: {exc.strerror}", path) from None


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, 64 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class _Window:
    """A read-only, seekable file object over bytes [BASE, BASE+LENGTH) of a descriptor."""

    def __init__(self, fd: int, base: int, length: int) -> None:
        self.fd, self.base, self.length, self.pos = fd, base, length, 0

    def read(self, n: int = -1) -> bytes:
        left = self.length - self.pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        data = _pread_all(self.fd, n, self.base + self.pos)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.pos
        elif whence == 2:
            offset += self.length
        self.pos = max(0, offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def _decompressor(kind: str, fd: int):
    """A read(n) callable yielding the decompressed stream of descriptor FD."""
    raw = _Window(fd, 0, os.fstat(fd).st_size)
    if kind == ZSTD:
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return reader.read
    if kind == XZ:
        return lzma.LZMAFile(raw).read
    if kind == BZIP2:
        return bz2.BZ2File(raw).read

    state = {"d": zlib.decompressobj(16 + zlib.MAX_WBITS), "done": False}

    def read_gzip(n: int) -> bytes:  # several members concatenated, like gzip -d
        out = b""
        while not out and not state["done"]:
            d = state["d"]
            if d.unused_data:
                data, d = d.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
                state["d"] = d
            else:
                data = raw.read(_CHUNK)
                if not data:
                    state["done"] = True
                    if not d.eof:
                        raise CriuImageError("gzip stream cut short")
                    break
            out = d.decompress(data)
        return out

    return read_gzip


@record
class Member:
    name: str  # normalized, relative to the archive root
    type: str  # file | dir | symlink | hardlink | char | block | fifo | other
    size: int
    offset: int  # of the data in the backing file
    mode: int
    uid: int
    gid: int
    mtime: float
    linkname: str | None = None


_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def clean_name(name: str) -> str | None:
    """NAME relative to the archive root, None when it climbs out of it."""
    name = posixpath.normpath(name.lstrip("/") or ".")
    if name == ".." or name.startswith("../"):
        return None
    return name


class TarArchive:
    """An index of a tar (whole file, or a byte range of one) and bounded reads of its members."""

    def __init__(self, path: str, _fd: int | None = None, _base: int = 0, _length: int | None = None) -> None:
        self.path = path
        self.problems: list[str] = []
        self.compression: str | None = None
        self._owned: list[int] = []
        self._spool = None
        if _fd is None:
            fd = open_readonly(path)
            self._owned.append(fd)
            import stat as _stat

            if not _stat.S_ISREG(os.fstat(fd).st_mode):
                self.close()
                raise CriuImageError("not a regular file", path)
            self.compression = sniff_compression(os.pread(fd, 8, 0))
            if self.compression is not None:
                fd = self._spool_out(fd)
            _length = os.fstat(fd).st_size
        self.fd = fd if _fd is None else _fd
        self.base = _base
        self.length = _length if _length is not None else os.fstat(self.fd).st_size - _base
        self.members: dict[str, Member] = {}
        self._index()

    def _spool_out(self, fd: int) -> int:
        read = _decompressor(self.compression, fd)
        self._spool = tempfile.TemporaryFile(prefix="pensieve-spool-")  # noqa: SIM115 - closed in close()
        try:
            while block := read(_CHUNK):
                self._spool.write(block)
        except CriuImageError as exc:
            self.problems.append(f"{self.compression} stream: {exc.message}: read what came before")
        except Exception as exc:  # zstandard.ZstdError is not an OSError
            if not isinstance(exc, (OSError, EOFError, zlib.error, lzma.LZMAError)) and (
                type(exc).__name__ != "ZstdError"
            ):
                raise
            self.problems.append(
                f"{self.compression} stream corrupt or cut short ({exc}): read what came before"
            )
        self._spool.flush()
        return self._spool.fileno()

    def _index(self) -> None:
        window = _Window(self.fd, self.base, self.length)
        try:
            tf = tarfile.open(fileobj=window, mode="r:")  # noqa: SIM115 - closed below
        except tarfile.TarError as exc:
            raise CriuImageError(f"not a tar archive ({exc})", self.path) from None
        n = 0
        try:
            while True:
                try:
                    ti = tf.next()
                except tarfile.TarError as exc:
                    self.problems.append(f"unreadable tar header after {n} members ({exc}): index stops")
                    break
                if ti is None:
                    break
                n += 1
                if n > MAX_MEMBERS:
                    self.problems.append(f"more than {MAX_MEMBERS} members: index stops")
                    break
                tf.members = []  # keep memory bounded by our own index
                name = clean_name(ti.name)
                if name is None:
                    self.problems.append(f"member {ti.name!r} climbs out of the archive: ignored")
                    continue
                kind = _TYPES.get(ti.type, "other")
                if ti.offset_data + ti.size > self.length and kind == "file":
                    self.problems.append(f"member {name} is cut short")
                self.members[name] = Member(
                    name,
                    kind,
                    ti.size if kind == "file" else 0,
                    self.base + ti.offset_data,
                    ti.mode,
                    ti.uid,
                    ti.gid,
                    float(ti.mtime),
                    ti.linkname or None,
                )
        finally:
            tf.members = []
        for name in list(self.members):  # missing parents, as extraction creates them
            parent = posixpath.dirname(name)
            while parent and parent not in self.members:
                self.members[parent] = Member(parent, "dir", 0, 0, 0o755, 0, 0, 0.0)
                parent = posixpath.dirname(parent)

    # ---- reads ------------------------------------------------------------------------------

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"

    def member(self, name: str) -> Member:
        m = self.members.get(name)
        seen = 0
        while m is not None and m.type == "hardlink" and seen < 40:
            target = clean_name(m.linkname or "")
            m = self.members.get(target) if target else None
            seen += 1
        if m is None or m.type != "file":
            raise CriuImageError("no such file in the archive", self.where(name))
        return m

    def size(self, name: str) -> int:
        return self.member(name).size

    def pread(self, name: str, offset: int, size: int) -> bytes:
        m = self.member(name)
        if offset >= m.size:
            return b""
        size = min(size, m.size - offset)
        return _pread_all(self.fd, size, m.offset + offset)

    def map(self, name: str) -> tuple[mmap.mmap, int, int] | None:
        """(mapping, base, size): member NAME is ``mapping[base : base + size]`` of a read-only
        map of the archive (or its spool) from the page boundary below the member's data; None
        when the member is empty or cut short (read it with ``pread``)."""
        m = self.member(name)
        if m.size == 0:
            return None
        try:
            if m.offset + m.size > os.fstat(self.fd).st_size:
                return None
            aligned = m.offset - m.offset % mmap.ALLOCATIONGRANULARITY
            base = m.offset - aligned
            return mmap.mmap(self.fd, base + m.size, access=mmap.ACCESS_READ, offset=aligned), base, m.size
        except (OSError, ValueError):
            return None

    def read(self, name: str, limit: int = MAX_IMAGE_SIZE) -> bytes:
        m = self.member(name)
        if m.size > limit:
            raise CriuImageError(f"member larger than {limit} bytes ({m.size})", self.where(name))
        data = _pread_all(self.fd, m.size, m.offset)
        if len(data) != m.size:
            raise CriuImageError(f"member cut short: {len(data)} of {m.size} bytes", self.where(name))
        return data

    def nested(self, name: str) -> TarArchive:
        """The tar held in member NAME (``rootfs-diff.tar``), read in place."""
        m = self.member(name)
        return TarArchive(self.where(name), _fd=self.fd, _base=m.offset, _length=m.size)

    def listdir(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/")
        out = []
        for name in self.members:
            if name != prefix and posixpath.dirname(name) == prefix:
                out.append(posixpath.basename(name))
        return out

    def close(self) -> None:
        for fd in self._owned:
            try:
                os.close(fd)
            except OSError:
                pass
        self._owned = []
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self) -> TarArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArchiveStore(CheckpointStore):
    """The CRIU images under PREFIX (``checkpoint``) of a checkpoint archive."""

    def __init__(self, archive: TarArchive, prefix: str = "checkpoint") -> None:
        self.archive = archive
        self.prefix = prefix.strip("/")
        self.path = archive.where(self.prefix) if self.prefix not in ("", ".") else archive.path
        self._names = {
            n
            for n in (archive.listdir(self.prefix) if self.prefix != "." else archive.listdir(""))
            if archive.members[self._full(n)].type in ("file", "hardlink", "symlink")
        }

    def _full(self, name: str) -> str:
        return name if self.prefix in ("", ".") else f"{self.prefix}/{name}"

    def names(self) -> set[str]:
        return set(self._names)

    def where(self, name: str) -> str:
        return self.archive.where(self._full(name))

    def read(self, name: str, limit: int = MAX_IMAGE_SIZE) -> bytes:
        return self.archive.read(self._full(name), limit)

    def size(self, name: str) -> int:
        return self.archive.size(self._full(name))

    def pread(self, name: str, offset: int, size: int) -> bytes:
        return self.archive.pread(self._full(name), offset, size)

    def map(self, name: str) -> tuple[mmap.mmap, int, int] | None:
        return self.archive.map(self._full(name))

    def parent(self) -> ArchiveStore | None:
        """The ``parent`` checkpoint when it is inside the same archive (a symlink or directory)."""
        m = self.archive.members.get(self._full("parent"))
        if m is None:
            return None
        if m.type == "symlink":
            target = m.linkname or ""
            if target.startswith("/"):
                raise CriuImageError(f"parent link is absolute ({target!r}): refused", self.where("parent"))
            resolved = clean_name(posixpath.join(posixpath.dirname(self._full("parent")), target))
            if resolved is None:
                raise CriuImageError("parent is outside the archive", self.where("parent"))
        elif m.type == "dir":
            resolved = self._full("parent")
        else:
            raise CriuImageError("parent is neither a symlink nor a directory", self.where("parent"))
        if resolved == (self.prefix or "."):
            raise CriuImageError("parent link points at its own checkpoint", self.where("parent"))
        if f"{resolved}/inventory.img" not in self.archive.members and resolved != ".":
            raise CriuImageError(
                f"parent {resolved} is not a checkpoint in the archive", self.where("parent")
            )
        return ArchiveStore(self.archive, resolved)
