"""Checkpoint archives (Podman ``--export``, CRI-O / kubelet, containerd), read in place through
the one tar reader, :class:`pensieve.evidence.tar.TarEvidence`.

A checkpoint archive is a tar -- plain, gzip or zstd (xz and bzip2 are accepted too) -- holding
``config.dump``, ``spec.dump``, ``network.status``, ``stats-dump``, ``checkpoint/`` (the CRIU
images), ``rootfs-diff.tar`` and ``deleted.files``.  Nothing is extracted: the tar reader's index
gives each member's bytes, ``rootfs-diff.tar`` is a tar nested in its member's byte range, and a
compressed archive is spooled under the spool budget (``pensieve.evidence.spool``).  A stream that
is corrupt, cut short or too large to spool keeps what came before it, with a problem.

:class:`CheckpointArchive` is the archive as memory reads it (members by name relative to the
archive root, reads bounded by a limit, problems as text); :class:`ArchiveStore` is the
:class:`~pensieve.formats.criu.checkpoint.CheckpointStore` of the CRIU images under a prefix.
Hostile names are the tar reader's business: ``./`` and a leading ``/`` dropped, a name climbing
out not indexed, the last of duplicate names wins, a hard link reads its target's data.
"""

from __future__ import annotations

import mmap
import posixpath
from typing import BinaryIO

from pensieve.evidence.base import Evidence, EvidenceError
from pensieve.evidence.tar import TarEvidence, TarMember
from pensieve.formats.criu.checkpoint import CheckpointStore
from pensieve.formats.criu.images import MAX_IMAGE_SIZE, CriuImageError
from pensieve.records.core import Timestamp, record

__all__ = ["ArchiveStore", "CheckpointArchive", "Member"]


@record
class Member:
    """One name of a checkpoint archive."""

    name: str  # normalized, relative to the archive root ("." for the root itself)
    type: str  # file | dir | symlink | hardlink | char | block | fifo | other
    size: int  # data bytes of a file, 0 otherwise
    offset: int  # of the data in the (decompressed) archive; 0 for a synthesised parent, -1 for none
    mode: int
    uid: int
    gid: int
    mtime_ns: Timestamp
    linkname: str | None = None
    synthetic: bool = False  # a parent directory the tar does not hold (extraction would create it)

    @property
    def mtime(self) -> float:
        """The modification time in seconds (0.0 for a synthesised parent)."""
        return self.mtime_ns / 1e9


def _member(m: TarMember) -> Member:
    name = "." if m.name == "/" else m.name.lstrip("/")
    kind = m.kind
    offset = 0 if m.synthetic else (m.offset if kind == "file" else -1)
    return Member(
        name,
        kind,
        m.size if kind == "file" else 0,
        offset,
        m.mode & 0o7777,
        m.uid,
        m.gid,
        Timestamp(m.mtime_ns),
        m.linkname,
        m.synthetic,
    )


class CheckpointArchive:
    """A checkpoint archive's members and bounded reads of them (CriuImageError on failure)."""

    def __init__(self, path: str, _tar: TarEvidence | None = None, _owned: BinaryIO | None = None) -> None:
        self.path = path
        self._owned = _owned  # the evidence file object the tar reads, closed with the archive
        try:
            self.tar = _tar if _tar is not None else TarEvidence(path, partial=True)
        except EvidenceError as exc:
            if _owned is not None:
                _owned.close()
            raise CriuImageError(str(exc), path) from None
        self.compression = self.tar.compression
        prefix = f"{self.tar.name}:"
        self.problems: list[str] = [
            f"{p.source.removeprefix(prefix)}: {p.message}" if p.source != prefix + "/" else p.message
            for p in self.tar.problems
        ]
        self.members: dict[str, Member] = {}
        for m in self.tar.entries():
            self.members[m.name.lstrip("/")] = _member(m)
        root = self.tar.entry("/")
        if not root.synthetic:
            self.members["."] = _member(root)

    @classmethod
    def in_evidence(cls, evidence: Evidence, path: str, label: str) -> CheckpointArchive:
        """The archive at evidence path PATH (a host root's ``/var/lib/kubelet/checkpoints/*.tar``),
        read through the evidence's read-only file object; LABEL names it in problems."""
        try:
            fh = evidence.open(path)
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot open: {exc}", label) from None
        try:
            tar = TarEvidence(fh, name=label, partial=True)
        except EvidenceError as exc:
            fh.close()
            raise CriuImageError(str(exc), label) from None
        except BaseException:
            fh.close()
            raise
        return cls(label, _tar=tar, _owned=fh)

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"

    def _file(self, name: str) -> str:
        """The tar path of file member NAME, CriuImageError unless it is a readable regular file."""
        m = self.members.get(name)
        if m is None or m.type not in ("file", "hardlink"):
            raise CriuImageError("no such file in the archive", self.where(name))
        return "/" + name

    def size(self, name: str) -> int:
        try:
            return self.tar.lstat(self._file(name)).size
        except EvidenceError as exc:
            raise CriuImageError(str(exc), self.where(name)) from None

    def pread(self, name: str, offset: int, size: int) -> bytes:
        try:
            return self.tar.pread_member(self._file(name), offset, size)
        except EvidenceError as exc:
            raise CriuImageError(str(exc), self.where(name)) from None

    def map(self, name: str) -> tuple[mmap.mmap, int, int] | None:
        """(mapping, base, size) of member NAME, None when it cannot be mapped (use pread)."""
        try:
            return self.tar.map_member(self._file(name))
        except EvidenceError:
            return None

    def read(self, name: str, limit: int = MAX_IMAGE_SIZE) -> bytes:
        size = self.size(name)
        if size > limit:
            raise CriuImageError(f"member larger than {limit} bytes ({size})", self.where(name))
        data = self.pread(name, 0, size)
        if len(data) != size:
            raise CriuImageError(f"member cut short: {len(data)} of {size} bytes", self.where(name))
        return data

    def open(self, name: str) -> BinaryIO:
        """Member NAME as a read-only file object bounded to its bytes."""
        try:
            return self.tar.open(self._file(name))
        except EvidenceError as exc:
            raise CriuImageError(str(exc), self.where(name)) from None

    def nested(self, name: str) -> CheckpointArchive:
        """The tar held in member NAME (``rootfs-diff.tar``), read in place."""
        try:
            inner = self.tar.nested(self._file(name), partial=True)
        except EvidenceError as exc:
            raise CriuImageError(str(exc), self.where(name)) from None
        return CheckpointArchive(self.where(name), _tar=inner)

    def listdir(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/")
        if prefix in ("", "."):
            return [n for n in self.members if n != "." and "/" not in n]
        return [posixpath.basename(n) for n in self.members if posixpath.dirname(n) == prefix]

    def close(self) -> None:
        self.tar.close()
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> CheckpointArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean(name: str) -> str | None:
    """NAME relative to the archive root, None when it climbs out of it."""
    name = posixpath.normpath(name.lstrip("/") or ".")
    return None if name == ".." or name.startswith("../") else name


class ArchiveStore(CheckpointStore):
    """The CRIU images under PREFIX (``checkpoint``) of a checkpoint archive."""

    def __init__(self, archive: CheckpointArchive, prefix: str = "checkpoint") -> None:
        self.archive = archive
        self.prefix = prefix.strip("/")
        self.path = archive.where(self.prefix) if self.prefix not in ("", ".") else archive.path
        self._names = {
            n
            for n in archive.listdir(self.prefix)
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
            resolved = _clean(posixpath.join(posixpath.dirname(self._full("parent")), target))
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
