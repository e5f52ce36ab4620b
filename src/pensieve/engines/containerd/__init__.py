"""containerd: its metadata store, snapshotters and content store (1.6, 1.7, 2.x).

``layout`` (where things are below a root), ``metadata`` (meta.db and the snapshotters' state:
:class:`~pensieve.engines.containerd.metadata.ContainerdMetadata`), ``images`` (the content
store), ``snapshotters`` (their storage-driver rules), ``host`` (``ContainerdHost``), ``cri``
(Kubernetes pods), ``whence``, ``verify``.  Nothing is imported with the package, so discovery
that finds no containerd root pays for none of it.
"""

from __future__ import annotations

__all__ = ["ContainerdMetadata"]


def __getattr__(name: str):
    if name == "ContainerdMetadata":
        from pensieve.engines.containerd.metadata import ContainerdMetadata

        return ContainerdMetadata
    raise AttributeError(name)
