"""Compressed streams: sniffing, and streaming decompression with bounded buffers.

``sniff(head)`` names the compression of a stream from its first bytes (gzip RFC 1952, zstd
RFC 8878, xz ``.xz`` file format 1.0, bzip2); ``decompress_stream(read, kind)`` yields the
decompressed bytes in blocks of at most about ``out_chunk`` bytes, whatever the compression
ratio: memory stays bounded by the input chunk plus the output chunk, never by the size of the
stream (a few KiB of zstd RLE blocks can claim gigabytes).

* gzip: ``zlib.decompressobj`` with ``max_length`` (the rest stays in ``unconsumed_tail``);
* xz, bzip2: the incremental decompressors' ``max_length`` (``needs_input``);
* zstd: the python-zstandard decompressor has no output bound per call, so the stream is cut at
  its block boundaries (RFC 8878 section 3.1.1: a frame header, blocks of at most 128 KiB of
  output each, an optional checksum) and fed a bounded number of blocks at a time; skippable
  frames are skipped.

Concatenated members / frames are followed (``gzip -d`` and ``zstd -d`` do), zero padding after
the last one is ignored; a corrupt or cut-short stream raises :class:`DecompressError` naming
the compressed offset.  Pure: the caller supplies ``read(n)``.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterator

from pensieve.errors import EvidenceError

__all__ = ["BZIP2", "GZIP", "XZ", "ZSTD", "DecompressError", "decompress_stream", "sniff"]

GZIP, ZSTD, XZ, BZIP2 = "gzip", "zstd", "xz", "bzip2"

IN_CHUNK = 1 << 20
OUT_CHUNK = 1 << 20

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_BLOCK_MAX = 128 << 10  # Block_Maximum_Size: no block regenerates more (RFC 8878 3.1.1.2.3)


class DecompressError(EvidenceError):
    """A compressed stream is corrupt or cut short."""


def sniff(head: bytes) -> str | None:
    """The compression of a stream from its first bytes, None for none known."""
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:4] == _ZSTD_MAGIC:
        return ZSTD
    if head[:6] == b"\xfd7zXZ\x00":
        return XZ
    if head[:3] == b"BZh":
        return BZIP2
    return None


class _Input:
    """Compressed bytes from READ with a push-back buffer and the count consumed."""

    def __init__(self, read: Callable[[int], bytes], chunk: int) -> None:
        self.read, self.chunk = read, chunk
        self.buf = b""
        self.consumed = 0  # compressed bytes handed to a decompressor or skipped
        self.eof = False

    def fill(self, need: int) -> bool:
        """At least NEED bytes buffered; False when the stream ends first."""
        while len(self.buf) < need and not self.eof:
            data = self.read(max(self.chunk, need - len(self.buf)))
            if not data:
                self.eof = True
            self.buf += data
        return len(self.buf) >= need

    def take(self, n: int) -> bytes:
        data, self.buf = self.buf[:n], self.buf[n:]
        self.consumed += len(data)
        return data

    def next_chunk(self) -> bytes:
        if not self.buf:
            self.fill(1)
        return self.take(len(self.buf))

    def unread(self, data: bytes) -> None:
        self.buf = data + self.buf
        self.consumed -= len(data)

    def only_padding_left(self) -> bool:
        """True when nothing but zero bytes remains (consumed, as padding)."""
        while True:
            if not self.fill(1):
                return True
            if self.buf.strip(b"\0"):
                return False
            self.take(len(self.buf))


def _new(kind: str):
    if kind == GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == XZ:
        return lzma.LZMADecompressor()
    if kind == BZIP2:
        return bz2.BZ2Decompressor()
    raise DecompressError(f"unknown compression {kind}")


def _member_blocks(d, src: _Input, kind: str, out_chunk: int) -> Iterator[bytes]:
    """One gzip/xz/bzip2 member, output bounded per step; leaves what follows it in SRC."""
    gz = kind == GZIP
    while True:
        data = src.next_chunk()
        if not data:
            raise DecompressError(f"{kind} stream ends early (truncated after {src.consumed} bytes)")
        while True:
            out = d.decompress(data, out_chunk)
            data = b""
            if out:
                yield out
            if d.eof:
                src.unread(d.unused_data)
                return
            if gz:
                data = d.unconsumed_tail
                if not data and len(out) < out_chunk:
                    break
            elif d.needs_input:
                break


def _classic(src: _Input, kind: str, out_chunk: int) -> Iterator[bytes]:
    first = True
    while first or not src.only_padding_left():
        first = False
        start = src.consumed
        try:
            yield from _member_blocks(_new(kind), src, kind, out_chunk)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            raise DecompressError(f"corrupt {kind} data near compressed byte {start}: {exc}") from exc


def _zstd_header_size(desc: int) -> int:
    """Frame_Header size from its Frame_Header_Descriptor byte (magic included), RFC 8878 3.1.1.1."""
    fcs_flag, single = desc >> 6, (desc >> 5) & 1
    fcs = (1 if single else 0, 2, 4, 8)[fcs_flag]
    did = (0, 1, 2, 4)[desc & 3]
    return 4 + 1 + (0 if single else 1) + did + fcs


def _zstd_frame(src: _Input, out_chunk: int) -> Iterator[bytes]:
    """One zstd frame (magic already checked), fed to the decoder a bounded run of blocks at a time."""
    import zstandard

    start = src.consumed
    d = zstandard.ZstdDecompressor().decompressobj()
    if not src.fill(5) or not src.fill(_zstd_header_size(src.buf[4])):
        raise DecompressError(f"zstd stream ends early (truncated after {src.consumed + len(src.buf)} bytes)")
    desc = src.buf[4]
    checksum = 4 if desc & 4 else 0
    piece = [src.take(_zstd_header_size(desc))]
    pending_out = 0
    last = False
    while not last:
        if not src.fill(3):
            raise DecompressError(f"zstd stream ends early (truncated after {src.consumed} compressed bytes)")
        header = int.from_bytes(src.buf[:3], "little")
        last, btype, bsize = bool(header & 1), (header >> 1) & 3, header >> 3
        if btype == 3 or bsize > _ZSTD_BLOCK_MAX:
            raise DecompressError(f"corrupt zstd data near compressed byte {src.consumed}: bad block header")
        need = 3 + (1 if btype == 1 else bsize) + (checksum if last else 0)
        if not src.fill(need):
            raise DecompressError(f"zstd stream ends early (truncated after {src.consumed} compressed bytes)")
        piece.append(src.take(need))
        pending_out += bsize if btype != 2 else _ZSTD_BLOCK_MAX
        if pending_out >= out_chunk or last:
            try:
                out = d.decompress(b"".join(piece))
            except zstandard.ZstdError as exc:
                raise DecompressError(f"corrupt zstd data near compressed byte {start}: {exc}") from exc
            piece, pending_out = [], 0
            if out:
                yield out
    if not d.eof:
        raise DecompressError(f"corrupt zstd data near compressed byte {start}: frame did not end")


def _zstd(src: _Input, out_chunk: int) -> Iterator[bytes]:
    first = True
    while first or not src.only_padding_left():
        first = False
        src.fill(8)
        magic = src.buf[:4]
        if magic == _ZSTD_MAGIC:
            yield from _zstd_frame(src, out_chunk)
        elif len(magic) == 4 and magic[1:] == b"\x2a\x4d\x18" and magic[0] & 0xF0 == 0x50:
            left = 8 + int.from_bytes(src.buf[4:8], "little")  # a skippable frame (RFC 8878 3.1.2)
            while left:  # skipped in pieces: its declared size is up to 4 GiB
                if not src.fill(1):
                    raise DecompressError(f"zstd stream ends early (truncated after {src.consumed} bytes)")
                left -= len(src.take(min(left, len(src.buf))))
        else:
            raise DecompressError(f"corrupt zstd data near compressed byte {src.consumed}: no frame magic")


def decompress_stream(
    read: Callable[[int], bytes], kind: str, chunk: int = IN_CHUNK, out_chunk: int = OUT_CHUNK
) -> Iterator[bytes]:
    """Decompress KIND from READ, yielding blocks of at most about OUT_CHUNK bytes (zstd: plus
    one block, 128 KiB).  Raises DecompressError when the stream is corrupt or ends early."""
    src = _Input(read, chunk)
    if kind == ZSTD:
        try:
            import zstandard  # noqa: F401 - a declared dependency; fail clearly without it
        except ImportError as exc:  # pragma: no cover
            raise DecompressError("zstd-compressed data: the zstandard package is not installed") from exc
        return _zstd(src, out_chunk)
    if kind not in (GZIP, XZ, BZIP2):
        raise DecompressError(f"unknown compression {kind}")
    return _classic(src, kind, out_chunk)
