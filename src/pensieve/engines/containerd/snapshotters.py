"""containerd's snapshotters as storage drivers: where a snapshot's contents live below a root and
what their entries mean (containerd snapshots/overlay/overlay.go, snapshots/native/native.go).

* ``overlayfs``: ``io.containerd.snapshotter.v1.overlayfs/snapshots/<id>/fs`` is each snapshot's
  upper directory (``work`` beside it is overlayfs's scratch); a committed snapshot is one image
  layer's diff, an active one a container's RW layer.  Whiteouts and opaque directories are the
  kernel's overlay ones (Documentation/filesystems/overlayfs.rst), as for Docker's overlay2.
* ``native``: ``io.containerd.snapshotter.v1.native/snapshots/<id>`` holds a whole copy of the tree
  (each snapshot starts as a copy of its parent), read as Docker's vfs snapshots are.
"""

from __future__ import annotations

import posixpath
import re

from pensieve.engines.base import LayerPlace, StorageDriver
from pensieve.engines.docker.drivers.overlay import OverlayDiff
from pensieve.engines.docker.drivers.snapshot import Snapshot
from pensieve.evidence.base import Evidence

SNAPSHOTTER_DIR = "io.containerd.snapshotter.v1."


class Overlayfs(OverlayDiff):
    """The overlayfs snapshotter: one upper directory per snapshot."""

    name = "overlayfs"
    store_dirs = (SNAPSHOTTER_DIR + "overlayfs",)

    _PLACE = re.compile(
        r"^io\.containerd\.snapshotter\.v1\.overlayfs/snapshots/(?P<id>[^/]+)"
        r"(?:/(?P<part>fs|work)(?P<rest>/.*)?)?$"
    )

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        return posixpath.join(data_root, self.store_dirs[0], "snapshots", cache_id, "fs")

    def layer_store(self, data_root: str) -> str | None:
        return posixpath.join(data_root, self.store_dirs[0], "snapshots")

    def place(self, rel: str) -> LayerPlace | None:
        m = self._PLACE.match(rel)
        if m is None:
            return None
        if m.group("part") == "fs":
            return LayerPlace(m.group("id"), m.group("rest") or "/")
        return LayerPlace(m.group("id"), None, bookkeeping=m.group("part") == "work")


class Native(Snapshot):
    """The native snapshotter: every snapshot a full copy of the tree."""

    name = "native"
    store_dirs = (SNAPSHOTTER_DIR + "native",)

    _PLACE = re.compile(r"^io\.containerd\.snapshotter\.v1\.native/snapshots/(?P<id>[^/]+)(?P<rest>/.*)?$")

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        return posixpath.join(data_root, self.store_dirs[0], "snapshots", cache_id)

    def layer_store(self, data_root: str) -> str | None:
        return posixpath.join(data_root, self.store_dirs[0], "snapshots")

    def place(self, rel: str) -> LayerPlace | None:
        m = self._PLACE.match(rel)
        return LayerPlace(m.group("id"), m.group("rest") or "/") if m else None


SNAPSHOTTERS: dict[str, StorageDriver] = {d.name: d for d in (Overlayfs(), Native())}
#: the drivers this module declares (engines/base.py's registry reads them)
DRIVERS = tuple(SNAPSHOTTERS.values())
#: the order a snapshotter is preferred in when an image is unpacked in several
PREFERRED = ("overlayfs", "native")
