"""Drivers whose every layer is a whole snapshot of the tree: vfs (``<root>/vfs/dir/<id>``),
btrfs (``<root>/btrfs/subvolumes/<id>``) (moby daemon/graphdriver/vfs, btrfs), and the flat
``docker export`` tar of an image archive (``rootfs-tar``).  An entry's origin is the lowest
snapshot in which it is unchanged; ``docker diff`` compares the trees by stat (the naive diff).
"""

from __future__ import annotations

import posixpath
import re

from pensieve.engines.base import LayerDir, LayerPlace, StorageDriver
from pensieve.evidence.base import DirEntry, Evidence
from pensieve.records import Layer


def snapshot_dir(listing: list[DirEntry]) -> LayerDir:
    """A snapshot's directory: it hides everything below it (a stray 0/0 device still reads as
    a whiteout, as the union drivers would read it)."""
    d = LayerDir(entries={}, opaque=True)
    for e in listing:
        st = e.stat
        if st.is_char and st.rdev == 0:
            d.whiteouts.add(e.name)
        else:
            d.entries[e.name] = st
    return d


class Snapshot(StorageDriver):
    native_diff = False
    form = "snapshot"
    _subdir = ""

    def is_snapshot(self, layer: Layer) -> bool:
        return True

    def read_dir(
        self, evidence: Evidence, host_dir: str, rel: str, listing: list[DirEntry], snapshot: bool = True
    ) -> LayerDir:
        return snapshot_dir(listing)

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        return posixpath.join(data_root, self.name, self._subdir, cache_id)

    def place(self, rel: str) -> LayerPlace | None:
        m = re.match(rf"^{self.name}/{self._subdir}/(?P<id>[^/]+)(?P<rest>/.*)?$", rel)
        return LayerPlace(m.group("id"), m.group("rest") or "/") if m else None


class Vfs(Snapshot):
    name = "vfs"
    store_dirs = ("vfs",)
    _subdir = "dir"


class Btrfs(Snapshot):
    name = "btrfs"
    store_dirs = ("btrfs",)
    _subdir = "subvolumes"


class RootfsTar(Snapshot):
    """A ``docker export`` tar: one flat tree, no layer store."""

    name = "rootfs-tar"

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        raise NotImplementedError("a rootfs tar keeps no layer store")

    def place(self, rel: str) -> LayerPlace | None:
        return None
