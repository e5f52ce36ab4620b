"""The shared protobuf wire-format reader: varints, field framing, hostile bytes."""

from __future__ import annotations

import pytest
from conftest import time_bound
from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve.formats.protobuf import ProtobufError, iter_fields, read_varint


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


@given(st.integers(0, (1 << 64) - 1))
def test_varint_round_trip(value):
    data = varint(value) + b"\xff"
    assert read_varint(data, 0, len(data) - 1) == (value, len(data) - 1)


def test_varint_errors():
    with pytest.raises(ProtobufError, match="truncated varint") as exc:
        read_varint(b"\x00\x80\x80", 1, 3)
    assert exc.value.offset == 1 and exc.value.message == "truncated varint"
    with pytest.raises(ProtobufError, match="longer than 10 bytes"):
        read_varint(b"\x80" * 10 + b"\x01", 0, 11)


def test_fields_varint_bytes_and_fixed():
    msg = varint(1 << 3) + varint(300) + varint(2 << 3 | 2) + varint(3) + b"abc"
    msg += varint(3 << 3 | 1) + bytes(8) + varint(4 << 3 | 5) + bytes(4) + varint(5 << 3) + b"\x01"
    assert list(iter_fields(msg)) == [(1, 0, 300), (2, 2, b"abc"), (5, 0, 1)]


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (b"\x00\x01", "field number 0"),
        (b"\x12\x05ab", "field 2 runs past the end of the message"),
        (b"\x19\x00", "truncated fixed field 3"),
        (b"\x0b", "unsupported wire type 3 (field 1)"),
        (b"\x08", "truncated varint"),
    ],
)
def test_fields_errors(msg, reason):
    with pytest.raises(ProtobufError) as exc:
        list(iter_fields(msg))
    assert exc.value.message == reason


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_hostile_bytes_fail_cleanly(data):
    with time_bound(5):
        try:
            for _, wire, value in iter_fields(data):
                assert wire in (0, 2)
                assert len(value) <= len(data) if isinstance(value, bytes) else value < 1 << 64
        except ProtobufError:
            pass
