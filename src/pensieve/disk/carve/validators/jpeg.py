"""JPEG (ITU T.81, JFIF): SOI, marker segments, entropy-coded scans to EOI (a SOF and a
scan required).

The steps follow T.81 Annex B (B.1.1.2-B.1.1.5): markers (fill bytes FF, stand-alone markers RSTm
and TEM without a length), marker segments (a 2-byte length that counts itself), and after each
SOS the entropy-coded data, which runs to the next marker that is neither a stuffed FF 00 nor a
restart marker."""

from __future__ import annotations

import struct
from typing import Any

from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, PARTIAL, Context, Source, Verdict
from pensieve.disk.carve.validators.common import ZERO_RUN
from pensieve.records.core import field, record

#: the magic bytes, and their offset in the file
SIGNATURE = (b"\xff\xd8\xff", 0)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


_SOS, _EOI, _FILL = 0xDA, 0xD9, 0xFF
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
#: identifiers an APP0 / APP1 segment first in the file starts with (JFIF, JFIF extension, Exif, XMP)
_APP_IDS = (b"JFIF\0", b"JFXX\0", b"Exif\0", b"http:")


class _Stop(Exception):
    """The walk ends: WHY it broke at AT, or WHY None when the bytes are not a JPEG at all."""

    def __init__(self, why: str | None, at: int = 0) -> None:
        super().__init__(why)
        self.why = why
        self.at = at


@record
class _Walk:
    """Where the walk over one JPEG stands, and what it has seen."""

    off: int
    pos: int
    sof: bool = False
    segments: int = 0
    details: dict[str, Any] = field(default_factory=lambda: {"scans": 0})

    def fail(self, why: str, at: int) -> Verdict | None:
        """The verdict when the walk breaks at AT: None when it saw too little to be a JPEG."""
        self.details["failed"] = why
        if self.segments < 2 and not self.details["scans"]:
            return None  # one random "segment" after FF D8 FF is not a JPEG
        return Verdict(at - self.off, PARTIAL if self.details["scans"] else HEADER_ONLY, self.details)


def _marker_segment(src: Source, walk: _Walk, marker: int, m: bytes) -> None:
    """The marker segment at POS (T.81 B.1.1.4), whose first 4 bytes are M: POS moves past it;
    a frame header (SOFn, B.2.2) gives the image size."""
    pos = walk.pos
    if marker < 0xC0 or len(m) < 4:
        raise _Stop(f"invalid marker {marker:#x}", pos)
    seglen = struct.unpack_from(">H", m, 2)[0]
    if seglen < 2:
        raise _Stop("segment length below 2", pos)
    first_app = walk.segments == 0 and marker in (0xE0, 0xE1)
    if first_app and not src.read(pos + 4, 6).startswith(_APP_IDS):
        raise _Stop(None)
    if marker in _SOF:
        s = src.read(pos + 4, 6)
        if len(s) == 6:
            walk.details["height"], walk.details["width"] = struct.unpack_from(">HH", s, 1)
            walk.details["progressive"] = marker in _PROGRESSIVE
        walk.sof = True
    walk.segments += 1
    walk.pos = pos + 2 + seglen


def _entropy_coded_end(ctx: Context, pos: int) -> int:
    """Where the entropy-coded data from POS ends (T.81 B.1.1.5, F.1.2.3): at the first FF not
    followed by 00 (stuffing), D0-D7 (restart) or FF (fill). A run of zeros before it means the
    file was cut off and zero fill follows."""
    src = ctx.src
    for p, piece in src.pieces(pos, ctx.bound, 1 << 18):
        found = -1
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
            raise _Stop("scan data ends in zero fill (truncated)", p + z)
        if found >= 0:
            return found
    raise _Stop("scan data runs past the bound (truncated)", ctx.bound)


def _walk_markers(ctx: Context, walk: _Walk) -> None:
    """Markers and segments from POS to EOI (POS then past it); raises _Stop where they break."""
    src = ctx.src
    while True:
        if walk.pos + 4 > ctx.bound:
            raise _Stop("truncated in the marker segments", min(walk.pos, ctx.bound))
        m = src.read(walk.pos, 4)
        if len(m) < 2 or m[0] != 0xFF:
            raise _Stop("not a marker where one was due", walk.pos)
        marker = m[1]
        if marker == _FILL:
            walk.pos += 1
            continue
        if marker == _EOI:
            walk.pos += 2
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTm and TEM stand alone
            walk.pos += 2
            continue
        _marker_segment(src, walk, marker, m)
        if marker == _SOS:
            if not walk.sof:
                raise _Stop("scan before a frame header", walk.pos)
            walk.details["scans"] += 1
            walk.pos = _entropy_coded_end(ctx, walk.pos)


def validate(ctx: Context, off: int) -> Verdict | None:
    """The JPEG at OFF: SOI, then markers, segments and scans to EOI."""
    h = ctx.src.read(off, 4)
    if len(h) < 4 or h[:3] != b"\xff\xd8\xff" or not (0xC0 <= h[3] <= 0xFE) or h[3] in (0xD8, 0xD9):
        return None
    walk = _Walk(off, off + 2)
    try:
        _walk_markers(ctx, walk)
    except _Stop as stop:
        return None if stop.why is None else walk.fail(stop.why, stop.at)
    details = walk.details
    details["segments"] = walk.segments
    if not walk.sof or not details["scans"]:
        return Verdict.failed(walk.pos - off, HEADER_ONLY, details, "no frame header or no scan")
    return Verdict(walk.pos - off, COMPLETE, details)
