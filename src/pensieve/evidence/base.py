"""The read-only evidence interface every engine and analysis reads through.

Paths are POSIX paths inside the evidence, always absolute ("/var/lib/docker/...").  Symlinks
are never followed by the interface itself except in *directory* components, and then only
chroot-style: an absolute target resolves against the evidence root, ``..`` stops at the root.
Nothing here ever writes.  The contract is :class:`Evidence`'s docstring.
"""

from __future__ import annotations

import abc
import os
import posixpath
import stat as statmod
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pensieve.records.core import Problem, record


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


def relative_to(root: str, path: str) -> str | None:
    """PATH relative to ROOT ("" for ROOT itself), None when PATH is not below ROOT (both
    evidence paths, normalised first)."""
    root, path = normalize(root), normalize(path)
    if root == "/":
        return path.lstrip("/")
    if path == root:
        return ""
    return path[len(root) + 1 :] if path.startswith(root + "/") else None


#: symlinks one lookup may follow (the kernel's MAXSYMLINKS, include/linux/namei.h; ELOOP beyond)
MAX_SYMLINKS = 40


def chroot_link(link_dir: str, target: str) -> str:
    """The evidence path a symlink in directory LINK_DIR with TARGET points at, chroot-style: an
    absolute TARGET is re-rooted at the evidence root and ``..`` stops at the root."""
    return normalize(target if target.startswith("/") else posixpath.join(link_dir, target))


def follow_dir_link(path: str, link_dir: str, depth: int, readlink: Callable[[], str]) -> str:
    """One step of resolving directory components: the symlink PATH (in LINK_DIR, the DEPTH-th
    met on this lookup, its target from READLINK) leads to this evidence path (``chroot_link``);
    EvidenceError "too many levels of symbolic links" once DEPTH reaches MAX_SYMLINKS."""
    if depth >= MAX_SYMLINKS:
        raise EvidenceError(f"too many levels of symbolic links: {path}")
    return chroot_link(link_dir, readlink())


def open_noatime(path: str, flags: int, dir_fd: int | None = None) -> int:
    """``os.open(path, flags | O_NOATIME)``; without O_NOATIME where the kernel refuses it
    (PermissionError: not the file's owner, not root). Any other OSError is raised.

    Every host file pensieve reads as evidence (directories, image and archive files) is opened
    through this or :class:`~pensieve.evidence.directory.DirectoryEvidence`: open(2) with
    O_NOATIME, read(2)/getdents(2) on that fd never move the access time."""
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME, dir_fd=dir_fd)
        except PermissionError:
            pass
    return os.open(path, flags, dir_fd=dir_fd)


_NOATIME = getattr(os, "O_NOATIME", 0)


def atime_may_move(host_path: str) -> bool:
    """Whether reading below HOST_PATH without O_NOATIME can change access times: false on a
    mount that is read-only or ``noatime`` (statvfs(3) ``ST_RDONLY``/``ST_NOATIME``)."""
    try:
        flags = os.statvfs(host_path).f_flag
    except OSError:
        return True
    return not flags & (os.ST_RDONLY | getattr(os, "ST_NOATIME", 1024))


def _check_name(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a directory entry name: {name!r}")
    return name


class DirHandle:
    """One directory of an evidence, opened once; its entries are looked up by NAME relative to
    it and never through a symlink in the last component.

    This generic handle works on any evidence through the path primitives (a directory symlink
    met on the way to ``path`` resolves chroot-style, as everywhere in the interface);
    :class:`~pensieve.evidence.directory.DirectoryEvidence` returns one holding an
    ``O_DIRECTORY | O_NOATIME`` file descriptor, so that a walk of many entries costs one
    lookup per entry relative to an fd it already holds (``fstatat``, ``openat``), and a tree
    reached component by component can never lead out of itself.  Callers use the same methods
    either way: no ``isinstance``, no fd arithmetic."""

    __slots__ = ("evidence", "path")

    def __init__(self, evidence: Evidence, path: str) -> None:
        self.evidence = evidence
        self.path = normalize(path)

    def child(self, name: str) -> str:
        """Evidence path of the entry NAME."""
        _check_name(name)
        return self.path + name if self.path == "/" else self.path + "/" + name

    def lstat(self, name: str) -> FileStat:
        return self.evidence.lstat(self.child(name))

    def opendir(self, name: str) -> DirHandle:
        """The subdirectory NAME (EvidenceError when it is not a directory, or a symlink)."""
        path = self.child(name)
        if not self.evidence.lstat(path).is_dir:
            raise EvidenceError(f"not a directory: {path}")
        return DirHandle(self.evidence, path)

    def open(self, name: str) -> BinaryIO:
        """The regular file NAME for reading (``readinto`` reads straight from the evidence)."""
        return self.evidence.open(self.child(name))

    def readlink(self, name: str) -> str:
        return self.evidence.readlink(self.child(name))

    def xattrs(self, name: str | None = None) -> dict[str, bytes]:
        """Extended attributes of NAME (of this directory itself when NAME is None)."""
        return self.evidence.xattrs(self.path if name is None else self.child(name))

    def file_xattrs(self, fh: BinaryIO, name: str) -> dict[str, bytes]:
        """Extended attributes of the entry NAME while it is open as FH (from ``open(name)``):
        read through its fd where there is one, which costs no second lookup."""
        return self.xattrs(name)

    def names(self) -> list[tuple[str, bool]]:
        """(name, is a directory) of every entry, unsorted; a symlink is not a directory."""
        return [(e.name, e.stat.is_dir) for e in self.evidence.scandir(self.path)]

    def scandir(self) -> list[DirEntry]:
        return list(self.evidence.scandir(self.path))

    def close(self) -> None:
        """Release what the handle holds (nothing here)."""

    def __enter__(self) -> DirHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Evidence(abc.ABC):
    """Read-only filesystem over one piece of evidence: the only way pensieve reads it.

    Implementers provide: the five abstract primitives ``lstat``/``scandir``/``open``/
    ``readlink``/``xattrs`` on absolute POSIX paths inside the evidence (``NotFound`` when
    absent, ``EvidenceError`` when unreadable; ``xattrs`` answers ``{}`` instead), a
    ``description`` ("directory /mnt/host", "ext4 in disk.img@2"), and where they apply
    ``boundaries()`` (the host files or directory it is made of), ``host_path``/
    ``from_host_path`` (evidence that is a directory on this host; None elsewhere), an
    ``opendir`` holding an fd, and ``close()``.  Opening and reading append what cannot be read
    (skipped partitions, refused members, atimes that may move) to ``problems``.

    Callers may rely on, without ``getattr`` or ``isinstance`` probes:

    * read-only: nothing writes to the evidence; host files are opened ``O_RDONLY``, with
      ``O_NOATIME`` where the kernel allows it (:func:`open_noatime`; the libyal E01/qcow1
      bindings open their files themselves);
    * no symlink followed out of the root: a final symlink is never followed (``open`` refuses
      it; ``lstat``/``readlink``/``xattrs`` speak of the link), directory components are
      followed chroot-style (:func:`chroot_link`, at most ``MAX_SYMLINKS`` per lookup);
    * ``problems`` -- :class:`~pensieve.records.Problem` records, never an exception for one bad
      item; callers pass them on;
    * ``boundaries()`` -- the host paths the output sink refuses to write into or next to;
    * ``opendir(path)`` -- a :class:`DirHandle` for walks of many entries; the conveniences
      (``exists``, ``read_bytes``, ``walk`` ...) built on the primitives; a context manager.
    """

    #: human-readable description ("directory /mnt/host", "ext4 in disk.img partition 2")
    description: str = "evidence"

    @property
    def problems(self) -> list[Problem]:
        try:
            return self._problems
        except AttributeError:
            self._problems: list[Problem] = []
            return self._problems

    @problems.setter
    def problems(self, value: list[Problem]) -> None:
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

    def not_collected(self, path: str) -> bool:
        """Whether PATH, found missing, was left out on purpose when this evidence was made (a
        collect bundle of one container holds the engine's whole database but only that
        container's files): the engines then say nothing of it.  Evidence that is a whole copy
        left nothing out."""
        return False

    def close(self) -> None:  # noqa: B027 - optional: most evidence holds nothing open
        """Release what the evidence holds open."""

    def __enter__(self) -> Evidence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def lstat(self, path: str) -> FileStat:
        """Metadata of PATH, a final symlink not followed (NotFound when absent)."""

    @abc.abstractmethod
    def scandir(self, path: str) -> Iterator[DirEntry]:
        """The entries of the directory PATH, each with its lstat, in no particular order."""

    @abc.abstractmethod
    def open(self, path: str) -> BinaryIO:
        """Open a regular file for reading; refuses symlinks in the last component."""

    @abc.abstractmethod
    def readlink(self, path: str) -> str:
        """The target of the symlink PATH."""

    @abc.abstractmethod
    def xattrs(self, path: str) -> dict[str, bytes]:
        """Extended attributes of PATH ({} where there are none or they cannot be read)."""

    def opendir(self, path: str) -> DirHandle:
        """A handle on the directory PATH (EvidenceError when it is not one)."""
        if not self.lstat(path).is_dir:
            raise EvidenceError(f"not a directory: {path}")
        return DirHandle(self, path)

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
