"""The read-only evidence interface every engine and analysis reads through.

Paths are POSIX paths inside the evidence, always absolute ("/var/lib/docker/...").  Symlinks
are never followed by the interface itself except in *directory* components, and then only
chroot-style: an absolute target resolves against the evidence root, ``..`` stops at the root.
Nothing here ever writes.
"""

from __future__ import annotations

import posixpath
import stat as statmod
from collections.abc import Iterator
from typing import BinaryIO

from pensieve.records.core import record


class EvidenceError(Exception):
    """A path could not be read from the evidence."""


class NotFound(EvidenceError, FileNotFoundError):
    pass


@record
class FileStat:
    """lstat() of an evidence path, timestamps in nanoseconds since the epoch."""

    mode: int
    ino: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int = 0
    dev: int = 0

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return statmod.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return statmod.S_ISLNK(self.mode)

    @property
    def is_char(self) -> bool:
        return statmod.S_ISCHR(self.mode)

    @property
    def kind(self) -> str:
        return file_kind(self.mode)


def file_kind(mode: int) -> str:
    fmt = statmod.S_IFMT(mode)
    return _KINDS.get(fmt, "unknown")


_KINDS = {
    statmod.S_IFREG: "file",
    statmod.S_IFDIR: "dir",
    statmod.S_IFLNK: "symlink",
    statmod.S_IFCHR: "char",
    statmod.S_IFBLK: "block",
    statmod.S_IFIFO: "fifo",
    statmod.S_IFSOCK: "socket",
}


@record
class DirEntry:
    name: str
    stat: FileStat


def join(*parts: str) -> str:
    return posixpath.join(*parts)


def normalize(path: str) -> str:
    """Absolute, normalised evidence path ('' and '.' mean the root)."""
    path = posixpath.normpath("/" + path.lstrip("/"))
    return "/" if path in ("/", "//") else path


class Evidence:
    """Abstract read-only filesystem.  Subclasses implement the five primitives.

    Contract (every implementation, no ``getattr`` probing by callers):

    * ``description`` -- what it is, for messages ("directory /mnt/host", "ext4 in disk.img@2");
    * ``problems`` -- what could not be read while opening or reading (skipped partitions, entries
      refused), as :class:`~pensieve.records.Problem`; callers pass them on, never drop them;
    * ``lstat``/``scandir``/``open``/``readlink``/``xattrs`` -- the primitives, on absolute POSIX
      paths inside the evidence, never following a final symlink;
    * ``boundaries()`` -- the host paths this evidence is made of (a directory; image or archive
      files), which the output sink refuses to write into or next to;
    * ``host_path(path)`` / ``from_host_path(host)`` -- the bridge to host paths where the evidence
      is a directory on this host (None elsewhere);
    * ``close()`` -- release file handles (also a context manager).
    """

    #: human-readable description ("directory /mnt/host", "ext4 in disk.img partition 2")
    description: str = "evidence"

    @property
    def problems(self) -> list:
        try:
            return self._problems
        except AttributeError:
            self._problems: list = []
            return self._problems

    @problems.setter
    def problems(self, value: list) -> None:
        self._problems = value

    def boundaries(self) -> list[str]:
        """Host paths that are this evidence (the sink refuses them, and the directory of a file)."""
        return []

    def host_path(self, path: str) -> str | None:
        """The host path of an evidence path, where the evidence is a directory here."""
        return None

    def from_host_path(self, host: str) -> str | None:
        """The evidence path of a host path, where the evidence is a directory here."""
        return None

    def close(self) -> None:
        """Release what the evidence holds open."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lstat(self, path: str) -> FileStat:  # pragma: no cover - interface
        raise NotImplementedError

    def scandir(self, path: str) -> Iterator[DirEntry]:  # pragma: no cover - interface
        raise NotImplementedError

    def open(self, path: str) -> BinaryIO:  # pragma: no cover - interface
        """Open a regular file for reading; refuses symlinks in the last component."""
        raise NotImplementedError

    def readlink(self, path: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def xattrs(self, path: str) -> dict[str, bytes]:  # pragma: no cover - interface
        raise NotImplementedError

    # ---- conveniences built on the primitives -------------------------------------------
    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except (EvidenceError, OSError):
            return False
        return True

    def is_dir(self, path: str) -> bool:
        try:
            return self.lstat(path).is_dir
        except (EvidenceError, OSError):
            return False

    def is_file(self, path: str) -> bool:
        try:
            return self.lstat(path).is_file
        except (EvidenceError, OSError):
            return False

    def listdir(self, path: str) -> list[str]:
        return [e.name for e in self.scandir(path)]

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        with self.open(path) as fh:
            return fh.read() if limit is None else fh.read(limit)

    def read_text(self, path: str, limit: int | None = None) -> str:
        return self.read_bytes(path, limit).decode("utf-8", "replace")

    def getxattr(self, path: str, name: str) -> bytes | None:
        return self.xattrs(path).get(name)

    def walk(self, top: str) -> Iterator[tuple[str, list[DirEntry]]]:
        """Yield (dirpath, entries) top-down; never descends through symlinks."""
        stack = [normalize(top)]
        while stack:
            current = stack.pop()
            try:
                entries = sorted(self.scandir(current), key=lambda e: e.name)
            except (EvidenceError, OSError):
                continue
            yield current, entries
            for e in reversed(entries):
                if e.stat.is_dir:
                    stack.append(join(current, e.name))
