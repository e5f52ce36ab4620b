"""Small shared helpers: hashing, read-only opens and compression sniffing."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

_NOATIME = getattr(os, "O_NOATIME", 0)

GZIP, ZSTD, XZ, BZIP2 = "gzip", "zstd", "xz", "bzip2"


def sha256_stream(fh: BinaryIO, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while True:
        block = fh.read(chunk)
        if not block:
            break
        h.update(block)
    return h.hexdigest()


def open_noatime(path: str, flags: int) -> int:
    """``os.open(path, flags | O_NOATIME)``; without O_NOATIME where the kernel refuses it
    (PermissionError: not the file's owner). Any other OSError is raised."""
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME)
        except PermissionError:
            pass
    return os.open(path, flags)


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
