"""The ``pensieve`` command: a thin shell over the library; every command is a library call.

argparse, not a heavier framework: a forensic CLI is started hundreds of times from scripts and
its start-up time counts.  Commands live in :mod:`pensieve.commands` (one registry:
``COMMAND_MODULES`` there); each returns the problems it met (warnings) and writes its records
through ``pensieve.output.render``.
This module only builds the parser and maps errors to exit codes.

Exit codes (also in the README):
  0  done
  1  internal error (a bug: rerun with --debug for the traceback)
  2  usage error (including an output destination inside the evidence)
  3  the source is unusable (missing, unreadable, no Docker data root in it)
  4  the named container, image or path is not in the evidence
  5  done, but some evidence could not be read: warnings on stderr, the rest is in the output
  6  done, and the evidence shows tampering (`verify`: a layer or image does not match its digest)
"""

from __future__ import annotations

import argparse
import os
import sys

from pensieve import __version__
from pensieve.commands.common import EPILOG, err, split_key_options
from pensieve.errors import Tampered, UsageError

__all__ = ["EPILOG", "UsageError", "build_parser", "console", "main", "run"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_SOURCE, EXIT_NOT_FOUND, EXIT_PARTIAL, EXIT_TAMPERED = range(7)

DESCRIPTION = (
    "pensieve: container forensics, offline and read-only. SOURCE is a directory (a live "
    "host root /, a mounted or copied host filesystem, a Docker data root), a disk image "
    "(raw, split raw, E01, qcow2; disk.img@N picks partition N), or an image archive (docker "
    "save tar, OCI layout or archive, docker export tar). Nothing in SOURCE is ever written."
)


def base_parser() -> argparse.ArgumentParser:
    """The top-level parser without commands: --version, --debug."""
    parser = argparse.ArgumentParser(prog="pensieve", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"pensieve {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of internal errors (anywhere on the line)"
    )
    parser.add_argument(
        "--max-spool",
        metavar="SIZE",
        help="most bytes spooled to disk at once for compressed layers and archive members "
        "(512M, 4G, bytes; default: PENSIEVE_MAX_SPOOL, else half the temp dir's free "
        "space up to 16G; anywhere on the line)",
    )
    return parser


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole ``pensieve`` parser: every module of pensieve.commands.COMMAND_MODULES, in order;
    with COMMAND, only the modules up to the one adding it (commands.add_all)."""
    from pensieve.commands import add_all

    parser = base_parser()
    add_all(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), command)
    return parser


def command_of(args: list[str]) -> str | None:
    """The command ARGS name (the first word), None when a top-level option comes first (--help,
    --version: they need the whole parser)."""
    return args[0] if args and not args[0].startswith("-") else None


def split_globals(argv: list[str]) -> tuple[list[str], bool, str | None]:
    """ARGV without the global options ``--debug`` and ``--max-spool SIZE`` / ``--max-spool=SIZE``
    (anywhere before a ``--``): (the rest, whether --debug was there, the last SIZE or None).
    UsageError when --max-spool has no SIZE."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept: list[str] = []
    debug, spool = False, None
    i = 0
    while i < end:
        token = argv[i]
        if token == "--debug":
            debug = True
        elif token == "--max-spool":
            if i + 1 >= end:
                raise UsageError("--max-spool needs a SIZE (512M, 4G, bytes)")
            spool = argv[i + 1]
            i += 1
        elif token.startswith("--max-spool="):
            spool = token.split("=", 1)[1]
        else:
            kept.append(token)
        i += 1
    return kept + argv[end:], debug, spool


def split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """ARGV without its global options (split_globals), and whether ``--debug`` was among them."""
    rest, debug, _ = split_globals(argv)
    return rest, debug


def apply_max_spool(size: str | None) -> None:
    """Give SIZE (``--max-spool``) to pensieve.evidence.spool as the spool budget; UsageError
    when it is not a size.  None leaves the budget as it is (PENSIEVE_MAX_SPOOL, else default)."""
    if size is None:
        return
    from pensieve.evidence import spool

    try:
        spool.set_budget(spool.parse_size(size))
    except ValueError as exc:
        raise UsageError(f"--max-spool: {exc}") from None


def _warn(problems: list) -> None:
    """Each problem once on stderr, however many lists carried it: the host's, the evidence's and a
    record's lists meet here (``diff``: host + view problems; ``recover``: evidence + report), so
    the same source and message (compared as text: a Path or a str) print one line.  A bare
    string (some analyses collect those) prints as the message alone."""
    seen: set[tuple[str, str]] = set()
    for p in problems:
        source, message = (str(p.source), str(p.message)) if hasattr(p, "message") else ("", str(p))
        if (source, message) not in seen:
            seen.add((source, message))
            err(f"warning: {source}: {message}" if source else f"warning: {message}", "33")


def _quiet_stdout() -> None:
    """stdout to /dev/null: the reader went away (a closed pipe), nothing more to say."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(
    argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None, exiting: bool = False
) -> int:
    """Entry point; returns (and, as a console script, exits with) the documented exit code.
    PARSER (default: build_parser()) lets one command group run alone (``commands.mem.main``).
    EXITING: the process ends when this returns (:func:`console`; see :func:`run`)."""
    try:
        args, debug, spool_size = split_globals(list(sys.argv[1:] if argv is None else argv))
        apply_max_spool(spool_size)
        args = split_key_options(args)  # --passphrase-file / --key-file: LUKS keys, any command
    except UsageError as exc:
        err(f"pensieve: error: {exc}")
        return EXIT_USAGE
    parser = parser or build_parser(command_of(args))
    try:
        opts = parser.parse_args(args)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return int(exc.code or 0)
    return run(opts, debug=debug or getattr(opts, "debug", False), exiting=exiting)


def run(opts: argparse.Namespace, debug: bool = False, exiting: bool = False) -> int:
    """Run the parsed command OPTS.func(opts); its errors and problems become the exit code.
    The hosts it opened are closed when it ends (descriptors, spool files: a library caller
    running many commands in one process keeps nothing).

    A listing (marked ``holds_gc``: one bounded set of records, written, then the end) runs with
    the cycle collector held off until its hosts are closed: its records hold no cycles and a
    collection would walk them all (a third of a 300-container Podman listing).  EXITING: the
    process ends right after; the closed hosts are kept, not freed object by object."""
    from pensieve.commands.common import close_opened

    held = None
    if getattr(getattr(opts, "func", None), "holds_gc", False):
        from pensieve.engines.podman.gcpause import PausedGC

        held = PausedGC().__enter__()
    try:
        return _run(opts, debug)
    finally:
        close_opened(keep=exiting)
        if held is not None and not exiting:  # exiting: the kept records stay unwalked to the end
            held.__exit__(None, None, None)


def _run(opts: argparse.Namespace, debug: bool) -> int:
    from pensieve.errors import EvidenceError, LookupFailed, NotADataRoot, NotFound

    try:
        problems = opts.func(opts) or []
    except UsageError as exc:
        err(f"pensieve: error: {exc}")
        return EXIT_USAGE
    except (LookupFailed, NotFound) as exc:
        err(f"error: {exc}")
        return EXIT_NOT_FOUND
    except (NotADataRoot, EvidenceError) as exc:
        err(f"error: {exc}")
        return EXIT_SOURCE
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence, documented exit 1
        if debug:
            raise
        err(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)")
        return EXIT_INTERNAL
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    tampered = [p for p in problems if isinstance(p, Tampered)]
    problems = [p for p in problems if not isinstance(p, Tampered)]
    if problems:
        _warn(problems)
    if tampered:
        err("tampering found: see the output", "31")
        return EXIT_TAMPERED
    return EXIT_PARTIAL if problems else EXIT_OK


def console() -> None:
    """The ``pensieve`` console script: main(), then the exit.  When nothing is left to run at
    exit (no atexit callback, no other thread) and stdout and stderr are flushed, the process
    ends with os._exit: what the interpreter's teardown would do then is only freeing memory
    (a listing's records, one object at a time), which the kernel does at once."""
    code = main(exiting=True)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream: the ordinary exit reports it
        sys.exit(code)
    from pensieve.commands.common import nothing_at_exit

    if nothing_at_exit():
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
