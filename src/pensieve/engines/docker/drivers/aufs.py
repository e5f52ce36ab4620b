"""aufs (moby daemon/graphdriver/aufs: ``<root>/aufs/diff/<id>``, ``aufs/layers/<id>`` listing the
parents) and the layer tars of image archives (``docker save``, OCI image layout: the OCI image
spec's layer changesets use the same whiteouts): ``.wh.<name>`` hides ``name``, ``.wh..wh..opq``
makes its directory opaque, ``.wh..wh.plnk`` / ``.wh..wh.aufs`` / ``.wh..wh.orph`` are aufs
housekeeping.
"""

from __future__ import annotations

import posixpath
import re

from pensieve.engines.base import LayerDir, LayerPlace
from pensieve.engines.docker.drivers.union import UnionDiff
from pensieve.evidence.base import DirEntry, Evidence

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_HOUSEKEEPING = ".wh..wh."


class AufsDiff(UnionDiff):
    """What ``.wh.`` entries mean."""

    def read_entry(self, evidence: Evidence, host_dir: str, entry: DirEntry, into: LayerDir) -> None:
        if not entry.name.startswith(WHITEOUT_PREFIX):
            into.entries[entry.name] = entry.stat
        elif entry.name == OPAQUE_MARKER:
            into.opaque = True
        elif not entry.name.startswith(_HOUSEKEEPING):
            into.whiteouts.add(entry.name[len(WHITEOUT_PREFIX) :])


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
