"""zip and jar (PKWARE APPNOTE.TXT): local headers walked (data descriptors found by
inflating), member CRC-32s, central directory, end of central directory (zip64 too), to the end
of its comment."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pensieve.disk.carve import base
from pensieve.disk.carve.base import (
    COMPLETE,
    HEADER_ONLY,
    MAX_LENGTH,
    PARTIAL,
    Context,
    Source,
    Verdict,
)
from pensieve.disk.carve.validators.common import (
    inflate,
)

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


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    pos = off
    entries = 0
    names: list[str] = []
    crc_checked = crc_bad = 0
    details: dict[str, Any] = {}

    def stop(why: str) -> Verdict | None:
        details.update(entries=entries, crc_checked=crc_checked, failed=why)
        if entries == 0:
            return None if why.startswith("local header") else Verdict(pos - off, HEADER_ONLY, details)
        return Verdict(pos - off, PARTIAL, details)

    # local file headers and their data
    while src.read(pos, 4) == _LFH:
        h = src.read(pos, 30)
        if len(h) < 30:
            return stop("local header truncated")
        _ver, flags, method, _t, _d, crc, csize, usize, nlen, xlen = struct.unpack_from("<HHHHHIIIHH", h, 4)
        if method not in _ZIP_METHODS or nlen == 0 or nlen > 4096:
            return stop("local header implausible")
        name_raw = src.read(pos + 30, nlen)
        extra = src.read(pos + 30 + nlen, xlen)
        if b"\0" in name_raw or len(name_raw) < nlen:
            return stop("local header name implausible")
        csize, usize = _zip64_sizes(extra, csize, usize)
        data = pos + 30 + nlen + xlen
        name = name_raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if flags & 8:  # sizes in a data descriptor after the data
            if method == 8:
                status, end, size, got = inflate(src, data, ctx.bound, True, base.MAX_INFLATE)
                if status != "end":
                    pos = data
                    return stop(f"member {name!r}: deflate stream {status}")
                desc = src.read(end, 24)
                q = 4 if desc[:4] == _DD else 0
                crc = struct.unpack_from("<I", desc, q)[0]
                big = struct.unpack_from("<Q", desc, q + 12)[0] if len(desc) >= q + 20 else -1
                dlen = q + (20 if big == size and size >= 0xFFFFFFFF else 12)
                crc_checked += 1
                crc_bad += crc != got
                pos = end + dlen
            else:
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
                    pos = data
                    return stop(f"member {name!r}: data descriptor not found")
                pos = found + 16
        else:
            end = data + csize
            if end > ctx.bound:
                pos = data
                return stop(f"member {name!r}: data beyond the bound (truncated or hostile size)")
            if method == 0 and csize == usize:
                crc_checked += 1
                crc_bad += _crc_stored(src, data, end) != crc
            elif method == 8:
                status, dend, size, got = inflate(src, data, end, True, base.MAX_INFLATE)
                if status == "end":
                    crc_checked += 1
                    crc_bad += got != crc or size != usize or dend != end
                elif status != "bound":
                    pos = data
                    return stop(f"member {name!r}: deflate stream {status}")
            pos = end
        if crc_bad:
            return stop(f"member {name!r}: CRC-32 mismatch")
        entries += 1
        if len(names) < 20:
            names.append(name)
        elif name == "META-INF/MANIFEST.MF":
            names.append(name)
    if entries == 0:
        return None
    cd_start = pos
    cd_entries = 0
    while src.read(pos, 4) == _CDH:
        h = src.read(pos, 46)
        if len(h) < 46:
            return stop("central directory truncated")
        nlen, xlen, clen = struct.unpack_from("<HHH", h, 28)
        pos += 46 + nlen + xlen + clen
        cd_entries += 1
    sig = src.read(pos, 4)
    if sig == _EOCD64:
        size = struct.unpack("<Q", src.read(pos + 4, 8).ljust(8, b"\0"))[0]
        pos += 12 + size
        if src.read(pos, 4) == _LOC64:
            pos += 20
        sig = src.read(pos, 4)
    if sig != _EOCD:
        return stop("end of central directory not found (truncated or fragmented)")
    e = src.read(pos, 22)
    if len(e) < 22:
        return stop("end of central directory truncated")
    _disk, _cd_disk, _n_disk, n_total, cd_size, cd_off, clen = struct.unpack_from("<HHHHIIH", e, 4)
    pos += 22 + clen
    consistent = (n_total in (cd_entries, 0xFFFF)) and cd_entries == entries
    details.update(
        entries=entries,
        central_directory_entries=cd_entries,
        central_directory_offset_ok=cd_off in (cd_start - off, 0xFFFFFFFF),
        crc_checked=crc_checked,
        names=names,
    )
    kind = None
    if "META-INF/MANIFEST.MF" in names:
        kind = "jar"
    elif "[Content_Types].xml" in names:
        kind = "ooxml"
    elif "AndroidManifest.xml" in names:
        kind = "apk"
    details["subtype"] = kind
    if not consistent or cd_size != pos - 22 - clen - cd_start and cd_size != 0xFFFFFFFF:
        details["failed"] = "central directory does not match the local headers"
        return Verdict(pos - off, PARTIAL, details)
    return Verdict(pos - off, COMPLETE, details)
