"""The errors the CLI maps to exit codes, in a module of their own so that mapping them costs no
engine import (a `pensieve mem` run never loads the Docker engine)."""

from __future__ import annotations

from pensieve.evidence.base import EvidenceError, NotFound

__all__ = ["EvidenceError", "LookupFailed", "NotADataRoot", "NotFound", "Tampered", "UsageError"]


class LookupFailed(LookupError):
    """A named container or image is not in the evidence (or the name is ambiguous)."""


class NotADataRoot(EvidenceError):
    """The source holds no Docker data root."""


class UsageError(Exception):
    """Bad arguments found after parsing, or a destination pensieve will not write to (exit 2)."""


class Tampered:
    """A marker in a command's problem list: the evidence shows tampering (exit 6, after the
    output).  Not a Problem: the CLI reports it as one line, not as a warning."""

    source = "verify"
    message = "tampering found"
