"""Evidence sources: one read-only filesystem interface over directories (and, later, disk
images and archives)."""

from __future__ import annotations

import os

from .base import DirEntry, Evidence, EvidenceError, FileStat, NotFound, file_kind, normalize
from .directory import DirectoryEvidence

__all__ = [
    "DirEntry",
    "DirectoryEvidence",
    "Evidence",
    "EvidenceError",
    "FileStat",
    "NotFound",
    "file_kind",
    "normalize",
    "open_evidence",
]


def open_evidence(source: str) -> Evidence:
    """Open SOURCE read-only.  Today: a directory (live root, mounted image, copied data root)."""
    if os.path.isdir(source):
        return DirectoryEvidence(source)
    if not os.path.exists(source):
        raise EvidenceError(f"source does not exist: {source}")
    raise EvidenceError(
        f"unsupported source {source}: only directories are readable in this version "
        "(disk images and archives come with later releases)"
    )
