"""JSON from evidence, depth-bounded: a nesting bomb is a ValueError, never a RecursionError.

``json.loads`` recurses once per nesting level, so 100,000 ``[`` end a run with RecursionError
(or worse, exhaust the C stack).  :func:`loads` first scans the bytes for the bracket depth --
skipping string contents, escapes included (RFC 8259 section 7) -- and refuses input deeper
than ``max_depth`` before ``json.loads`` sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "loads", "max_depth_of"]

MAX_DEPTH = 512

#: a string (escapes included) or one bracket: what the depth scan needs to see
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_DEPTH_CHANGE = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def max_depth_of(data: bytes, stop_above: int | None = None) -> int:
    """The deepest bracket nesting of DATA (strings skipped); stops early above STOP_ABOVE."""
    depth = deepest = 0
    for m in _TOKEN.finditer(data):
        change = _DEPTH_CHANGE.get(data[m.start()])
        if change is None:  # a string
            continue
        depth += change
        if depth > deepest:
            deepest = depth
            if stop_above is not None and deepest > stop_above:
                break
    return deepest


def loads(data: bytes | str, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(DATA)``, or ValueError naming WHAT when it is nested deeper than MAX_DEPTH
    (or is not JSON: json.JSONDecodeError is a ValueError)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = max_depth_of(raw, max_depth)
    if depth > max_depth:
        raise ValueError(f"{what}: JSON nested deeper than {max_depth} levels: refused")
    try:
        return json.loads(raw)
    except RecursionError:  # pragma: no cover - the scan bounds the depth
        raise ValueError(f"{what}: JSON nested too deep") from None
