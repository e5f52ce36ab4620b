"""The typed loader for untrusted JSON: bounded size and depth, field-by-field type checks."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve.formats import untrusted_json
from pensieve.formats.untrusted_json import UntrustedJSONError, depth, load, loads_line

SRC = "/containers/x/config.v2.json"


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_nesting_bomb_is_an_error_not_recursion(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    bomb = (opener * 100_000 + "1" + closer * 100_000).encode()
    start = time.monotonic()
    with pytest.raises(UntrustedJSONError, match="nested deeper"):
        load(bomb, SRC)
    assert time.monotonic() - start < 5


def test_depth_skips_strings_and_escapes() -> None:
    assert depth(b'{"a": "[[[[\\"[[[", "b": [[1]]}') == 3
    assert depth(b"1") == 0


def test_size_bound_and_not_an_object() -> None:
    with pytest.raises(UntrustedJSONError, match="bytes"):
        load(b"{}" + b" " * 100, SRC, max_bytes=50)
    with pytest.raises(UntrustedJSONError, match="expected a JSON object"):
        load(b"[1, 2]", SRC)
    with pytest.raises(UntrustedJSONError, match="not valid JSON"):
        load(b'{"ID": "trunc', SRC)
    assert loads_line(b'["x"]', SRC) == ["x"]


VALUES = {
    "int": 7,
    "bool": True,
    "list": [1, "a"],
    "dict": {"k": 1},
    "str": "s",
    "null": None,
    "huge": "1e400",
}


def _doc(value_json: str):
    problems: list = []
    return load(f'{{"F": {value_json}}}'.encode(), SRC, problems, subject="cid"), problems


@pytest.mark.parametrize("kind", list(VALUES))
@pytest.mark.parametrize("getter", ["str", "int", "bool", "obj", "list_of_str", "dict_of_str", "dict_keys"])
def test_every_getter_against_every_type(kind: str, getter: str) -> None:
    raw = VALUES[kind] if kind != "huge" else None
    text = "1e400" if kind == "huge" else json.dumps(raw)
    doc, problems = _doc(text)
    value = getattr(doc, getter)("F")
    accepted = {
        "str": ("str",),
        "int": ("int",),
        "bool": ("bool",),
        "obj": ("dict",),
        "list_of_str": (),
        "dict_of_str": (),
        "dict_keys": ("dict",),
    }[getter]
    if kind == "null":
        assert problems == []
    elif kind in accepted:
        assert problems == []
    else:
        assert problems, (getter, kind, value)
        assert all(p.source == SRC and "field F" in p.message and p.subject == "cid" for p in problems)
    if getter == "int" and kind in ("huge", "bool", "list"):
        assert value is None


def test_nested_field_names_and_required() -> None:
    problems: list = []
    doc = load(b'{"State": [], "Config": null, "N": {"Pid": 1e400}}', SRC, problems)
    assert not doc.obj("State", required=True)
    assert not doc.obj("Config", required=True)
    assert doc.obj("N").int("Pid") is None
    messages = [p.message for p in problems]
    assert any("field State" in m and "a list" in m for m in messages)
    assert any("field Config" in m and "null" in m for m in messages)
    assert any("field N.Pid" in m for m in messages)


def test_str_slice_and_items() -> None:
    problems: list = []
    doc = load(b'{"Cmd": "sh", "M": {"/a": {"X": 1}, "/b": 3, "/c": null}}', SRC, problems)
    assert doc.str_slice("Cmd") == ["sh"]
    assert [k for k, _ in doc.items_of_obj("M")] == ["/a", "/c"]
    assert len(problems) == 1 and "M['/b']" in problems[0].message


# ---- the optional orjson fast path gives json.loads's results -------------------------------

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _reference_depth(data: bytes) -> int:
    """The depth scan as first written (one token at a time): the new scan must agree."""
    if data.count(b"[") + data.count(b"{") <= 1:
        return data.count(b"[") + data.count(b"{")
    level = deepest = 0
    for m in _TOKENS.finditer(data):
        c = m.group()[0]
        if c in b"[{":
            level += 1
            deepest = max(deepest, level)
        elif c != 0x22:
            level -= 1
    return deepest


def _typed(value: object) -> object:
    """VALUE with every scalar's type kept visible (1, 1.0 and True compare equal otherwise)."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def _outcome(data: bytes, fast: bool) -> object:
    saved = untrusted_json._orjson
    if not fast:
        untrusted_json._orjson = None
    try:
        return _typed(untrusted_json.parse(data, SRC))
    except UntrustedJSONError as exc:
        return ("error", str(exc))
    finally:
        untrusted_json._orjson = saved


_PIECES = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"\\u",
    b"d800",
    b"00e9",
    b"0",
    b"1",
    b"-",
    b".",
    b"e",
    b"E+",
    b"9" * 18,
    b"9" * 19,
    b"18446744073709551616",
    b"-9223372036854775809",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"true",
    b"false",
    b"null",
    b" ",
    b"\t",
    b"\n",
    b"\r",
    b"\x0c",
    b"\x00",
    b"\x1f",
    b"\x7f",
    b"\xef\xbb\xbf",
    b"\xed\xa0\x80",
    b"\xff",
    b"\xc3\xa9",
    b'"a"',
    b'"k":',
    b"0.1",
    b"1.7976931348623157e308",
    b"5e-324",
    b"2.2250738585072011e-308",
    b"123456789.123456789e-5",
    b'"1234567890123456789012"',
    b'"a\\"1234567890123456789012',
]


@pytest.mark.skipif(untrusted_json._orjson is None, reason="orjson not installed")
@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30))
def test_fast_path_equals_json_on_generated_text(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert _outcome(data, fast=True) == _outcome(data, fast=False)
    assert depth(data) == _reference_depth(data)


@pytest.mark.skipif(untrusted_json._orjson is None, reason="orjson not installed")
@settings(max_examples=1000, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
        max_leaves=20,
    )
)
def test_fast_path_equals_json_on_generated_documents(value: object) -> None:
    data = json.dumps(value).encode("utf-8", "surrogatepass")  # NaN, Infinity and lone surrogates too
    assert _outcome(data, fast=True) == _outcome(data, fast=False)
    assert depth(data) == _reference_depth(data)


@pytest.mark.parametrize(
    "data",
    [b'{"a": 1, "a": 2, "b": 3}', b"18446744073709551616", b"-9223372036854775809", b"[NaN, 1e400]",
     b'"\\ud800"', b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16-le"), b"1" + b"0" * 5000, b"{}x"],
)  # fmt: skip
def test_fast_path_edge_cases(data: bytes) -> None:
    assert _outcome(data, fast=True) == _outcome(data, fast=False)
