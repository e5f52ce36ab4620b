"""Findings: what an analysis concludes, for reports and hunting."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import field, record


@record
class Finding:
    severity: str  # info | low | medium | high | critical
    title: str
    subject: str
    evidence: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
