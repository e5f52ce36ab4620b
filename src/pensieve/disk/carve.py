"""File carving: deleted files found by their content in the unallocated space of a disk image.

What is scanned
    By default the unallocated space: the free blocks of every ext2/3/4 filesystem (read from the
    block bitmaps of its group descriptors; a group flagged ``BLOCK_UNINIT`` counts as free) and
    the space outside every partition.  A partition whose filesystem is not ext is skipped with a
    problem (``whole=True`` scans it).  ``whole=True`` (``--all``) scans every byte of the image;
    a file that is not a disk image at all (a memory dump, a raw blob) is scanned whole.

How
    The image is read in chunks (8 MiB, with an overlap for signatures that straddle two chunks),
    never mapped, never written.  Binary formats are found by their magic bytes at any offset
    (``bytes.find`` per signature); text formats (scripts, JSON, logs) only where a file can
    begin: at a filesystem block boundary (512-byte boundary outside filesystems).  Hits are
    taken in image order; each goes to its format's validator, which parses the structure and
    infers the length, reading what it needs through a small window cache, in bounded pieces and
    within a per-format length bound: memory does not grow with the image or with a declared
    length.  A hit inside a file already carved (complete or partial: the part that validated)
    is not carved again (embedded thumbnails, members of a stored zip, the later local headers
    of a zip cut before its central directory), and the next chunk starts after it.  Where a
    truncated compressed or entropy-coded stream runs on into the zero fill of its last block,
    the carved length stops where the zeros begin.

    ============  ================================================================================
    type          structure checked, and where the length comes from
    ============  ================================================================================
    elf           header fields, program headers, section headers (null section 0, names in the
                  section-name table): the end of the last segment/section/header table
    script        ``#!/interpreter`` line, printable text to the first NUL (python: compiled)
    gzip          header flags, every member inflated to its end (bounded output), CRC-32/ISIZE
    zip (jar)     local headers walked (data descriptors found by inflating), member CRC-32s,
                  central directory, end of central directory (zip64 too): to its comment's end
    tar           ustar/GNU header checksums, member sizes, two zero blocks; zero padding to the
                  10240-byte record tar writes
    pdf           ``%PDF-1.x`` to the last ``%%EOF`` before zero fill / another header; its
                  ``startxref`` must point at an ``xref`` table or an xref stream object
    jpeg          SOI, marker segments, entropy-coded scans to EOI (SOF and a scan required)
    png           signature, IHDR first, every chunk's CRC, to IEND
    sqlite        header fields (page size, versions, payload fractions, formats), page 1 b-tree
                  header: page size x page count
    json          JSON lines (docker json-file logs) or one JSON document, to the first NUL
    log           text whose lines begin with timestamps (ISO 8601, syslog, dmesg, access logs,
                  logfmt), to the first NUL
    ============  ================================================================================

Confidence: ``complete`` when the structure validates end to end (and a text file ends in
the zero fill of its last block), ``partial`` when it validates only up to a point (truncated,
overwritten or fragmented: the carved length is what validated), ``header-only`` when only the
header does.  Structure checks cannot see every fragmentation: a fragmented file whose format
has no checksums (ELF, tar, SQLite, text) can read as complete with foreign blocks in it.

Duplicates: a carved file whose sha256 equals an allocated file of the same filesystem is not
reported (counted in the summary, with the allocated path).  Allocated files are listed once,
lazily, and only those of the same size are hashed.

Attribution: carving knows no owner.  A *block owner* lookup (``owners``: a mapping or a function
from a filesystem block number to ``(inode, path)``, e.g. from the ext4 journal's copies of old
inodes and directory blocks) attributes a carved file whose first block it knows; its path then
goes through :func:`pensieve.filesystem.whence.whence` for the layer and container.  Without
one every carved file is ``unattributed``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pensieve.records import Problem
from pensieve.records.core import field, record

__all__ = [
    "TYPES",
    "CarvedFile",
    "CarveSummary",
    "Carver",
    "BufferImage",
    "carve",
    "free_ranges",
    "owners_from_map",
    "journal_block_owners",
]

TYPES = ("elf", "script", "gzip", "zip", "tar", "pdf", "jpeg", "png", "sqlite", "json", "log")
ALIASES = {
    "jar": "zip",
    "jpg": "jpeg",
    "shell": "script",
    "sh": "script",
    "python": "script",
    "py": "script",
    "text": "log",
    "gz": "gzip",
    "sqlite3": "sqlite",
    "db": "sqlite",
}
EXTENSIONS = {
    "elf": "elf",
    "script": "sh",
    "gzip": "gz",
    "zip": "zip",
    "tar": "tar",
    "pdf": "pdf",
    "jpeg": "jpg",
    "png": "png",
    "sqlite": "sqlite",
    "json": "json",
    "log": "log",
}
#: largest length a validator will follow for each type (bytes); longer is carved partial
MAX_LENGTH = {
    "elf": 256 << 20,
    "script": 8 << 20,
    "gzip": 256 << 20,
    "zip": 1 << 30,
    "tar": 1 << 30,
    "pdf": 64 << 20,
    "jpeg": 64 << 20,
    "png": 64 << 20,
    "sqlite": 1 << 30,
    "json": 16 << 20,
    "log": 16 << 20,
}
#: largest decompressed output followed when inflating (gzip members, zip members)
MAX_INFLATE = 1 << 30

COMPLETE, PARTIAL, HEADER_ONLY = "complete", "partial", "header-only"

CHUNK = 8 << 20
_PIECE = 1 << 20
_WINDOW = 1 << 18


@record
class CarvedFile:
    """One carved file: where it lies in the image, what it is, how far it validated."""

    path: str | None  # the owning path when the block owners know it, else None
    container: str | None  # container id, when the path is in a container's layer
    layer: str | None  # storage-driver layer id of that path
    method: str  # always "carve"
    confidence: str  # complete | partial | header-only
    sha256: str
    offset: int  # byte offset in the image
    length: int
    type: str  # one of TYPES
    validation: dict[str, Any] = field(default_factory=dict)
    inode: int | None = None
    attribution: str = "unattributed"  # unattributed | block-owner
    fs_offset: int | None = None  # byte offset of the filesystem holding it
    block: int | None = None  # first filesystem block
    allocated: bool = False  # starts in allocated space (only when scanning the whole image)
    output: str | None = None  # file written under --out


@record
class CarveSummary:
    image: str
    scope: str  # unallocated | whole
    scanned_bytes: int = 0
    image_bytes: int = 0
    ranges: int = 0
    seconds: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)  # signature hits per type
    rejected: dict[str, int] = field(default_factory=dict)  # hits whose structure did not validate
    carved: dict[str, int] = field(default_factory=dict)
    confidence: dict[str, int] = field(default_factory=dict)
    inside_carved: int = 0  # hits inside a file already carved complete
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # equal to an allocated file
    filesystems: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class _Verdict:
    __slots__ = ("length", "confidence", "details", "type")

    def __init__(self, length: int, confidence: str, details: dict, type_: str | None = None) -> None:
        self.length = length
        self.confidence = confidence
        self.details = details
        self.type = type_


# ---- reading the image ---------------------------------------------------------------------------


class BufferImage:
    """Bytes posing as an image (``read(offset, size)``, ``get_size()``): for carving a buffer."""

    format = "buffer"

    def __init__(self, data: bytes, name: str = "buffer") -> None:
        self._data = data
        self.files: list[str] = []
        self.name = name

    def read(self, offset: int, size: int) -> bytes:
        return self._data[offset : offset + size]

    def get_size(self) -> int:
        return len(self._data)

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass


class _Src:
    """Reads of the image through a few cached windows (validators read small pieces often)."""

    def __init__(self, img) -> None:
        self._img = img
        self.size = int(img.get_size())
        self._windows: dict[int, bytes] = {}
        self._order: list[int] = []

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n <= 0 or off >= self.size:
            return b""
        n = min(n, self.size - off)
        if n >= _WINDOW:
            return self._img.read(off, n)
        base = off - off % _WINDOW
        if off + n <= base + _WINDOW:
            return self._window(base)[off - base : off - base + n]
        first = self._window(base)[off - base :]
        return first + self._window(base + _WINDOW)[: n - len(first)]

    def _window(self, base: int) -> bytes:
        w = self._windows.get(base)
        if w is None:
            w = self._img.read(base, _WINDOW)
            self._windows[base] = w
            self._order.append(base)
            if len(self._order) > 16:
                self._windows.pop(self._order.pop(0), None)
        return w

    def pieces(self, off: int, end: int, size: int = _PIECE) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) pieces of [off, end)."""
        while off < end:
            data = self._img.read(off, min(size, end - off))
            if not data:
                return
            yield off, data
            off += len(data)


class _Ctx:
    """What a validator knows about the hit: the reader, its length bound, its scan range."""

    __slots__ = ("src", "bound", "range_end", "grid")

    def __init__(self, src: _Src, bound: int, range_end: int, grid: int) -> None:
        self.src = src
        self.bound = bound  # absolute offset a validator must not read past
        self.range_end = range_end  # end of the scanned range the hit lies in
        self.grid = grid  # block size of the space it lies in (where files start)


# ---- validators: binary formats ------------------------------------------------------------------


def _elf(ctx: _Ctx, off: int) -> _Verdict | None:
    src = ctx.src
    h = src.read(off, 64)
    if len(h) < 52:
        return None
    cls, data, ver = h[4], h[5], h[6]
    if cls not in (1, 2) or data not in (1, 2) or ver != 1 or any(h[9:16]):
        return None
    e = "<" if data == 1 else ">"
    if cls == 2:
        if len(h) < 64:
            return None
        fmt, want = "HHIQQQIHHHHHH", (64, 56, 64)
    else:
        fmt, want = "HHIIIIIHHHHHH", (52, 32, 40)
    (
        etype,
        machine,
        version,
        entry,
        phoff,
        shoff,
        flags,
        ehsize,
        phentsize,
        phnum,
        shentsize,
        shnum,
        shstrndx,
    ) = struct.unpack_from(e + fmt, h, 16)
    if version != 1 or etype not in (1, 2, 3, 4) or ehsize != want[0] or machine == 0:
        return None
    if (phnum and phentsize != want[1]) or (shnum and shentsize != want[2]):
        return None
    if shnum and shstrndx >= shnum and shstrndx != 0xFFFF:
        return None
    kinds = {1: "relocatable", 2: "executable", 3: "shared object", 4: "core"}
    details: dict[str, Any] = {
        "class": 64 if cls == 2 else 32,
        "endian": "little" if data == 1 else "big",
        "elf_type": kinds[etype],
        "machine": machine,
        "entry": entry,
        "program_headers": phnum,
        "sections": shnum,
    }
    end = ehsize
    limit = ctx.bound
    # program headers
    if phnum:
        ph_end = off + phoff + phnum * phentsize
        if phoff < ehsize or ph_end > limit:
            details["failed"] = "program header table beyond the bound"
            return _Verdict(min(ehsize, limit - off), HEADER_ONLY, details)
        table = src.read(off + phoff, phnum * phentsize)
        if len(table) < phnum * phentsize:
            details["failed"] = "program header table truncated"
            return _Verdict(ehsize, HEADER_ONLY, details)
        end = max(end, phoff + phnum * phentsize)
        for i in range(phnum):
            if cls == 2:
                ptype, _pflags, poff, _va, _pa, filesz, memsz, _al = struct.unpack_from(
                    e + "IIQQQQQQ", table, i * phentsize
                )
            else:
                ptype, poff, _va, _pa, filesz, memsz, _pflags, _al = struct.unpack_from(
                    e + "IIIIIIII", table, i * phentsize
                )
            if ptype == 0:
                continue
            if filesz > memsz and ptype == 1:
                details["failed"] = f"program header {i}: file size above memory size"
                return _Verdict(ehsize, HEADER_ONLY, details)
            end = max(end, poff + filesz)
    if not shnum:
        if shoff:
            return None
        if off + end > limit:
            details["failed"] = "segments beyond the bound"
            return _Verdict(limit - off, PARTIAL, details)
        return _Verdict(end, COMPLETE, details)
    sh_size = shnum * shentsize
    if shoff < ehsize or off + shoff + sh_size > limit:
        details["failed"] = "section header table beyond the bound (truncated or hostile)"
        return _Verdict(min(end, limit - off), PARTIAL if phnum else HEADER_ONLY, details)
    table = src.read(off + shoff, sh_size)
    if len(table) < sh_size:
        details["failed"] = "section header table truncated"
        return _Verdict(min(end, src.size - off), PARTIAL, details)
    sections = []
    for i in range(shnum):
        if cls == 2:
            name, stype, _fl, _addr, soff, ssize, _link, _info, _al, _es = struct.unpack_from(
                e + "IIQQQQIIQQ", table, i * shentsize
            )
        else:
            name, stype, _fl, _addr, soff, ssize, _link, _info, _al, _es = struct.unpack_from(
                e + "IIIIIIIIII", table, i * shentsize
            )
        sections.append((name, stype, soff, ssize))
    end = max(end, shoff + sh_size)
    if sections[0][1] != 0 or sections[0][2] != 0:
        details["failed"] = "section 0 is not the null section"
        return _Verdict(min(end, limit - off), PARTIAL, details)
    for _name, stype, soff, ssize in sections[1:]:
        if stype != 8 and ssize:  # SHT_NOBITS has no bytes in the file
            end = max(end, soff + ssize)
    if off + end > limit:
        details["failed"] = "a section lies beyond the bound"
        return _Verdict(limit - off, PARTIAL, details)
    names: list[str] = []
    if shstrndx not in (0, 0xFFFF) and shstrndx < shnum:
        _n, stype, soff, ssize = sections[shstrndx]
        strtab = src.read(off + soff, min(ssize, 1 << 20))
        if stype != 3 or len(strtab) < ssize:
            details["failed"] = "section-name table is not a string table"
            return _Verdict(end, PARTIAL, details)
        for name, *_ in sections[1:]:
            stop = strtab.find(b"\0", name)
            raw = strtab[name:stop] if 0 <= name < len(strtab) and stop >= 0 else None
            if raw is None or not _printable(raw):
                details["failed"] = "section names do not resolve in the section-name table"
                return _Verdict(end, PARTIAL, details)
            names.append(raw.decode("ascii"))
    details["section_names"] = names[:12]
    return _Verdict(end, COMPLETE, details)


def _printable(raw: bytes) -> bool:
    return all(32 < b < 127 for b in raw)


def _inflate(src: _Src, start: int, bound: int, raw: bool, out_bound: int) -> tuple[str, int, int, int]:
    """Inflate the deflate stream at START: (status, end offset, output size, crc32 of output).
    status: "end" (stream end found), "error" (corrupt: END is the last 4 KiB step that still
    inflated), "truncated" (ran out of input at BOUND), "bound" (output bound reached)."""
    d = zlib.decompressobj(-15 if raw else 15)
    state = [0, 0]  # crc, total

    def feed(dec, buf: bytes) -> str | None:
        while True:
            out = dec.decompress(buf, 1 << 20)
            state[0] = zlib.crc32(out, state[0])
            state[1] += len(out)
            if state[1] > out_bound:
                return "bound"
            if dec.eof or not dec.unconsumed_tail:
                return None
            buf = dec.unconsumed_tail

    pos = start
    for p, piece in src.pieces(start, bound, 1 << 18):
        saved, saved_state = d.copy(), list(state)
        try:
            if feed(d, piece) == "bound":
                return "bound", p + len(piece), state[1], state[0]
        except zlib.error:
            # replay the piece in small steps to say where the stream broke
            d, state[:] = saved, saved_state
            good = p
            try:
                for k in range(0, len(piece), 4096):
                    feed(d, piece[k : k + 4096])
                    if d.eof:
                        break
                    good = p + k + len(piece[k : k + 4096])
            except zlib.error:
                pass
            return "error", good, state[1], state[0]
        if d.eof:
            return "end", p + len(piece) - len(d.unused_data), state[1], state[0]
        pos = p + len(piece)
    return "truncated", pos, state[1], state[0]


def _gzip(ctx: _Ctx, off: int) -> _Verdict | None:
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
                    return None if members == 0 else _Verdict(pos - off, PARTIAL, details)
                if bit == 8:
                    name = raw[:z].decode("latin-1")
                p += z + 1
        if flg & 2:
            p += 2
        if members == 0:
            details.update(mtime=mtime, name=name, os=os_)
        status, end, size, crc = _inflate(src, p, ctx.bound, True, MAX_INFLATE - out_total)
        out_total += size
        if status != "end":
            details.update(members=members + 1, uncompressed=out_total, failed=f"deflate stream: {status}")
            if members == 0 and size == 0:
                return _Verdict(p - off, HEADER_ONLY, details)
            # the stream broke or ran out: the file most likely ended where zero fill begins
            cut = _zero_run(src, p, min(end + 4096, ctx.bound))
            return _Verdict(min(end, cut, ctx.bound) - off if cut > p else end - off, PARTIAL, details)
        trailer = src.read(end, 8)
        if len(trailer) < 8:
            details.update(members=members + 1, failed="trailer truncated")
            return _Verdict(end - off + len(trailer), PARTIAL, details)
        tcrc, isize = struct.unpack("<II", trailer)
        if tcrc != crc or isize != size & 0xFFFFFFFF:
            details.update(members=members + 1, failed="CRC-32/ISIZE mismatch")
            return _Verdict(end + 8 - off, PARTIAL, details)
        members += 1
        pos = end + 8
    details.update(members=members, uncompressed=out_total, crc_ok=True)
    return _Verdict(pos - off, COMPLETE, details)


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


def _crc_stored(src: _Src, start: int, end: int) -> int:
    crc = 0
    for _p, piece in src.pieces(start, end):
        crc = zlib.crc32(piece, crc)
    return crc


def _zip(ctx: _Ctx, off: int) -> _Verdict | None:
    src = ctx.src
    pos = off
    entries = 0
    names: list[str] = []
    crc_checked = crc_bad = 0
    details: dict[str, Any] = {}

    def stop(why: str) -> _Verdict | None:
        details.update(entries=entries, crc_checked=crc_checked, failed=why)
        if entries == 0:
            return None if why.startswith("local header") else _Verdict(pos - off, HEADER_ONLY, details)
        return _Verdict(pos - off, PARTIAL, details)

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
                status, end, size, got = _inflate(src, data, ctx.bound, True, MAX_INFLATE)
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
                status, dend, size, got = _inflate(src, data, end, True, MAX_INFLATE)
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
        return _Verdict(pos - off, PARTIAL, details)
    return _Verdict(pos - off, COMPLETE, details)


def _octal(field_: bytes) -> int | None:
    if field_ and field_[0] & 0x80:  # GNU base-256
        n = field_[0] & 0x7F
        for b in field_[1:]:
            n = n << 8 | b
        return n
    s = field_.replace(b"\0", b" ").strip()
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        return None


def _tar_header_ok(h: bytes) -> bool:
    stored = _octal(h[148:156])
    if stored is None:
        return False
    return stored == sum(h[:148]) + 256 + sum(h[156:512])


def _tar(ctx: _Ctx, off: int) -> _Verdict | None:
    src = ctx.src
    first = src.read(off, 512)
    if len(first) < 512 or first[257:262] != b"ustar" or not _tar_header_ok(first):
        return None
    pos = off
    members = 0
    names: list[str] = []
    details: dict[str, Any] = {"format": "gnu" if first[257:265] == b"ustar  \0" else "ustar"}
    while True:
        h = src.read(pos, 512)
        if len(h) < 512:
            details.update(members=members, failed="truncated")
            return _Verdict(pos - off, PARTIAL, details)
        if not any(h):
            nxt = src.read(pos + 512, 512)
            if len(nxt) == 512 and not any(nxt):
                pos += 1024
                break
            details.update(members=members, failed="single zero block")
            return _Verdict(pos - off, PARTIAL, details)
        if not _tar_header_ok(h):
            details.update(members=members, failed="header checksum mismatch (truncated or fragmented)")
            return _Verdict(pos - off, PARTIAL if members else HEADER_ONLY, details)
        size = _octal(h[124:136]) or 0
        kind = h[156:157]
        if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
            size = 0 if kind != b"7" else size
        data_end = pos + 512 + (size + 511) // 512 * 512
        if data_end > ctx.bound:
            details.update(members=members, failed="member beyond the bound (truncated or hostile size)")
            return _Verdict(min(pos + 512, ctx.bound) - off, PARTIAL if members else HEADER_ONLY, details)
        if kind not in (b"x", b"g", b"L", b"K"):
            members += 1
            if len(names) < 20:
                names.append(h[:100].split(b"\0", 1)[0].decode("utf-8", "replace"))
        pos = data_end
    # tar pads the archive to its 10240-byte record with zeros
    rec = 10240
    padded = off + (pos - off + rec - 1) // rec * rec
    if padded > pos and padded <= ctx.bound:
        pad = src.read(pos, padded - pos)
        if len(pad) == padded - pos and not any(pad):
            pos = padded
    details.update(members=members, names=names)
    return _Verdict(pos - off, COMPLETE, details)


_STARTXREF = re.compile(rb"startxref\s+(\d+)\s+%%EOF")


_ZERO_RUN = bytes(32)


def _zero_run(src: _Src, start: int, end: int) -> int:
    """Where a run of 32 zero bytes begins in [START, END) (END if none): compressed and
    entropy-coded data practically never hold one, the zero fill after a truncated file does."""
    for p, piece in src.pieces(start, end, 1 << 18):
        i = piece.find(_ZERO_RUN)
        if i >= 0:
            return p + i
        nxt = src.read(p + len(piece), 31)
        if nxt and not any(nxt):
            tail = len(piece) - len(piece.rstrip(b"\0"))
            if tail + len(nxt) >= 32 and tail:
                return p + len(piece) - tail
    return end


def _zero_tail(src: _Src, pos: int, grid: int) -> bool:
    """Whether the bytes from POS to the next GRID boundary are all zero (a file's last block)."""
    end = pos + (-pos % grid)
    if end == pos:
        return True
    tail = src.read(pos, end - pos)
    return not any(tail)


def _pdf(ctx: _Ctx, off: int) -> _Verdict | None:
    src = ctx.src
    head = src.read(off, 1024)
    m = re.match(rb"%PDF-([12])\.(\d)", head)
    if not m:
        return None
    details: dict[str, Any] = {"version": f"{m[1].decode()}.{m[2].decode()}"}
    eofs: list[int] = []
    seen: set[int] = set()
    objs = 0
    stop_reason = "bound"
    carry = b""
    end_scan = ctx.bound
    g = ctx.grid
    zero = bytes(g)
    for p, piece in src.pieces(off, ctx.bound, _PIECE):
        buf = carry + piece
        base = p - len(carry)
        objs += piece.count(b"endobj")
        limit = len(buf)
        nxt = buf.find(b"%PDF-", 1 if base == off else 0)
        if nxt >= 0:
            limit, stop_reason = nxt, "another %PDF header"
        # a whole zero block: the file ended (or was overwritten with zeros) before it
        k = piece.find(zero, (-(p - off)) % g)
        while k >= 0 and (p + k - off) % g:
            k = piece.find(zero, k + 1)
        if k >= 0 and len(carry) + k < limit:
            limit, stop_reason = len(carry) + k, "zero block"
        done = limit < len(buf)
        i = buf.find(b"%%EOF")
        while 0 <= i < limit:
            if base + i not in seen:
                seen.add(base + i)
                e = base + i + 5
                tail = src.read(e, 2)
                e += 2 if tail == b"\r\n" else 1 if tail[:1] in (b"\n", b"\r") else 0
                eofs.append(e)
                if _zero_tail(src, e, g):
                    stop_reason, done = "zero fill after %%EOF", True
                    break
            i = buf.find(b"%%EOF", i + 1)
        if done:
            end_scan = base + limit
            break
        carry = buf[-8:]
    details["objects"] = objs
    details["eof_markers"] = len(eofs)
    if not eofs:
        details["failed"] = f"no %%EOF before the {stop_reason}"
        length = min(end_scan, ctx.bound) - off
        return _Verdict(length, PARTIAL if objs else HEADER_ONLY, details)
    end = eofs[-1]
    tail = src.read(max(off, end - 1100), end - max(off, end - 1100))
    m2 = None
    for m2 in _STARTXREF.finditer(tail):  # noqa: B007 - the last one counts
        pass
    if m2 is None:
        details["failed"] = "no startxref before the last %%EOF"
        return _Verdict(end - off, PARTIAL, details)
    xref = int(m2[1])
    at = src.read(off + xref, 32) if xref < end - off else b""
    details["startxref"] = xref
    if at.startswith(b"xref") or re.match(rb"\d+\s+\d+\s+obj", at):
        details["xref_ok"] = True
        return _Verdict(end - off, COMPLETE, details)
    details["failed"] = "startxref does not point at a cross-reference table or stream"
    return _Verdict(end - off, PARTIAL, details)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(ctx: _Ctx, off: int) -> _Verdict | None:
    src = ctx.src
    h = src.read(off, 4)
    if len(h) < 4 or h[:3] != b"\xff\xd8\xff" or not (0xC0 <= h[3] <= 0xFE) or h[3] in (0xD8, 0xD9):
        return None
    pos = off + 2
    details: dict[str, Any] = {"scans": 0}
    sof = False
    segments = 0

    def fail(why: str, at: int) -> _Verdict | None:
        details["failed"] = why
        if segments < 2 and not details["scans"]:
            return None  # one random "segment" after FF D8 FF is not a JPEG
        return _Verdict(at - off, PARTIAL if details["scans"] else HEADER_ONLY, details)

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
            z = piece.find(_ZERO_RUN, 0, i if found >= 0 else len(piece))
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
        return _Verdict(pos - off, HEADER_ONLY, details)
    return _Verdict(pos - off, COMPLETE, details)


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png(ctx: _Ctx, off: int) -> _Verdict | None:
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
                cut = _zero_run(src, pos + 8, end)
                if cut > pos + 8:
                    chunks += 1  # part of this chunk's data is there
                    pos = cut
            break
        chunks += 1
        pos = end
        if ctype == b"IEND":
            details.update(chunks=chunks, crc_ok=True)
            return _Verdict(pos - off, COMPLETE, details)
    return _Verdict(pos - off, PARTIAL if chunks > 1 else HEADER_ONLY, details)


def _sqlite(ctx: _Ctx, off: int) -> _Verdict | None:
    src = ctx.src
    h = src.read(off, 112)
    if len(h) < 108 or h[:16] != b"SQLite format 3\0":
        return None
    page = struct.unpack_from(">H", h, 16)[0]
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1) or h[18] not in (1, 2) or h[19] not in (1, 2):
        return None
    if h[21:24] != b"\x40\x20\x20" or h[20] >= page:
        return None
    change, npages = struct.unpack_from(">II", h, 24)
    freelist = struct.unpack_from(">I", h, 36)[0]
    schema = struct.unpack_from(">I", h, 44)[0]
    encoding = struct.unpack_from(">I", h, 56)[0]
    valid_for = struct.unpack_from(">I", h, 92)[0]
    if schema > 4 or encoding > 3:
        return None
    btree = h[100]
    details: dict[str, Any] = {"page_size": page, "pages": npages, "freelist_pages": freelist}
    if btree not in (0x0D, 0x05):
        details["failed"] = "page 1 is not a table b-tree page"
        return _Verdict(100, HEADER_ONLY, details)
    ncells = struct.unpack_from(">H", h, 103)[0]
    ptrs = src.read(off + (112 if btree == 0x05 else 108), 2 * ncells)
    cells = [struct.unpack_from(">H", ptrs, 2 * i)[0] for i in range(len(ptrs) // 2)]
    if any(c < 100 or c >= page for c in cells):
        details["failed"] = "page 1 cell pointers outside the page"
        return _Verdict(page, HEADER_ONLY, details)
    details["schema_entries"] = ncells
    if not npages or valid_for != change:
        details["failed"] = "in-header database size not valid (legacy writer): one page carved"
        return _Verdict(page, HEADER_ONLY, details)
    length = page * npages
    if off + length > ctx.bound:
        details["failed"] = "database beyond the bound (truncated or hostile page count)"
        return _Verdict(max(page, min(ctx.bound, src.size) - off), PARTIAL, details)
    return _Verdict(length, COMPLETE, details)


# ---- validators: text formats --------------------------------------------------------------------

_NONTEXT = re.compile(rb"[^\t\n\r\x0c\x1b\x20-\x7e\x80-\xff]")


def _text_extent(ctx: _Ctx, off: int, bound_len: int) -> tuple[int, str]:
    """(length, how it ended) of the printable text at OFF: "zero fill" when it ends at a NUL
    followed by zeros to the end of its block; "binary" at other non-text bytes; "range end"
    when it runs into the end of the scanned range (allocated space); "bound"."""
    src = ctx.src
    end_limit = min(off + bound_len, ctx.bound, ctx.range_end)
    for p, piece in src.pieces(off, end_limit, 1 << 16):
        m = _NONTEXT.search(piece)
        if m:
            at = p + m.start()
            if piece[m.start()] == 0 and _zero_tail(src, at, ctx.grid):
                return at - off, "zero fill"
            return at - off, "binary"
    if end_limit == ctx.range_end and end_limit < ctx.bound:
        return end_limit - off, "range end"
    return end_limit - off, "bound"


def _text(ctx: _Ctx, off: int, length: int) -> str:
    return ctx.src.read(off, length).decode("utf-8", "replace")


_SHEBANG = re.compile(rb"#! ?(/[\w/.+-]+)(?:[ \t]+([^\s]+))?[^\n]{0,200}\n")


def _script(ctx: _Ctx, off: int) -> _Verdict | None:
    head = ctx.src.read(off, 256)
    m = _SHEBANG.match(head)
    if not m:
        return None
    interp = m[1].decode()
    base = os.path.basename(interp)
    if base == "env" and m[2]:
        base = os.path.basename(m[2].decode())
    length, how = _text_extent(ctx, off, MAX_LENGTH["script"])
    if length <= m.end():
        return None
    kind = (
        "python"
        if base.startswith("python")
        else "shell"
        if base in ("sh", "bash", "dash", "zsh", "ksh", "ash", "busybox")
        else base
    )
    details: dict[str, Any] = {"subtype": kind, "interpreter": interp, "ended_by": how}
    if kind == "python" and length <= 4 << 20:
        try:
            compile(_text(ctx, off, length), "<carved>", "exec", dont_inherit=True)
            details["syntax_ok"] = True
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            details["syntax_ok"] = False
            details["syntax_error"] = str(exc)[:200]
    confidence = COMPLETE if how == "zero fill" and details.get("syntax_ok", True) else PARTIAL
    return _Verdict(length, confidence, details)


def _json(ctx: _Ctx, off: int) -> _Verdict | None:
    head = ctx.src.read(off, 2)
    if head[:1] not in (b"{", b"[") or head[1:2] not in (b'"', b"\n", b" ", b"{", b"[", b"\r", b"\t"):
        return None
    length, how = _text_extent(ctx, off, MAX_LENGTH["json"])
    if length < 2:
        return None
    text = _text(ctx, off, length)
    lines = text.split("\n")
    details: dict[str, Any] = {"ended_by": how}
    try:
        first = json.loads(lines[0])
    except (ValueError, RecursionError):
        first = None
    if isinstance(first, (dict, list)) and len(lines) > 1:
        good = bad = 0
        last_bad = False
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                json.loads(line)
                good += 1
                last_bad = False
            except (ValueError, RecursionError):
                bad += 1
                last_bad = i == len(lines) - 1
        keys = set(first) if isinstance(first, dict) else set()
        details.update(
            format="json-lines",
            lines=good + bad,
            parsed=good,
            subtype="docker-json-log" if {"log", "stream", "time"} <= keys else None,
        )
        ok = bad == 0 and how == "zero fill"
        if bad == 1 and last_bad:
            details["failed"] = "last line cut"
        elif bad:
            details["failed"] = f"{bad} lines do not parse"
        if good < 1 or good < bad:
            return None
        return _Verdict(length, COMPLETE if ok else PARTIAL, details)
    try:
        json.loads(text)
        details["format"] = "json"
        return _Verdict(length, COMPLETE if how == "zero fill" else PARTIAL, details)
    except (ValueError, RecursionError) as exc:
        pos = getattr(exc, "pos", 0)
        if length >= 64 and pos >= len(text.rstrip()) - 1:
            details.update(format="json", failed="document cut")
            return _Verdict(length, PARTIAL, details)
    return None


_TS = re.compile(
    rb"(?:\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"  # ISO 8601 / RFC 3339
    rb"|\[\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"
    rb"|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d"  # syslog
    rb"|<\d{1,3}>\d? ?(?:\d{4}-|[A-Z][a-z]{2} )"  # syslog with priority
    rb"|\[ *\d+\.\d{6}\]"  # dmesg
    rb"|[\w.:-]{1,64} \S{1,64} \S{1,64} \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d"  # access log
    rb"|time=\"?\d{4}-\d\d-\d\d"  # logfmt (docker, containerd)
    rb"|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6}"  # klog (kubelet)
    rb")"
)


def _log(ctx: _Ctx, off: int) -> _Verdict | None:
    head = ctx.src.read(off, 200)
    if not _TS.match(head):
        return None
    length, how = _text_extent(ctx, off, MAX_LENGTH["log"])
    if length < 16:
        return None
    raw = ctx.src.read(off, length)
    lines = [ln for ln in raw.split(b"\n") if ln.strip()]
    stamped = sum(1 for ln in lines if _TS.match(ln))
    cont = sum(1 for ln in lines if ln[:1] in (b" ", b"\t"))
    if stamped < 2 and len(lines) > 1:
        return None
    ratio = (stamped + cont) / max(1, len(lines))
    if ratio < 0.5:
        return None
    details = {"lines": len(lines), "timestamped": stamped, "ended_by": how}
    ok = how == "zero fill" and ratio >= 0.8
    return _Verdict(length, COMPLETE if ok else PARTIAL, details)


# ---- signatures --------------------------------------------------------------------------------

#: (type, magic, offset of the magic in the file) searched at any offset
_MAGICS: list[tuple[str, bytes, int]] = [
    ("elf", b"\x7fELF", 0),
    ("gzip", b"\x1f\x8b\x08", 0),
    ("zip", b"PK\x03\x04", 0),
    ("tar", b"ustar", 257),
    ("pdf", b"%PDF-", 0),
    ("jpeg", b"\xff\xd8\xff", 0),
    ("png", _PNG_SIG, 0),
    ("sqlite", b"SQLite format 3\0", 0),
]
_OVERLAP = 1024
#: text types probed at block starts: first byte -> types
_TEXT_FIRST: dict[int, tuple[str, ...]] = {
    ord("#"): ("script",),
    ord("{"): ("json",),
    ord("["): ("json", "log"),
}
for _c in b"0123456789":
    _TEXT_FIRST[_c] = ("log",)
for _c in b"JFMASONDIWEt<":
    _TEXT_FIRST[_c] = ("log",)
for _c in b"abcdefghijklmnopqrsuvwxyzBCGHKLPQRTUVXYZ":  # access logs start with a host name
    _TEXT_FIRST.setdefault(_c, ("log",))

VALIDATORS: dict[str, Callable[[_Ctx, int], _Verdict | None]] = {
    "elf": _elf,
    "script": _script,
    "gzip": _gzip,
    "zip": _zip,
    "tar": _tar,
    "pdf": _pdf,
    "jpeg": _jpeg,
    "png": _png,
    "sqlite": _sqlite,
    "json": _json,
    "log": _log,
}


def normalise_types(types) -> tuple[str, ...]:
    """Type names (aliases accepted: jar, jpg, shell, python, text ...) -> TYPES members."""
    if not types:
        return TYPES
    out = []
    for t in types:
        for name in str(t).split(","):
            name = name.strip().lower()
            if not name:
                continue
            name = ALIASES.get(name, name)
            if name not in TYPES:
                raise ValueError(f"unknown carving type {name!r} (types: {', '.join(TYPES)})")
            if name not in out:
                out.append(name)
    return tuple(out)


# ---- the space to scan -------------------------------------------------------------------------


def free_ranges(read, fs_offset: int) -> tuple[list[tuple[int, int]], int, dict[str, Any]]:
    """Unallocated byte ranges (absolute, merged) of the ext2/3/4 filesystem at FS_OFFSET, from the
    block bitmap of every group; also the block size and a description."""
    from pensieve.evidence.disk import ExtInodes

    ext = ExtInodes(read, fs_offset)
    sb = read(fs_offset + 1024, 1024)
    blocks = struct.unpack_from("<I", sb, 4)[0]
    if ext.incompat & 0x80:
        blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
    free_count = struct.unpack_from("<I", sb, 12)[0]
    bs = ext.block_size
    bpg = ext.blocks_per_group
    first = ext.first_data_block
    groups = (blocks - first + bpg - 1) // bpg
    runs: list[tuple[int, int]] = []

    def add(b0: int, b1: int) -> None:
        s, e = fs_offset + b0 * bs, fs_offset + b1 * bs
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))

    uninit = 0
    for g in range(groups):
        block, index = ext._desc_block(g)
        desc = read(fs_offset + block * bs + index * ext.desc_size, ext.desc_size)
        if len(desc) < 32:
            raise ValueError(f"group descriptor {g} beyond the image")
        bitmap = struct.unpack_from("<I", desc, 0)[0]
        if ext.desc_size >= 64:
            bitmap |= struct.unpack_from("<I", desc, 0x20)[0] << 32
        flags = struct.unpack_from("<H", desc, 0x12)[0]
        g0 = first + g * bpg
        n = min(bpg, blocks - g0)
        if flags & 0x2:  # BLOCK_UNINIT: nothing allocated but the group's own metadata
            uninit += 1
            add(g0, g0 + n)
            continue
        bits = read(fs_offset + bitmap * bs, (n + 7) // 8)
        for m in re.finditer(rb"\x00+|[^\xff]", bits):
            i = m.start()
            if m.group()[0] == 0:
                b0, b1 = i * 8, m.end() * 8
                add(g0 + b0, g0 + min(b1, n))
            else:
                byte = m.group()[0]
                for bit in range(8):
                    k = i * 8 + bit
                    if k < n and not byte >> bit & 1:
                        add(g0 + k, g0 + k + 1)
    info = {
        "offset": fs_offset,
        "block_size": bs,
        "blocks": blocks,
        "groups": groups,
        "uninit_groups": uninit,
        "free_blocks_superblock": free_count,
        "free_blocks_bitmaps": sum(e - s for s, e in runs) // bs,
    }
    return runs, bs, info


# ---- block owners (the journal-recovery hook) ----------------------------------------------------

BlockOwners = Callable[[int], "tuple[int, str | None] | None"]


def owners_from_map(block_map: Mapping[int, tuple[int, str | None]]) -> BlockOwners:
    """A block-owner lookup from a mapping {filesystem block: (inode, path or None)}."""
    return block_map.get


def journal_block_owners(evidence) -> BlockOwners | None:
    """Block owners from the ext4 journal of EVIDENCE's filesystem, when the journal-recovery
    module provides them: ``pensieve.disk.recover.block_owners(evidence)`` returning a mapping
    {block: (inode, path)} or a function block -> (inode, path) | None.  None when not available
    (every carved file is then unattributed)."""
    try:
        from pensieve.disk import recover  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not there (or not importable): no attribution
        return None
    fn = getattr(recover, "block_owners", None)
    if fn is None:
        return None
    owners = fn(evidence)
    if owners is None:
        return None
    return owners.get if isinstance(owners, Mapping) else owners


# ---- the carver --------------------------------------------------------------------------------


class _Space:
    """A scan range [start, end) with the block grid files start on."""

    __slots__ = ("start", "end", "grid", "fs")

    def __init__(self, start: int, end: int, grid: int, fs: int | None) -> None:
        self.start, self.end, self.grid, self.fs = start, end, grid, fs


class Carver:
    """Carve an image: ``for f in Carver(img, ...).run(): ...``; ``.summary`` afterwards.

    IMG is an image object (``read(offset, size)``, ``get_size()``: pensieve's disk image classes,
    or :class:`BufferImage`).  FILESYSTEMS: ``[(offset, evidence or None)]`` of the ext
    filesystems to take allocation from (found from the image when None).  OWNERS: "journal" (the
    default: :func:`journal_block_owners` of each ext filesystem), None (no attribution), or a
    block-owner lookup / mapping {block: (inode, path)} (see :func:`owners_from_map`) for the
    filesystem at byte offset OWNERS_FS (any filesystem when None)."""

    def __init__(
        self,
        img,
        *,
        whole: bool = False,
        types=None,
        out_dir: str | None = None,
        owners: BlockOwners | Mapping | str | None = "journal",
        owners_fs: int | None = None,
        dedupe: bool = True,
        filesystems: list | None = None,
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int = CHUNK,
        max_length: Mapping[str, int] | None = None,
    ) -> None:
        self.img = img
        self.src = _Src(img)
        self.whole = whole
        self.types = normalise_types(types)
        self.out_dir = out_dir
        if isinstance(owners, Mapping):
            owners = owners_from_map(owners)
        self.owners = owners
        self.owners_fs = owners_fs
        self._owner_lookups: dict[int, BlockOwners | None] = {}
        self.dedupe = dedupe
        self.progress = progress
        self.chunk = max(chunk_size, 64 << 10)
        self.max_length = dict(MAX_LENGTH)
        self.max_length.update(max_length or {})
        name = img.describe() if hasattr(img, "describe") else "image"
        self.summary = CarveSummary(image=name, scope="whole" if whole else "unallocated")
        self._filesystems = filesystems
        self._alloc: dict[int, list[tuple[int, int]]] = {}  # fs offset -> free runs
        self._fs_bs: dict[int, int] = {}
        self._fs_ev: dict[int, Any] = {}
        self._dup_index: dict[int, dict[int, list[tuple[int, str]]]] = {}
        self._dup_hash: dict[tuple[int, int], str] = {}
        self._hosts: dict[int, Any] = {}

    # ---- spaces --------------------------------------------------------------------------
    def _find_filesystems(self) -> list[tuple[int, Any, int]]:
        """[(offset, evidence or None, length)] of the filesystems in the image."""
        if self._filesystems is not None:
            out = []
            for off, ev in self._filesystems:
                length = self.src.size - off
                part = getattr(ev, "partition", None)
                if part is not None:
                    length = part.length
                out.append((off, ev, length))
            return out
        out = []
        if isinstance(self.img, BufferImage):
            return out
        from pensieve.evidence.disk import list_partitions

        _vs, parts = list_partitions(self.img)
        if not parts:
            out.append((0, None, self.src.size))
        for p in parts:
            out.append((p.offset, None, p.length))
        return out

    def spaces(self) -> list[_Space]:
        size = self.src.size
        fss = self._find_filesystems()
        spaces: list[_Space] = []
        covered: list[tuple[int, int]] = []
        for off, ev, length in fss:
            end = min(size, off + length)
            head = self.src.read(off, 0x10100)
            from pensieve.evidence.disk import sniff_filesystem

            kind = sniff_filesystem(head)
            if kind != "ext2/3/4":
                covered.append((off, end))
                if kind is None and not any(head):
                    kind = "zero-filled"
                lone = self._filesystems is None and len(fss) == 1 and kind in (None, "zero-filled")
                if self.whole or lone:
                    if not self.whole:
                        self.summary.problems.append(
                            Problem(
                                self.summary.image, "no filesystem recognised: the whole image is scanned"
                            )
                        )
                    spaces.append(_Space(off, end, 512, None))
                else:
                    self.summary.problems.append(
                        Problem(
                            self.summary.image,
                            f"{kind or 'unknown data'} at offset {off}: allocation unknown, not scanned "
                            "(--all scans it)",
                        )
                    )
                continue
            try:
                runs, bs, info = free_ranges(self.src.read, off)
            except (ValueError, struct.error, OSError) as exc:
                self.summary.problems.append(
                    Problem(
                        self.summary.image,
                        f"ext filesystem at offset {off}: block bitmaps unreadable ({exc})",
                    )
                )
                covered.append((off, end))
                if self.whole:
                    spaces.append(_Space(off, end, 512, None))
                continue
            fs_end = min(end, off + info["blocks"] * bs)
            covered.append((off, fs_end))
            self._alloc[off] = runs
            self._fs_bs[off] = bs
            if ev is not None and hasattr(ev, "walk"):
                self._fs_ev[off] = ev
            self.summary.filesystems.append(info)
            if self.whole:
                spaces.append(_Space(off, fs_end, bs, off))
            else:
                spaces.extend(_Space(s, min(e, fs_end), bs, off) for s, e in runs if s < fs_end)
        # what no filesystem covers: partition gaps, the table, space after the last partition
        pos = 0
        for s, e in sorted(covered) + [(size, size)]:
            if s > pos:
                spaces.append(_Space(pos, s, 512, None))
            pos = max(pos, e)
        spaces.sort(key=lambda sp: sp.start)
        return spaces

    def _allocated(self, fs: int | None, offset: int) -> bool:
        if fs is None:
            return False
        runs = self._alloc.get(fs)
        if runs is None:
            return False
        i = bisect.bisect_right(runs, (offset, float("inf"))) - 1
        return not (i >= 0 and runs[i][0] <= offset < runs[i][1])

    # ---- scanning ------------------------------------------------------------------------
    def run(self) -> Iterator[CarvedFile]:
        t0 = time.perf_counter()
        spaces = self.spaces()
        total = sum(sp.end - sp.start for sp in spaces)
        self.summary.image_bytes = self.src.size
        self.summary.ranges = len(spaces)
        magics = [(t, m, mo) for t, m, mo in _MAGICS if t in self.types]
        text_types = {t for t in ("script", "json", "log") if t in self.types}
        text_first = {b: tuple(t for t in ts if t in text_types) for b, ts in _TEXT_FIRST.items()}
        text_first = {b: ts for b, ts in text_first.items() if ts}
        covered_until = 0
        done = 0
        last_report = 0.0
        for sp in spaces:
            lo = max(
                sp.start, covered_until - covered_until % sp.grid if covered_until > sp.start else sp.start
            )
            while lo < sp.end:
                hi = min(lo + self.chunk, sp.end)
                data = self.src.read(lo, hi - lo + _OVERLAP)
                hits: list[tuple[int, str]] = []
                for t, magic, moff in magics:
                    i = data.find(magic, moff)
                    while i >= 0:
                        start = lo + i - moff
                        if start >= hi:
                            break
                        if start >= sp.start:
                            hits.append((start, t))
                        i = data.find(magic, i + 1)
                if text_first:
                    g = sp.grid
                    first = (-(lo - (sp.fs or 0))) % g
                    n = hi - lo
                    for i in range(first, n, g):
                        ts = text_first.get(data[i])
                        if ts is not None:
                            for t in ts:
                                hits.append((lo + i, t))
                del data
                hits.sort()
                for start, t in hits:
                    self.summary.hits[t] = self.summary.hits.get(t, 0) + 1
                    if start < covered_until:
                        self.summary.inside_carved += 1
                        continue
                    found = self._carve_one(sp, start, t)
                    if found is None:
                        continue
                    if found.confidence != HEADER_ONLY:
                        covered_until = max(covered_until, start + found.length)
                    if found.validation.get("duplicate_of") is None:
                        yield found
                done += hi - lo
                self.summary.scanned_bytes += hi - lo
                lo = hi
                if covered_until > lo:  # skip what a complete carve covers (its hits are inside it)
                    skip = min(sp.end, covered_until - (covered_until - (sp.fs or 0)) % sp.grid)
                    if skip > lo:
                        done += skip - lo
                        lo = skip
                if self.progress is not None and time.perf_counter() - last_report > 0.2:
                    last_report = time.perf_counter()
                    self.progress(done, total)
        if self.progress is not None:
            self.progress(total, total)
        self.summary.seconds = round(time.perf_counter() - t0, 3)

    def _carve_one(self, sp: _Space, start: int, t: str) -> CarvedFile | None:
        bound = min(self.src.size, start + self.max_length[t])
        ctx = _Ctx(self.src, bound, sp.end, sp.grid)
        try:
            verdict = VALIDATORS[t](ctx, start)
        except (struct.error, ValueError, IndexError, OverflowError, MemoryError, RecursionError) as exc:
            verdict = None
            self.summary.problems.append(
                Problem(self.summary.image, f"{t} at {start}: validator failed: {exc}")
            )
        if verdict is None or verdict.length <= 0:
            self.summary.rejected[t] = self.summary.rejected.get(t, 0) + 1
            return None
        length = min(verdict.length, self.src.size - start)
        sha = hashlib.sha256()
        for _p, piece in self.src.pieces(start, start + length):
            sha.update(piece)
        digest = sha.hexdigest()
        fs = sp.fs
        bs = self._fs_bs.get(fs) if fs is not None else None
        rec = CarvedFile(
            path=None,
            container=None,
            layer=None,
            method="carve",
            confidence=verdict.confidence,
            sha256=digest,
            offset=start,
            length=length,
            type=verdict.type or t,
            validation=verdict.details,
            fs_offset=fs,
            block=(start - fs) // bs if bs else None,
            allocated=self.whole and self._allocated(fs, start),
        )
        if self.dedupe and fs is not None:
            dup = self._duplicate_of(fs, length, digest)
            if dup is not None:
                rec.validation["duplicate_of"] = dup
                self.summary.duplicates.append(
                    {"offset": start, "type": t, "sha256": digest, "allocated_path": dup}
                )
                return rec
        self._attribute(rec)
        if self.out_dir is not None:
            rec.output = self._write(rec)
        self.summary.carved[rec.type] = self.summary.carved.get(rec.type, 0) + 1
        self.summary.confidence[rec.confidence] = self.summary.confidence.get(rec.confidence, 0) + 1
        return rec

    # ---- duplicates of allocated files -------------------------------------------------------
    def _evidence(self, fs: int):
        ev = self._fs_ev.get(fs)
        if ev is None and fs not in self._fs_ev:
            from pensieve.evidence.disk import DiskImageEvidence

            try:
                ev = DiskImageEvidence(self.img, fs)
            except Exception as exc:  # noqa: BLE001 - any TSK failure: no dedupe for it, said once
                self.summary.problems.append(
                    Problem(
                        self.summary.image,
                        f"filesystem at {fs}: files not listed, no duplicate check ({exc})",
                    )
                )
                ev = None
            self._fs_ev[fs] = ev
        return ev

    def _size_index(self, fs: int) -> dict[int, list[tuple[int, str]]]:
        index = self._dup_index.get(fs)
        if index is not None:
            return index
        index = {}
        ev = self._evidence(fs)
        if ev is not None:
            for top, entries in ev.walk("/"):
                for e in entries:
                    st = e.stat
                    if st.is_file and st.size:
                        index.setdefault(st.size, []).append((st.ino, f"{top.rstrip('/')}/{e.name}"))
        self._dup_index[fs] = index
        return index

    def _duplicate_of(self, fs: int, length: int, digest: str) -> str | None:
        same = self._size_index(fs).get(length)
        if not same:
            return None
        ev = self._fs_ev.get(fs)
        for ino, path in same:
            key = (fs, ino)
            h = self._dup_hash.get(key)
            if h is None:
                try:
                    with ev.open(path) as fh:
                        h = hashlib.file_digest(fh, "sha256").hexdigest()
                except Exception:  # noqa: BLE001 - an unreadable allocated file is just not a match
                    h = ""
                self._dup_hash[key] = h
            if h == digest:
                return path
        return None

    # ---- attribution ---------------------------------------------------------------------
    def _owners_for(self, fs: int) -> BlockOwners | None:
        if fs in self._owner_lookups:
            return self._owner_lookups[fs]
        lookup = None
        if self.owners == "journal":
            ev = self._evidence(fs)
            if ev is not None:
                try:
                    lookup = journal_block_owners(ev)
                except Exception as exc:  # noqa: BLE001 - the journal is evidence too: said, not fatal
                    self.summary.problems.append(
                        Problem(
                            self.summary.image, f"filesystem at {fs}: journal block owners unreadable ({exc})"
                        )
                    )
        elif callable(self.owners) and (self.owners_fs is None or self.owners_fs == fs):
            lookup = self.owners
        self._owner_lookups[fs] = lookup
        return lookup

    def _attribute(self, rec: CarvedFile) -> None:
        if rec.block is None or rec.fs_offset is None or not self.owners:
            return
        owners = self._owners_for(rec.fs_offset)
        if owners is None:
            return
        bs = self._fs_bs[rec.fs_offset]
        first = owners(rec.block)
        if not first:
            return
        ino, path = first
        last_block = rec.block + max(0, rec.length - 1) // bs
        tail = owners(last_block) if last_block != rec.block else first
        rec.inode = ino
        rec.path = path
        rec.attribution = "block-owner"
        rec.validation["owner_covers_last_block"] = bool(tail and tail[0] == ino)
        if path:
            self._layer_of(rec)

    def _layer_of(self, rec: CarvedFile) -> None:
        ev = self._evidence(rec.fs_offset)
        if ev is None or "/" not in (rec.path or ""):
            return
        host = self._hosts.get(rec.fs_offset, False)
        if host is False:
            host = None
            try:
                from pensieve.engines.docker import DockerHost

                host = DockerHost(ev)
                if not host.roots:
                    host = None
            except Exception:  # noqa: BLE001 - no data root on this filesystem: no layers
                host = None
            self._hosts[rec.fs_offset] = host
        if host is None:
            return
        try:
            from pensieve.filesystem.whence import whence

            a = whence(host, rec.path)
        except Exception:  # noqa: BLE001 - a path outside any data root
            return
        rec.layer = a.layer
        rec.container = a.containers[0] if a.containers else None

    # ---- output ----------------------------------------------------------------------------
    def _write(self, rec: CarvedFile) -> str:
        ext = "py" if rec.validation.get("subtype") == "python" else EXTENSIONS.get(rec.type, "bin")
        if rec.validation.get("subtype") == "jar":
            ext = "jar"
        name = f"{rec.offset:012d}.{ext}"
        if rec.confidence != COMPLETE:
            name = f"{rec.offset:012d}.{rec.confidence}.{ext}"
        dest = os.path.join(self.out_dir, name)
        with open(dest, "xb") as fh:
            for _p, piece in self.src.pieces(rec.offset, rec.offset + rec.length):
                fh.write(piece)
        return dest


def check_out_dir(out_dir: str, image_files: list[str]) -> None:
    """ValueError when OUT_DIR is an image file, the directory holding one (carved files are
    not written beside the evidence), inside an image path, or an existing non-directory."""
    real = os.path.realpath(out_dir)
    for f in image_files:
        rf = os.path.realpath(f)
        if real == rf or rf.startswith(real.rstrip("/") + "/") and os.path.dirname(rf) == real:
            raise ValueError(f"refusing to write carved files over or beside the evidence: {out_dir}")
        if real.startswith(rf + "/"):
            raise ValueError(f"refusing to write inside the evidence: {out_dir}")
    if os.path.exists(real) and not os.path.isdir(real):
        raise ValueError(f"not a directory: {out_dir}")


def carve(source, **kwargs) -> tuple[list[CarvedFile], CarveSummary]:
    """Carve SOURCE (an image path or specification ``disk.img@2`` / ``@offset=N``, an image
    object, or bytes); keyword arguments as for :class:`Carver`.  Returns (files, summary)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        kwargs.setdefault("whole", True)
        c = Carver(BufferImage(bytes(source)), **kwargs)
        return list(c.run()), c.summary
    if isinstance(source, str):
        img, filesystems = open_for_carving(source)
        try:
            if kwargs.get("out_dir"):
                check_out_dir(kwargs["out_dir"], list(getattr(img, "files", [])))
                os.makedirs(kwargs["out_dir"], exist_ok=True)
            c = Carver(img, filesystems=filesystems, **kwargs)
            return list(c.run()), c.summary
        finally:
            img.close()
    c = Carver(source, **kwargs)
    return list(c.run()), c.summary


def open_for_carving(source: str):
    """(image object, filesystems or None) for SOURCE: ``disk.img@N`` / ``@offset=N`` restrict the
    scan to that partition or filesystem; a plain image is scanned partition by partition; a file
    that is not a disk image is scanned whole."""
    from pensieve.evidence.disk import list_partitions, open_image, split_spec

    base, number, offset = split_spec(source)
    img = open_image(base)
    try:
        if offset is not None:
            return img, [(offset, None)]
        if number is not None:
            _vs, parts = list_partitions(img)
            chosen = next((p for p in parts if p.number == number), None)
            if chosen is None:
                from pensieve.evidence.disk import ImageError

                raise ImageError(f"{base} has no partition {number}")
            return img, [(chosen.offset, _PartitionOnly(chosen))]
    except BaseException:
        img.close()
        raise
    return img, None


class _PartitionOnly:
    """Stands for a partition's evidence until it is needed (carries only its length)."""

    def __init__(self, partition) -> None:
        self.partition = partition
