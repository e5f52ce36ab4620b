"""pensieve.times against datetime: the integer date arithmetic must give what datetime gives.

The references below are the implementations the module had before (datetime based); the
property tests run both over the whole range datetime covers and past its ends."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve.times import iso_ns, parse_rfc3339

_NS = 1_000_000_000
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?\s*([Zz]|[+-]\d{2}:?\d{2})?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_iso_ns(ns: int | None) -> str | None:
    if ns is None:
        return None
    sec, frac = divmod(ns, _NS)
    try:
        base = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None
    return f"{base}.{frac:09d}Z"


def reference_parse(text: object) -> int | None:
    if not isinstance(text, str) or not text:
        return None
    m = _RFC3339.match(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    if year == "0001" and month == "01" and day == "01" and hour == minute == second == "00" and not frac:
        return None
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), tzinfo=UTC
        )
    except ValueError:
        return None
    offset = 0
    if tz and tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    delta = dt - _EPOCH
    seconds = delta.days * 86400 + delta.seconds - offset
    nanos = int((frac or "0")[:9].ljust(9, "0"))
    return seconds * _NS + nanos


_LOW, _HIGH = -62135596800 * _NS, 253402300799 * _NS + _NS - 1  # 0001-01-01 .. 9999-12-31 23:59:59.999999999


@settings(max_examples=3000, deadline=None)
@given(st.integers(min_value=_LOW - 10 * 86400 * _NS, max_value=_HIGH + 10 * 86400 * _NS))
def test_iso_ns_equals_datetime(ns: int) -> None:
    assert iso_ns(ns) == reference_iso_ns(ns)


def test_iso_ns_edges() -> None:
    for ns in (None, 0, -1, 1, _LOW, _LOW - 1, _HIGH, _HIGH + 1, 951782400 * _NS, 1709164800 * _NS, 10**30):
        assert iso_ns(ns) == reference_iso_ns(ns), ns


_DIGITS2 = st.integers(min_value=0, max_value=99).map(lambda v: f"{v:02d}")


@st.composite
def times(draw) -> str:
    year = draw(
        st.integers(min_value=0, max_value=9999).map(lambda v: f"{v:04d}")
        | st.sampled_from(["0001", "1600", "1900", "2000", "2024", "2100", "9999"])
    )
    month, day = (
        draw(_DIGITS2 | st.sampled_from(["01", "02", "12"])),
        draw(_DIGITS2 | st.sampled_from(["28", "29", "30", "31"])),
    )
    hour, minute, second = draw(_DIGITS2), draw(_DIGITS2), draw(_DIGITS2)
    frac = draw(st.none() | st.text("0123456789", min_size=1, max_size=12))
    tz = draw(st.sampled_from(["", "Z", "z", "+00:00", "-07:00", "+0530", "+23:59", "-99:99"]))
    sep = draw(st.sampled_from(["T", "t", " "]))
    return f"{year}-{month}-{day}{sep}{hour}:{minute}:{second}" + (f".{frac}" if frac else "") + tz


@settings(max_examples=4000, deadline=None)
@given(times())
def test_parse_equals_datetime(text: str) -> None:
    assert parse_rfc3339(text) == reference_parse(text)


def test_parse_edges() -> None:
    edges = [
        "0001-01-01T00:00:00Z", "0001-01-01T00:00:00.1Z", "0000-01-01T00:00:00Z", "2024-02-29T12:00:00Z",
        "2023-02-29T12:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z", "2026-12-04T22:17:01.357481419Z", " 2026-12-04T22:17:01Z ",
        "2026-13-01T00:00:00Z", "2026-12-04T24:00:00Z", "2026-12-04T23:60:00Z", "2026-12-04T23:59:60Z",
        "", None, 5, "garbage",
    ]  # fmt: skip
    for text in edges:
        assert parse_rfc3339(text) == reference_parse(text), text
