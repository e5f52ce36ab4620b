"""Text logs: lines that begin with timestamps (ISO 8601, syslog, dmesg, access logs,
logfmt), to the first NUL."""

from __future__ import annotations

import re

from pensieve.disk.carve.base import Context, Verdict
from pensieve.disk.carve.validators.common import text_span, text_verdict

_TS = re.compile(
    rb"(?:\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"  # ISO 8601 / RFC 3339
    rb"|\[\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"
    rb"|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d"  # syslog
    rb"|<\d{1,3}>\d? ?(?:\d{4}-|[A-Z][a-z]{2} )"  # syslog with priority
    rb"|\[ *\d+\.\d{6}\]"  # dmesg
    rb"|[\w.:-]{1,64} \S{1,64} \S{1,64} \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d"  # access log
    rb"|time=\"?\d{4}-\d\d-\d\d"  # logfmt (docker, containerd)
    rb"|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6}"  # klog (kubelet)
    rb")"
)


def validate(ctx: Context, off: int) -> Verdict | None:
    head = ctx.src.read(off, 200)
    if not _TS.match(head):
        return None
    span = text_span(ctx, off, "log", 16)
    if span is None:
        return None
    length, how = span
    raw = ctx.src.read(off, length)
    lines = [ln for ln in raw.split(b"\n") if ln.strip()]
    stamped = sum(1 for ln in lines if _TS.match(ln))
    cont = sum(1 for ln in lines if ln[:1] in (b" ", b"\t"))
    if stamped < 2 and len(lines) > 1:
        return None
    ratio = (stamped + cont) / max(1, len(lines))
    if ratio < 0.5:
        return None
    details = {"lines": len(lines), "timestamped": stamped, "ended_by": how}
    return text_verdict(length, how, details, ratio >= 0.8)
