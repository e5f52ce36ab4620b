"""PDF (ISO 32000): ``%PDF-1.x`` to the last ``%%EOF`` before zero fill or another header;
its ``startxref`` must point at an ``xref`` table or an xref stream object."""

from __future__ import annotations

import re
from typing import Any

from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, PARTIAL, PIECE, Context, Verdict
from pensieve.disk.carve.validators.common import zero_tail

#: the magic bytes, and their offset in the file
SIGNATURE = (b"%PDF-", 0)


_STARTXREF = re.compile(rb"startxref\s+(\d+)\s+%%EOF")


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    head = src.read(off, 1024)
    m = re.match(rb"%PDF-([12])\.(\d)", head)
    if not m:
        return None
    details: dict[str, Any] = {"version": f"{m[1].decode()}.{m[2].decode()}"}
    eofs: list[int] = []
    seen: set[int] = set()
    objs = 0
    stop_reason = "bound"
    carry = b""
    end_scan = ctx.bound
    g = ctx.grid
    zero = bytes(g)
    for p, piece in src.pieces(off, ctx.bound, PIECE):
        buf = carry + piece
        base = p - len(carry)
        objs += piece.count(b"endobj")
        limit = len(buf)
        nxt = buf.find(b"%PDF-", 1 if base == off else 0)
        if nxt >= 0:
            limit, stop_reason = nxt, "another %PDF header"
        # a whole zero block: the file ended (or was overwritten with zeros) before it
        k = piece.find(zero, (-(p - off)) % g)
        while k >= 0 and (p + k - off) % g:
            k = piece.find(zero, k + 1)
        if k >= 0 and len(carry) + k < limit:
            limit, stop_reason = len(carry) + k, "zero block"
        done = limit < len(buf)
        i = buf.find(b"%%EOF")
        while 0 <= i < limit:
            if base + i not in seen:
                seen.add(base + i)
                e = base + i + 5
                tail = src.read(e, 2)
                e += 2 if tail == b"\r\n" else 1 if tail[:1] in (b"\n", b"\r") else 0
                eofs.append(e)
                if zero_tail(src, e, g):
                    stop_reason, done = "zero fill after %%EOF", True
                    break
            i = buf.find(b"%%EOF", i + 1)
        if done:
            end_scan = base + limit
            break
        carry = buf[-8:]
    details["objects"] = objs
    details["eof_markers"] = len(eofs)
    if not eofs:
        details["failed"] = f"no %%EOF before the {stop_reason}"
        length = min(end_scan, ctx.bound) - off
        return Verdict(length, PARTIAL if objs else HEADER_ONLY, details)
    end = eofs[-1]
    tail = src.read(max(off, end - 1100), end - max(off, end - 1100))
    m2 = None
    for m2 in _STARTXREF.finditer(tail):  # noqa: B007 - the last one counts
        pass
    if m2 is None:
        details["failed"] = "no startxref before the last %%EOF"
        return Verdict(end - off, PARTIAL, details)
    xref = int(m2[1])
    at = src.read(off + xref, 32) if xref < end - off else b""
    details["startxref"] = xref
    if at.startswith(b"xref") or re.match(rb"\d+\s+\d+\s+obj", at):
        details["xref_ok"] = True
        return Verdict(end - off, COMPLETE, details)
    details["failed"] = "startxref does not point at a cross-reference table or stream"
    return Verdict(end - off, PARTIAL, details)
