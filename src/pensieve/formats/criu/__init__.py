"""Read CRIU checkpoint images (``criu dump``, Docker/Podman checkpoints) without CRIU.

``images`` decodes single image files (magic, entries, extra payloads) with the schemas of
``schemas`` and the wire decoder of ``protobuf``; ``checkpoint`` ties a dump directory together
(tasks, files, memory through pagemaps and parent chains).  Views for people are in
:mod:`pensieve.memory.views`.
"""

from pensieve.formats.criu.checkpoint import Checkpoint
from pensieve.formats.criu.images import CriuImageError, Image, parse_image

__all__ = ["Checkpoint", "CriuImageError", "Image", "parse_image"]
