"""The commands of the ``pensieve`` CLI, one module per command or group.

Each module has ``add_parser(subparsers)`` adding its commands to the CLI's argparse sub-parsers;
every leaf sets ``func(opts) -> list[Problem]``.  ``COMMAND_MODULES`` is the one registry, in the
order ``pensieve --help`` lists them.  Modules import their analyses lazily: start-up time counts.
"""

from __future__ import annotations

import importlib

COMMAND_MODULES = (
    "inventory", "pods", "diff", "verify", "compare", "mem", "recover", "carve", "fs", "case", "timeline",
    "report", "live", "collect",
)  # fmt: skip


def add_all(subparsers, wanted: str | None = None) -> None:
    """Add the commands of every module of COMMAND_MODULES to SUBPARSERS, in order; with WANTED
    (the command on the line), stop at the module that adds it (start-up time: a listing need
    not build the parsers of ``mem`` or ``carve``)."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
        if wanted is not None and wanted in subparsers.choices:
            return
