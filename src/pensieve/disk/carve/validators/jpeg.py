"""JPEG (ITU T.81, JFIF): SOI, marker segments, entropy-coded scans to EOI (a SOF and a
scan required)."""

from __future__ import annotations

import struct
from typing import Any

from pensieve.disk.carve.base import (
    COMPLETE,
    HEADER_ONLY,
    PARTIAL,
    Context,
    Verdict,
)
from pensieve.disk.carve.validators.common import (
    ZERO_RUN,
)

#: the magic bytes, and their offset in the file
SIGNATURE = (b"\xff\xd8\xff", 0)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    h = src.read(off, 4)
    if len(h) < 4 or h[:3] != b"\xff\xd8\xff" or not (0xC0 <= h[3] <= 0xFE) or h[3] in (0xD8, 0xD9):
        return None
    pos = off + 2
    details: dict[str, Any] = {"scans": 0}
    sof = False
    segments = 0

    def fail(why: str, at: int) -> Verdict | None:
        details["failed"] = why
        if segments < 2 and not details["scans"]:
            return None  # one random "segment" after FF D8 FF is not a JPEG
        return Verdict(at - off, PARTIAL if details["scans"] else HEADER_ONLY, details)

    while True:
        if pos + 4 > ctx.bound:
            return fail("truncated in the marker segments", min(pos, ctx.bound))
        m = src.read(pos, 4)
        if len(m) < 2 or m[0] != 0xFF:
            return fail("not a marker where one was due", pos)
        marker = m[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            pos += 2
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if marker < 0xC0 or len(m) < 4:
            return fail(f"invalid marker {marker:#x}", pos)
        seglen = struct.unpack_from(">H", m, 2)[0]
        if seglen < 2:
            return fail("segment length below 2", pos)
        if segments == 0 and marker in (0xE0, 0xE1):
            ident = src.read(pos + 4, 6)
            if not ident.startswith((b"JFIF\0", b"JFXX\0", b"Exif\0", b"http:")):
                return None
        if marker in _SOF:
            s = src.read(pos + 4, 6)
            if len(s) == 6:
                details["height"], details["width"] = struct.unpack_from(">HH", s, 1)
                details["progressive"] = marker in (0xC2, 0xC6, 0xCA, 0xCE)
            sof = True
        segments += 1
        pos += 2 + seglen
        if marker != 0xDA:
            continue
        if not sof:
            return fail("scan before a frame header", pos)
        details["scans"] += 1
        # entropy-coded data: runs to the next marker that is not a stuffed byte or a restart
        found = -1
        for p, piece in src.pieces(pos, ctx.bound, 1 << 18):
            i = piece.find(b"\xff")
            while i >= 0:
                if i + 1 >= len(piece):
                    nb = src.read(p + i + 1, 1)
                    b = nb[0] if nb else -1
                else:
                    b = piece[i + 1]
                if b == 0 or 0xD0 <= b <= 0xD7 or b == 0xFF:
                    i = piece.find(b"\xff", i + 1)
                    continue
                found = p + i
                break
            z = piece.find(ZERO_RUN, 0, i if found >= 0 else len(piece))
            if z >= 0:
                return fail("scan data ends in zero fill (truncated)", p + z)
            if found >= 0:
                break
        if found < 0:
            return fail("scan data runs past the bound (truncated)", ctx.bound)
        pos = found
    details["segments"] = segments
    if not sof or not details["scans"]:
        details["failed"] = "no frame header or no scan"
        return Verdict(pos - off, HEADER_ONLY, details)
    return Verdict(pos - off, COMPLETE, details)
