"""pensieve.output.text: control characters and undecodable bytes, generated over the class."""

from __future__ import annotations

import base64
import json
import os

from hypothesis import given
from hypothesis import strategies as st

from pensieve.output.text import escape_raw_bytes, json_safe, printable

CONTROL = [chr(c) for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]]


def _unsafe(text: str) -> bool:
    return any(ch in CONTROL or 0xDC80 <= ord(ch) <= 0xDCFF for ch in text)


def test_every_control_character_is_escaped():
    for ch in CONTROL:
        out = printable(f"a{ch}b")
        assert out == f"a\\x{ord(ch):02x}b"


def test_terminal_sequences_are_shown_not_obeyed():
    assert printable("\x1b]0;owned\x07x") == "\\x1b]0;owned\\x07x"
    assert printable("\x1b[2J") == "\\x1b[2J"


@given(st.binary(max_size=64))
def test_names_from_any_bytes_come_out_printable(raw: bytes):
    name = os.fsdecode(raw) if os.name == "posix" else raw.decode("utf-8", "surrogateescape")
    out = printable(name)
    assert not _unsafe(out)
    out.encode("utf-8")  # writable to any UTF-8 terminal


@given(st.binary(max_size=64))
def test_json_safe_is_valid_utf8_and_keeps_the_raw_name(raw: bytes):
    name = raw.decode("utf-8", "surrogateescape")
    doc = json_safe({"path": name, "links": [name, "plain"]})
    text = json.dumps(doc, ensure_ascii=False)
    text.encode("utf-8")  # valid UTF-8
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert base64.b64decode(doc["path_b64"]) == raw
        assert base64.b64decode(doc["links_b64"][0]) == raw
        assert doc["path"] == escape_raw_bytes(name)
    else:
        assert "path_b64" not in doc and "links_b64" not in doc
        assert doc["path"] == name


def test_undecodable_byte_is_written_as_backslash_x():
    name = b"evil\xff.bin".decode("utf-8", "surrogateescape")
    assert escape_raw_bytes(name) == "evil\\xff.bin"
    assert printable(name) == "evil\\xff.bin"
