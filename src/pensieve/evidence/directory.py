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
import os
import posixpath
import stat as statmod
from collections.abc import Iterator
from functools import lru_cache
from typing import BinaryIO

from pensieve.evidence.base import DirEntry, Evidence, EvidenceError, FileStat, NotFound, normalize

_MAX_SYMLINKS = 40
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
            if depth >= _MAX_SYMLINKS:
                raise EvidenceError(f"too many levels of symbolic links: {path}")
            target = os.readlink(host)
            resolved = normalize(target if target.startswith("/") else posixpath.join(parent, target))
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
                self._noatime = 0  # not owner and not root: plain read-only open
        return os.open(host, flags, dir_fd=dir_fd)

    def open_dir_fd(self, path: str) -> int:
        """A file descriptor of the directory PATH, for ``open_at`` (the caller closes it)."""
        return self._open_checked(path, directory=True)

    def open_at(self, dir_fd: int, name: str, directory: bool = False) -> int:
        """A file descriptor for NAME, one entry of the directory DIR_FD, opened like every file
        here (read-only, never through a symlink, non-blocking, no atime); raises OSError.

        For a caller that goes through many entries of one tree: each open is one lookup
        relative to an fd it already holds, and a tree reached this way, component by
        component, can never lead out of itself."""
        if not name or "/" in name or name == "." or name == "..":
            raise ValueError(f"not a directory entry name: {name!r}")
        return self._open_fd(name, os.O_DIRECTORY if directory else 0, dir_fd)

    def _open_checked(self, path: str, directory: bool) -> int:
        """An fd for PATH, with OS errors turned into evidence errors that name the path."""
        host = self.host_path(path)
        try:
            return self._open_fd(host, os.O_DIRECTORY if directory else 0)
        except FileNotFoundError as exc:
            kind = "directory" if directory else "file"
            raise NotFound(f"no such {kind} in evidence: {path}") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise EvidenceError(f"refusing to follow symlink: {path}") from exc
            verb = "list" if directory else "open"
            raise EvidenceError(f"cannot {verb} {path}: {exc.strerror}") from exc

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
            with os.scandir(fd) as it:
                entries = []
                for e in it:
                    try:
                        entries.append(DirEntry(e.name, _to_stat(e.stat(follow_symlinks=False))))
                    except OSError:
                        continue  # vanished while listing (live host)
        finally:
            os.close(fd)
        return iter(entries)

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
        host = self.host_path(path)
        try:
            names = os.listxattr(host, follow_symlinks=False)
        except OSError:
            return {}
        out: dict[str, bytes] = {}
        for name in names:
            try:
                out[name] = os.getxattr(host, name, follow_symlinks=False)
            except OSError:
                continue
        return out
