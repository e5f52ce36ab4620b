"""gzip (RFC 1952): header flags, every member inflated to its end (bounded output),
CRC-32 and ISIZE checked."""

from __future__ import annotations

import struct
from typing import Any

from pensieve.disk.carve import base
from pensieve.disk.carve.base import (
    COMPLETE,
    HEADER_ONLY,
    PARTIAL,
    Context,
    Verdict,
)
from pensieve.disk.carve.validators.common import (
    inflate,
    zero_run,
)

#: the magic bytes, and their offset in the file
SIGNATURE = (b"\x1f\x8b\x08", 0)


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    pos = off
    members = 0
    out_total = 0
    details: dict[str, Any] = {}
    while True:
        h = src.read(pos, 10)
        if len(h) < 10 or h[:3] != b"\x1f\x8b\x08":
            break
        flg, mtime, xfl, os_ = h[3], struct.unpack_from("<I", h, 4)[0], h[8], h[9]
        if flg & 0xE0 or xfl not in (0, 2, 4) or (os_ > 13 and os_ != 255):
            if members == 0:
                return None
            break
        p = pos + 10
        if flg & 4:
            xlen = struct.unpack("<H", src.read(p, 2).ljust(2, b"\0"))[0]
            p += 2 + xlen
        name = None
        for bit in (8, 16):
            if flg & bit:
                raw = src.read(p, 1024)
                z = raw.find(b"\0")
                if z < 0:
                    return None if members == 0 else Verdict(pos - off, PARTIAL, details)
                if bit == 8:
                    name = raw[:z].decode("latin-1")
                p += z + 1
        if flg & 2:
            p += 2
        if members == 0:
            details.update(mtime=mtime, name=name, os=os_)
        status, end, size, crc = inflate(src, p, ctx.bound, True, base.MAX_INFLATE - out_total)
        out_total += size
        if status != "end":
            details.update(members=members + 1, uncompressed=out_total, failed=f"deflate stream: {status}")
            if members == 0 and size == 0:
                return Verdict(p - off, HEADER_ONLY, details)
            # the stream broke or ran out: the file most likely ended where zero fill begins
            cut = zero_run(src, p, min(end + 4096, ctx.bound))
            return Verdict(min(end, cut, ctx.bound) - off if cut > p else end - off, PARTIAL, details)
        trailer = src.read(end, 8)
        if len(trailer) < 8:
            details.update(members=members + 1, failed="trailer truncated")
            return Verdict(end - off + len(trailer), PARTIAL, details)
        tcrc, isize = struct.unpack("<II", trailer)
        if tcrc != crc or isize != size & 0xFFFFFFFF:
            details.update(members=members + 1, failed="CRC-32/ISIZE mismatch")
            return Verdict(end + 8 - off, PARTIAL, details)
        members += 1
        pos = end + 8
    details.update(members=members, uncompressed=out_total, crc_ok=True)
    return Verdict(pos - off, COMPLETE, details)
