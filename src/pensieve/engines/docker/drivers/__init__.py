"""Docker's storage drivers, one class each: the only place storage-driver rules live.

Each driver (:class:`~pensieve.engines.base.StorageDriver`) says where a layer's contents are
below a data root, what its directory entries mean (whiteouts, opaque directories, redirects),
whether a layer is a whole snapshot, and how ``docker diff`` treats it (moby
daemon/graphdriver/<driver>; overlayfs, aufs docs).  Besides the engine's drivers, the two forms
a layer takes in an image archive are here: ``oci-layer`` (a layer tar, aufs-style whiteouts) and
``rootfs-tar`` (a flat ``docker export``).
"""

from __future__ import annotations

from pensieve.engines.base import StorageDriver
from pensieve.engines.docker.drivers.aufs import Aufs, OciLayer
from pensieve.engines.docker.drivers.overlay import (
    Overlay,
    Overlay2,
    link_names,
    overlay2_contents,
    parse_lower,
)
from pensieve.engines.docker.drivers.remnants import DEFAULT_DATA_ROOT, LAYER_REMNANT, RemovedContainers
from pensieve.engines.docker.drivers.snapshot import Btrfs, RootfsTar, Vfs

__all__ = [
    "DATA_ROOT_DIRS",
    "DEFAULT_DATA_ROOT",
    "KNOWN_DRIVERS",
    "LAYER_REMNANT",
    "SUPPORTED_DRIVERS",
    "UNSUPPORTED_DRIVERS",
    "RemovedContainers",
    "default_driver",
    "driver_named",
    "is_supported",
    "link_names",
    "overlay2_contents",
    "parse_lower",
    "OCI_LAYER",
    "ROOTFS_TAR",
]

_DRIVERS: dict[str, StorageDriver] = {
    d.name: d for d in (Overlay2(), Overlay(), Aufs(), Vfs(), Btrfs(), OciLayer(), RootfsTar())
}
#: drivers of a Docker data root whose layers pensieve reads, in the order Docker prefers them
SUPPORTED_DRIVERS = ("overlay2", "overlay", "aufs", "vfs", "btrfs")
#: drivers whose metadata is listed but whose layer contents are not readable offline
UNSUPPORTED_DRIVERS = ("devicemapper", "zfs", "windowsfilter", "lcow", "fuse-overlayfs")
KNOWN_DRIVERS = SUPPORTED_DRIVERS + UNSUPPORTED_DRIVERS
#: the layer forms of image archives (images/archive.py)
OCI_LAYER = OciLayer.name
ROOTFS_TAR = RootfsTar.name

#: the top-level directories of a data root that hold layers, volumes or engine metadata
DATA_ROOT_DIRS = tuple(dict.fromkeys(n for d in SUPPORTED_DRIVERS for n in _DRIVERS[d].store_dirs)) + (
    "volumes",
    "containers",
    "image",
)


#: the drivers this module declares (engines/base.py's registry reads them)
DRIVERS = tuple(_DRIVERS.values())
#: how a layer whose recorded driver name is unknown is read: as overlay diffs
FALLBACK = _DRIVERS["overlay2"]


def driver_named(name: str | None) -> StorageDriver:
    """The driver a layer's recorded name stands for; an unknown name reads as overlay diffs."""
    return _DRIVERS.get(name or "") or _DRIVERS["overlay2"]


def is_supported(name: str | None) -> bool:
    """Whether pensieve reads the layer contents of this data-root driver."""
    return name in SUPPORTED_DRIVERS


def default_driver(names: list[str]) -> str | None:
    """The first readable driver among those a data root has."""
    return next((n for n in names if n in SUPPORTED_DRIVERS), None)


def data_root_drivers() -> list[StorageDriver]:
    """The drivers of a data root, each once."""
    return [_DRIVERS[n] for n in SUPPORTED_DRIVERS]
