"""Evidence made of other evidence mounted at path prefixes.

An image archive is one piece of evidence (the tar, or the OCI layout directory) holding others
(each layer blob is itself a tar).  ``MountEvidence`` shows the archive at ``/`` and each layer
at a prefix of its own, so a ``LayeredView`` can union layers by path, as it does for layer
directories on a host.  Mounts are opened lazily (a compressed layer is decompressed into a spool
only when first read) and once.  The parent directories of mount points are synthesised;
a mount hides whatever the base evidence holds at that path.
"""

from __future__ import annotations

import posixpath
import stat as statmod
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pensieve.evidence.base import DirEntry, Evidence, EvidenceError, FileStat, NotFound, normalize

_DIR = FileStat(
    mode=statmod.S_IFDIR | 0o555, ino=0, nlink=2, uid=0, gid=0, size=0, atime_ns=0, mtime_ns=0, ctime_ns=0
)


class MountEvidence(Evidence):
    def __init__(self, base: Evidence | None, description: str) -> None:
        self.base = base
        self.description = description
        self._factories: dict[str, Callable[[], Evidence]] = {}
        self._mounted: dict[str, Evidence] = {}
        self._failed: dict[str, EvidenceError] = {}
        self._dirs: dict[str, dict[str, None]] = {}  # synthesised parents of mount points

    def boundaries(self) -> list[str]:
        """The base evidence's boundaries and those of everything mounted so far."""
        out = list(self.base.boundaries()) if self.base is not None else []
        for ev in self._mounted.values():
            out += [b for b in ev.boundaries() if b not in out]
        return out

    def close(self) -> None:
        """Close every mounted evidence (their spools go) and the base."""
        for ev in self._mounted.values():
            ev.close()
        self._mounted.clear()
        if self.base is not None:
            self.base.close()

    def mount(self, prefix: str, evidence: Evidence | Callable[[], Evidence]) -> str:
        """Mount EVIDENCE (or a factory called on first use) at PREFIX; returns the prefix."""
        prefix = normalize(prefix)
        if prefix == "/":
            raise ValueError("mount the root as the base evidence")
        if isinstance(evidence, Evidence):
            self._mounted[prefix] = evidence
        else:
            self._factories[prefix] = evidence
        parent, name = posixpath.split(prefix)
        while True:
            kids = self._dirs.setdefault(parent, {})
            kids[name] = None
            if parent == "/":
                break
            parent, name = posixpath.split(parent)
        return prefix

    def mounted(self, prefix: str) -> Evidence:
        """The evidence at PREFIX, opened now if it was not; EvidenceError if it cannot be."""
        prefix = normalize(prefix)
        ev = self._mounted.get(prefix)
        if ev is not None:
            return ev
        if prefix in self._failed:
            raise self._failed[prefix]
        factory = self._factories.get(prefix)
        if factory is None:
            raise NotFound(f"nothing mounted at {prefix}")
        try:
            ev = factory()
        except EvidenceError as exc:
            self._failed[prefix] = exc
            raise
        self._mounted[prefix] = ev
        return ev

    def is_mount(self, prefix: str) -> bool:
        prefix = normalize(prefix)
        return prefix in self._mounted or prefix in self._factories

    def _route(self, path: str) -> tuple[Evidence | None, str]:
        """(evidence, inner path); (None, path) for a synthesised directory."""
        path = normalize(path)
        probe = path
        while probe != "/":
            if probe in self._mounted or probe in self._factories:
                inner = path[len(probe) :] or "/"
                return self.mounted(probe), inner
            probe = posixpath.dirname(probe)
        if path in self._dirs and (self.base is None or not self._base_is_dir(path)):
            return None, path
        if self.base is None:
            raise NotFound(f"no such path in {self.description}: {path}")
        return self.base, path

    def _base_is_dir(self, path: str) -> bool:
        return self.base is not None and self.base.is_dir(path)

    def lstat(self, path: str) -> FileStat:
        ev, inner = self._route(path)
        return _DIR if ev is None else ev.lstat(inner)

    def scandir(self, path: str) -> Iterator[DirEntry]:
        ev, inner = self._route(path)
        extra = self._dirs.get(normalize(path), {})
        out: list[DirEntry] = []
        if ev is not None:
            out = [e for e in ev.scandir(inner) if e.name not in extra]
        for name in extra:
            try:
                out.append(DirEntry(name, self.lstat(posixpath.join(normalize(path), name))))
            except EvidenceError:
                out.append(DirEntry(name, _DIR))
        return iter(out)

    def open(self, path: str) -> BinaryIO:
        ev, inner = self._route(path)
        if ev is None:
            raise EvidenceError(f"not a regular file: {path}")
        return ev.open(inner)

    def readlink(self, path: str) -> str:
        ev, inner = self._route(path)
        if ev is None:
            raise EvidenceError(f"not a symlink: {path}")
        return ev.readlink(inner)

    def xattrs(self, path: str) -> dict[str, bytes]:
        ev, inner = self._route(path)
        return {} if ev is None else ev.xattrs(inner)
