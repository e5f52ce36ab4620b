"""Evidence held in memory, built from a dict: unit tests of the layered view, the engines and the
sink run on it without root, without fixtures on disk and without touching a real filesystem.

    ev = MemoryEvidence({
        "/etc/passwd": b"root:x:0:0::/root:/bin/sh\\n",      # a regular file (0644, root)
        "/bin/sh": Symlink("busybox"),
        "/upper/etc": Dir(xattrs={"trusted.overlay.opaque": b"y"}),
        "/upper/tmp/gone": Node("char", rdev=0),           # an overlay whiteout
        "/srv/app": File(b"...", mode=0o755, uid=1000, mtime_ns=1_700_000_000_000_000_000),
    })

Missing parent directories are made (0755, root). Paths resolve as in every Evidence: directory
symlinks chroot-style (an absolute target re-rooted at ``/``, ``..`` stops at the root), the last
component never followed.
"""

from __future__ import annotations

import io
import posixpath
import stat as statmod
from collections.abc import Iterator, Mapping
from typing import BinaryIO

from pensieve.evidence.base import (
    DirEntry,
    Evidence,
    EvidenceError,
    FileStat,
    NotFound,
    follow_dir_link,
    normalize,
)

_FORMATS = {
    "file": statmod.S_IFREG,
    "dir": statmod.S_IFDIR,
    "symlink": statmod.S_IFLNK,
    "char": statmod.S_IFCHR,
    "block": statmod.S_IFBLK,
    "fifo": statmod.S_IFIFO,
    "socket": statmod.S_IFSOCK,
}


class Node:
    """One entry: KIND (file | dir | symlink | char | block | fifo | socket) and its metadata."""

    __slots__ = (
        "atime_ns",
        "data",
        "gid",
        "ino",
        "kind",
        "mode",
        "mtime_ns",
        "rdev",
        "target",
        "uid",
        "xattrs",
    )

    def __init__(
        self,
        kind: str,
        *,
        data: bytes = b"",
        target: str = "",
        mode: int | None = None,
        uid: int = 0,
        gid: int = 0,
        rdev: int = 0,
        mtime_ns: int = 0,
        atime_ns: int | None = None,
        xattrs: Mapping[str, bytes] | None = None,
    ) -> None:
        if kind not in _FORMATS:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.data = data
        self.target = target
        self.mode = (
            (0o755 if kind == "dir" else 0o777 if kind == "symlink" else 0o644) if mode is None else mode
        )
        self.uid, self.gid, self.rdev = uid, gid, rdev
        self.mtime_ns = mtime_ns
        self.atime_ns = mtime_ns if atime_ns is None else atime_ns
        self.xattrs = dict(xattrs or {})
        self.ino = 0

    def stat(self) -> FileStat:
        size = (
            len(self.data)
            if self.kind == "file"
            else len(self.target.encode())
            if self.kind == "symlink"
            else 0
        )
        return FileStat(
            mode=_FORMATS[self.kind] | (self.mode & 0o7777),
            ino=self.ino,
            nlink=1,
            uid=self.uid,
            gid=self.gid,
            size=size,
            atime_ns=self.atime_ns,
            mtime_ns=self.mtime_ns,
            ctime_ns=self.mtime_ns,
            rdev=self.rdev,
            dev=0,
        )


def File(data: bytes = b"", **meta) -> Node:  # noqa: N802 - reads as a type in a tree literal
    """A regular file holding DATA."""
    return Node("file", data=data, **meta)


def Dir(**meta) -> Node:  # noqa: N802 - reads as a type in a tree literal
    """A directory (its entries are the paths below it)."""
    return Node("dir", **meta)


def Symlink(target: str, **meta) -> Node:  # noqa: N802 - reads as a type in a tree literal
    """A symbolic link to TARGET."""
    return Node("symlink", target=target, **meta)


class MemoryEvidence(Evidence):
    """Read-only evidence from a dict of absolute path -> bytes (a file), or a :class:`Node`."""

    def __init__(self, tree: Mapping[str, bytes | Node], description: str = "memory") -> None:
        self.description = description
        self.nodes: dict[str, Node] = {"/": Dir()}
        self.children: dict[str, dict[str, None]] = {"/": {}}
        for path, value in tree.items():
            self._add(normalize(path), value if isinstance(value, Node) else File(bytes(value)))
        for number, node in enumerate(self.nodes.values(), start=2):
            node.ino = number

    def _add(self, path: str, node: Node) -> None:
        parent, name = posixpath.split(path)
        if path != "/" and parent not in self.nodes:
            self._add(parent, Dir())
        if path != "/":
            if self.nodes[parent].kind != "dir":
                raise ValueError(f"{parent} is not a directory in the tree")
            self.children[parent][name] = None
        self.nodes[path] = node
        if node.kind == "dir":
            self.children.setdefault(path, {})

    # ---- path resolution (chroot-style, last component not followed) -------------------
    def _resolve(self, path: str) -> str:
        path = normalize(path)
        if path == "/":
            return path
        parent, name = posixpath.split(path)
        return posixpath.join(self._resolve_dir(parent, 0), name)

    def _resolve_dir(self, path: str, hops: int) -> str:
        if path == "/":
            return path
        parent, name = posixpath.split(path)
        here = posixpath.join(self._resolve_dir(parent, hops), name)
        node = self.nodes.get(here)
        if node is not None and node.kind == "symlink":
            resolved = follow_dir_link(path, posixpath.dirname(here), hops, lambda: node.target)
            return self._resolve_dir(resolved, hops + 1)
        return here

    def _node(self, path: str) -> Node:
        node = self.nodes.get(self._resolve(path))
        if node is None:
            raise NotFound(f"no such path in evidence: {path}")
        return node

    # ---- primitives -------------------------------------------------------------------
    def lstat(self, path: str) -> FileStat:
        return self._node(path).stat()

    def scandir(self, path: str) -> Iterator[DirEntry]:
        real = self._resolve(path)
        node = self._node(path)
        if node.kind != "dir":
            raise EvidenceError(f"not a directory: {path}")
        return iter(
            [DirEntry(name, self.nodes[posixpath.join(real, name)].stat()) for name in self.children[real]]
        )

    def open(self, path: str) -> BinaryIO:
        node = self._node(path)
        if node.kind == "symlink":
            raise EvidenceError(f"refusing to follow symlink: {path}")
        if node.kind != "file":
            raise EvidenceError(f"not a regular file: {path}")
        return io.BytesIO(node.data)

    def readlink(self, path: str) -> str:
        node = self._node(path)
        if node.kind != "symlink":
            raise EvidenceError(f"not a symlink: {path}")
        return node.target

    def xattrs(self, path: str) -> dict[str, bytes]:
        try:
            return dict(self._node(path).xattrs)
        except EvidenceError:
            return {}
