"""One time representation: integer nanoseconds since the epoch (UTC) inside, RFC 3339 UTC with
nine fractional digits in every output (``2016-01-07T16:49:10.000000000Z``).

Engines write times in many forms -- Go's ``time.RFC3339Nano`` with any number of fractional
digits and any offset (Docker, containerd, Podman configs and logs), Go's zero time
``0001-01-01T00:00:00Z`` for "never", Unix seconds as floats or integers, protobuf Timestamps --
and every one of them is turned into nanoseconds here, once, by the engine that reads it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["from_seconds", "iso_ns", "parse_rfc3339"]

_NS = 1_000_000_000
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?\s*([Zz]|[+-]\d{2}:?\d{2})?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ns(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as RFC 3339 UTC with full precision (None stays None)."""
    if ns is None:
        return None
    sec, frac = divmod(ns, _NS)
    try:
        base = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None
    return f"{base}.{frac:09d}Z"


def parse_rfc3339(text: object) -> int | None:
    """Nanoseconds of an RFC 3339 / ISO 8601 time (Go's RFC3339Nano and its variants), None for
    anything else, for Go's zero time and for years outside 1..9999."""
    if not isinstance(text, str) or not text:
        return None
    m = _RFC3339.match(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    if year == "0001" and month == "01" and day == "01" and hour == minute == second == "00" and not frac:
        return None  # Go's zero time.Time: "never"
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


def from_seconds(value: object) -> int | None:
    """Nanoseconds of Unix seconds given as int or float (None for anything else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        whole = int(value)
        return whole * _NS + round((value - whole) * _NS)
    return value * _NS
