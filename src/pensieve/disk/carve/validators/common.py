"""What several validators share: inflating a deflate stream, runs of zeros, text extents and
the verdict on a text file."""

from __future__ import annotations

import re
import zlib

from pensieve.disk.carve.base import COMPLETE, MAX_LENGTH, PARTIAL, Context, Source, Verdict


def printable(raw: bytes) -> bool:
    return all(32 < b < 127 for b in raw)


def inflate(src: Source, start: int, bound: int, raw: bool, out_bound: int) -> tuple[str, int, int, int]:
    """Inflate the deflate stream at START: (status, end offset, output size, crc32 of output).
    status: "end" (stream end found), "error" (corrupt: END is the last 4 KiB step that still
    inflated), "truncated" (ran out of input at BOUND), "bound" (output bound reached)."""
    d = zlib.decompressobj(-15 if raw else 15)
    state = [0, 0]  # crc, total

    def feed(dec, buf: bytes) -> str | None:
        while True:
            out = dec.decompress(buf, 1 << 20)
            state[0] = zlib.crc32(out, state[0])
            state[1] += len(out)
            if state[1] > out_bound:
                return "bound"
            if dec.eof or not dec.unconsumed_tail:
                return None
            buf = dec.unconsumed_tail

    pos = start
    for p, piece in src.pieces(start, bound, 1 << 18):
        saved, saved_state = d.copy(), list(state)
        try:
            if feed(d, piece) == "bound":
                return "bound", p + len(piece), state[1], state[0]
        except zlib.error:
            # replay the piece in small steps to say where the stream broke
            d, state[:] = saved, saved_state
            good = p
            try:
                for k in range(0, len(piece), 4096):
                    feed(d, piece[k : k + 4096])
                    if d.eof:
                        break
                    good = p + k + len(piece[k : k + 4096])
            except zlib.error:
                pass
            return "error", good, state[1], state[0]
        if d.eof:
            return "end", p + len(piece) - len(d.unused_data), state[1], state[0]
        pos = p + len(piece)
    return "truncated", pos, state[1], state[0]


ZERO_RUN = bytes(32)


def zero_run(src: Source, start: int, end: int) -> int:
    """Where a run of 32 zero bytes begins in [START, END) (END if none): compressed and
    entropy-coded data practically never hold one, the zero fill after a truncated file does."""
    for p, piece in src.pieces(start, end, 1 << 18):
        i = piece.find(ZERO_RUN)
        if i >= 0:
            return p + i
        nxt = src.read(p + len(piece), 31)
        if nxt and not any(nxt):
            tail = len(piece) - len(piece.rstrip(b"\0"))
            if tail + len(nxt) >= 32 and tail:
                return p + len(piece) - tail
    return end


def zero_tail(src: Source, pos: int, grid: int) -> bool:
    """Whether the bytes from POS to the next GRID boundary are all zero (a file's last block)."""
    end = pos + (-pos % grid)
    if end == pos:
        return True
    tail = src.read(pos, end - pos)
    return not any(tail)


_NONTEXT = re.compile(rb"[^\t\n\r\x0c\x1b\x20-\x7e\x80-\xff]")


def text_extent(ctx: Context, off: int, bound_len: int) -> tuple[int, str]:
    """(length, how it ended) of the printable text at OFF: "zero fill" when it ends at a NUL
    followed by zeros to the end of its block; "binary" at other non-text bytes; "range end"
    when it runs into the end of the scanned range (allocated space); "bound"."""
    src = ctx.src
    end_limit = min(off + bound_len, ctx.bound, ctx.range_end)
    for p, piece in src.pieces(off, end_limit, 1 << 16):
        m = _NONTEXT.search(piece)
        if m:
            at = p + m.start()
            if piece[m.start()] == 0 and zero_tail(src, at, ctx.grid):
                return at - off, "zero fill"
            return at - off, "binary"
    if end_limit == ctx.range_end and end_limit < ctx.bound:
        return end_limit - off, "range end"
    return end_limit - off, "bound"


def text_span(ctx: Context, off: int, type_: str, shortest: int) -> tuple[int, str] | None:
    """(length, how it ended) of the text of TYPE at OFF (:func:`text_extent`, at most
    ``MAX_LENGTH[TYPE]``), or None when it is shorter than SHORTEST bytes."""
    length, how = text_extent(ctx, off, MAX_LENGTH[type_])
    return (length, how) if length >= shortest else None


def text_verdict(length: int, how: str, details: dict, whole: bool = True) -> Verdict:
    """A text file is complete when it ends in the zero fill of its last block and WHOLE holds
    (what the type checks: it parses, its lines are stamped); partial otherwise."""
    return Verdict(length, COMPLETE if how == "zero fill" and whole else PARTIAL, details)


def text_of(ctx: Context, off: int, length: int) -> str:
    return ctx.src.read(off, length).decode("utf-8", "replace")
