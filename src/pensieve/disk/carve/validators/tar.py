"""tar (POSIX ustar, GNU): header checksums, member sizes, the two zero blocks, and the zero
padding to the 10240-byte record tar writes."""

from __future__ import annotations

from typing import Any

from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, PARTIAL, Context, Verdict

#: the magic bytes, and their offset in the file
SIGNATURE = (b"ustar", 257)


def _octal(field_: bytes) -> int | None:
    if field_ and field_[0] & 0x80:  # GNU base-256
        n = field_[0] & 0x7F
        for b in field_[1:]:
            n = n << 8 | b
        return n
    s = field_.replace(b"\0", b" ").strip()
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        return None


def _tar_header_ok(h: bytes) -> bool:
    stored = _octal(h[148:156])
    if stored is None:
        return False
    return stored == sum(h[:148]) + 256 + sum(h[156:512])


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    first = src.read(off, 512)
    if len(first) < 512 or first[257:262] != b"ustar" or not _tar_header_ok(first):
        return None
    pos = off
    members = 0
    names: list[str] = []
    details: dict[str, Any] = {"format": "gnu" if first[257:265] == b"ustar  \0" else "ustar"}
    while True:
        h = src.read(pos, 512)
        if len(h) < 512:
            details.update(members=members, failed="truncated")
            return Verdict(pos - off, PARTIAL, details)
        if not any(h):
            nxt = src.read(pos + 512, 512)
            if len(nxt) == 512 and not any(nxt):
                pos += 1024
                break
            details.update(members=members, failed="single zero block")
            return Verdict(pos - off, PARTIAL, details)
        if not _tar_header_ok(h):
            details.update(members=members, failed="header checksum mismatch (truncated or fragmented)")
            return Verdict(pos - off, PARTIAL if members else HEADER_ONLY, details)
        size = _octal(h[124:136]) or 0
        kind = h[156:157]
        if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
            size = 0 if kind != b"7" else size
        data_end = pos + 512 + (size + 511) // 512 * 512
        if data_end > ctx.bound:
            details.update(members=members, failed="member beyond the bound (truncated or hostile size)")
            return Verdict(min(pos + 512, ctx.bound) - off, PARTIAL if members else HEADER_ONLY, details)
        if kind not in (b"x", b"g", b"L", b"K"):
            members += 1
            if len(names) < 20:
                names.append(h[:100].split(b"\0", 1)[0].decode("utf-8", "replace"))
        pos = data_end
    # tar pads the archive to its 10240-byte record with zeros
    rec = 10240
    padded = off + (pos - off + rec - 1) // rec * rec
    if padded > pos and padded <= ctx.bound:
        pad = src.read(pos, padded - pos)
        if len(pad) == padded - pos and not any(pad):
            pos = padded
    details.update(members=members, names=names)
    return Verdict(pos - off, COMPLETE, details)
