"""Command groups of the ``pensieve`` CLI that live in their own module.

Each module has ``add_parser(subparsers)`` adding its command (with sub-commands) to the CLI's
argparse sub-parsers; every leaf sets ``func(opts) -> list[Problem]`` like the commands of
:mod:`pensieve.cli`.  Modules import their analyses lazily: start-up time counts.
"""
