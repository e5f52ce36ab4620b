"""Evidence that is a directory: a live ``/``, a mounted image, or a copied data root.

Every path is resolved *inside* the directory, chroot-style: a symlink met in a directory
component is followed, but an absolute target is re-rooted at the evidence root and ``..``
never climbs above it.  The last component is never followed.  Files and directories are opened
``O_RDONLY | O_NOFOLLOW | O_NONBLOCK`` (a FIFO planted in the evidence cannot hang us; for
regular files O_NONBLOCK has no effect, so it stays set) and, where the kernel lets us (root or
owner), ``O_NOATIME`` so that reading a live host does not even move access times.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat as statmod
from collections.abc import Iterator
from functools import lru_cache
from typing import BinaryIO

from pensieve.evidence.base import (
    DirEntry,
    DirHandle,
    Evidence,
    EvidenceError,
    FileStat,
    NotFound,
    _check_name,
    atime_may_move,
    follow_dir_link,
    normalize,
)
from pensieve.records.core import Problem

_NOATIME = getattr(os, "O_NOATIME", 0)


def _is_clean(path: str) -> bool:
    """Already absolute and normalised (the common case: paths the engines build)."""
    return (
        path.startswith("/")
        and len(path) > 1
        and not path.endswith("/")
        and "//" not in path
        and "/./" not in path
        and "/../" not in path
        and not path.endswith(("/.", "/.."))
    )


def _to_stat(st: os.stat_result) -> FileStat:
    return FileStat(
        mode=st.st_mode,
        ino=st.st_ino,
        nlink=st.st_nlink,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        atime_ns=st.st_atime_ns,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        rdev=st.st_rdev,
        dev=st.st_dev,
    )


class DirectoryEvidence(Evidence):
    """Read-only view of a directory tree."""

    def __init__(self, root: str) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise EvidenceError(f"not a directory: {root}")
        self.root = real
        self.description = f"directory {real}"
        self._noatime = _NOATIME
        self._resolve_dir = lru_cache(maxsize=1 << 16)(self._resolve_dir_uncached)

    def boundaries(self) -> list[str]:
        return [self.root]

    # ---- path resolution --------------------------------------------------------------
    def host_path(self, path: str) -> str:
        """Host path of an evidence path (parent directories resolved inside the root)."""
        if not _is_clean(path):
            path = normalize(path)
            if path == "/":
                return self.root
        cut = path.rfind("/")
        return self._resolve_dir(path[:cut] or "/", 0) + path[cut:]

    def _resolve_dir_uncached(self, path: str, depth: int) -> str:
        if path == "/":
            return self.root
        parent, name = posixpath.split(path)
        host = self._resolve_dir(parent, depth) + "/" + name
        try:
            st = os.lstat(host)
        except OSError:
            return host  # does not exist: callers get the error from their own call
        if statmod.S_ISLNK(st.st_mode):
            resolved = follow_dir_link(path, parent, depth, lambda: os.readlink(host))
            return self._resolve_dir(resolved, depth + 1)
        return host

    def from_host_path(self, host: str) -> str | None:
        """Evidence path of a host path below the root, None if outside it."""
        real = os.path.abspath(host)
        if real == self.root:
            return "/"
        if real.startswith(self.root.rstrip("/") + "/"):
            return normalize(real[len(self.root.rstrip("/")) :])
        return None

    # ---- primitives -------------------------------------------------------------------
    def _open_fd(self, host: str, flags: int, dir_fd: int | None = None) -> int:
        flags |= os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        if self._noatime:
            try:
                return os.open(host, flags | self._noatime, dir_fd=dir_fd)
            except PermissionError:
                self._noatime_refused()
        return os.open(host, flags, dir_fd=dir_fd)

    def _noatime_refused(self) -> None:
        """Not owner and not root: plain read-only opens from now on, and one warning if the
        mount lets reads move access times."""
        self._noatime = 0
        if atime_may_move(self.root):
            self.problems.append(
                Problem(
                    self.root,
                    "the kernel refuses O_NOATIME (not the files' owner, not root) and the mount is "
                    "writable: reading may change access times of the evidence (run as root, or "
                    "mount it read-only or noatime)",
                )
            )

    def opendir(self, path: str) -> DirHandle:
        """A handle holding an ``O_DIRECTORY | O_NOATIME`` fd of PATH (closed by ``close()``)."""
        return _FdDir(self, normalize(path), self._open_checked(path, directory=True))

    def _open_checked(self, path: str, directory: bool) -> int:
        """An fd for PATH, with OS errors turned into evidence errors that name the path."""
        host = self.host_path(path)
        try:
            return self._open_fd(host, os.O_DIRECTORY if directory else 0)
        except OSError as exc:
            raise _error(exc, path, directory) from exc

    def lstat(self, path: str) -> FileStat:
        host = self.host_path(path)
        try:
            return _to_stat(os.lstat(host))
        except FileNotFoundError as exc:
            raise NotFound(f"no such path in evidence: {path}") from exc
        except OSError as exc:
            raise EvidenceError(f"cannot stat {path}: {exc.strerror}") from exc

    def scandir(self, path: str) -> Iterator[DirEntry]:
        fd = self._open_checked(path, directory=True)
        try:
            return iter(_entries(fd))
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        """Names only: no stat per entry."""
        fd = self._open_checked(path, directory=True)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def open(self, path: str) -> BinaryIO:
        fd = self._open_checked(path, directory=False)
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            os.close(fd)
            raise EvidenceError(f"not a regular file: {path}")
        return os.fdopen(fd, "rb")

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        """Whole (or the first LIMIT bytes of a) regular file, without a buffered file object."""
        fd = self._open_checked(path, directory=False)
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise EvidenceError(f"not a regular file: {path}")
            # ask for exactly what fstat promises (a larger request makes read() allocate and
            # shrink a buffer that size); sizeless files (/proc-like) are read in 64 KiB steps
            budget = limit if limit is not None else -1
            size = st.st_size
            chunks = []
            got = 0
            while budget != 0:
                want = (size - got if size > got else 1 << 16) if budget < 0 else budget
                if 0 < size - got < want:
                    want = size - got
                block = os.read(fd, want)
                if not block:
                    break
                chunks.append(block)
                got += len(block)
                if budget > 0:
                    budget -= len(block)
                if got == size:
                    break  # all fstat promised: no second read() to see end of file
            return b"".join(chunks)
        except OSError as exc:
            raise EvidenceError(f"cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        try:
            return os.readlink(self.host_path(path))
        except FileNotFoundError as exc:
            raise NotFound(f"no such path in evidence: {path}") from exc
        except OSError as exc:
            raise EvidenceError(f"cannot readlink {path}: {exc.strerror}") from exc

    def xattrs(self, path: str) -> dict[str, bytes]:
        return _xattrs(self.host_path(path), follow=False)


def _error(exc: OSError, path: str, directory: bool) -> EvidenceError:
    """An OSError of an open as the evidence error that names PATH."""
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"no such {'directory' if directory else 'file'} in evidence: {path}")
    if exc.errno == errno.ELOOP:
        return EvidenceError(f"refusing to follow symlink: {path}")
    if exc.errno == errno.ENOTDIR and directory:
        return EvidenceError(f"not a directory: {path}")
    return EvidenceError(f"cannot {'list' if directory else 'open'} {path}: {exc.strerror}")


_PROC_FD = "/proc/self/fd/"
_HAVE_PROC_FD = os.path.isdir(_PROC_FD)


class _FdDir(DirHandle):
    """A directory of a DirectoryEvidence held open as an fd: entries are stat()ed, opened and
    read relative to it (``fstatat``/``openat``, O_NOFOLLOW, O_NOATIME), listed with
    ``os.scandir(fd)``; their xattrs are read through ``/proc/self/fd/<fd>/<name>`` (the
    directory stays pinned, the name is not followed)."""

    __slots__ = ("fd",)
    evidence: DirectoryEvidence

    def __init__(self, evidence: DirectoryEvidence, path: str, fd: int) -> None:
        self.evidence = evidence
        self.path = path
        self.fd = fd

    def lstat(self, name: str) -> FileStat:
        try:
            return _to_stat(os.lstat(name, dir_fd=self.fd))
        except FileNotFoundError as exc:
            raise NotFound(f"no such path in evidence: {self.child(name)}") from exc
        except OSError as exc:
            raise EvidenceError(f"cannot stat {self.child(name)}: {exc.strerror}") from exc

    def opendir(self, name: str) -> DirHandle:
        try:
            fd = self.evidence._open_fd(_check_name(name), os.O_DIRECTORY, self.fd)
        except OSError as exc:
            raise _error(exc, self.child(name), True) from exc
        return _FdDir(self.evidence, self.child(name), fd)

    def open(self, name: str) -> BinaryIO:
        try:
            fd = self.evidence._open_fd(_check_name(name), 0, self.fd)
        except OSError as exc:
            raise _error(exc, self.child(name), False) from exc
        if not statmod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise EvidenceError(f"not a regular file: {self.child(name)}")
        return io.FileIO(fd, "rb", closefd=True)

    def readlink(self, name: str) -> str:
        try:
            return os.readlink(_check_name(name), dir_fd=self.fd)
        except FileNotFoundError as exc:
            raise NotFound(f"no such path in evidence: {self.child(name)}") from exc
        except OSError as exc:
            raise EvidenceError(f"cannot readlink {self.child(name)}: {exc.strerror}") from exc

    def xattrs(self, name: str | None = None) -> dict[str, bytes]:
        if name is None:
            target: int | str = self.fd
        elif _HAVE_PROC_FD:
            target = f"{_PROC_FD}{self.fd}/{_check_name(name)}"
        else:
            return self.evidence.xattrs(self.child(name))
        return _xattrs(target, follow=name is None)  # a /proc path must not be followed

    def file_xattrs(self, fh: BinaryIO, name: str) -> dict[str, bytes]:
        return _xattrs(fh.fileno(), follow=True)

    def names(self) -> list[tuple[str, bool]]:
        out = []
        with os.scandir(self.fd) as it:
            for e in it:
                try:
                    out.append((e.name, e.is_dir(follow_symlinks=False)))
                except OSError:
                    continue  # vanished while listing (live host)
        return out

    def scandir(self) -> list[DirEntry]:
        return _entries(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _xattrs(target: int | str, follow: bool) -> dict[str, bytes]:
    """Extended attributes of an fd (FOLLOW true) or of a path's last component, not followed."""
    try:
        keys = os.listxattr(target, follow_symlinks=follow)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for key in keys:
        try:
            out[key] = os.getxattr(target, key, follow_symlinks=follow)
        except OSError:
            continue
    return out


def _entries(fd: int) -> list[DirEntry]:
    """Every entry of the open directory FD with its lstat (``os.scandir(fd)``: getdents on an
    O_NOATIME fd, fstatat relative to it)."""
    entries = []
    with os.scandir(fd) as it:
        for e in it:
            try:
                entries.append(DirEntry(e.name, _to_stat(e.stat(follow_symlinks=False))))
            except OSError:
                continue  # vanished while listing (live host)
    return entries
