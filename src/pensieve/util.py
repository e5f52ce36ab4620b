"""Small shared helpers: timestamps and hashing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import BinaryIO


def iso_ns(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as RFC 3339 UTC with full precision."""
    if ns is None:
        return None
    sec, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def sha256_stream(fh: BinaryIO, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while True:
        block = fh.read(chunk)
        if not block:
            break
        h.update(block)
    return h.hexdigest()
