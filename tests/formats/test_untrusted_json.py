"""The typed loader for untrusted JSON: bounded size and depth, field-by-field type checks."""

from __future__ import annotations

import json
import time

import pytest

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
