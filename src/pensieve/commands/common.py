"""What every command module of the ``pensieve`` CLI shares: the output options, the epilog of
exit codes, opening SOURCE as a host, short ids, and the guard against writing into evidence.

Nothing here imports an engine at module level: ``pensieve mem`` never loads the Docker engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from pensieve.errors import UsageError

__all__ = [
    "EPILOG",
    "SOURCE",
    "Commands",
    "UsageError",
    "add_commands",
    "add_output",
    "arg",
    "described_parser",
    "err",
    "full_ids",
    "is_archive",
    "open_host",
    "refuse_inside_evidence",
    "registrar",
    "short",
    "split_key_options",
]

EPILOG = (
    "exit codes: 0 ok, 1 internal error, 2 usage, 3 unusable source, 4 not found, "
    "5 finished with warnings (some evidence unreadable; the rest is in the output), "
    "6 tampering found (verify)"
)

#: one argparse argument: (names, keyword arguments of add_argument)
Arg = tuple[tuple[str, ...], dict[str, Any]]
#: one command: (name, help, arguments, adds the output options, fn(opts) -> problems)
Spec = tuple[str, str, list[Arg], bool, Callable[[argparse.Namespace], list]]


def arg(*names: str, **kwargs: Any) -> Arg:
    """An argument of a command, as ``add_argument(*names, **kwargs)`` takes it."""
    return names, kwargs


SOURCE = arg(
    "source",
    metavar="SOURCE",
    help="host root or Docker data root (a directory), or an image archive (docker save, OCI, docker export)",
)


#: the options giving LUKS keys, taken anywhere in the command line (like --debug): OPTION -> kind
KEY_OPTIONS = {"--passphrase-file": "passphrase", "--key-file": "key"}


def split_key_options(argv: list[str]) -> list[str]:
    """ARGV without ``--passphrase-file F`` / ``--key-file F`` (or ``--opt=F``, anywhere before a
    ``--``), whose files are read now and handed to :func:`pensieve.evidence.volumes.set_keys`:
    every LUKS volume of a disk image SOURCE is then tried with them, on every command.  The
    passphrase is the file's content less one trailing newline; the key file holds the raw volume
    key (``cryptsetup luksDump --dump-volume-key``, ``--volume-key-file``).  UsageError for a
    missing option value or an unreadable file."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept: list[str] = []
    given: dict[str, str] = {}
    i = 0
    while i < end:
        token = argv[i]
        name, eq, value = token.partition("=")
        if name in KEY_OPTIONS:
            if not eq:
                if i + 1 >= end:
                    raise UsageError(f"{name} needs a FILE")
                value = argv[i + 1]
                i += 1
            given[KEY_OPTIONS[name]] = value
        else:
            kept.append(token)
        i += 1
    if not given and "pensieve.evidence.volumes" not in sys.modules:
        return kept + argv[end:]  # nothing to give, nothing kept from an earlier run to forget
    from pensieve.evidence import volumes

    try:
        passphrase = volumes.read_passphrase_file(given["passphrase"]) if "passphrase" in given else None
        key = volumes.read_key_file(given["key"]) if "key" in given else None
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    volumes.set_keys(passphrase, key)  # none given: none kept from an earlier run in this process
    return kept + argv[end:]


def add_output(p: argparse.ArgumentParser) -> None:
    """--json / --jsonl / --csv / --format: the formats of pensieve.output.render; --no-trunc
    for whole ids in tables (machine formats always have them whole)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", dest="fmt", action="store_const", const="json", help="one JSON document")
    g.add_argument("--jsonl", dest="fmt", action="store_const", const="jsonl", help="one JSON object a line")
    g.add_argument("--csv", dest="fmt", action="store_const", const="csv", help="CSV with a header row")
    g.add_argument("--format", dest="fmt", choices=["table", "json", "jsonl", "csv"], help="output format")
    p.add_argument(
        "--no-trunc", action="store_true", help="whole ids and digests in tables (default: 12 hex digits)"
    )
    p.set_defaults(fmt="table")


def full_ids(opts: argparse.Namespace) -> bool:
    """Whether --no-trunc was given (a command without output options has none)."""
    return bool(getattr(opts, "no_trunc", False))


def described_parser(subparsers, name: str, help_text: str, doc: str | None) -> argparse.ArgumentParser:
    """A sub-parser NAME whose description is the module docstring DOC without its first
    paragraph, laid out as written, with the exit codes as epilog (``mem``, ``recover``, ``carve``)."""
    return subparsers.add_parser(
        name,
        help=help_text,
        description=(doc or "").split("\n\n", 1)[1].strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def registrar(specs: list[Spec]) -> Callable[..., Callable[[Callable], Callable]]:
    """A ``@command(name, help, *args, output=True)`` decorator appending to SPECS (in order);
    the command is ``fn(opts) -> problems``, ``output`` adds --json/--jsonl/--csv."""

    def command(name: str, help: str, *args: Arg, output: bool = True) -> Callable[[Callable], Callable]:
        def register(fn: Callable) -> Callable:
            specs.append((name, help, list(args), output, fn))
            return fn

        return register

    return command


class Commands:
    """The commands of one module, in order: ``@commands.command(name, help, *args)`` registers
    one, ``commands.add_parser(subparsers)`` adds them all to the CLI's sub-parsers."""

    def __init__(self) -> None:
        self.specs: list[Spec] = []
        self.command = registrar(self.specs)

    def add_parser(self, subparsers) -> None:
        """Add these commands to SUBPARSERS, in order."""
        add_commands(subparsers, self.specs)


def add_commands(subparsers, specs: list[Spec]) -> None:
    """Add each command of SPECS to SUBPARSERS, in order."""
    for name, help_text, args, output, fn in specs:
        p = subparsers.add_parser(
            name, help=help_text, description=(fn.__doc__ or help_text).strip(), epilog=EPILOG
        )
        for names, kwargs in args:
            p.add_argument(*names, **kwargs)
        if output:
            add_output(p)
        p.set_defaults(func=fn)


def color(text: str, code: str, stream) -> str:
    """TEXT in ANSI colour CODE when STREAM is a terminal and NO_COLOR is unset."""
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[{code}m{text}\033[0m"
    return text


def err(text: str, code: str = "31") -> None:
    """A line on stderr (red by default)."""
    from pensieve.output.text import printable

    print(color(printable(text), code, sys.stderr), file=sys.stderr)


def short(value: str | None, n: int = 12) -> str:
    """The first N hex digits of an id, without its ``sha256:`` prefix (as Docker prints it)."""
    from pensieve.output.columns import short_id

    return short_id(value, n)


#: the hosts the running command opened (cli.run closes them when the command ends)
OPENED: list = []
#: closed hosts kept to the end of a process that exits right after its command (cli.run)
KEPT: list = []


def close_opened(keep: bool = False) -> None:
    """Close every host open_host gave out (their descriptors and spool files), newest first;
    KEEP: hold on to them once closed (the process is about to end: no need to free them)."""
    while OPENED:
        host = OPENED.pop()
        host.close()
        if keep:
            KEPT.append(host)


def nothing_at_exit() -> bool:
    """No atexit callback is registered and no thread but this one runs (CPython's atexit
    counts its callbacks; threading is asked only when it was imported): ending the process
    with os._exit then skips only the freeing of memory (cli.console)."""
    import atexit

    count = getattr(atexit, "_ncallbacks", None)
    if count is None or count():
        return False
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def open_host(source: str):
    """The host behind SOURCE: every engine root (Docker data roots, containerd roots) of a
    directory (host root, data root, containerd root) or a disk image (raw, split raw, E01,
    qcow2; ``disk.img@2`` / ``disk.img@offset=N`` picks a partition),
    or an ArchiveHost over an image archive (docker save, OCI layout or archive, docker export)."""
    from pensieve.evidence.sniff import source_kind

    if source_kind(source) == "archive":
        from pensieve.images.archive import open_archive  # imported only for archives (~10 ms)

        host = open_archive(source)
        OPENED.append(host)
        return host
    from pensieve.engines.discover import open_engines
    from pensieve.evidence import open_evidence

    evidence = open_evidence(source)
    host = open_engines(evidence)  # Docker alone: the DockerHost; containerd roots too: all of them
    host.problems.extend(evidence.problems)  # skipped partitions and the like
    OPENED.append(host)
    return host


def is_archive(host) -> bool:
    """Whether HOST is an image archive (not a Docker host)."""
    from pensieve.images.archive import ArchiveHost

    return isinstance(host, ArchiveHost)


def refuse_inside_evidence(host, dest: str) -> None:
    """UsageError when DEST is the evidence (an image file, the archive), lies inside it or holds
    it: the output sink's one check (:func:`pensieve.output.sink.refuse_evidence`) against the
    host's boundaries, made before a command starts its work."""
    from pensieve.output.sink import refuse_evidence

    refuse_evidence(dest, host.boundaries())
