"""PNG (RFC 2083 / ISO 15948): signature, IHDR first, every chunk's CRC, to IEND."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, PARTIAL, Context, Verdict
from pensieve.disk.carve.validators.common import zero_run

#: the PNG signature
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the magic bytes, and their offset in the file
SIGNATURE = (PNG_SIGNATURE, 0)


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    pos = off + 8
    chunks = 0
    details: dict[str, Any] = {}
    while True:
        h = src.read(pos, 8)
        if len(h) < 8:
            details.update(chunks=chunks, failed="truncated")
            break
        length = struct.unpack_from(">I", h)[0]
        ctype = h[4:8]
        if length > 0x7FFFFFFF or not ctype.isalpha() or not ctype.isascii():
            if chunks == 0:
                return None
            details.update(chunks=chunks, failed=f"invalid chunk header at +{pos - off}")
            break
        if chunks == 0:
            if ctype != b"IHDR" or length != 13:
                return None
            ih = src.read(pos + 8, 13)
            if len(ih) == 13:
                w, hh, depth, color = struct.unpack_from(">IIBB", ih)
                details.update(width=w, height=hh, bit_depth=depth, color_type=color)
        end = pos + 12 + length
        if end > ctx.bound:
            details.update(
                chunks=chunks, failed=f"chunk {ctype.decode()} beyond the bound (truncated or hostile)"
            )
            break
        crc = zlib.crc32(ctype)
        for _p, piece in src.pieces(pos + 8, pos + 8 + length):
            crc = zlib.crc32(piece, crc)
        stored = src.read(pos + 8 + length, 4)
        if len(stored) < 4 or struct.unpack(">I", stored)[0] != crc:
            details.update(
                chunks=chunks, failed=f"chunk {ctype.decode()}: CRC mismatch (truncated or overwritten)"
            )
            if chunks:  # keep the chunk's bytes up to where zero fill begins
                details["validated_length"] = pos - off
                cut = zero_run(src, pos + 8, end)
                if cut > pos + 8:
                    chunks += 1  # part of this chunk's data is there
                    pos = cut
            break
        chunks += 1
        pos = end
        if ctype == b"IEND":
            details.update(chunks=chunks, crc_ok=True)
            return Verdict(pos - off, COMPLETE, details)
    return Verdict(pos - off, PARTIAL if chunks > 1 else HEADER_ONLY, details)
