"""zip and jar (PKWARE APPNOTE.TXT): local headers walked (data descriptors found by
inflating), member CRC-32s, central directory, end of central directory (zip64 too), to the end
of its comment.

The walk follows the layout of APPNOTE 4.3.6: ``[local file header 1][file data 1][data
descriptor 1] ... [central directory header 1] ... [zip64 end of central directory record][zip64
end of central directory locator][end of central directory record]``; one step a part."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pensieve.disk.carve import base
from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, MAX_LENGTH, PARTIAL, Context, Source, Verdict
from pensieve.disk.carve.validators.common import inflate
from pensieve.records.core import field, record

#: the magic bytes, and their offset in the file
SIGNATURE = (b"PK\x03\x04", 0)


_LFH, _CDH, _EOCD, _DD = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x07\x08"
_EOCD64, _LOC64 = b"PK\x06\x06", b"PK\x06\x07"
_ZIP_METHODS = {0, 1, 6, 8, 9, 12, 14, 19, 93, 95, 96, 97, 98, 99}


def _zip64_sizes(extra: bytes, csize: int, usize: int) -> tuple[int, int]:
    p = 0
    while p + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, p)
        if tag == 1:
            body = extra[p + 4 : p + 4 + n]
            q = 0
            if usize == 0xFFFFFFFF and q + 8 <= len(body):
                usize = struct.unpack_from("<Q", body, q)[0]
                q += 8
            if csize == 0xFFFFFFFF and q + 8 <= len(body):
                csize = struct.unpack_from("<Q", body, q)[0]
            break
        p += 4 + n
    return csize, usize


def _crc_stored(src: Source, start: int, end: int) -> int:
    crc = 0
    for _p, piece in src.pieces(start, end):
        crc = zlib.crc32(piece, crc)
    return crc


_META_INF = "META-INF/MANIFEST.MF"
#: a name among the members -> the kind of zip it marks
_SUBTYPES = ((_META_INF, "jar"), ("[Content_Types].xml", "ooxml"), ("AndroidManifest.xml", "apk"))


@record
class _Walk:
    """Where the walk over one archive stands (POS), and what it has counted so far."""

    off: int
    pos: int
    entries: int = 0
    names: list[str] = field(default_factory=list)
    crc_checked: int = 0
    crc_bad: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def stop(self, why: str) -> Verdict | None:
        """The verdict when the walk breaks at POS: None when not even the first local header
        holds, header-only when no member validated, else partial."""
        self.details.update(entries=self.entries, crc_checked=self.crc_checked, failed=why)
        length = self.pos - self.off
        if self.entries == 0:
            return None if why.startswith("local header") else Verdict(length, HEADER_ONLY, self.details)
        return Verdict(length, PARTIAL, self.details)

    def count(self, crc_ok: bool) -> None:
        """One more member CRC-32 checked (the walk stops at the first that fails)."""
        self.crc_checked += 1
        self.crc_bad += not crc_ok


def _descriptor_after_deflate(ctx: Context, walk: _Walk, data: int, name: str) -> str | None:
    """A deflated member whose sizes follow in a data descriptor (general purpose bit 3,
    APPNOTE 4.3.9): the stream is inflated to its end, the descriptor after it (signature
    optional, zip64 sizes when they are 8 bytes) gives the CRC-32."""
    src = ctx.src
    status, end, size, got = inflate(src, data, ctx.bound, True, base.MAX_INFLATE)
    if status != "end":
        walk.pos = data
        return f"member {name!r}: deflate stream {status}"
    desc = src.read(end, 24)
    q = 4 if desc[:4] == _DD else 0
    crc = struct.unpack_from("<I", desc, q)[0]
    big = struct.unpack_from("<Q", desc, q + 12)[0] if len(desc) >= q + 20 else -1
    dlen = q + (20 if big == size and size >= 0xFFFFFFFF else 12)
    walk.count(crc == got)
    walk.pos = end + dlen
    return None


def _descriptor_by_signature(ctx: Context, walk: _Walk, data: int, name: str) -> str | None:
    """A member of another method with a data descriptor: the first descriptor signature
    whose compressed size is the distance from the data (APPNOTE 4.3.9.3)."""
    src = ctx.src
    found = -1
    for p, piece in src.pieces(data, min(ctx.bound, data + MAX_LENGTH["zip"]), 1 << 18):
        i = piece.find(_DD)
        while i >= 0:
            if len(piece) >= i + 16 and struct.unpack_from("<I", piece, i + 8)[0] == p + i - data:
                found = p + i
                break
            i = piece.find(_DD, i + 1)
        if found >= 0:
            break
    if found < 0:
        walk.pos = data
        return f"member {name!r}: data descriptor not found"
    walk.pos = found + 16
    return None


def _sized_member(
    ctx: Context, walk: _Walk, data: int, name: str, method: int, crc: int, csize: int, usize: int
) -> str | None:
    """A member whose sizes stand in its local header (APPNOTE 4.4.8-4.4.9): stored data is
    CRC-checked, deflated data inflated and checked against CRC-32, size and end."""
    src = ctx.src
    end = data + csize
    if end > ctx.bound:
        walk.pos = data
        return f"member {name!r}: data beyond the bound (truncated or hostile size)"
    if method == 0 and csize == usize:
        walk.count(_crc_stored(src, data, end) == crc)
    elif method == 8:
        status, dend, size, got = inflate(src, data, end, True, base.MAX_INFLATE)
        if status == "end":
            walk.count(got == crc and size == usize and dend == end)
        elif status != "bound":
            walk.pos = data
            return f"member {name!r}: deflate stream {status}"
    walk.pos = end
    return None


def _local_entry(ctx: Context, walk: _Walk) -> str | None:
    """One local file header (APPNOTE 4.3.7) and its data at POS: why it fails, or None with
    POS past its data (and data descriptor)."""
    src = ctx.src
    pos = walk.pos
    h = src.read(pos, 30)
    if len(h) < 30:
        return "local header truncated"
    _ver, flags, method, _t, _d, crc, csize, usize, nlen, xlen = struct.unpack_from("<HHHHHIIIHH", h, 4)
    if method not in _ZIP_METHODS or nlen == 0 or nlen > 4096:
        return "local header implausible"
    name_raw = src.read(pos + 30, nlen)
    extra = src.read(pos + 30 + nlen, xlen)
    if b"\0" in name_raw or len(name_raw) < nlen:
        return "local header name implausible"
    csize, usize = _zip64_sizes(extra, csize, usize)
    data = pos + 30 + nlen + xlen
    name = name_raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    if flags & 8:  # sizes in a data descriptor after the data
        if method == 8:
            why = _descriptor_after_deflate(ctx, walk, data, name)
        else:
            why = _descriptor_by_signature(ctx, walk, data, name)
    else:
        why = _sized_member(ctx, walk, data, name, method, crc, csize, usize)
    if why is None and walk.crc_bad:
        why = f"member {name!r}: CRC-32 mismatch"
    if why is None:
        walk.entries += 1
        if len(walk.names) < 20 or name == _META_INF:
            walk.names.append(name)
    return why


def _central_directory(src: Source, walk: _Walk) -> int | None:
    """The central directory headers (APPNOTE 4.3.12) from POS: how many, or None when one is
    cut off (POS then at it)."""
    cd_entries = 0
    while src.read(walk.pos, 4) == _CDH:
        h = src.read(walk.pos, 46)
        if len(h) < 46:
            return None
        nlen, xlen, clen = struct.unpack_from("<HHH", h, 28)
        walk.pos += 46 + nlen + xlen + clen
        cd_entries += 1
    return cd_entries


def _skip_zip64_end(src: Source, walk: _Walk) -> bytes:
    """Past the zip64 end of central directory record and its locator (APPNOTE 4.3.14-4.3.15)
    when they stand at POS: the 4 bytes of signature that follow."""
    sig = src.read(walk.pos, 4)
    if sig == _EOCD64:
        size = struct.unpack("<Q", src.read(walk.pos + 4, 8).ljust(8, b"\0"))[0]
        walk.pos += 12 + size
        if src.read(walk.pos, 4) == _LOC64:
            walk.pos += 20
        sig = src.read(walk.pos, 4)
    return sig


def _subtype(names: list[str]) -> str | None:
    """jar, ooxml or apk, by the member that marks it."""
    return next((kind for marker, kind in _SUBTYPES if marker in names), None)


def validate(ctx: Context, off: int) -> Verdict | None:
    """The zip at OFF: local entries, then central directory, then end of central directory."""
    src = ctx.src
    walk = _Walk(off, off)
    while src.read(walk.pos, 4) == _LFH:
        why = _local_entry(ctx, walk)
        if why is not None:
            return walk.stop(why)
    if walk.entries == 0:
        return None
    cd_start = walk.pos
    cd_entries = _central_directory(src, walk)
    if cd_entries is None:
        return walk.stop("central directory truncated")
    if _skip_zip64_end(src, walk) != _EOCD:
        return walk.stop("end of central directory not found (truncated or fragmented)")
    eocd = walk.pos
    e = src.read(eocd, 22)
    if len(e) < 22:
        return walk.stop("end of central directory truncated")
    _disk, _cd_disk, _n_disk, n_total, cd_size, cd_off, clen = struct.unpack_from("<HHHHIIH", e, 4)
    end = eocd + 22 + clen
    consistent = (n_total in (cd_entries, 0xFFFF)) and cd_entries == walk.entries
    details = walk.details
    details.update(
        entries=walk.entries,
        central_directory_entries=cd_entries,
        central_directory_offset_ok=cd_off in (cd_start - off, 0xFFFFFFFF),
        crc_checked=walk.crc_checked,
        names=walk.names,
    )
    details["subtype"] = _subtype(walk.names)
    if not consistent or cd_size != eocd - cd_start and cd_size != 0xFFFFFFFF:
        why = "central directory does not match the local headers"
        return Verdict.failed(end - off, PARTIAL, details, why)
    return Verdict(end - off, COMPLETE, details)
