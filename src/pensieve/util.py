"""Small shared helpers: hashing and compression sniffing (``open_noatime`` lives in
:mod:`pensieve.evidence.base`, re-exported here for the modules that still import it from here)."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from pensieve.evidence.base import open_noatime  # noqa: F401 - its home is the evidence layer

GZIP, ZSTD, XZ, BZIP2 = "gzip", "zstd", "xz", "bzip2"


def sha256_stream(fh: BinaryIO, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while True:
        block = fh.read(chunk)
        if not block:
            break
        h.update(block)
    return h.hexdigest()


def sniff_compression(head: bytes) -> str | None:
    """The compression of a stream from its first bytes, None for none known."""
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return ZSTD
    if head[:6] == b"\xfd7zXZ\x00":
        return XZ
    if head[:3] == b"BZh":
        return BZIP2
    return None
