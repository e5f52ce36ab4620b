"""A differencing VHD writer for the tests (qemu-img cannot make one: its vpc driver has no
backing files).  Layout from Microsoft's "Virtual Hard Disk Image Format Specification" 1.0:
footer copy, dynamic disk header (parent unique id, time stamp, Unicode name, a W2ru parent
locator), block allocation table, blocks (sector bitmap, then data), footer."""

from __future__ import annotations

import struct

_BLOCK = 2 << 20
_UNUSED = 0xFFFFFFFF


def _checksum(data: bytes) -> int:
    return ~sum(data) & 0xFFFFFFFF


def write_child(parent_path: str, child_path: str, writes: dict[int, bytes], parent_name: str) -> None:
    """A differencing VHD at CHILD_PATH over the dynamic VHD PARENT_PATH, recorded as PARENT_NAME
    (relative, as Windows writes it), holding WRITES (byte offset -> data, 512-aligned) itself."""
    with open(parent_path, "rb") as f:
        pfoot = f.read(512)
    assert pfoot[:8] == b"conectix"
    size = struct.unpack(">Q", pfoot[48:56])[0]
    parent_uid = pfoot[68:84]
    parent_time = struct.unpack(">I", pfoot[24:28])[0]
    entries = (size + _BLOCK - 1) // _BLOCK
    bat_off = 512 + 1024
    bat_len = (entries * 4 + 511) // 512 * 512
    name_utf16 = parent_name.encode("utf-16-be")
    loc_data = parent_name.encode("utf-16-le")
    loc_off = bat_off + bat_len
    loc_space = 512
    data_at = loc_off + loc_space
    bitmap_len = 512  # 2 MiB / 512 sectors / 8 = 512 bytes
    bat = [_UNUSED] * entries
    blocks: dict[int, bytearray] = {}
    for off, data in writes.items():
        assert off % 512 == 0 and len(data) % 512 == 0
        for i in range(0, len(data), 512):
            sector = (off + i) // 512
            b, s = divmod(sector, _BLOCK // 512)
            blk = blocks.setdefault(b, bytearray(bitmap_len + _BLOCK))
            blk[s // 8] |= 0x80 >> (s % 8)
            blk[bitmap_len + s * 512 : bitmap_len + (s + 1) * 512] = data[i : i + 512]
    body = bytearray()
    for b in sorted(blocks):
        bat[b] = (data_at + len(body)) // 512
        body += blocks[b]
    footer = bytearray(512)
    footer[:8] = b"conectix"
    struct.pack_into(">IIQI", footer, 8, 2, 0x00010000, 512, parent_time + 1)
    footer[28:32] = b"pens"
    struct.pack_into(">II", footer, 32, 0x00010000, 0x5769326B)  # creator version, host "Wi2k"
    struct.pack_into(">QQ", footer, 40, size, size)
    footer[56:60] = pfoot[56:60]  # geometry
    struct.pack_into(">I", footer, 60, 4)  # differencing
    footer[68:84] = bytes(range(0x10, 0x20))
    struct.pack_into(">I", footer, 64, _checksum(bytes(footer)))
    header = bytearray(1024)
    header[:8] = b"cxsparse"
    struct.pack_into(">QQIII", header, 8, 0xFFFFFFFFFFFFFFFF, bat_off, 0x00010000, entries, _BLOCK)
    header[40:56] = parent_uid
    struct.pack_into(">I", header, 56, parent_time)
    header[64 : 64 + len(name_utf16)] = name_utf16
    struct.pack_into(">IIIIQ", header, 576, 0x57327275, loc_space, len(loc_data), 0, loc_off)  # "W2ru"
    struct.pack_into(">I", header, 36, _checksum(bytes(header)))
    bat_bytes = b"".join(struct.pack(">I", e) for e in bat).ljust(bat_len, b"\xff")
    locator = loc_data.ljust(loc_space, b"\0")
    with open(child_path, "wb") as f:
        f.write(bytes(footer) + bytes(header) + bat_bytes + locator + bytes(body) + bytes(footer))
