"""A disk image that is ``disk.raw`` inside a tar: how Google Compute Engine exports and imports
images (``tar --format=oldgnu -Sczf image.tar.gz disk.raw``: gzip, GNU sparse).

The archive is read where it lies when it is an uncompressed ``.tar`` (member bytes by offset),
and decompressed once into a spool when compressed (gzip, zstd, xz, bzip2:
:mod:`pensieve.evidence.spool`, under the spool budget, in the temp directory, never next to the
evidence).  Only the first member is looked at: GCE requires it to be ``disk.raw``.

Sparse members (GNU tar ``-S``) are read through their sparse map, holes as zeros:

* old GNU format (type ``S``, "GNU tar manual, 'Storing sparse files'"): up to 4 map entries
  (offset, size; 12-byte octal or base-256 each) at header byte 386, ``isextended`` at 482,
  the real size at 483; each extension block after the header holds 21 entries and its own
  ``isextended`` at 504; the data follows the last block;
* PAX format 1.0 (``GNU.sparse.major=1``): the map leads the data as decimal lines (count, then
  offset/size pairs), padded to a 512-byte block; ``GNU.sparse.realsize`` is the size.

PAX 0.x sparse maps (kept in repeated PAX records) are refused with an ImageError.
"""

from __future__ import annotations

import bisect
import os
from functools import lru_cache

from pensieve.evidence.base import EvidenceError
from pensieve.evidence.disk_images import TAR_DISK, DiskImage, ImageError, _open_ro
from pensieve.formats import tar as tarfmt
from pensieve.formats.compression import DecompressError, decompress_stream, sniff

__all__ = ["DISK_MEMBER", "TarDiskImage", "disk_member"]

#: the name Google Compute Engine gives the disk inside its image tar
DISK_MEMBER = "disk.raw"
_BLOCK = tarfmt.BLOCK
#: sparse map entries read at most (each one a data run of the disk)
_MAX_ENTRIES = 1 << 22


def _first_block(fd: int) -> bytes:
    """The first 512 bytes of the tar stream in FD (decompressed if it is compressed)."""
    head = os.pread(fd, 8, 0)
    kind = sniff(head)
    if not kind:
        return os.pread(fd, _BLOCK, 0)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        data = os.pread(fd, min(n, 1 << 16), pos)
        pos += len(data)
        return data

    out = b""
    try:
        for block in decompress_stream(read, kind, chunk=1 << 14, out_chunk=1 << 14):
            out += block
            if len(out) >= _BLOCK or pos > 1 << 20:
                break
    except (DecompressError, EvidenceError, OSError, EOFError):
        return b""
    return out[:_BLOCK]


@lru_cache(maxsize=64)
def _member_of(path: str, _mtime_ns: int, _size: int) -> str | None:
    try:
        fd = _open_ro(path)
    except EvidenceError:
        return None
    try:
        block = _first_block(fd)
    finally:
        os.close(fd)
    if len(block) < _BLOCK or block[257:262] != b"ustar":
        return None
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    kind = block[156:157]
    if name.lstrip("./") == DISK_MEMBER and kind in (b"0", b"\0", b"S"):
        return name
    if kind == b"x":  # a PAX header first: GNU tar --format=posix names the member there
        return name if DISK_MEMBER in name else None
    return None


def disk_member(path: str) -> str | None:
    """The name of the disk member when PATH is a tar (or compressed tar) whose first member is
    ``disk.raw``; None otherwise (also for anything unreadable)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path) or st.st_size < _BLOCK // 16:
        return None
    return _member_of(os.path.abspath(path), st.st_mtime_ns, st.st_size)


class _Runs:
    """A sparse member's data runs: virtual offset -> offset in the tar stream, holes as zeros."""

    def __init__(self, runs: list[tuple[int, int]], data_offset: int, real_size: int) -> None:
        self.starts: list[int] = []
        self.lengths: list[int] = []
        self.stored: list[int] = []
        at = data_offset
        last_end = 0
        for off, length in runs:
            if off < last_end or length < 0:
                raise ImageError(f"sparse map out of order at offset {off}")
            if length:
                self.starts.append(off)
                self.lengths.append(length)
                self.stored.append(at)
            at += length
            last_end = off + length
        self.size = real_size
        self.stored_end = at

    def read(self, pread, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        out = bytearray()
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        pos = offset
        while pos < end:
            if i >= len(self.starts) or pos < self.starts[i]:
                nxt = self.starts[i] if i < len(self.starts) else end
                gap = min(nxt, end) - pos
                out += bytes(gap)
                pos += gap
                continue
            run_end = self.starts[i] + self.lengths[i]
            if pos >= run_end:
                i += 1
                continue
            n = min(run_end, end) - pos
            data = pread(n, self.stored[i] + pos - self.starts[i])
            out += data + bytes(n - len(data))
            pos += n
        return bytes(out)


def _oldgnu_map(pread, header: bytes, header_offset: int) -> tuple[list[tuple[int, int]], int, int]:
    """(runs, real size, data offset) of an old GNU sparse member whose header is HEADER."""
    entries: list[tuple[int, int]] = []

    def take(block: bytes, start: int, count: int) -> None:
        for k in range(count):
            field = block[start + 24 * k : start + 24 * (k + 1)]
            if not field.strip(b"\0"):
                return
            entries.append((tarfmt.number(field[:12]), tarfmt.number(field[12:])))

    take(header, 386, 4)
    real_size = tarfmt.number(header[483:495])
    extended = header[482]
    at = header_offset + _BLOCK
    while extended:
        block = pread(_BLOCK, at)
        if len(block) < _BLOCK:
            raise ImageError("sparse map cut short")
        take(block, 0, 21)
        extended = block[504]
        at += _BLOCK
        if len(entries) > _MAX_ENTRIES:
            raise ImageError(f"sparse map of more than {_MAX_ENTRIES} entries")
    return entries, real_size, at


def _pax1_map(pread, h: tarfmt.TarHeader) -> tuple[list[tuple[int, int]], int, int]:
    """(runs, real size, data offset) of a PAX 1.0 sparse member (map at the start of its data)."""
    text = b""
    at = h.offset_data
    numbers: list[int] = []
    want: int | None = None
    while want is None or len(numbers) < 1 + 2 * want:
        block = pread(_BLOCK, at)
        if len(block) < _BLOCK:
            raise ImageError("PAX sparse map cut short")
        text += block
        at += _BLOCK
        lines = text.split(b"\n")
        numbers = [int(x) for x in lines[:-1]]
        if numbers and want is None:
            want = numbers[0]
            if want > _MAX_ENTRIES:
                raise ImageError(f"sparse map of {want} entries")
    pairs = numbers[1 : 1 + 2 * (want or 0)]
    runs = list(zip(pairs[0::2], pairs[1::2], strict=True))
    return runs, int(h.pax.get("GNU.sparse.realsize", h.pax.get("GNU.sparse.size", "0"))), at


class TarDiskImage(DiskImage):
    """The bytes of ``disk.raw`` inside a tar or compressed tar (see the module docstring)."""

    format = TAR_DISK

    def __init__(self, path: str) -> None:
        self.files = [path]
        self._fd = _open_ro(path)
        self._spool = None
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: str) -> None:
        size = os.fstat(self._fd).st_size
        kind = sniff(os.pread(self._fd, 8, 0))
        self.compression = kind
        if kind:
            from pensieve.evidence.spool import spool

            pos = 0

            def read(n: int) -> bytes:
                nonlocal pos
                data = os.pread(self._fd, n, pos)
                pos += len(data)
                return data

            try:
                self._spool = spool(decompress_stream(read, kind), f"{path} ({kind})")
            except EvidenceError as exc:
                raise ImageError(f"{path}: cannot decompress the image export: {exc}") from exc
            sfd = self._spool.file.fileno()
            size = os.fstat(sfd).st_size
            self._pread = lambda n, off: os.pread(sfd, n, off)
        else:
            self._pread = lambda n, off: os.pread(self._fd, n, off)
        try:
            h = next(iter(tarfmt.HeaderWalk(self._pread, size)), None)
        except tarfmt.TarFormatError as exc:
            raise ImageError(f"{path}: not a readable tar ({exc})") from exc
        if h is None or h.name.lstrip("./") != DISK_MEMBER:
            raise ImageError(f"{path}: the first member is not {DISK_MEMBER}")
        try:
            self._runs = self._layout(h)
        except ValueError as exc:  # a sparse map field that is not a number
            raise ImageError(f"{path}: unreadable sparse map of {DISK_MEMBER}: {exc}") from exc
        self._size = self._runs.size
        if self._runs.stored_end > size:
            raise ImageError(
                f"{path}: {DISK_MEMBER} truncated: the archive holds {max(0, size - h.offset_data)} "
                f"of its {self._runs.stored_end - h.offset_data} stored bytes"
            )

    def _layout(self, h: tarfmt.TarHeader) -> _Runs:
        if not h.sparse:
            return _Runs([(0, h.size)], h.offset_data, h.size)
        if h.type == tarfmt.GNU_SPARSE:
            header = self._pread(_BLOCK, h.offset)
            runs, real, data_at = _oldgnu_map(self._pread, header, h.offset)
            return _Runs(runs, data_at, real)
        if h.pax.get("GNU.sparse.major") == "1":
            runs, real, data_at = _pax1_map(self._pread, h)
            return _Runs(runs, data_at, real)
        raise ImageError(f"{self.files[0]}: PAX 0.x sparse member: not supported (GNU tar --format=oldgnu)")

    def describe(self) -> str:
        return f"{os.path.basename(self.files[0])}:{DISK_MEMBER}"

    def read(self, offset: int, size: int) -> bytes:
        return self._runs.read(self._pread, offset, size)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
