"""Timesketch's JSONL import format.

Timesketch needs three fields in every event ("Create timeline from JSONL or CSV file" in its
user guide, ``docs/guides/user/import-from-json-csv.md``, and ``read_and_validate_jsonl`` in
``timesketch/lib/utils.py``, which refuses a line without them): ``message`` (a string),
``datetime`` (ISO 8601) and ``timestamp_desc`` (what the time means).  ``timestamp``
(microseconds since the epoch, an integer) is optional; when given it is what Timesketch sorts
on.  Any other field is kept as an attribute of the event.
"""

from __future__ import annotations

from typing import Any

from pensieve.times import iso_ns

#: the fields Timesketch refuses an event without
REQUIRED = ("message", "datetime", "timestamp_desc")


def event(time_ns: int, message: str, timestamp_desc: str, **attributes: Any) -> dict[str, Any]:
    """One Timesketch event: ``datetime`` RFC 3339 UTC with nanoseconds, ``timestamp`` in
    microseconds (Timesketch's unit), then ATTRIBUTES (None values left out)."""
    out: dict[str, Any] = {
        "message": message,
        "datetime": iso_ns(time_ns),
        "timestamp": time_ns // 1000,
        "timestamp_desc": timestamp_desc,
    }
    out.update({k: v for k, v in attributes.items() if v is not None})
    return out
