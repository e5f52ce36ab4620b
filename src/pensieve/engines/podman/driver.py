"""containers/storage's overlay driver (drivers/overlay/overlay.go), as a StorageDriver.

Its layers are laid out as Docker's overlay2 (``overlay/<id>/diff``, ``link``, ``lower``, ``l/``)
and their entries mean what overlay2's mean (whiteouts, opaque directories, redirects, a native
differ), so it is overlay2's rules under ``overlay/``.  Its name is containers/storage's own,
``overlay`` -- which Docker also gives its legacy driver (``overlay/<id>/root`` snapshots, no
native differ).  A name cannot tell them apart, a layer's directory can: containers/storage
reads ``overlay/<id>/diff``, Docker's legacy driver ``root`` or ``upper`` (engines/docker/drivers/
overlay.py).  So this driver is registered by CLAIMS (engines/base.py: a layer named ``overlay``
whose contents are a ``diff`` directory), not by name: ``storage_driver("overlay")`` alone stays
Docker's legacy driver.
"""

from __future__ import annotations

from pensieve.engines.docker.drivers.overlay import Overlay2
from pensieve.records import Layer


class PodmanOverlay(Overlay2):
    """containers/storage's overlay driver (drivers/overlay): overlay2's layout under ``overlay/``."""

    name = "overlay"
    store = "overlay"


PODMAN_OVERLAY = PodmanOverlay()


def _is_diff_dir(layer: Layer) -> bool:
    """A layer whose contents are ``.../overlay/<id>/diff`` (containers/storage's layout)."""
    path = layer.path or ""
    return path.endswith("/diff") and f"/overlay/{layer.cache_id}/" in path


#: the registry reads no driver of this module by name (``overlay`` is Docker's legacy one) ...
DRIVERS = ()
#: ... but a layer named ``overlay`` kept as a ``diff`` directory: (name, claims(layer), driver)
CLAIMS = (("overlay", _is_diff_dir, PODMAN_OVERLAY),)
