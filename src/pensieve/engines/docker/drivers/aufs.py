"""aufs (moby daemon/graphdriver/aufs: ``<root>/aufs/diff/<id>``, ``aufs/layers/<id>`` listing the
parents) and the layer tars of image archives (``docker save``, OCI image layout: the OCI image
spec's layer changesets use the same whiteouts): ``.wh.<name>`` hides ``name``, ``.wh..wh..opq``
makes its directory opaque, ``.wh..wh.plnk`` / ``.wh..wh.aufs`` / ``.wh..wh.orph`` are aufs
housekeeping.
"""

from __future__ import annotations

import posixpath
import re

from pensieve.engines.base import LayerDir, LayerPlace, StorageDriver
from pensieve.engines.docker.drivers.snapshot import snapshot_dir
from pensieve.evidence.base import DirEntry, Evidence

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_HOUSEKEEPING = ".wh..wh."


class AufsDiff(StorageDriver):
    """What ``.wh.`` entries mean."""

    def read_dir(
        self, evidence: Evidence, host_dir: str, rel: str, listing: list[DirEntry], snapshot: bool = False
    ) -> LayerDir:
        if snapshot:
            return snapshot_dir(listing)
        d = LayerDir(entries={})
        for e in listing:
            if e.name.startswith(WHITEOUT_PREFIX):
                if e.name == OPAQUE_MARKER:
                    d.opaque = True
                elif not e.name.startswith(_HOUSEKEEPING):
                    d.whiteouts.add(e.name[len(WHITEOUT_PREFIX) :])
            else:
                d.entries[e.name] = e.stat
        return d


class Aufs(AufsDiff):
    name = "aufs"
    form = "aufs"
    store_dirs = ("aufs",)
    _CONTENTS = re.compile(r"^aufs/(?:diff|mnt)/(?P<id>[^/]+)(?P<rest>/.*)?$")

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        return posixpath.join(data_root, "aufs", "diff", cache_id)

    def place(self, rel: str) -> LayerPlace | None:
        m = self._CONTENTS.match(rel)
        return LayerPlace(m.group("id"), m.group("rest") or "/") if m else None


class OciLayer(AufsDiff):
    """A layer tar of an image archive, read through a tar evidence."""

    name = "oci-layer"
    form = "aufs"
