"""gzip (RFC 1952): header flags, every member inflated to its end (bounded output),
CRC-32 and ISIZE checked.

A gzip file is a series of members (RFC 1952 2.2); each is a header (ID1 ID2 CM FLG MTIME XFL OS,
then FEXTRA, FNAME, FCOMMENT, FHCRC as FLG says, 2.3.1), the deflate data (RFC 1951) and an 8-byte
trailer (CRC32, ISIZE)."""

from __future__ import annotations

import struct
from typing import Any

from pensieve.disk.carve import base
from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, PARTIAL, Context, Source, Verdict
from pensieve.disk.carve.validators.common import inflate, zero_run
from pensieve.records.core import record

#: the magic bytes, and their offset in the file
SIGNATURE = (b"\x1f\x8b\x08", 0)


_FHCRC, _FEXTRA, _FNAME, _FCOMMENT, _FRESERVED = 2, 4, 8, 16, 0xE0
#: what _member_header says where no member starts: no gzip header there at all, a header whose
#: fields are not ones RFC 1952 allows, a name or comment that does not end within 1 KiB
_NO_MEMBER, _IMPLAUSIBLE, _UNTERMINATED = "no member", "implausible", "unterminated"


@record
class _MemberHeader:
    """A member header (RFC 1952 2.3.1): where its deflate data begins, and what it names."""

    data: int
    mtime: int
    name: str | None
    os: int


def _member_header(src: Source, pos: int) -> _MemberHeader | str:
    """The member header at POS, or why none stands there (_NO_MEMBER, _IMPLAUSIBLE,
    _UNTERMINATED)."""
    h = src.read(pos, 10)
    if len(h) < 10 or h[:3] != SIGNATURE[0]:
        return _NO_MEMBER
    flg, mtime, xfl, os_ = h[3], struct.unpack_from("<I", h, 4)[0], h[8], h[9]
    if flg & _FRESERVED or xfl not in (0, 2, 4) or (os_ > 13 and os_ != 255):
        return _IMPLAUSIBLE
    p = pos + 10
    if flg & _FEXTRA:
        xlen = struct.unpack("<H", src.read(p, 2).ljust(2, b"\0"))[0]
        p += 2 + xlen
    name = None
    for bit in (_FNAME, _FCOMMENT):
        if flg & bit:
            raw = src.read(p, 1024)
            z = raw.find(b"\0")
            if z < 0:
                return _UNTERMINATED
            if bit == _FNAME:
                name = raw[:z].decode("latin-1")
            p += z + 1
    if flg & _FHCRC:
        p += 2
    return _MemberHeader(p, mtime, name, os_)


def _member_data(
    ctx: Context, off: int, data: int, members: int, out_total: int, details: dict
) -> tuple[int, int] | Verdict:
    """The deflate data from DATA and the trailer after it: (where the member ends, output
    size), or the verdict where the stream or the trailer (CRC-32, ISIZE) does not hold."""
    src = ctx.src
    status, end, size, crc = inflate(src, data, ctx.bound, True, base.MAX_INFLATE - out_total)
    out_total += size
    if status != "end":
        details.update(members=members + 1, uncompressed=out_total, failed=f"deflate stream: {status}")
        if members == 0 and size == 0:
            return Verdict(data - off, HEADER_ONLY, details)
        # the stream broke or ran out: the file most likely ended where zero fill begins
        cut = zero_run(src, data, min(end + 4096, ctx.bound))
        return Verdict(min(end, cut, ctx.bound) - off if cut > data else end - off, PARTIAL, details)
    trailer = src.read(end, 8)
    if len(trailer) < 8:
        details.update(members=members + 1, failed="trailer truncated")
        return Verdict(end - off + len(trailer), PARTIAL, details)
    tcrc, isize = struct.unpack("<II", trailer)
    if tcrc != crc or isize != size & 0xFFFFFFFF:
        details.update(members=members + 1, failed="CRC-32/ISIZE mismatch")
        return Verdict(end + 8 - off, PARTIAL, details)
    return end + 8, size


def validate(ctx: Context, off: int) -> Verdict | None:
    """The gzip file at OFF: member after member, each header then data and trailer."""
    pos = off
    members = 0
    out_total = 0
    details: dict[str, Any] = {}
    while True:
        hdr = _member_header(ctx.src, pos)
        if isinstance(hdr, str):  # no further member: the file ends at POS
            if hdr == _UNTERMINATED:
                return None if members == 0 else Verdict(pos - off, PARTIAL, details)
            if hdr == _IMPLAUSIBLE and members == 0:
                return None
            break
        if members == 0:
            details.update(mtime=hdr.mtime, name=hdr.name, os=hdr.os)
        got = _member_data(ctx, off, hdr.data, members, out_total, details)
        if isinstance(got, Verdict):
            return got
        pos, size = got
        out_total += size
        members += 1
    details.update(members=members, uncompressed=out_total, crc_ok=True)
    return Verdict(pos - off, COMPLETE, details)
