"""The HTML report of a case (``pensieve report CASE --out DIR``): static pages readable offline,
built from the case opened read-only (:mod:`pensieve.report.pages`)."""

from __future__ import annotations


def build(case: str, out: str) -> list[str]:
    """Write the report of CASE into the new directory OUT; returns the files written."""
    from pensieve.report.pages import build as _build

    return _build(case, out)
