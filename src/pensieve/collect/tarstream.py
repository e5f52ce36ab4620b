"""Tar streams written into a bundle file: a layer directory exactly as the storage driver keeps
it, and an image archive in the ``docker save`` layout.

Headers are encoded by the standard library (:meth:`tarfile.TarInfo.tobuf`, POSIX.1-2001 PAX);
payloads are streamed here, so a file that grows or shrinks while a running container writes it
is cut or zero-padded to the size its header announced (and said, as a problem), instead of
breaking the archive as ``tarfile.addfile`` would.  Times are PAX ``mtime``/``atime``/``ctime``
with nanoseconds (the records of :mod:`pensieve.filesystem.export`), extended attributes
``SCHILY.xattr.*`` (GNU tar, libarchive, moby's pkg/archive), owners numeric.

A layer directory is archived raw, not merged: overlay whiteouts stay character devices 0/0,
opaque directories keep ``trusted.overlay.opaque``, redirects ``trusted.overlay.redirect``; the
layer directory itself is the member ``./`` (its mode, times and xattrs count).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat as statmod
import tarfile
from collections.abc import Callable, Iterable

from pensieve.evidence import Evidence, EvidenceError, FileStat
from pensieve.filesystem.export import _pax_time
from pensieve.records import Problem

__all__ = ["TarStream", "layer_dir_tar"]

BLOCK = 512
_CHUNK = 1 << 20
_TYPES = {
    statmod.S_IFREG: tarfile.REGTYPE,
    statmod.S_IFDIR: tarfile.DIRTYPE,
    statmod.S_IFLNK: tarfile.SYMTYPE,
    statmod.S_IFCHR: tarfile.CHRTYPE,
    statmod.S_IFBLK: tarfile.BLKTYPE,
    statmod.S_IFIFO: tarfile.FIFOTYPE,
}


class TarStream:
    """A tar archive written piece by piece to WRITE (a bundle file's ``write``)."""

    def __init__(self, write: Callable[[bytes | memoryview], object]) -> None:
        self._write = write
        self.offset = 0
        self._size = self._left = self._got = 0

    def _out(self, data: bytes | memoryview) -> None:
        self._write(data)
        self.offset += len(data)

    def header(self, ti: tarfile.TarInfo) -> None:
        """The header blocks of TI (its payload, if any, follows with :meth:`payload`)."""
        self._out(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def payload(self, blocks: Iterable[bytes | memoryview], size: int) -> int:
        """Exactly SIZE bytes of BLOCKS (cut, or zero-padded when they run short), padded to a
        block; returns how many bytes BLOCKS really gave (SIZE when they matched)."""
        self.begin(size)
        for block in blocks:
            self.feed(block)
        return self.end()

    def begin(self, size: int) -> None:
        """Start a payload of SIZE bytes, fed piece by piece with :meth:`feed` (a push source:
        a layer rebuilt from its tar-split record), finished with :meth:`end`."""
        self._size, self._left, self._got = size, size, 0

    def feed(self, block: bytes | memoryview) -> None:
        """The next piece of the payload begun (what goes past its size is dropped)."""
        self._got += len(block)
        if self._left > 0:
            piece = memoryview(block)[: self._left]
            self._out(piece)
            self._left -= len(piece)

    def end(self) -> int:
        """Zero-fill what the payload lacks, pad it to a block; returns the bytes really fed."""
        left = self._left
        if left > 0:
            zeros = bytes(min(left, _CHUNK))
            while left > 0:
                n = min(left, len(zeros))
                self._out(zeros[:n])
                left -= n
        pad = -self._size % BLOCK
        if pad:
            self._out(bytes(pad))
        self._left = 0
        return self._got

    def add_bytes(self, name: str, data: bytes, mtime: int = 0, mode: int = 0o644) -> None:
        """A regular file NAME holding DATA."""
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode = len(data), mtime, mode
        self.header(ti)
        self.payload([data], len(data))

    def close(self) -> None:
        """The end-of-archive marker (two zero blocks)."""
        self._out(bytes(2 * BLOCK))


def _tarinfo(name: str, st: FileStat, link: str, xattrs: dict[str, bytes]) -> tarfile.TarInfo | None:
    kind = _TYPES.get(statmod.S_IFMT(st.mode))
    if kind is None:
        return None  # a socket: no tar type exists for it
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = st.mode & 0o7777
    ti.uid, ti.gid = st.uid, st.gid
    ti.mtime = st.mtime_ns // 1_000_000_000
    ti.size = st.size if kind == tarfile.REGTYPE else 0
    ti.linkname = link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = os.major(st.rdev), os.minor(st.rdev)
    pax = {"mtime": _pax_time(st.mtime_ns), "atime": _pax_time(st.atime_ns), "ctime": _pax_time(st.ctime_ns)}
    for key, value in sorted(xattrs.items()):
        pax["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    ti.pax_headers = pax
    return ti


def _file_blocks(ev: Evidence, path: str, digest) -> Iterable[bytes]:
    with ev.open(path) as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
            yield block


class _LayerWalk:
    """One layer directory into a TarStream, with an index of what went in."""

    def __init__(self, ev: Evidence, top: str, tar: TarStream, problems: list[Problem]) -> None:
        self.ev, self.top, self.tar, self.problems = ev, top, tar, problems
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) of a multiply linked file -> name
        self.index: list[dict] = []

    def entry(self, path: str, st: FileStat) -> None:
        rel = posixpath.relpath(path, self.top)
        name = "./" if rel == "." else "./" + rel + ("/" if st.is_dir else "")
        link = ""
        if st.is_symlink:
            try:
                link = self.ev.readlink(path)
            except (EvidenceError, OSError) as exc:
                self.problems.append(Problem(path, f"symlink unreadable, archived without target: {exc}"))
        xattrs = self.ev.xattrs(path)
        ti = _tarinfo(name, st, link, xattrs)
        if ti is None:
            self.problems.append(Problem(path, "a socket cannot be archived; skipped"))
            return
        # "size": what lstat said (a directory's too: the tar header of a directory says 0)
        record = {"path": name, "type": ti.type.decode(), "mode": oct(st.mode & 0o7777), "size": st.size}
        key = (st.dev, st.ino)
        if st.is_file and st.nlink > 1 and key in self.links:
            ti.type, ti.size, ti.linkname = tarfile.LNKTYPE, 0, self.links[key]
            record.update(type="hardlink", size=0, link=ti.linkname)
            self.tar.header(ti)
        elif st.is_file:
            if st.nlink > 1:
                self.links[key] = name
            self.tar.header(ti)
            record["sha256"] = self._payload(path, ti.size)
        else:
            self.tar.header(ti)
        if xattrs:
            record["xattrs"] = sorted(xattrs)
        self.index.append(record)

    def _payload(self, path: str, size: int) -> str:
        digest = hashlib.sha256()
        try:
            got = self.tar.payload(_file_blocks(self.ev, path, digest), size)
        except (EvidenceError, OSError) as exc:
            self.problems.append(Problem(path, f"unreadable: archived as zeros: {exc}"))
            return ""
        if got != size:
            self.problems.append(
                Problem(
                    path, f"changed while archived: {size} bytes at lstat, {got} read (cut or zero-padded)"
                )
            )
        return digest.hexdigest()


def layer_dir_tar(
    ev: Evidence, top: str, write: Callable[[bytes | memoryview], object], problems: list[Problem]
) -> list[dict]:
    """Archive the layer directory TOP of EV, raw (whiteouts, opaque markers and every xattr as
    they are on disk), into WRITE; returns the index of its members (path, type, mode, size,
    sha256 of each regular file)."""
    tar = TarStream(write)
    walk = _LayerWalk(ev, top, tar, problems)
    try:
        walk.entry(top, ev.lstat(top))
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(top, f"layer directory unreadable: {exc}"))
        tar.close()
        return walk.index
    for dirpath, entries in ev.walk(top):
        for e in entries:
            walk.entry(posixpath.join(dirpath, e.name), e.stat)
    tar.close()
    return walk.index
