"""The one way pensieve writes a file: a sink that never lands in the evidence.

Every file pensieve writes (``recover --out``, ``carve --out``, ``mem dump``, ``fs export``,
``diff --recover``, ``verify --export-layer``) goes through :class:`OutputSink`:

* the destination is resolved fully (symlinks, ``..``) before anything is created, and refused
  when it is, or lies inside, or contains, any evidence boundary -- the evidence directory, a disk
  image or archive file *and the directory holding it*, every data root (:func:`refuse_evidence`);
* missing parent directories are created (mode 0700) one at a time below the deepest one that
  exists, each with ``mkdirat`` and opened ``O_NOFOLLOW`` (a symlink planted meanwhile is not
  followed), and listed in ``created_parents`` and the manifest;
* an existing destination *file* (or anything at a single-file destination, a symlink included)
  is refused, as is a directory destination that already holds a manifest: nothing is ever
  overwritten;
* inside the destination nothing is followed: directories are walked with ``openat`` and
  ``O_NOFOLLOW | O_DIRECTORY`` from a descriptor of the destination held from the start (a
  symlink planted inside it between two calls is refused, ``ELOOP``), files are created
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (mode 0600 by default): an existing name raises
  ``FileExistsError`` and is left alone;
* a database pensieve keeps adding to (the case of ``triage``) is checked and its directories made
  by :func:`prepare_database`; the database engine writes it;
* every file written is hashed as it is written, and :meth:`OutputSink.close` writes a manifest
  (``pensieve-manifest.json``: path, size, sha256 of every file; for a single-file destination
  ``DEST.manifest.json`` beside it).

Device nodes, FIFOs and sockets are never created: callers record them, or put them in a tar.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
from collections.abc import Iterable
from typing import Any

from pensieve.errors import UsageError

MANIFEST = "pensieve-manifest.json"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def refuse_evidence(dest: str, boundaries: Iterable[str]) -> str:
    """DEST resolved fully; UsageError when it is, or is inside, or holds, an evidence boundary.

    A boundary that is a file (a disk image, an archive) protects the directory holding it too:
    output written next to an image file is output written into the evidence."""
    real = os.path.realpath(dest)
    for b in boundaries:
        if not b:
            continue
        rb = os.path.realpath(b)
        tops = [rb] if os.path.isdir(rb) else [rb, os.path.dirname(rb)]
        for top in tops:
            if _inside(real, top):
                raise UsageError(f"refusing to write inside the evidence: {dest} (evidence: {b})")
            if _inside(top, real) and os.path.isdir(real):
                raise UsageError(
                    f"refusing to write to a directory holding the evidence: {dest} (evidence: {b})"
                )
    return real


def make_dirs(path: str, created: list[str]) -> int:
    """An fd of the directory PATH, creating what is missing of it one component at a time
    (``mkdirat``, mode 0700, each opened ``O_NOFOLLOW``); the directories made go to CREATED."""
    missing = []
    while not os.path.lexists(path):
        missing.append(os.path.basename(path))
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise UsageError(f"not a directory: {path}")
    fd = _open_dir_at(path, None, path)
    try:
        for name in reversed(missing):
            path = os.path.join(path, name)
            os.mkdir(name, 0o700, dir_fd=fd)
            created.append(path)
            nxt = _open_dir_at(name, fd, path)
            os.close(fd)
            fd = nxt
    except OSError as exc:
        os.close(fd)
        raise UsageError(f"cannot create the output directory {path}: {exc.strerror}") from exc
    return fd


def prepare_database(dest: str, boundaries: Iterable[str]) -> str:
    """DEST checked as a database pensieve keeps adding to (a case): outside the evidence
    (:func:`refuse_evidence`), a regular file or nothing yet, never a symlink; its missing parent
    directories created as the sink creates them.  Returns the resolved path.  The database
    engine writes the file (and its journal beside it) itself: it is the one file pensieve updates
    in place, so it has no manifest."""
    if os.path.islink(dest):
        raise UsageError(f"refusing a database path that is a symlink: {dest}")
    if os.path.exists(dest) and not os.path.isfile(dest):
        raise UsageError(f"not a regular file: {dest}")
    real = refuse_evidence(dest, boundaries)
    os.close(make_dirs(os.path.dirname(real), []))
    return real


class WrittenFile:
    """A file being written through the sink: hashes what is written; ``close`` records it."""

    __slots__ = ("_fd", "_hash", "_sink", "path", "size")

    def __init__(self, sink: OutputSink | None, fd: int, path: str) -> None:
        self._sink, self._fd, self.path, self.size = sink, fd, path, 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        total = view.nbytes
        self._hash.update(view)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += total
        return total

    def hole(self, n: int) -> None:
        """N zero bytes left as a hole (a sparse file): hashed as zeros, never written."""
        zeros = memoryview(bytes(min(n, 1 << 20)))
        left = n
        while left > 0:
            self._hash.update(zeros[: min(left, len(zeros))])
            left -= len(zeros)
        self.size += n
        os.lseek(self._fd, n, os.SEEK_CUR)
        os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_CUR))

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if self._sink is not None:
                self._sink._record(self)

    def __enter__(self) -> WrittenFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_dir_at(name: str, dir_fd: int | None, shown: str) -> int:
    """An fd of the directory NAME (relative to DIR_FD), never through a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            why = f"refusing a symlink or non-directory in the output path: {shown}"
            raise OSError(exc.errno, why) from exc
        raise


class OutputSink:
    """A destination directory (``kind="dir"``) or one destination file (``kind="file"``)."""

    def __init__(self, dest: str, boundaries: Iterable[str], kind: str = "dir", mode: int = 0o600) -> None:
        if kind not in ("dir", "file"):
            raise ValueError(f"kind is dir or file, not {kind!r}")
        self.dest = dest
        self.kind = kind
        self.mode = mode
        self.created_parents: list[str] = []
        self.files: list[dict[str, Any]] = []
        self.symlinks: list[dict[str, str]] = []
        self._closed = False
        if kind == "file" and os.path.lexists(dest):
            raise UsageError(f"refusing to overwrite an existing file: {dest}")
        self.path = refuse_evidence(dest, boundaries)
        if kind == "file" and os.path.lexists(self.path):
            raise UsageError(f"refusing to overwrite an existing file: {dest}")
        parent = self.path if kind == "dir" else os.path.dirname(self.path)
        self._root_fd = self._makedirs(parent)
        if kind == "dir" and self._exists(MANIFEST):
            os.close(self._root_fd)
            raise UsageError(f"{dest} already holds a {MANIFEST}: an earlier output is never overwritten")

    def _exists(self, name: str) -> bool:
        try:
            os.lstat(name, dir_fd=self._root_fd)
        except FileNotFoundError:
            return False
        return True

    def _makedirs(self, path: str) -> int:
        """An fd of the directory PATH, creating what is missing of it one component at a time."""
        return make_dirs(path, self.created_parents)

    # ---- writing ----------------------------------------------------------------------
    def _dir_fd(self, rel_dir: str, create: bool) -> int:
        fd = os.dup(self._root_fd)
        try:
            for part in [p for p in rel_dir.split("/") if p]:
                if part in (".", ".."):
                    raise UsageError(f"refusing an output name that climbs: {rel_dir}")
                try:
                    nxt = _open_dir_at(part, fd, rel_dir)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o700, dir_fd=fd)
                    nxt = _open_dir_at(part, fd, rel_dir)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _clean(rel: str) -> str:
        rel = posixpath.normpath("/" + rel).lstrip("/")
        if not rel:
            raise ValueError("empty output name")
        return rel

    def create(self, rel: str = "", mode: int | None = None) -> WrittenFile:
        """A new file REL inside the destination (parents created), or the destination file
        itself (``kind="file"``, REL empty). Raises FileExistsError rather than overwrite."""
        if self._closed:
            raise ValueError("the sink is closed")
        if self.kind == "file":
            if rel:
                raise ValueError("a single-file sink has no names inside it")
            rel_dir, name = "", os.path.basename(self.path)
        else:
            rel = self._clean(rel)
            rel_dir, name = posixpath.split(rel)
        dfd = self._dir_fd(rel_dir, create=True)
        try:
            fd = os.open(name, _FILE_FLAGS, self.mode if mode is None else mode, dir_fd=dfd)
        finally:
            os.close(dfd)
        return WrittenFile(self, fd, rel or name)

    def write(self, rel: str, data: bytes | Iterable[bytes], mode: int | None = None) -> WrittenFile:
        """Write DATA (bytes, or an iterable of blocks) to the new file REL; returns it closed."""
        with self.create(rel, mode) as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                out.write(data)
            else:
                for block in data:
                    out.write(block)
        return out

    def mkdir(self, rel: str) -> None:
        """A directory REL inside the destination (and its parents); an existing one is kept."""
        os.close(self._dir_fd(self._clean(rel), create=True))

    def symlink(self, rel: str, target: str) -> None:
        """A symlink REL -> TARGET inside the destination (never followed by the sink)."""
        rel = self._clean(rel)
        rel_dir, name = posixpath.split(rel)
        dfd = self._dir_fd(rel_dir, create=True)
        try:
            os.symlink(target, name, dir_fd=dfd)
        finally:
            os.close(dfd)
        self.symlinks.append({"path": rel, "target": target})

    def _record(self, f: WrittenFile) -> None:
        self.files.append({"path": f.path, "size": f.size, "sha256": f.sha256})

    # ---- the manifest -----------------------------------------------------------------
    def close(self, extra: dict[str, Any] | None = None) -> str | None:
        """Write the manifest (every file written, with size and sha256; the symlinks made and
        the parent directories created); returns its path."""
        if self._closed:
            return None
        self._closed = True
        doc: dict[str, Any] = {"destination": self.path, "files": self.files}
        if self.symlinks:
            doc["symlinks"] = self.symlinks
        if self.created_parents:
            doc["created_parents"] = self.created_parents
        if extra:
            doc.update(extra)
        name = MANIFEST if self.kind == "dir" else os.path.basename(self.path) + ".manifest.json"
        data = (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()
        try:
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=self._root_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        finally:
            os.close(self._root_fd)
        return os.path.join(self.path if self.kind == "dir" else os.path.dirname(self.path), name)

    def __enter__(self) -> OutputSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
