"""tar-split records (github.com/vbatts/tar-split), as Docker keeps one per image layer.

``image/<driver>/layerdb/sha256/<chain-id>/tar-split.json.gz`` is a gzip of JSON lines, one
``storage.Entry`` each, in stream order::

    {"type": 2, "payload": "<base64>", "position": n}          # SegmentType: raw tar bytes
    {"type": 1, "name": "etc/passwd", "size": 123,
     "payload": "<base64 of 8 bytes>", "position": n}          # FileType: one file's payload

Segments hold everything of the tar stream but the file payloads: the padding of the previous
file, PAX / GNU long-name headers, the header block, and at the end the two zero blocks plus
whatever followed them.  A file entry stands for ``size`` payload bytes read from the layer's
directory at ``name``; its payload is the CRC-64 (ISO polynomial, Go ``hash/crc64`` semantics:
reflected, init and final xor all ones, sum big-endian) of those bytes, or null when size is 0.
``name_raw`` (base64) replaces ``name`` when the name is not UTF-8.  Docker rebuilds a layer's tar
stream by writing segments verbatim and file bytes in between (tar-split asm.NewOutputTarStream,
moby layer.layerStore.assembleTarTo); its sha256 is the layer's diff id.

This module reads the record as a stream (one line at a time) and parses the tar headers held in
the segments (ustar, GNU, PAX), so that a verifier can compare each file's recorded metadata
with what the layer directory holds.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import struct
import zlib
from binascii import a2b_base64 as _a2b_base64
from collections.abc import Iterator
from typing import BinaryIO
from zlib import adler32 as _adler32

from pensieve.records.core import Timestamp, field, record

SEGMENT = 2
FILE = 1

#: one JSON line longer than this is not a tar-split entry (a header with huge PAX records
#: still fits many times over)
MAX_LINE = 64 << 20


class TarSplitError(ValueError):
    """The record is truncated, corrupt or not a tar-split record."""


# ---- CRC-64 ---------------------------------------------------------------------------------

_ISO_REVERSED = 0xD800000000000000  # x^64 + x^4 + x^3 + x + 1, reflected
_MASK = 0xFFFFFFFFFFFFFFFF


def _make_table(poly: int) -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table(_ISO_REVERSED)


def crc64_iso_py(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Go's ``crc64.Update(crc, crc64.MakeTable(crc64.ISO), data)``, table-driven, pure Python.

    Chainable: ``crc64_iso_py(b, crc64_iso_py(a)) == crc64_iso_py(a + b)``.  About 6 MB/s;
    ``crc64_iso`` uses a C implementation when one is installed."""
    table = _TABLE
    crc ^= _MASK
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK


def _accelerated():
    try:
        import anycrc  # C (abi3 wheel); "CRC64-GO-ISO" is exactly Go's crc64.ISO
    except ImportError:
        return None
    try:
        model = anycrc.Model("CRC64-GO-ISO")
        calc = model.calc
        if calc(b"123456789") != 0xB90956C775A41001 or calc(b"6789", calc(b"12345")) != 0xB90956C775A41001:
            return None
    except Exception:  # an incompatible anycrc: fall back to the pure version
        return None

    def crc64_iso_c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
        return calc(data, crc) if data else crc

    return crc64_iso_c


crc64_iso = _accelerated() or crc64_iso_py
CRC64_IMPLEMENTATION = "anycrc (C)" if crc64_iso is not crc64_iso_py else "pure Python"


def crc64_bytes(value: int) -> bytes:
    """The 8-byte big-endian sum Go's ``hash.Sum(nil)`` gives (what tar-split stores)."""
    return value.to_bytes(8, "big")


# ---- entries --------------------------------------------------------------------------------


@record
class Entry:
    type: int  # FILE | SEGMENT
    position: int
    payload: bytes | None = None  # segment bytes, or the file's 8-byte CRC-64 (None if size 0)
    name: str | None = None  # file name as text (non-UTF-8 bytes as surrogate escapes)
    name_bytes: bytes | None = None  # file name as the tar header holds it
    size: int = 0


def _b64(value, what: str, position: int) -> bytes | None:
    if value is None:
        return None
    try:
        # strict mode accepts a subset of what b64decode(validate=True) accepts, decoding it the
        # same way, at a fraction of the cost; anything it refuses gets the full check below
        return _a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        pass
    if not isinstance(value, str):
        raise TarSplitError(f"entry {position}: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TarSplitError(f"entry {position}: {what} is not valid base64: {exc}") from None


def parse_line(line: bytes, index: int) -> Entry:
    """One JSON line -> Entry (raises TarSplitError)."""
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise TarSplitError(f"entry {index}: not JSON ({exc})") from None
    return _entry(doc, index)


def _entry(doc, index: int) -> Entry:
    """A decoded JSON line -> Entry (raises TarSplitError)."""
    if type(doc) is not dict:
        raise TarSplitError(f"entry {index}: not a JSON object")
    kind = doc.get("type")
    position = doc.get("position", 0)
    if type(position) is not int:
        raise TarSplitError(f"entry {index}: position is not an integer")
    if kind == SEGMENT:
        payload = doc.get("payload")
        if payload is not None:
            try:  # _b64's first step, inline for the most frequent entry
                payload = _a2b_base64(payload, strict_mode=True)
            except (binascii.Error, ValueError, TypeError):
                payload = _b64(payload, "segment payload", position)
        return Entry(SEGMENT, position, payload or b"")
    if kind == FILE:
        size = doc.get("size", 0)
        if type(size) is not int or size < 0:
            raise TarSplitError(f"entry {index}: file size is not a non-negative integer")
        raw = _b64(doc.get("name_raw"), "name_raw", position)
        if raw:
            name_bytes = raw
        else:
            name = doc.get("name", "")
            if not isinstance(name, str):
                raise TarSplitError(f"entry {index}: name is not a string")
            name_bytes = name.encode("utf-8", "surrogateescape")
        payload = _b64(doc.get("payload"), "file checksum", position)
        if size > 0 and (payload is None or len(payload) != 8):
            raise TarSplitError(f"entry {index}: file {name_bytes!r} of {size} bytes has no 8-byte CRC-64")
        return Entry(
            FILE,
            position,
            payload,
            name_bytes.decode("utf-8", "surrogateescape"),
            name_bytes,
            size,
        )
    raise TarSplitError(f"entry {index}: unknown entry type {kind!r}")


#: decompressed bytes read from the record at a time (lines are cut from these blocks)
_READ = 1 << 20
#: the C scanner behind json.loads, called at each line start of a decoded block (the same
#: parse, without json.loads' per-call encoding detection and wrappers)
_scan = json.JSONDecoder().scan_once


def _blocks(stream: BinaryIO) -> Iterator[list[dict | bytes]]:
    """The record's lines, a list per block read: a JSON object (dict) for each regular line, the
    raw line (bytes) for anything else.

    A line is regular when it starts with ``{`` and the scanner ends exactly at its newline: then
    the object is what ``json.loads(line)`` returns.  Every other line (blank, odd whitespace,
    not JSON, spanning lines, the last line without a newline, a block that is not UTF-8) is
    handed back raw for the line-by-line rules of iter_entries."""
    carry = b""
    scan = _scan
    while True:
        block = stream.read(_READ)
        if not block:
            if carry:
                yield [carry]
            return
        data = carry + block if carry else block
        if carry and data.find(b"\n") >= MAX_LINE:  # the carried line grew too long
            yield [data[:MAX_LINE]]
            return
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        items: list[dict | bytes] = []
        if cut:
            try:
                text = str(memoryview(data)[:cut], "utf-8", "surrogatepass")
            except UnicodeDecodeError:
                text = None
            if text is None:
                pos = 0
                while pos < cut:
                    nl = data.index(b"\n", pos) + 1
                    items.append(data[pos:nl])
                    pos = nl
            else:
                add = items.append
                pos = 0
                size = len(text)  # characters: fewer than cut when not ASCII
                find = text.find
                while pos < size:
                    nl = find("\n", pos)
                    if text[pos] == "{":
                        try:
                            doc, end = scan(text, pos)
                        except (StopIteration, ValueError):
                            end = -1
                        if end == nl:
                            add(doc)
                            pos = nl + 1
                            continue
                    add(text[pos : nl + 1].encode("utf-8", "surrogatepass"))
                    pos = nl + 1
        if len(carry) >= MAX_LINE:
            items.append(carry[:MAX_LINE])
            yield items
            return
        yield items


def iter_entries(fh: BinaryIO, gzipped: bool = True) -> Iterator[Entry]:
    """Entries of a tar-split record, streamed one line at a time.

    Raises TarSplitError on a truncated gzip stream, a line that is not an entry, positions out
    of order, or a file name given twice (tar-split's own unpacker refuses duplicates)."""
    stream = gzip.GzipFile(fileobj=fh, mode="rb") if gzipped else fh
    seen: set[bytes] = set()
    index = 0
    try:
        for items in _blocks(stream):
            for item in items:
                if type(item) is dict:
                    entry = _entry(item, index)
                else:
                    if not item.endswith(b"\n"):
                        if len(item) >= MAX_LINE:
                            raise TarSplitError(f"entry {index}: longer than {MAX_LINE} bytes")
                        if not item.strip():
                            return
                    elif not item.strip():
                        continue
                    entry = parse_line(item, index)
                if entry.position != index:
                    raise TarSplitError(f"entry {index} says position {entry.position}: entries out of order")
                if entry.type == FILE:
                    key = _clean(entry.name_bytes or b"")
                    if key in seen:
                        raise TarSplitError(f"entry {index}: duplicate file path {entry.name!r}")
                    seen.add(key)
                index += 1
                yield entry
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise TarSplitError(f"truncated or corrupt gzip stream after {index} entries: {exc}") from None


def _clean(name: bytes) -> bytes:
    """filepath.Clean-like key (duplicate detection, path matching)."""
    # (find, not `in`: `bytes in bytes` first tries the operand as an int and pays an exception)
    if name.find(b"//") < 0 and name.find(b"/.") < 0 and not name.startswith(b"."):  # nothing to clean
        return name.strip(b"/")
    parts = []
    for p in name.split(b"/"):
        if p in (b"", b"."):
            continue
        if p == b"..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return b"/".join(parts)


def clean_name(name: bytes) -> bytes:
    """The path a tar member name designates, relative, without ``./`` and trailing slash."""
    return _clean(name)


# ---- tar headers ----------------------------------------------------------------------------

BLOCK = 512


@record
class TarHeader:
    """One tar member's header, with PAX and GNU long-name records applied."""

    name: bytes
    typeflag: bytes  # b"0" file, b"1" hard link, b"2" symlink, b"3" char, b"4" block, b"5" dir, b"6" fifo
    mode: int
    uid: int
    gid: int
    size: int
    mtime: Timestamp  # integer nanoseconds since the epoch (PAX fractions kept exactly)
    linkname: bytes = b""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    pax: dict[str, bytes] = field(default_factory=dict)
    format: str = "ustar"  # ustar | gnu | pax | v7

    @property
    def kind(self) -> str:
        return _KIND.get(self.typeflag, "unknown")


_NS = 1_000_000_000


def _pax_time_ns(value: bytes) -> int:
    """A PAX time record ("1700000000.123456789", POSIX pax ``mtime``) as integer nanoseconds,
    without a float's rounding."""
    text = value.strip().decode("ascii")
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(value)
    return sign * (int(whole) * _NS + int((frac + "000000000")[:9]))


_KIND = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "char",
    b"4": "block",
    b"5": "dir",
    b"6": "fifo",
}


def cstr(raw: bytes) -> bytes:
    return raw.partition(b"\0")[0]


def number(raw: bytes) -> int:
    """Octal (space/NUL padded) or GNU base-256 numeric field."""
    # the usual field: octal digits, then NULs and spaces (or nothing at all); a NUL before
    # the digits end, a base-256 field or anything odd fails here and gets the full rules
    text = raw.rstrip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return _number_full(raw)


def _number_full(raw: bytes) -> int:
    if raw and raw[0] & 0x80:
        value = int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
        if raw[0] & 0x40:  # negative base-256
            value -= 1 << (8 * len(raw) - 1)
        return value
    text = cstr(raw).strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarSplitError(f"bad numeric header field {raw!r}") from None


def checksum_ok(block: bytes) -> bool:
    want = number(block[148:156])
    # the unsigned byte sum, with the checksum field counted as spaces: adler32's low half is
    # 1 + the byte sum mod 65521, exact for 256 bytes (at most 65280)
    unsigned = (_adler32(block[:256]) & 0xFFFF) + (_adler32(block[256:]) & 0xFFFF) - 2
    return want == unsigned - sum(block[148:156]) + 8 * 32


def pax_records(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarSplitError("bad PAX record length") from None
        if length <= 0 or pos + length > len(data):
            raise TarSplitError("PAX record overruns its header")
        record = data[space + 1 : pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise TarSplitError("malformed PAX record")
        key, value = record[:-1].split(b"=", 1)
        out[key] = value
        pos += length
    return out


_ZERO_BLOCK = bytes(BLOCK)
#: the fields of a header block, to its prefix: name mode uid gid size mtime chksum typeflag
#: linkname magic+version uname gname devmajor devminor prefix
_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s")
_EXTENDED = b"xgLK"  # typeflags of blocks that only carry data for the next header


def block_header(
    block: bytes, fmt: str | None, long_name: bytes | None, long_link: bytes | None
) -> TarHeader:
    """The TarHeader of a member's header BLOCK; FMT, LONG_NAME and LONG_LINK come from the
    extended blocks before it (None: none said)."""
    magic = block[257:265]
    if fmt is None:
        fmt = "gnu" if magic == b"ustar  \0" else "ustar" if magic[:5] == b"ustar" else "v7"
    name = cstr(block[0:100])
    if magic[:6] == b"ustar\0":
        prefix = cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    if long_name is not None:
        name = long_name
    linkname = long_link if long_link is not None else cstr(block[157:257])
    return TarHeader(
        name=name,
        typeflag=block[156:157],
        mode=number(block[100:108]),
        uid=number(block[108:116]),
        gid=number(block[116:124]),
        size=number(block[124:136]),
        mtime=number(block[136:148]) * _NS,
        linkname=linkname,
        uname=cstr(block[265:297]).decode("utf-8", "replace"),
        gname=cstr(block[297:329]).decode("utf-8", "replace"),
        devmajor=number(block[329:337]) if fmt != "v7" else 0,
        devminor=number(block[337:345]) if fmt != "v7" else 0,
        format=fmt,
    )


def apply_pax(hdr: TarHeader, pax: dict[bytes, bytes]) -> None:
    """PAX records override the header block's fields (POSIX pax: path, linkpath, size, uid,
    gid, mtime); SCHILY.xattr.* are extended attributes.  Every record is kept in ``pax``."""
    hdr.pax = {k.decode("utf-8", "replace"): v for k, v in pax.items()}
    for key, value in pax.items():
        if key == b"path":
            hdr.name = value
        elif key == b"linkpath":
            hdr.linkname = value
        elif key in (b"size", b"uid", b"gid"):
            try:
                setattr(hdr, key.decode(), int(value))
            except ValueError:
                raise TarSplitError(f"bad PAX {key.decode()} {value!r}") from None
        elif key == b"mtime":
            try:
                hdr.mtime = _pax_time_ns(value)
            except ValueError:
                raise TarSplitError(f"bad PAX mtime {value!r}") from None
        elif key.startswith(b"SCHILY.xattr."):
            hdr.xattrs[key[len(b"SCHILY.xattr.") :].decode("utf-8", "surrogateescape")] = value


class HeaderParser:
    """Turns the segment bytes of a tar-split record back into tar headers.

    Feed every segment (``feed``); at each file entry call ``header(entry)``, which parses the
    header blocks gathered since the previous file entry, after skipping the previous file's
    padding.  At the end ``finish()`` checks that the record reached the end-of-archive marker.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0  # padding of the previous file payload, at the head of the next segment
        self.end_seen = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def _take_skip(self) -> None:
        if self._skip:
            pad = bytes(self._buf[: self._skip])
            if len(pad) < self._skip or pad.strip(b"\0"):
                raise TarSplitError("file padding is missing or not zero")
            del self._buf[: self._skip]
            self._skip = 0

    def header(self, entry: Entry) -> TarHeader:
        """The tar header of file ENTRY, from the header blocks fed since the previous one."""
        if self._skip:
            self._take_skip()
        buf = self._buf
        if len(buf) == BLOCK and buf[156] not in _EXTENDED:
            hdr = self._plain_header(entry)
            if hdr is not None:
                return hdr
        got = self._header_blocks(entry)
        if isinstance(got, TarHeader):
            return got
        block, pos, pax, long_name, long_link, fmt = got
        if pos != len(buf):
            raise TarSplitError(
                f"{len(buf) - pos} unexpected bytes after the header of file entry {entry.position}"
            )
        del buf[:]
        hdr = block_header(block, fmt, long_name, long_link)
        if pax:
            apply_pax(hdr, pax)
        self._check_entry(hdr, entry)
        return hdr

    def _header_blocks(
        self, entry: Entry
    ) -> tuple[bytes, int, dict[bytes, bytes], bytes | None, bytes | None, str | None] | TarHeader:
        """Walk the extended header blocks (PAX ``x``/``g``, GNU ``L``/``K``) to the member's own
        header block: (that block, the position after it, the PAX records, the GNU long name and
        long link name, the format they imply); for a global PAX header alone, its TarHeader."""
        buf = self._buf
        pos = 0
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        fmt = None
        while True:
            block = bytes(buf) if pos == 0 and len(buf) == BLOCK else bytes(buf[pos : pos + BLOCK])
            if len(block) < BLOCK:
                raise TarSplitError(f"no tar header before file entry {entry.position}")
            if block == _ZERO_BLOCK:
                raise TarSplitError(f"end-of-archive block before file entry {entry.position}")
            if not checksum_ok(block):
                raise TarSplitError(f"bad header checksum before file entry {entry.position}")
            flag = block[156:157]
            size = number(block[124:136])
            pos += BLOCK
            if flag not in (b"x", b"g", b"L", b"K"):
                return block, pos, pax, long_name, long_link, fmt
            data = bytes(buf[pos : pos + size])
            if len(data) < size:
                raise TarSplitError(f"extended header data cut short before entry {entry.position}")
            pos += size + (-size % BLOCK)
            if flag == b"x":
                pax.update(pax_records(data))
                fmt = "pax"
            elif flag == b"L":
                long_name = cstr(data)
                fmt = "gnu"
            elif flag == b"K":
                long_link = cstr(data)
                fmt = "gnu"
            elif pos == len(buf):
                # Go's reader hands a global PAX header to its caller as a member of its own
                # (size 0): tar-split records it as a file entry with nothing on disk
                del buf[:]
                return TarHeader(cstr(block[0:100]), flag, 0, 0, 0, 0, 0.0, format="pax")

    def _check_entry(self, hdr: TarHeader, entry: Entry) -> None:
        """The header must say what the file entry says (size, name); then the file's padding is
        what the next segment starts with."""
        if hdr.size != entry.size:
            raise TarSplitError(f"file entry {entry.position} says {entry.size} bytes, its header {hdr.size}")
        raw = entry.name_bytes or b""
        if hdr.name != raw and clean_name(hdr.name) != clean_name(raw):
            raise TarSplitError(
                f"file entry {entry.position} is {entry.name!r}, its header names {hdr.name!r}"
            )
        self._skip = -hdr.size % BLOCK if hdr.size else 0

    def _plain_header(self, entry: Entry) -> TarHeader | None:
        """header() when the segments held one block, not an extended one (most members): the
        same checks and the same result, with the fields split in one call and read as plain
        octal numbers (None, nothing consumed, when one is not: header() reads it then)."""
        block = bytes(self._buf)
        if block == _ZERO_BLOCK:
            raise TarSplitError(f"end-of-archive block before file entry {entry.position}")
        (
            name,
            mode,
            uid,
            gid,
            size,
            mtime,
            chksum,
            flag,
            linkname,
            magic,
            uname,
            gname,
            major,
            minor,
            prefix,
        ) = _FIELDS.unpack_from(block)
        try:  # what number makes of a plain field
            want = int(chksum.rstrip(b" \0") or b"0", 8)
            size = int(size.rstrip(b" \0") or b"0", 8)
            mode = int(mode.rstrip(b" \0") or b"0", 8)
            uid = int(uid.rstrip(b" \0") or b"0", 8)
            gid = int(gid.rstrip(b" \0") or b"0", 8)
            mtime = int(mtime.rstrip(b" \0") or b"0", 8)
            major = int(major.rstrip(b" \0") or b"0", 8)
            minor = int(minor.rstrip(b" \0") or b"0", 8)
        except ValueError:
            return None
        unsigned = (_adler32(block[:256]) & 0xFFFF) + (_adler32(block[256:]) & 0xFFFF) - 2
        if want != unsigned - sum(chksum) + 8 * 32:
            raise TarSplitError(f"bad header checksum before file entry {entry.position}")
        del self._buf[:]
        fmt = "gnu" if magic == b"ustar  \0" else "ustar" if magic[:5] == b"ustar" else "v7"
        name = name.partition(b"\0")[0]
        if magic[:6] == b"ustar\0":
            prefix = prefix.partition(b"\0")[0]
            if prefix:
                name = prefix + b"/" + name
        hdr = TarHeader(
            name,
            flag,
            mode,
            uid,
            gid,
            size,
            mtime * _NS,
            linkname.partition(b"\0")[0],
            uname.partition(b"\0")[0].decode("utf-8", "replace"),
            gname.partition(b"\0")[0].decode("utf-8", "replace"),
            major if fmt != "v7" else 0,
            minor if fmt != "v7" else 0,
            format=fmt,
        )
        self._check_entry(hdr, entry)
        return hdr

    def finish(self) -> bool:
        """After the last entry: whether the record ends with the end-of-archive marker.

        A tar stream may legally stop without one (Go's reader takes a clean EOF), so this is no
        error; it tells a truncated record from a complete one when the digest disagrees."""
        self._take_skip()
        tail = bytes(self._buf[: 2 * BLOCK])
        self.end_seen = len(tail) == 2 * BLOCK and not tail.strip(b"\0")
        return self.end_seen
