"""Scripts: a ``#!/interpreter`` line, printable text to the first NUL (python ones are
compiled to check their syntax)."""

from __future__ import annotations

import os
import re
from typing import Any

from pensieve.disk.carve.base import Context, Verdict
from pensieve.disk.carve.validators.common import text_of, text_span, text_verdict

_SHEBANG = re.compile(rb"#! ?(/[\w/.+-]+)(?:[ \t]+([^\s]+))?[^\n]{0,200}\n")


def validate(ctx: Context, off: int) -> Verdict | None:
    head = ctx.src.read(off, 256)
    m = _SHEBANG.match(head)
    if not m:
        return None
    interp = m[1].decode("ascii")  # [\w/.+-] on bytes: ASCII only
    base = os.path.basename(interp)
    if base == "env" and m[2]:
        base = os.path.basename(m[2].decode("utf-8", "backslashreplace"))
    span = text_span(ctx, off, "script", m.end() + 1)
    if span is None:
        return None
    length, how = span
    kind = (
        "python"
        if base.startswith("python")
        else "shell"
        if base in ("sh", "bash", "dash", "zsh", "ksh", "ash", "busybox")
        else base
    )
    details: dict[str, Any] = {"subtype": kind, "interpreter": interp, "ended_by": how}
    if kind == "python" and length <= 4 << 20:
        try:
            compile(text_of(ctx, off, length), "<carved>", "exec", dont_inherit=True)
            details["syntax_ok"] = True
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            details["syntax_ok"] = False
            details["syntax_error"] = str(exc)[:200]
    return text_verdict(length, how, details, details.get("syntax_ok", True))
