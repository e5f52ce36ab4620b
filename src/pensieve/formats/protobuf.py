"""Protocol Buffers wire format: varints and field framing, shared by every protobuf reader.

Wire facts (https://protobuf.dev/programming-guides/encoding/): a message is a sequence of
fields, each ``key = varint(field_number << 3 | wire_type)`` then a value: wire type 0 a varint,
1 eight little-endian bytes, 2 ``varint length`` + that many bytes (strings, bytes, nested
messages, packed repeated scalars), 5 four little-endian bytes; 3/4 are the deprecated groups.
Varints are little-endian base-128, at most 10 bytes, and hold 64 bits.

Used by the schema-driven decoder (:mod:`pensieve.formats.protobuf_schema`: CRIU images,
containerd's Anys) and the Docker ``local`` log driver reader (:mod:`pensieve.engines.docker.logs`, via
:func:`iter_fields`).  Every length is checked against the buffer before use; a corrupt message
raises :class:`ProtobufError`, never allocates more than its input.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["ProtobufError", "iter_fields", "read_varint"]

_M64 = 0xFFFFFFFFFFFFFFFF


class ProtobufError(ValueError):
    """The bytes are not a valid encoding of the expected message.

    ``message`` is the reason alone, ``offset`` where in the buffer it was found."""

    def __init__(self, message: str, offset: int):
        self.message = message
        self.offset = offset
        super().__init__(f"{message} (at message offset {offset})")


def read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode a varint at POS (not past END); return (value, next position)."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & _M64, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes", start)


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Every field of the message BUF as (field number, wire type, value): an int for a varint,
    the bytes of a length-delimited value; fixed-width fields are framed and skipped."""
    i = 0
    end = len(buf)
    while i < end:
        key_at = i
        key, i = read_varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0", key_at)
        if wire == 0:
            value, i = read_varint(buf, i, end)
            yield number, wire, value
        elif wire == 2:
            size, i = read_varint(buf, i, end)
            if size > end - i:
                raise ProtobufError(f"field {number} runs past the end of the message", key_at)
            yield number, wire, buf[i : i + size]
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            if i > end:
                raise ProtobufError(f"truncated fixed field {number}", key_at)
        else:
            raise ProtobufError(f"unsupported wire type {wire} (field {number})", key_at)
