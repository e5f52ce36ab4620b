"""Small shared helpers: hashing (opening evidence is :mod:`pensieve.evidence.base`'s
``open_noatime``; compression sniffing is :func:`pensieve.formats.compression.sniff`)."""

from __future__ import annotations

import hashlib
from typing import BinaryIO


def sha256_stream(fh: BinaryIO, chunk: int = 1 << 20) -> str:
    """sha256 of what FH yields, read in CHUNK-sized blocks."""
    h = hashlib.sha256()
    while True:
        block = fh.read(chunk)
        if not block:
            break
        h.update(block)
    return h.hexdigest()
