"""JSON lines (docker json-file logs) or one JSON document (RFC 8259), to the first NUL."""

from __future__ import annotations

import json
from typing import Any

from pensieve.disk.carve.base import PARTIAL, Context, Verdict
from pensieve.disk.carve.validators.common import text_of, text_span, text_verdict


def validate(ctx: Context, off: int) -> Verdict | None:
    head = ctx.src.read(off, 2)
    if head[:1] not in (b"{", b"[") or head[1:2] not in (b'"', b"\n", b" ", b"{", b"[", b"\r", b"\t"):
        return None
    span = text_span(ctx, off, "json", 2)
    if span is None:
        return None
    length, how = span
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
        if bad == 1 and last_bad:
            details["failed"] = "last line cut"
        elif bad:
            details["failed"] = f"{bad} lines do not parse"
        if good < 1 or good < bad:
            return None
        return text_verdict(length, how, details, bad == 0)
    try:
        json.loads(text)
        details["format"] = "json"
        return text_verdict(length, how, details)
    except (ValueError, RecursionError) as exc:
        pos = getattr(exc, "pos", 0)
        if length >= 64 and pos >= len(text.rstrip()) - 1:
            details.update(format="json", failed="document cut")
            return Verdict(length, PARTIAL, details)
    return None
