"""One typed loader for the JSON an attacker may have written (RFC 8259 documents).

Container engines keep their state in JSON files any root user on the host could have edited:
``config.v2.json``, ``hostconfig.json``, image configs, ``repositories.json``, ``daemon.json``,
json-file log lines, volume ``opts.json``.  Reading them with ``json.loads`` and indexing the
result trusts every type: one ``"RestartCount": 1e400`` or ``"State": []`` ends a whole listing,
and 100,000 nested brackets end it with ``RecursionError``.

:func:`load` bounds the input before parsing (size, then nesting depth, counted without
recursion) and returns a :class:`Doc`, whose getters check each field's type as it is read::

    doc = load(raw, "/var/lib/docker/containers/<id>/config.v2.json", problems)
    name = doc.str("Name")            # None, and a problem naming file and field, if not a string
    state = doc.obj("State")          # an empty Doc if absent or not an object
    pid = state.int("Pid")            # 1e400, true, [] ... -> None + a problem

A field that is absent or ``null`` is simply missing (engines write ``null`` for empty lists and
maps); a field of the wrong type is a :class:`~pensieve.records.Problem` (source = the file,
message = the dotted field path and what was found), and the rest of the document survives.
A document that cannot be read at all raises :class:`UntrustedJSONError` (a ``ValueError``).

Speed: when orjson (an optional extra, ``pip install pensieve[fast]``) is importable, a document
is decoded by it first and by ``json.loads`` only when orjson refuses it, so every result is the
one ``json.loads`` gives: both keep the last of duplicate keys at the first one's place; what
orjson refuses and ``json`` accepts (``NaN``/``Infinity``, a byte order mark, UTF-16/32, lone
surrogates, integers past 64 bits read as floats by orjson: any run of 19 digits goes to
``json``) is read by ``json`` as before, and a text neither reads fails with ``json``'s message.
The bounds (size, depth) are checked before either runs.  A Podman host keeps ~12 KiB of libpod
JSON a container (its seccomp profile), so decoding is most of a listing's time; orjson reads it
about 1.5x faster.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

from pensieve.records.core import Problem

try:  # the optional fast decoder (module docstring); json.loads decides whatever it refuses
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

__all__ = ["MAX_BYTES", "MAX_DEPTH", "Doc", "UntrustedJSONError", "depth", "load", "loads_line", "parse"]

#: the deepest nesting accepted (Docker's own files nest fewer than 10 levels)
MAX_DEPTH = 256
#: the largest document accepted by default (a config.v2.json is a few KiB)
MAX_BYTES = 64 << 20

#: a JSON string token (RFC 8259 section 7), written unrolled so that sre scans it fast
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: translate tables: brackets to +1 / -1 as signed bytes, every other byte deleted
_BRACKET_SIGN = bytes(1 if c in b"[{" else 255 if c in b"]}" else 0 for c in range(256))
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
#: every ASCII digit to "0", every other byte to a space (the 19-digit-run check)
_DIGITS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
#: one pass for both cheap checks of _parse: digits to "0", ``[`` and ``{`` to ``[``, the rest to
#: a space (its count of ``[`` is the opening brackets, a run of 19 "0" a 19-digit run)
_SCAN = bytes(0x30 if 0x30 <= c <= 0x39 else 0x5B if c in b"[{" else 0x20 for c in range(256))
_LONG_NUMBER = b"0" * 19  # 19 digits: the shortest integer literal past orjson's 64-bit range
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


class UntrustedJSONError(ValueError):
    """The document as a whole is unusable: too large, too deep, not JSON, wrong top-level type."""


def depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text, strings skipped; iterative, C-speed scan.

    Unbalanced input is measured as written (json.loads rejects it afterwards): the strings
    are cut out, the brackets left become +1/-1 and the deepest running sum is the depth."""
    brackets = data.count(b"[") + data.count(b"{")
    if brackets <= 1:
        return brackets
    signs = _STRING.sub(b"", data).translate(_BRACKET_SIGN, _NOT_BRACKETS)
    return max(0, max(itertools.accumulate(memoryview(signs).cast("b")), default=0))


def _reject_constant(name: str) -> float:
    # NaN / Infinity are not JSON (RFC 8259 section 6); keep them as a float the getters refuse
    return math.nan


def _parse(data: bytes | str, source: str, max_bytes: int, max_depth: int) -> Any:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > max_bytes:
        raise UntrustedJSONError(f"{source}: {len(data)} bytes, more than the {max_bytes} accepted")
    scan = data.translate(_SCAN)
    # a cheap upper bound first: fewer brackets than the limit cannot nest deeper than it
    if scan.count(b"[") > max_depth and depth(data) > max_depth:
        raise UntrustedJSONError(f"{source}: JSON nested deeper than {max_depth} levels")
    if _orjson is not None and _LONG_NUMBER not in scan:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # json.loads reads what orjson refuses (module docstring) or says why not
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError as exc:  # pragma: no cover - the depth scan prevents it
        raise UntrustedJSONError(f"{source}: JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise UntrustedJSONError(f"{source}: not valid JSON: {exc}") from exc


def load(
    data: bytes | str,
    source: str,
    problems: list[Problem] | None = None,
    *,
    subject: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Doc:
    """Parse one JSON object from untrusted bytes; UntrustedJSONError when it is not one.

    Type problems met later by the getters are appended to PROBLEMS (a new list if None),
    with SOURCE as their source and SUBJECT (a container or image id) as their subject."""
    value = _parse(data, source, max_bytes, max_depth)
    if not isinstance(value, dict):
        raise UntrustedJSONError(f"{source}: expected a JSON object, found {_kind(value)}")
    return Doc(value, source, problems if problems is not None else [], "", subject)


def parse(data: bytes | str, source: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """One bounded JSON value of any top-level type (archive manifests and indexes are lists or
    objects); UntrustedJSONError (a ValueError) when it is too large, too deep or not JSON."""
    return _parse(data, source, max_bytes, max_depth)


def loads_line(data: bytes | str, source: str, max_depth: int = 64) -> Any:
    """One JSON value of a line-oriented file (a json-file log line): bounded, any top type."""
    return _parse(data, source, MAX_BYTES, max_depth)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "an out-of-range number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Doc:
    """One JSON object of an untrusted document, read field by field with type checks."""

    __slots__ = ("value", "source", "problems", "prefix", "subject")

    def __init__(
        self, value: dict, source: str, problems: list[Problem], prefix: str = "", subject: str | None = None
    ) -> None:
        self.value = value
        self.source = source
        self.problems = problems
        self.prefix = prefix
        self.subject = subject

    # ---- plumbing ----------------------------------------------------------------------
    def field_name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def problem(self, key: str, message: str) -> None:
        """Record a problem about field KEY of this object."""
        self.problems.append(Problem(self.source, f"field {self.field_name(key)}: {message}", self.subject))

    def _wrong(self, key: str, want: str, value: Any) -> None:
        self.problem(key, f"expected {want}, found {_kind(value)}")

    def child(self, value: dict, key: str) -> Doc:
        return Doc(value, self.source, self.problems, f"{self.prefix}{key}.", self.subject)

    def __contains__(self, key: str) -> bool:
        return self.value.get(key) is not None

    def __bool__(self) -> bool:
        return bool(self.value)

    def keys(self) -> list[str]:
        return list(self.value)

    def raw(self, key: str) -> Any:
        """The value as parsed, unchecked (for values passed through opaquely)."""
        return self.value.get(key)

    # ---- scalars -----------------------------------------------------------------------
    def time(self, key: str) -> int | None:
        """A Go ``time.Time`` field (RFC 3339) as nanoseconds; the zero time ("never") is None,
        and text that is not a time is a problem naming the field."""
        from pensieve.times import parse_rfc3339

        text = self.str(key)
        if not text or text.startswith("0001-01-01"):
            return None
        ns = parse_rfc3339(text)
        if ns is None:
            self.problem(key, f"not an RFC 3339 time: {text[:64]!r}")
        return ns

    def _typed(self, key: str, kind: type, want: str, default: Any) -> Any:
        """The value at KEY when it is a KIND; DEFAULT when absent or null, or (a problem saying
        WANT was expected) of another type."""
        value = self.value.get(key)
        if value is None:
            return default
        if isinstance(value, kind):
            return value
        self._wrong(key, want, value)
        return default

    def str(self, key: str, default: str | None = None) -> str | None:
        return self._typed(key, str, "a string", default)

    def int(self, key: str, default: int | None = None) -> int | None:
        value = self.value.get(key)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            if _INT_MIN <= value <= _INT_MAX:
                return value
            self.problem(key, "integer out of range")
            return default
        self._wrong(key, "an integer", value)
        return default

    def bool(self, key: str, default: bool = False) -> bool:
        return self._typed(key, bool, "a boolean", default)

    def number(self, key: str) -> float | None:
        value = self.value.get(key)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value
        self._wrong(key, "a finite number", value)
        return None

    # ---- containers --------------------------------------------------------------------
    def obj(self, key: str, required: bool = False) -> Doc:
        """The object at KEY (an empty Doc when absent, null, or of another type: a problem;
        absent or null is a problem too when REQUIRED)."""
        value = self.value.get(key)
        if isinstance(value, dict):
            return self.child(value, key)
        if value is not None or required:
            self._wrong(key, "an object", value) if key in self.value else self.problem(key, "missing")
        return self.child({}, key)

    def list(self, key: str) -> list[Any] | None:
        """The list at KEY unchecked inside (None when absent; a problem when not a list)."""
        return self._typed(key, list, "a list", None)

    def list_of_str(self, key: str) -> list[str] | None:
        """A list of strings (None when absent); non-string items are dropped with a problem."""
        items = self.list(key)
        if items is None:
            return None
        out = [v for v in items if isinstance(v, str)]
        if len(out) != len(items):
            bad = next(v for v in items if not isinstance(v, str))
            self.problem(key, f"expected a list of strings, found {_kind(bad)} in it")
        return out

    def str_slice(self, key: str) -> list[str] | None:
        """A command line as engines store it (Go ``strslice.StrSlice``): a list of strings, or
        one string standing for a one-item list."""
        value = self.value.get(key)
        if isinstance(value, str):
            return [value]
        return self.list_of_str(key)

    def list_of_obj(self, key: str) -> list[Doc]:
        """The objects of a list (empty when absent); other items are dropped with a problem."""
        items = self.list(key) or []
        out = [self.child(v, f"{key}[{i}]") for i, v in enumerate(items) if isinstance(v, dict)]
        if len(out) != len(items):
            bad = next(v for v in items if not isinstance(v, dict))
            self.problem(key, f"expected a list of objects, found {_kind(bad)} in it")
        return out

    def dict_of_str(self, key: str) -> dict[str, str]:
        """A string -> string map (Labels, Options); other values are dropped with a problem."""
        value = self.value.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._wrong(key, "an object of strings", value)
            return {}
        out = {k: v for k, v in value.items() if isinstance(v, str)}
        if len(out) != len(value):
            bad = next(v for v in value.values() if not isinstance(v, str))
            self.problem(key, f"expected an object of strings, found {_kind(bad)} in it")
        return out

    def dict_of_str_items(self) -> list[tuple[str, str]]:
        """This object's (key, string value) pairs; other values dropped with a problem each."""
        out: list[tuple[str, str]] = []
        for k, v in self.value.items():
            if isinstance(v, str):
                out.append((k, v))
            else:
                self._wrong(k, "a string", v)
        return out

    def dict_keys(self, key: str) -> list[str]:
        """The keys of an object used as a set (ExposedPorts, Volumes); a problem if not one."""
        value = self.value.get(key)
        if value is None:
            return []
        if isinstance(value, dict):
            return list(value)
        self._wrong(key, "an object", value)
        return []

    def items_of_obj(self, key: str) -> list[tuple[str, Doc]]:
        """(name, object) of a map of objects (MountPoints, Networks), sorted; null values kept
        as empty objects, other values dropped with a problem."""
        value = self.value.get(key)
        if value is None:
            return []
        if not isinstance(value, dict):
            self._wrong(key, "an object", value)
            return []
        out: list[tuple[str, Doc]] = []
        for name in sorted(value):
            item = value[name]
            if item is None:
                item = {}
            if isinstance(item, dict):
                out.append((name, self.child(item, f"{key}[{name!r}]")))
            else:
                self.problem(f"{key}[{name!r}]", f"expected an object, found {_kind(item)}")
        return out
