"""The Podman engine (and containers/storage, which CRI-O shares): ``roots`` (where graphroots
are: rootful, storage.conf's graphroot, each user's rootless store, or the evidence itself),
``storage`` (layers.json, images.json, containers.json, big-data files), ``libpod`` (its state:
bolt_state.db of Podman 4, db.sql of Podman 5), ``containers``, ``diff`` (what ``podman diff``
never lists), ``whence`` and ``host`` (``PodmanHost``, the Host interface).  The package imports
nothing eagerly: discovery on a host without Podman pays only for ``roots``.
"""

from __future__ import annotations

__all__ = ["PodmanHost", "PodmanPod", "PodmanOverlay", "find_podman_roots", "is_graphroot"]


def __getattr__(name: str):
    if name in ("find_podman_roots", "is_graphroot"):
        from pensieve.engines.podman import roots

        return getattr(roots, name)
    if name in ("PodmanHost", "PodmanPod", "PodmanOverlay"):
        from pensieve.engines.podman import host

        return getattr(host, name)
    raise AttributeError(name)
