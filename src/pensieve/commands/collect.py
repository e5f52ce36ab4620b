"""``collect``: acquire running containers without stopping them, into a sealed bundle.

Filled in by the collect work (issue 10, item 5).
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    """``collect`` (not yet built: adds nothing)."""
