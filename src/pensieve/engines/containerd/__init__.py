"""containerd: its metadata store, snapshotters and content store (1.6, 1.7, 2.x).

Only the reader for now (:class:`~pensieve.engines.containerd.metadata.ContainerdMetadata`); the
Host implementation comes on top of it.
"""

from pensieve.engines.containerd.metadata import ContainerdMetadata

__all__ = ["ContainerdMetadata"]
