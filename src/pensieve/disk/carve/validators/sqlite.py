"""SQLite 3 databases (sqlite.org/fileformat.html): header fields (page size, versions,
payload fractions, formats), page 1 b-tree header; the length is page size x page count."""

from __future__ import annotations

import struct
from typing import Any

from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, PARTIAL, Context, Verdict

#: the magic bytes, and their offset in the file
SIGNATURE = (b"SQLite format 3\0", 0)


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    h = src.read(off, 112)
    if len(h) < 108 or h[:16] != b"SQLite format 3\0":
        return None
    page = struct.unpack_from(">H", h, 16)[0]
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1) or h[18] not in (1, 2) or h[19] not in (1, 2):
        return None
    if h[21:24] != b"\x40\x20\x20" or h[20] >= page:
        return None
    change, npages = struct.unpack_from(">II", h, 24)
    freelist = struct.unpack_from(">I", h, 36)[0]
    schema = struct.unpack_from(">I", h, 44)[0]
    encoding = struct.unpack_from(">I", h, 56)[0]
    valid_for = struct.unpack_from(">I", h, 92)[0]
    if schema > 4 or encoding > 3:
        return None
    btree = h[100]
    details: dict[str, Any] = {"page_size": page, "pages": npages, "freelist_pages": freelist}
    if btree not in (0x0D, 0x05):
        return Verdict.failed(100, HEADER_ONLY, details, "page 1 is not a table b-tree page")
    ncells = struct.unpack_from(">H", h, 103)[0]
    ptrs = src.read(off + (112 if btree == 0x05 else 108), 2 * ncells)
    cells = [struct.unpack_from(">H", ptrs, 2 * i)[0] for i in range(len(ptrs) // 2)]
    if any(c < 100 or c >= page for c in cells):
        return Verdict.failed(page, HEADER_ONLY, details, "page 1 cell pointers outside the page")
    details["schema_entries"] = ncells
    if not npages or valid_for != change:
        return Verdict.failed(
            page, HEADER_ONLY, details, "in-header database size not valid (legacy writer): one page carved"
        )
    length = page * npages
    if off + length > ctx.bound:
        return Verdict.failed(
            max(page, min(ctx.bound, src.size) - off),
            PARTIAL,
            details,
            "database beyond the bound (truncated or hostile page count)",
        )
    return Verdict(length, COMPLETE, details)
