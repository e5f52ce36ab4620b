"""QEMU qcow2 (versions 2 and 3), parsed over a ``read(offset, size) -> bytes`` callable: header,
L1/L2 tables, zero clusters, deflate and zstd compressed clusters.

Layout from QEMU's ``docs/interop/qcow2.txt``: a big-endian header (magic ``QFI\\xfb``, version,
backing file offset/size, cluster bits, virtual size, encryption method, L1 size and offset; from
version 3 the feature bitmaps and header length, and the compression type at byte 104).  A guest
offset splits into an L1 index, an L2 index and the offset within the cluster; an L2 entry is a
host offset (bits 9-55; bit 0 "reads as zeros" from version 3), or, with bit 62, a compressed
cluster: ``x = 62 - (cluster_bits - 8)`` low bits are its host offset, the bits above up to 61 the
number of additional 512-byte sectors it spans.  Deflate is raw (no zlib header).

(libqcow 20260703 returns zeros for some compressed clusters that ``qemu-img convert -c``
writes, silently: this reader is checked byte for byte against ``qemu-img``.)
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable

Read = Callable[[int, int], bytes]

MAGIC = b"QFI\xfb"
_INCOMPAT_DATA_FILE = 0x4
_INCOMPAT_COMPRESSION = 0x8
_INCOMPAT_EXTENDED_L2 = 0x10
_INCOMPAT_KNOWN = 0x1F
_OFFSET_MASK = 0x00FFFFFFFFFFFE00
_COMPRESSED = 1 << 62


class Qcow2Error(ValueError):
    """Not a qcow2 image pensieve reads (truncated, or a feature it does not support)."""


class Header:
    """The qcow2 header fields that locate the guest's clusters."""

    __slots__ = ("version", "cluster_bits", "size", "l1_size", "l1_offset", "zstd", "backing")

    def __init__(self, h: bytes, read: Read) -> None:
        if len(h) < 72 or h[:4] != MAGIC:
            raise Qcow2Error("truncated qcow2 header")
        self.version = struct.unpack_from(">I", h, 4)[0]
        fields = struct.unpack_from(">QIIQIIQ", h, 8)
        backing_off, backing_len, cbits, self.size, crypt, self.l1_size, self.l1_offset = fields
        self.backing = None
        if backing_off:
            self.backing = read(backing_off, min(backing_len, 1023)).decode("utf-8", "replace")
            raise Qcow2Error(
                f"qcow2 image with a backing file ({self.backing}): not supported "
                "(qemu-img convert -O raw merges the chain)"
            )
        if crypt:
            raise Qcow2Error("encrypted qcow2 image: not supported")
        self.zstd = False
        if self.version >= 3 and len(h) >= 104:
            incompat = struct.unpack_from(">Q", h, 72)[0]
            header_len = struct.unpack_from(">I", h, 100)[0]
            if incompat & _INCOMPAT_DATA_FILE:
                raise Qcow2Error("qcow2 image with an external data file: not supported")
            if incompat & _INCOMPAT_EXTENDED_L2:
                raise Qcow2Error("qcow2 image with extended L2 entries: not supported")
            if incompat & _INCOMPAT_COMPRESSION and header_len > 104:
                self.zstd = h[104] == 1
            if incompat & ~_INCOMPAT_KNOWN:
                raise Qcow2Error(f"qcow2 image with unknown incompatible features {incompat:#x}")
        if not 9 <= cbits <= 21:
            raise Qcow2Error(f"implausible qcow2 cluster size 2^{cbits}")
        self.cluster_bits = cbits


def version(head: bytes) -> int:
    """The qcow version of an image whose first bytes are HEAD (1: qcow, 2 and 3: qcow2)."""
    if len(head) < 8 or head[:4] != MAGIC:
        raise Qcow2Error("not a qcow image")
    return struct.unpack_from(">I", head, 4)[0]


def _table(data: bytes) -> tuple[int, ...]:
    n = len(data) // 8
    return struct.unpack(f">{n}Q", data[: n * 8])


class Qcow2:
    """The guest disk of a qcow2 image read through READ (host offsets)."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self.header = h = Header(read(0, 512), read)
        self.size = h.size
        self._cbits = h.cluster_bits
        self._csize = 1 << h.cluster_bits
        self._v3 = h.version >= 3
        self._l1 = _table(read(h.l1_offset, h.l1_size * 8))
        self._l2: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._last: tuple[int, bytes] | None = None  # the last decompressed cluster

    def _l2_table(self, off: int) -> tuple[int, ...]:
        table = self._l2.get(off)
        if table is None:
            table = _table(self._read(off, self._csize))
            self._l2[off] = table
            if len(self._l2) > 64:
                self._l2.popitem(last=False)
        else:
            self._l2.move_to_end(off)
        return table

    def _l2_entry(self, idx: int) -> int:
        l1i, l2i = divmod(idx, self._csize // 8)
        if l1i >= len(self._l1):
            return 0
        l2off = self._l1[l1i] & _OFFSET_MASK
        if not l2off:
            return 0
        table = self._l2_table(l2off)
        return table[l2i] if l2i < len(table) else 0

    def _compressed(self, idx: int, entry: int) -> bytes:
        if self._last is not None and self._last[0] == idx:
            return self._last[1]
        x = 62 - (self._cbits - 8)
        host = entry & ((1 << x) - 1)
        sectors = (entry >> x) & ((1 << (self._cbits - 8)) - 1)
        data = self._read(host, (sectors + 1) * 512 - (host & 511))
        try:
            if self.header.zstd:
                import zstandard

                out = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            else:
                out = zlib.decompressobj(-15).decompress(data, self._csize)
        except Exception as exc:  # zlib.error, zstandard.ZstdError
            raise OSError(5, f"corrupt compressed qcow2 cluster {idx}: {exc}") from exc
        out = out[: self._csize].ljust(self._csize, b"\0")
        self._last = (idx, out)
        return out

    def cluster(self, idx: int) -> bytes | None:
        """Guest cluster IDX; None when it reads as zeros (unallocated or a zero cluster)."""
        e = self._l2_entry(idx)
        if e & _COMPRESSED:
            return self._compressed(idx, e)
        host = e & _OFFSET_MASK
        if not host or (self._v3 and e & 1):
            return None
        return self._read(host, self._csize).ljust(self._csize, b"\0")

    def read(self, offset: int, size: int) -> bytes:
        """SIZE bytes of the guest disk from OFFSET (short at its end)."""
        end = min(offset + size, self.size)
        out = []
        while offset < end:
            idx, within = divmod(offset, self._csize)
            n = min(end - offset, self._csize - within)
            cluster = self.cluster(idx)
            out.append(bytes(n) if cluster is None else cluster[within : within + n])
            offset += n
        return b"".join(out)
