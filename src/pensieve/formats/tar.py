"""Tar headers, parsed without reading member data: ustar, GNU and PAX (POSIX.1-2001 pax).

A tar is a run of 512-byte headers, each followed by its member's data padded to 512 bytes, and
two zero blocks at the end.  Fields (POSIX ``ustar``): name[100] mode[8] uid[8] gid[8] size[12]
mtime[12] chksum[8] typeflag[1] linkname[100] magic[6] version[2] uname[32] gname[32]
devmajor[8] devminor[8] prefix[155].  Numbers are octal text, or GNU base-256 (first byte 0x80,
or 0xff for negative).  Long names come from a GNU ``L``/``K`` pseudo-member before the header,
or from PAX ``x`` (this member) / ``g`` (every later member) records ``"<len> <key>=<value>\\n"``
(``path``, ``linkpath``, ``size``, ``uid``, ``gid``, ``mtime``, ``atime``, ``ctime``, xattrs).

:func:`iter_headers` walks the headers through a ``pread(n, offset)`` callable, reading nothing
but headers and the (bounded) extension records: a hostile archive cannot make it hold more than
``MAX_META`` bytes at once.  :class:`TarCounter` counts the entries of a stream fed in pieces
(for a hash pass that must not seek).  Behaviour follows CPython's ``tarfile``: a bad first header
is "not a tar", a later bad one or a zero block ends the walk (the caller sees where).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = [
    "BLOCK",
    "MAX_META",
    "TarCounter",
    "TarFormatError",
    "TarHeader",
    "HeaderWalk",
    "iter_headers",
    "number",
    "parse_pax",
]

BLOCK = 512
#: largest PAX or GNU long-name record accepted (real ones are a few KiB of xattrs at most)
MAX_META = 8 << 20

REG, AREG, LINK, SYM, CHR, BLK, DIR, FIFO, CONT = "0", "\0", "1", "2", "3", "4", "5", "6", "7"
GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE, PAX, PAX_GLOBAL = "L", "K", "S", "x", "g"
#: types whose size field describes data that follows the header
DATA_TYPES = (REG, AREG, CONT, GNU_SPARSE)
#: types whose size field is ignored (no data follows, whatever it says)
NO_DATA_TYPES = (LINK, SYM, CHR, BLK, DIR, FIFO)
_META = (GNU_LONGNAME, GNU_LONGLINK, PAX, PAX_GLOBAL)


class TarFormatError(ValueError):
    """A header (or its extension records) that cannot be read; ``offset`` says where."""

    def __init__(self, message: str, offset: int, truncated: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.truncated = truncated  # the data ends inside the header or its records


class TarHeader:
    """One member as its headers describe it (extension records applied)."""

    __slots__ = (
        "name",
        "linkname",
        "type",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime",
        "devmajor",
        "devminor",
        "pax",
        "offset",
        "offset_data",
        "sparse",
    )

    def __init__(self) -> None:
        self.name = self.linkname = ""
        self.type = REG
        self.mode = self.uid = self.gid = self.size = self.mtime = self.devmajor = self.devminor = 0
        self.pax: dict[str, str] = {}
        self.offset = self.offset_data = 0
        self.sparse = False


def number(field: bytes) -> int:
    """A numeric header field: octal text (NUL/space terminated) or GNU base-256; ValueError."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        if field[:1] == b"\xff":
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


_LOW = bytes(range(128))


def _checksum_ok(block: bytes) -> bool:
    """The header checksum: the sum of its bytes with the chksum field as spaces, unsigned (POSIX)
    or signed (old Sun / GNU writers)."""
    stored = number(block[148:156])
    rest = block[:148] + block[156:]
    unsigned = 256 + sum(rest)
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * len(rest.translate(None, _LOW))


def parse_pax(data: bytes) -> dict[str, str]:
    """PAX extended header records ``"<len> <key>=<value>\\n"`` (POSIX pax, "extended header")."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos, pos + 24)
        if space < 0:
            raise ValueError("PAX record without a length")
        length = int(data[pos:space])
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise ValueError("PAX record length does not fit")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise ValueError("PAX record without '='")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


def _parse_block(block: bytes, offset: int) -> TarHeader:
    h = TarHeader()
    h.offset, h.offset_data = offset, offset + BLOCK
    h.type = chr(block[156]) if block[156] else AREG
    h.name = _text(block[:100])
    h.linkname = _text(block[157:257])
    h.mode, h.uid, h.gid = number(block[100:108]), number(block[108:116]), number(block[116:124])
    h.size, h.mtime = number(block[124:136]), number(block[136:148])
    h.devmajor, h.devminor = number(block[329:337]), number(block[337:345])
    prefix = _text(block[345:500]) if block[257:263] == b"ustar\0" else ""
    if prefix and h.type not in (GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE):
        h.name = prefix + "/" + h.name
    if h.type == AREG and h.name.endswith("/"):
        h.type = DIR
    if h.type == DIR:
        h.name = h.name.rstrip("/") or "/"
    h.sparse = h.type == GNU_SPARSE
    return h


def _apply_pax(h: TarHeader, pax: dict[str, str]) -> None:
    h.pax = pax
    for key, attr in (("size", "size"), ("uid", "uid"), ("gid", "gid")):
        if key in pax:
            h.__setattr__(attr, int(pax[key]))
    if "mtime" in pax:
        h.mtime = int(float(pax["mtime"]))
    if "path" in pax:
        h.name = pax["path"]
    if "linkpath" in pax:
        h.linkname = pax["linkpath"]
    if any(k.startswith("GNU.sparse.") for k in pax):
        h.sparse = True
        h.name = pax.get("GNU.sparse.name", h.name)


class _Walker:
    def __init__(self, pread: Callable[[int, int], bytes], size: int) -> None:
        self.pread, self.size = pread, size
        self.global_pax: dict[str, str] = {}

    def _meta(self, h: TarHeader) -> bytes:
        if h.size > MAX_META or h.size < 0:
            raise TarFormatError(f"{h.type!r} extension record of {h.size} bytes (over {MAX_META})", h.offset)
        data = self.pread(h.size, h.offset_data)
        if len(data) < h.size:
            raise TarFormatError("extension record cut short", h.offset, truncated=True)
        return data

    def _block_at(self, offset: int, first: int) -> TarHeader | None:
        """The header block at OFFSET, None at a zero block or the end of the data."""
        block = self.pread(BLOCK, offset)
        if len(block) < BLOCK or not block.strip(b"\0"):
            if offset != first:
                raise TarFormatError("extension header without the member it describes", first, True)
            return None
        try:
            if not _checksum_ok(block):
                raise ValueError("bad checksum")
            h = _parse_block(block, offset)
        except ValueError as exc:
            raise TarFormatError(f"invalid header ({exc})", offset) from None
        if h.size < 0:
            raise TarFormatError(f"negative size {h.size}", offset)
        return h

    def _extension(self, h: TarHeader, ext: dict[str, object]) -> None:
        """Record what extension header H says about the member that follows it."""
        data = self._meta(h)
        try:
            if h.type == GNU_LONGNAME:
                ext["name"] = _text(data)
            elif h.type == GNU_LONGLINK:
                ext["link"] = _text(data)
            elif h.type == PAX_GLOBAL:
                self.global_pax.update(parse_pax(data))
            else:
                ext["pax"] = parse_pax(data)
        except ValueError as exc:
            raise TarFormatError(f"bad PAX header ({exc})", h.offset) from None

    def _apply(self, h: TarHeader, ext: dict) -> None:
        if "name" in ext:
            h.name = ext["name"].rstrip("/") if h.type == DIR else ext["name"]
        if "link" in ext:
            h.linkname = ext["link"]
        merged = {**self.global_pax, **ext.get("pax", {})}
        if merged:
            try:
                _apply_pax(h, merged)
            except ValueError as exc:
                raise TarFormatError(f"bad PAX value ({exc})", h.offset) from None
            if h.size < 0:
                raise TarFormatError(f"negative size {h.size}", h.offset)
            if h.type == DIR:
                h.name = h.name.rstrip("/") or "/"

    def header_at(self, offset: int) -> tuple[TarHeader | None, int]:
        """(header, offset of the next one); (None, offset) at a zero block or the end."""
        ext: dict[str, object] = {}
        first = offset
        while True:
            h = self._block_at(offset, first)
            if h is None:
                return None, offset
            if h.type not in _META:
                break
            self._extension(h, ext)
            offset = h.offset_data + (h.size + BLOCK - 1) // BLOCK * BLOCK
        self._apply(h, ext)
        if h.type in NO_DATA_TYPES:
            return h, h.offset_data
        return h, h.offset_data + (h.size + BLOCK - 1) // BLOCK * BLOCK


def iter_headers(pread: Callable[[int, int], bytes], size: int, start: int = 0) -> Iterator[TarHeader]:
    """Every member header from START on; stops at a zero block or the end of the data, raises
    TarFormatError at a header it cannot read.  :class:`HeaderWalk` also tells where it stopped."""
    yield from HeaderWalk(pread, size, start)


class HeaderWalk:
    """Iterate headers like :func:`iter_headers`; ``offset`` is where the walk is (after the last
    header, at the zero block ending it, or at the bad header)."""

    def __init__(self, pread: Callable[[int, int], bytes], size: int, start: int = 0) -> None:
        self._walker = _Walker(pread, size)
        self.offset = start

    def __iter__(self) -> Iterator[TarHeader]:
        while True:
            h, nxt = self._walker.header_at(self.offset)
            if h is None:
                self.offset = nxt
                return
            self.offset = nxt
            yield h


class TarCounter:
    """Counts the entries of a tar stream fed to it in pieces (headers only, payloads skipped)."""

    def __init__(self) -> None:
        self.skip = 0
        self.buf = b""
        self.entries = 0
        self.end = False

    def feed(self, data: bytes | memoryview) -> None:
        pos, n = 0, len(data)
        while pos < n and not self.end:
            if self.skip:
                take = min(self.skip, n - pos)
                self.skip -= take
                pos += take
                continue
            need = BLOCK - len(self.buf)
            self.buf += bytes(data[pos : pos + need])
            pos += need
            if len(self.buf) < BLOCK:
                return
            hdr, self.buf = self.buf, b""
            if not hdr.strip(b"\0"):
                self.end = True
                return
            flag = chr(hdr[156]) if hdr[156] else AREG
            try:
                size = 0 if flag in NO_DATA_TYPES else max(0, number(hdr[124:136]))
            except ValueError:
                size = 0
            if flag not in _META:
                self.entries += 1
            self.skip = (size + BLOCK - 1) // BLOCK * BLOCK
