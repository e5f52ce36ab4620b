"""Carving a disk image in ranges of its unallocated space, one Dask unit each, merged into what
one :class:`~pensieve.disk.carve.Carver` over the whole image finds.

The Carver scans its spaces (free runs of each ext filesystem, space outside partitions) in image
order and skips every signature hit inside a file it already carved.  :class:`RangeCarver` is that
Carver taking only hits that start in ``[lo, hi)`` (the spaces themselves are unchanged, so a
validator still reads on past ``hi`` up to the end of its free run).  :func:`merge` puts the
ranges back in order and applies the "inside a file already carved" rule across their seams: a
range whose first files begin inside a file the ranges before it carved is carved again from
that file's end (:func:`carve_range` with ``start``), as the single scan would have gone on.

References:
  the carving algorithm: pensieve.disk.carve (Carver._scan, Carver._carve_hits)
"""

from __future__ import annotations

from typing import Any

from pensieve.disk import carve as carving
from pensieve.disk.carve.base import HEADER_ONLY

#: free bytes a carving unit covers
RANGE_BYTES = 256 << 20


class RangeCarver(carving.Carver):
    """A Carver that keeps only the hits starting in [LO, HI) of the image."""

    def __init__(self, img, lo: int, hi: int, **kwargs: Any) -> None:
        super().__init__(img, **kwargs)
        self.lo, self.hi = lo, hi

    def spaces(self):
        out = []
        for sp in super().spaces():
            if sp.end <= self.lo or sp.start >= self.hi:
                continue
            sp.start = max(sp.start, self.lo)  # the end stays: validators read up to it
            out.append(sp)
        return out

    def _hits(self, sp, lo: int, hi: int, magics, text_first):
        if lo >= self.hi:
            return []
        return [h for h in super()._hits(sp, lo, min(hi, self.hi), magics, text_first) if h[0] < self.hi]


def carve_ranges(path: str, size: int = RANGE_BYTES) -> list[tuple[int, int]]:
    """[lo, hi) image ranges holding about SIZE free bytes each ([] when one range holds all)."""
    img, filesystems = carving.open_for_carving(path)
    try:
        spaces = carving.Carver(img, filesystems=filesystems).spaces()
    finally:
        img.close()
    cuts: list[int] = []
    acc = 0
    for sp in spaces:
        pos = sp.start
        while sp.end - pos > size - acc:
            pos += size - acc
            cuts.append(pos)
            acc = 0
        acc += sp.end - pos
    if not cuts or not spaces:
        return []
    edges = [0, *cuts, max(sp.end for sp in spaces)]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def carve_range(path: str, lo: int, hi: int) -> tuple[list, list]:
    """(carved files, problems) of the hits starting in [LO, HI) of the image at PATH."""
    img, filesystems = carving.open_for_carving(path)
    try:
        carver = RangeCarver(img, lo, hi, filesystems=filesystems)
        files = list(carver.run())
        return files, list(carver.summary.problems)
    finally:
        img.close()


def merge(path: str, parts: list[tuple[int, int, list]]) -> list:
    """The files of PARTS ``[(lo, hi, files)]``, in image order, as one scan finds them."""
    out: list = []
    covered = 0
    for lo, hi, files in sorted(parts, key=lambda p: p[0]):
        if covered > lo and any(f.offset < covered for f in files):
            files, _problems = carve_range(path, covered, hi)  # the scan goes on after the file
        for f in files:
            if f.offset < covered:
                continue
            out.append(f)
            if f.confidence != HEADER_ONLY:
                covered = max(covered, f.offset + f.length)
    return out
