"""One time representation: integer nanoseconds since the epoch (UTC) inside, RFC 3339 UTC with
nine fractional digits in every output (``2016-01-07T16:49:10.000000000Z``).

Engines write times in many forms -- Go's ``time.RFC3339Nano`` with any number of fractional
digits and any offset (Docker, containerd, Podman configs and logs), Go's zero time
``0001-01-01T00:00:00Z`` for "never", Unix seconds as floats or integers, protobuf Timestamps --
and every one of them is turned into nanoseconds here, once, by the engine that reads it.
"""

from __future__ import annotations

import re

__all__ = ["from_seconds", "iso_ns", "parse_rfc3339"]

_NS = 1_000_000_000
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?\s*([Zz]|[+-]\d{2}:?\d{2})?"
)
#: days of each month in a common year (index 1-12)
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: days since 1970-01-01 of 0001-01-01 and of 9999-12-31 (the years Python's datetime covers)
_MIN_DAY, _MAX_DAY = -719162, 2932896
#: memo of the two conversions below (a host's times fall on few days), cleared when full
_DAYS: dict[str, int | None] = {}
_DATES: dict[int, str] = {}


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
    Low-Level Date Algorithms", days_from_civil)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number since 1970-01-01 (civil_from_days, same source)."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _date_days(year: str, month: str, day: str) -> int | None:
    """Days since the epoch of a date written YYYY, MM, DD; None when it is no date (years
    1-9999, as datetime takes them)."""
    key = year + month + day
    days = _DAYS.get(key, -1)
    if days != -1:
        return days
    y, m, d = int(year), int(month), int(day)
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    ok = y >= 1 and 1 <= m <= 12 and 1 <= d <= _MONTH_DAYS[m] + (m == 2 and leap)
    days = _days_from_civil(y, m, d) if ok else None
    if len(_DAYS) > 4096:
        _DAYS.clear()
    _DAYS[key] = days
    return days


def iso_ns(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as RFC 3339 UTC with full precision (None stays None, and so
    does a time outside years 1-9999)."""
    if ns is None:
        return None
    sec, frac = divmod(ns, _NS)
    days, rest = divmod(sec, 86400)
    if not _MIN_DAY <= days <= _MAX_DAY:
        return None
    date = _DATES.get(days)
    if date is None:
        y, m, d = _civil_from_days(days)
        date = f"{y}-{m:02d}-{d:02d}"  # years below 1000 unpadded, as glibc's strftime %Y wrote them
        if len(_DATES) > 4096:
            _DATES.clear()
        _DATES[days] = date
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{date}T{hour:02d}:{minute:02d}:{second:02d}.{frac:09d}Z"


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
    days = _date_days(year, month, day)
    h, mi = int(hour), int(minute)
    if days is None or h > 23 or mi > 59:
        return None
    offset = 0
    if tz and tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    seconds = days * 86400 + h * 3600 + mi * 60 + min(int(second), 59) - offset
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
