"""Small shared helpers: hashing and read-only opens (compression sniffing is
``pensieve.formats.compression.sniff``)."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

_NOATIME = getattr(os, "O_NOATIME", 0)


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
