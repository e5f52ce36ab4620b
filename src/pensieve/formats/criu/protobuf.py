"""A minimal protobuf (proto2) wire-format decoder driven by schemas kept as Python data.

Wire facts: a message is a sequence of fields, each ``key = varint(field_number << 3 | wire_type)``
then a value: wire type 0 varint, 1 eight little-endian bytes, 2 ``varint length`` + bytes
(strings, bytes, nested messages, packed repeated scalars), 5 four little-endian bytes; 3/4 are
the deprecated groups (never used by CRIU, rejected).  Varints are little-endian base-128, at
most 10 bytes; negative int32/int64 are sign-extended to 64 bits, sint32/sint64 are zigzag.

A schema is a dict ``field number -> Field``; a Field names the value, its type and whether it
repeats, and nested messages name another schema.  Fields the schema does not know are skipped
(their numbers are kept in ``"_unknown"``), so newer images still decode.  A view that needs a
few fields decodes with a filter (``only``: field number -> filter of that sub-message, or None
for all of it): the other fields are framed and skipped, not decoded (a message that had some is
marked ``"_skipped"``, so an empty result still tells an empty message from a filtered one).

Every length is checked against the buffer before use: a corrupt message raises
:class:`ProtobufError` with the offset, never allocates more than its input, and nesting is bounded.
"""

from __future__ import annotations

import re
import struct

from pensieve.records.core import record

MAX_DEPTH = 32

# scalar type names (value kinds)
UINT32 = "uint32"
UINT64 = "uint64"
INT32 = "int32"
INT64 = "int64"
SINT32 = "sint32"
SINT64 = "sint64"
BOOL = "bool"
ENUM = "enum"
FIXED32 = "fixed32"
FIXED64 = "fixed64"
SFIXED32 = "sfixed32"
SFIXED64 = "sfixed64"
FLOAT = "float"
DOUBLE = "double"
STRING = "string"
BYTES = "bytes"
MESSAGE = "message"

_VARINT_TYPES = {UINT32, UINT64, INT32, INT64, SINT32, SINT64, BOOL, ENUM}
_I64_TYPES = {FIXED64, SFIXED64, DOUBLE}
_I32_TYPES = {FIXED32, SFIXED32, FLOAT}
_LEN_TYPES = {STRING, BYTES, MESSAGE}

_WIRE_OF = {t: 0 for t in _VARINT_TYPES} | {t: 1 for t in _I64_TYPES} | {t: 5 for t in _I32_TYPES}
_WIRE_OF |= {t: 2 for t in _LEN_TYPES}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I32S = struct.Struct("<i")
_I64S = struct.Struct("<q")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


class ProtobufError(ValueError):
    """The bytes are not a valid encoding of the expected message."""

    def __init__(self, message: str, offset: int):
        self.message = message
        self.offset = offset
        super().__init__(f"{message} (at message offset {offset})")


@record
class Field:
    name: str
    type: str
    repeated: bool = False
    message: str | None = None  # schema name for MESSAGE fields


Schema = dict[int, Field]


def read_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
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


def _scalar(kind: str, value: int) -> int | bool:
    if kind == UINT32 or kind == ENUM and value <= _M32:
        return value & _M32
    if kind in (UINT64, ENUM):
        return value
    if kind == BOOL:
        return value != 0
    if kind == INT32:
        value &= _M32
        return value - (1 << 32) if value & 0x80000000 else value
    if kind == INT64:
        return value - (1 << 64) if value & (1 << 63) else value
    if kind == SINT32:
        value &= _M32
        return (value >> 1) ^ -(value & 1)
    if kind == SINT64:
        return (value >> 1) ^ -(value & 1)
    raise AssertionError(kind)


def _fixed(kind: str, raw: bytes | memoryview) -> int | float:
    if kind == FIXED32:
        return _U32.unpack(raw)[0]
    if kind == SFIXED32:
        return _I32S.unpack(raw)[0]
    if kind == FLOAT:
        return _F32.unpack(raw)[0]
    if kind == FIXED64:
        return _U64.unpack(raw)[0]
    if kind == SFIXED64:
        return _I64S.unpack(raw)[0]
    return _F64.unpack(raw)[0]


#: key byte -> a regex matching a varint and the run of (key, varint) after it: what a filtered
#: decode skips in C
_VARINT_RUNS: dict[int, re.Pattern] = {}

#: per schema (by identity, the schema kept alive): number -> (name, kind, repeated, message, wire)
_PLANS: dict[int, tuple[Schema, dict[int, tuple]]] = {}


def _plan(schema: Schema) -> dict[int, tuple]:
    got = _PLANS.get(id(schema))
    if got is None or got[0] is not schema:
        got = (
            schema,
            {n: (f.name, f.type, f.repeated, f.message, _WIRE_OF[f.type]) for n, f in schema.items()},
        )
        _PLANS[id(schema)] = got
    return got[1]


def decode(
    buf: bytes | memoryview,
    schema_name: str,
    schemas: dict[str, Schema],
    start: int = 0,
    end: int | None = None,
    depth: int = 0,
    only: dict | None = None,
) -> dict:
    """Decode the message BUF[START:END] as SCHEMA_NAME; offsets in errors are into BUF.

    ONLY (field number -> the filter of that field's message, None for all of it) decodes those
    fields and skips the others after checking their framing."""
    if end is None:
        end = len(buf)
    if depth > MAX_DEPTH:
        raise ProtobufError(f"messages nested deeper than {MAX_DEPTH}", start)
    plan = _plan(schemas[schema_name])
    out: dict = {}
    pos = start
    # one-byte varints (almost every key, length and small value) are read inline, without a call
    while pos < end:
        key_at = pos
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise ProtobufError(f"invalid field number {number}", key_at)
        if wire == 0 and only is not None and key < 0x80 and number not in only and number in plan:
            # a known varint the filter leaves out, and the run of it that may follow (repeated:
            # mm_saved_auxv), skipped by a regex: complete varints of at most 10 bytes, each after
            # the same key.  Not one complete varint: the general path below reports it.
            run = _VARINT_RUNS.get(key)
            if run is None:
                run = _VARINT_RUNS[key] = re.compile(
                    rb"[\x80-\xff]{0,9}[\x00-\x7f](?:"
                    + re.escape(bytes([key]))
                    + rb"[\x80-\xff]{0,9}[\x00-\x7f])*"
                )
            m = run.match(buf, pos, end)
            if m is not None:
                out["_skipped"] = True
                pos = m.end()
                continue
        # read the raw value
        if wire == 0:
            if pos < end and (value := buf[pos]) < 0x80:
                pos += 1
            else:
                value, pos = read_varint(buf, pos, end)
        elif wire == 2:
            if pos < end and (value := buf[pos]) < 0x80:
                pos += 1
            else:
                value, pos = read_varint(buf, pos, end)
            if value > end - pos:
                raise ProtobufError(
                    f"field {number} length {value} runs past the message end ({end - pos} left)", key_at
                )
            p = pos
            pos += value
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise ProtobufError(f"truncated {size}-byte field {number}", key_at)
            p = pos
            pos += size
        else:
            raise ProtobufError(f"unsupported wire type {wire} for field {number}", key_at)

        field = plan.get(number)
        if only is not None and number not in only:
            if field is None:
                out.setdefault("_unknown", []).append(number)
            else:
                out["_skipped"] = True
                if wire == 2 and key < 0x80:
                    # the rest of a run of this repeated field (sigactions, VMAs) in a tight loop;
                    # anything unusual is left to the main loop, which reports it
                    while pos + 1 < end and buf[pos] == key and (value := buf[pos + 1]) < 0x80:
                        if value > end - pos - 2:
                            break
                        pos += 2 + value
            continue
        if field is None:
            out.setdefault("_unknown", []).append(number)
            continue

        name, kind, repeated, message, expected = field
        if wire == 0 and expected == 0:
            # uint32/uint64/enum/int32/int64 below 2**31 are the varint itself
            item = (
                value
                if value < 0x80000000 and kind != BOOL and kind != SINT32 and kind != SINT64
                else (_scalar(kind, value))
            )
        elif wire == 2 and expected == 2:
            if kind == MESSAGE:
                item = decode(
                    buf, message, schemas, p, pos, depth + 1, only[number] if only is not None else None
                )
            elif kind == STRING:
                item = bytes(buf[p:pos]).decode("utf-8", "surrogateescape")
            else:
                item = bytes(buf[p:pos])
        elif wire == 2:
            # packed repeated scalars
            if not repeated:
                raise ProtobufError(f"field {name}: length-delimited value for a {kind}", key_at)
            q = pos
            items = out.setdefault(name, [])
            if expected == 0:
                append = items.append
                while p < q:
                    v = buf[p]
                    if v < 0x80:
                        p += 1
                    else:
                        v, p = read_varint(buf, p, q)
                    append(v if kind == UINT32 and v <= _M32 else _scalar(kind, v))
            else:
                size = 8 if expected == 1 else 4
                if (q - p) % size:
                    raise ProtobufError(f"field {name}: packed length not a multiple of {size}", key_at)
                for i in range(p, q, size):
                    items.append(_fixed(kind, buf[i : i + size]))
            continue
        elif wire != expected:
            raise ProtobufError(f"field {name}: wire type {wire}, expected {expected}", key_at)
        else:
            item = _fixed(kind, buf[p:pos])
        if repeated:
            out.setdefault(name, []).append(item)
        else:
            out[name] = item  # last one wins (proto2 semantics for scalars)
    return out
