"""Docker's bookkeeping files about a container, as they come back from a disk's journal after
``docker rm`` deleted them: what they say about the removed container and its layers.

The layout (moby ``layer/filestore.go``, ``daemon/container``, ``daemon/graphdriver/overlay2``):

* ``image/<driver>/layerdb/mounts/<container id>/mount-id`` holds the cache id of the container's
  RW layer, ``init-id`` that of its init layer (the RW layer's id with ``-init`` appended);
* ``containers/<container id>/config.v2.json`` is the container's config: ``Name`` (``/name``)
  and ``Image`` (the image id);
* ``overlay2/<cache id>/lower`` is the layer's lower chain (``l/<short>:l/<short>``, top first)
  and ``overlay2/<cache id>/link`` its own short name (:mod:`.overlay`).
"""

from __future__ import annotations

import re

from pensieve.engines.docker.drivers.overlay import parse_lower
from pensieve.formats import untrusted_json

#: the data root Docker uses when nothing else is configured
DEFAULT_DATA_ROOT = "/var/lib/docker"
#: the suffix of an init layer's cache id (moby daemon/create.go: ``<rw id>-init``)
INIT_SUFFIX = "-init"
#: recovered files that name a removed container's layers (kept for :class:`RemovedContainers`)
LAYER_REMNANT = re.compile(
    r"/(?:layerdb/mounts/[0-9a-f]{64}/(?:mount-id|init-id)|containers/[0-9a-f]{64}/config\.v2\.json"
    r"|overlay2/[^/]+/(?:lower|link))$"
)
#: the note on a file of a container's layerdb mount record
MOUNT_RECORD_NOTE = "layerdb mount record of the container"

_MOUNT_ID_FILE = re.compile(r"layerdb/mounts/([0-9a-f]{64})/(mount-id|init-id)$")
_CONFIG_FILE = re.compile(r"containers/([0-9a-f]{64})/config\.v2\.json$")
_LOWER_FILE = re.compile(r"overlay2/([^/]+)/lower$")
_MOUNT_RECORD = re.compile(r"/layerdb/mounts/([0-9a-f]{64})(?:/|$)")
_LAYER_ID = re.compile(r"[0-9a-f]{64}(?:-init)?")


def mount_record_container(path: str) -> str | None:
    """The container id of a path inside a layerdb mount record, None elsewhere."""
    m = _MOUNT_RECORD.search(path)
    return m.group(1) if m else None


def mount_id_file(container_id: str) -> str:
    """How a note names the mount-id file of a container (its id shortened to 12 digits)."""
    return f"layerdb/mounts/{container_id[:12]}/mount-id"


def removed_layer_kind(layer: str) -> str:
    """The kind of a removed container's layer: its RW layer or its init layer."""
    return "init (removed container)" if layer.endswith(INIT_SUFFIX) else "rw (removed container)"


class RemovedContainers:
    """What recovered bookkeeping files (path -> content, those LAYER_REMNANT matches) say: which
    container a layer was mounted for, each container's config, and each layer's lower chain.
    A file that does not parse says nothing."""

    def __init__(self, remnants: dict[str, bytes]) -> None:
        self.mount_of: dict[str, str] = {}  # layer id -> container id
        self.configs: dict[str, untrusted_json.Doc] = {}  # container id -> config.v2.json
        self.lowers: dict[str, str] = {}  # layer id -> lower chain
        for path, data in remnants.items():
            self._read(path, data)

    def _read(self, path: str, data: bytes) -> None:
        m = _MOUNT_ID_FILE.search(path)
        if m:
            layer = data.decode("ascii", "replace").strip()
            if _LAYER_ID.fullmatch(layer):
                self.mount_of[layer] = m.group(1)
            return
        m = _CONFIG_FILE.search(path)
        if m:
            try:
                self.configs[m.group(1)] = untrusted_json.load(data, path)
            except untrusted_json.UntrustedJSONError:
                pass
            return
        m = _LOWER_FILE.search(path)
        if m:
            self.lowers[m.group(1)] = data.decode("ascii", "replace").strip()

    def container_of(self, layer: str) -> str | None:
        """The container a recovered mount-id or init-id names for LAYER (an RW layer, or the init
        layer beside it)."""
        cid = self.mount_of.get(layer) or self.mount_of.get(layer + INIT_SUFFIX)
        base = layer.removesuffix(INIT_SUFFIX)
        if cid is None and base != layer:
            cid = self.mount_of.get(base)
        return cid

    def top_lower(self, layer: str) -> str | None:
        """The short link name of the layer right below LAYER (or its RW layer, for an init
        layer) in a recovered lower chain; None without one."""
        chain = self.lowers.get(layer) or self.lowers.get(layer.removesuffix(INIT_SUFFIX)) or ""
        shorts = parse_lower(chain)
        return shorts[0] if shorts else None

    def name(self, container_id: str) -> str | None:
        """The container's name from its recovered config (without the leading '/')."""
        cfg = self.configs.get(container_id)
        return ((cfg.str("Name") or "").lstrip("/") or None) if cfg is not None else None

    def image(self, container_id: str) -> str | None:
        """The container's image id from its recovered config."""
        cfg = self.configs.get(container_id)
        return (cfg.str("Image") or None) if cfg is not None else None
