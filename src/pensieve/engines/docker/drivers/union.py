"""What the union drivers (overlay2, overlay, aufs, and the layer tars of image archives) have in
common: a layer holds only what changed over the layers below it, each directory entry is either
content or a marker deleting a name below, and a directory may hide everything below it
(moby daemon/graphdriver/overlay2, aufs; the OCI image spec's layer changesets).  How an entry
or a directory says so is the driver's own rule; a layer that is a whole snapshot (legacy
overlay's image layers) reads as one.
"""

from __future__ import annotations

from abc import abstractmethod

from pensieve.engines.base import LayerDir, StorageDriver
from pensieve.engines.docker.drivers.snapshot import snapshot_dir
from pensieve.evidence.base import DirEntry, Evidence


class UnionDiff(StorageDriver):
    """A driver whose layers are diffs: each entry read by ``read_entry``, the directory's
    opaqueness by ``read_opaque``."""

    def read_dir(
        self, evidence: Evidence, host_dir: str, rel: str, listing: list[DirEntry], snapshot: bool = False
    ) -> LayerDir:
        if snapshot:
            return snapshot_dir(listing)
        d = LayerDir(entries={})
        for e in listing:
            self.read_entry(evidence, host_dir, e, d)
        self.read_opaque(evidence, host_dir, rel, d)
        return d

    @abstractmethod
    def read_entry(self, evidence: Evidence, host_dir: str, entry: DirEntry, into: LayerDir) -> None:
        """Add ENTRY of the layer directory HOST_DIR to INTO: content, a whiteout or a marker."""

    def read_opaque(self, evidence: Evidence, host_dir: str, rel: str, into: LayerDir) -> None:
        """Set INTO's opaqueness from what the directory itself carries (nothing by default)."""
