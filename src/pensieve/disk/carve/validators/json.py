"""JSON lines (docker json-file logs) or one JSON document (RFC 8259), to the first NUL."""

from __future__ import annotations

import json
from typing import Any

from pensieve.disk.carve.base import (
    COMPLETE,
    MAX_LENGTH,
    PARTIAL,
    Context,
    Verdict,
)
from pensieve.disk.carve.validators.common import (
    text_extent,
    text_of,
)


def validate(ctx: Context, off: int) -> Verdict | None:
    head = ctx.src.read(off, 2)
    if head[:1] not in (b"{", b"[") or head[1:2] not in (b'"', b"\n", b" ", b"{", b"[", b"\r", b"\t"):
        return None
    length, how = text_extent(ctx, off, MAX_LENGTH["json"])
    if length < 2:
        return None
    text = text_of(ctx, off, length)
    lines = text.split("\n")
    details: dict[str, Any] = {"ended_by": how}
    try:
        first = json.loads(lines[0])
    except (ValueError, RecursionError):
        first = None
    if isinstance(first, (dict, list)) and len(lines) > 1:
        good = bad = 0
        last_bad = False
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                json.loads(line)
                good += 1
                last_bad = False
            except (ValueError, RecursionError):
                bad += 1
                last_bad = i == len(lines) - 1
        keys = set(first) if isinstance(first, dict) else set()
        details.update(
            format="json-lines",
            lines=good + bad,
            parsed=good,
            subtype="docker-json-log" if {"log", "stream", "time"} <= keys else None,
        )
        ok = bad == 0 and how == "zero fill"
        if bad == 1 and last_bad:
            details["failed"] = "last line cut"
        elif bad:
            details["failed"] = f"{bad} lines do not parse"
        if good < 1 or good < bad:
            return None
        return Verdict(length, COMPLETE if ok else PARTIAL, details)
    try:
        json.loads(text)
        details["format"] = "json"
        return Verdict(length, COMPLETE if how == "zero fill" else PARTIAL, details)
    except (ValueError, RecursionError) as exc:
        pos = getattr(exc, "pos", 0)
        if length >= 64 and pos >= len(text.rstrip()) - 1:
            details.update(format="json", failed="document cut")
            return Verdict(length, PARTIAL, details)
    return None
