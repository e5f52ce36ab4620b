"""The CLI shell: one command registry, exit codes (tampering by a typed marker), --debug anywhere,
single-record CSV, and each warning printed once."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

import pytest

import pensieve.commands as commands
from pensieve import cli
from pensieve.errors import Tampered

SRC = Path(cli.__file__).parent


def _parser_with(fn) -> argparse.ArgumentParser:
    """A top-level parser with one command `probe` running FN."""
    parser = cli.base_parser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("word", nargs="?")
    p.set_defaults(func=fn)
    return parser


# ---- one registry ---------------------------------------------------------------------------------


def test_every_command_module_is_registered_once_in_order():
    found = {m.name for m in pkgutil.iter_modules(commands.__path__)} - {"common"}
    assert set(commands.COMMAND_MODULES) == found
    assert len(set(commands.COMMAND_MODULES)) == len(commands.COMMAND_MODULES)
    for name in commands.COMMAND_MODULES:
        assert callable(importlib.import_module(f"pensieve.commands.{name}").add_parser)
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [
        "roots", "containers", "images", "history", "volumes", "logs", "diff", "whence",
        "verify", "compare", "mem", "recover", "carve", "fs",
    ]  # fmt: skip


def test_cli_is_only_the_parser_and_exit_codes():
    text = (SRC / "cli.py").read_text()
    assert "@command" not in text and "def cmd_" not in text
    assert len(text.splitlines()) < 250
    for name in ("mem", "recover", "carve"):
        module = (SRC / "commands" / f"{name}.py").read_text()
        assert "from pensieve.cli import" not in module
        assert "cli.build_parser =" not in module


def test_mem_runs_alone_through_the_parser_hook(monkeypatch, capsys):
    from pensieve.commands import mem

    def refuse():
        raise AssertionError("mem.main must not build (or replace) the whole parser")

    monkeypatch.setattr(cli, "build_parser", refuse)
    assert mem.main(["nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert cli.build_parser is refuse


# ---- tampering ------------------------------------------------------------------------------------


def test_tampering_is_a_typed_marker(capsys):
    assert cli.main(["probe"], parser=_parser_with(lambda o: [Tampered()])) == cli.EXIT_TAMPERED
    assert "tampering found" in capsys.readouterr().err

    class _Tampered:  # the old name test: only the type counts now
        source, message = "x", "looks like a marker"

    assert cli.main(["probe"], parser=_parser_with(lambda o: [_Tampered()])) == cli.EXIT_PARTIAL
    assert "warning: x: looks like a marker" in capsys.readouterr().err


def test_verify_marks_tampering_with_the_type():
    from pensieve.commands.verify import _tampered_exit

    assert [type(p) for p in _tampered_exit(True)] == [Tampered] and _tampered_exit(False) == []


# ---- --debug ----------------------------------------------------------------------------------------


def _boom(o):
    raise RuntimeError("kaput")


@pytest.mark.parametrize(
    "argv", [["--debug", "probe"], ["probe", "--debug"], ["probe", "w", "--debug"], ["probe", "--debug", "w"]]
)
def test_debug_anywhere_shows_the_traceback(argv):
    with pytest.raises(RuntimeError, match="kaput"):
        cli.main(argv, parser=_parser_with(_boom))


def test_without_debug_the_message_says_how_to_get_it(capsys):
    assert cli.main(["probe"], parser=_parser_with(_boom)) == cli.EXIT_INTERNAL
    assert "internal error: RuntimeError: kaput (rerun with --debug)" in capsys.readouterr().err


def test_split_debug_keeps_what_follows_a_double_dash():
    assert cli.split_debug(["a", "--debug", "b"]) == (["a", "b"], True)
    assert cli.split_debug(["a", "--", "--debug"]) == (["a", "--", "--debug"], False)
    assert cli.split_debug(["a"]) == (["a"], False)
