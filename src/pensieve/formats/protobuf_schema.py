"""A minimal protobuf (proto2) decoder driven by schemas kept as Python data (CRIU images,
containerd's runtime options and OCI spec Anys).

The wire format (keys, wire types, varints) is :mod:`pensieve.formats.protobuf`'s; groups (wire
types 3/4, never used by CRIU) are rejected.  Negative int32/int64 are sign-extended to 64 bits,
sint32/sint64 are zigzag.

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

from pensieve.formats.protobuf import ProtobufError, read_varint
from pensieve.records.core import record

__all__ = ["Field", "ProtobufError", "Schema", "decode", "read_varint"]

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


@record
class Field:
    name: str
    type: str
    repeated: bool = False
    message: str | None = None  # schema name for MESSAGE fields


Schema = dict[int, Field]


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

#: per schema (by identity, the schema kept alive): number -> (name, kind, repeated, message,
#: wire, plain) where PLAIN says a varint below 2**31 is the value itself (uint32/uint64/enum/
#: int32/int64: not bool, not zigzag)
_PLANS: dict[int, tuple[Schema, dict[int, tuple]]] = {}

_NOT_PLAIN = {BOOL, SINT32, SINT64}


def _plan(schema: Schema) -> dict[int, tuple]:
    got = _PLANS.get(id(schema))
    if got is None or got[0] is not schema:
        plan = {}
        for n, f in schema.items():
            wire = _WIRE_OF[f.type]
            plan[n] = (f.name, f.type, f.repeated, f.message, wire, wire == 0 and f.type not in _NOT_PLAIN)
        got = (schema, plan)
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
    return _decode(buf, schema_name, schemas, start, end, depth, only)


def _decode(
    buf: bytes | memoryview,
    schema_name: str,
    schemas: dict[str, Schema],
    start: int,
    end: int,
    depth: int,
    only: dict | None,
) -> dict:
    """decode() of BUF[START:END]: the loop over the fields.  Plain varints (most fields) are
    decoded here; every other field goes to _pass_over (filtered out, unknown) or _store."""
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
        number = key >> 3
        if number == 0 or number > 0x1FFFFFFF:
            raise ProtobufError(f"invalid field number {number}", key_at)
        field = plan.get(number)
        if field is None or only is not None and number not in only:
            pos = _pass_over(buf, key_at, key, pos, end, field is not None, out)
            continue
        if field[5] and key & 7 == 0:
            if pos < end and (value := buf[pos]) < 0x80:
                pos += 1
            else:
                value, pos = read_varint(buf, pos, end)
            item = value if value < 0x80000000 else _scalar(field[1], value)
            if field[2]:
                out.setdefault(field[0], []).append(item)
            else:
                out[field[0]] = item  # last one wins (proto2 semantics for scalars)
            continue
        pos = _store(buf, key_at, key, pos, end, field, schemas, depth, only, out)
    return out


def _frame(buf: bytes | memoryview, key_at: int, key: int, pos: int, end: int) -> tuple[int, int, int]:
    """The raw value of the field whose key KEY ends at POS: (varint value or length, value
    start, value end)."""
    wire = key & 7
    if wire == 0:
        if pos < end and (value := buf[pos]) < 0x80:
            return value, pos, pos + 1
        value, pos = read_varint(buf, pos, end)
        return value, pos, pos
    if wire == 2:
        if pos < end and (value := buf[pos]) < 0x80:
            pos += 1
        else:
            value, pos = read_varint(buf, pos, end)
        if value > end - pos:
            raise ProtobufError(
                f"field {key >> 3} length {value} runs past the message end ({end - pos} left)", key_at
            )
        return value, pos, pos + value
    if wire == 1 or wire == 5:
        size = 8 if wire == 1 else 4
        if pos + size > end:
            raise ProtobufError(f"truncated {size}-byte field {key >> 3}", key_at)
        return size, pos, pos + size
    raise ProtobufError(f"unsupported wire type {wire} for field {key >> 3}", key_at)


def _varint_run(key: int) -> re.Pattern:
    """Compile and keep the regex of a varint and the run of (KEY, varint) after it (repeated:
    mm_saved_auxv): complete varints of at most 10 bytes, each after the same one-byte key."""
    run = _VARINT_RUNS[key] = re.compile(
        rb"[\x80-\xff]{0,9}[\x00-\x7f](?:" + re.escape(bytes([key])) + rb"[\x80-\xff]{0,9}[\x00-\x7f])*"
    )
    return run


def _pass_over(
    buf: bytes | memoryview, key_at: int, key: int, pos: int, end: int, known: bool, out: dict
) -> int:
    """Frame and skip a field the schema does not know (its number kept in ``_unknown``) or a
    KNOWN one the filter leaves out (``_skipped``); return the position after it."""
    if known and key & 7 == 0 and key < 0x80:
        # a known varint and the run of it that may follow, skipped by a regex.  Not one
        # complete varint: _frame below reports it.
        m = (_VARINT_RUNS.get(key) or _varint_run(key)).match(buf, pos, end)
        if m is not None:
            out["_skipped"] = True
            return m.end()
    _, _, pos = _frame(buf, key_at, key, pos, end)
    if not known:
        out.setdefault("_unknown", []).append(key >> 3)
        return pos
    out["_skipped"] = True
    if key & 7 == 2 and key < 0x80:
        # the rest of a run of this repeated field (sigactions, VMAs) in a tight loop;
        # anything unusual is left to the main loop, which reports it
        while pos + 1 < end and buf[pos] == key and (value := buf[pos + 1]) < 0x80:
            if value > end - pos - 2:
                break
            pos += 2 + value
    return pos


def _store(
    buf: bytes | memoryview,
    key_at: int,
    key: int,
    pos: int,
    end: int,
    field: tuple,
    schemas: dict[str, Schema],
    depth: int,
    only: dict | None,
    out: dict,
) -> int:
    """Decode a known field that is not a plain varint into OUT; return the position after it."""
    number, wire = key >> 3, key & 7
    name, kind, repeated, message, expected, _ = field
    value, p, pos = _frame(buf, key_at, key, pos, end)
    if wire == 2 and expected != 2:
        _packed(buf, p, pos, field, key_at, out)
        return pos
    if wire != expected:
        raise ProtobufError(f"field {name}: wire type {wire}, expected {expected}", key_at)
    if wire == 0:
        item = _scalar(kind, value)
    elif kind == MESSAGE:
        item = _decode(buf, message, schemas, p, pos, depth + 1, only[number] if only is not None else None)
    elif kind == STRING:
        item = bytes(buf[p:pos]).decode("utf-8", "surrogateescape")
    elif kind == BYTES:
        item = bytes(buf[p:pos])
    else:
        item = _fixed(kind, buf[p:pos])
    if repeated:
        out.setdefault(name, []).append(item)
    else:
        out[name] = item  # last one wins (proto2 semantics for scalars)
    return pos


def _packed(buf: bytes | memoryview, p: int, q: int, field: tuple, key_at: int, out: dict) -> None:
    """Packed repeated scalars BUF[P:Q] of FIELD, appended to its list in OUT."""
    name, kind, repeated, _, expected, _ = field
    if not repeated:
        raise ProtobufError(f"field {name}: length-delimited value for a {kind}", key_at)
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
        return
    size = 8 if expected == 1 else 4
    if (q - p) % size:
        raise ProtobufError(f"field {name}: packed length not a multiple of {size}", key_at)
    for i in range(p, q, size):
        items.append(_fixed(kind, buf[i : i + size]))
