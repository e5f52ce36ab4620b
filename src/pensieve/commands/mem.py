"""``pensieve mem VIEW SOURCE``: processes, files, sockets and memory of CRIU checkpoints.

SOURCE is one of

* a CRIU image directory (``criu dump -D DIR``; anything holding ``inventory.img``);
* a checkpoint archive: Podman ``container checkpoint --export``, CRI-O / kubelet forensic
  checkpoints, containerd CRI checkpoints (tar, plain / gzip / zstd), read in place;
* a Docker data root (or a host root holding one) with ``--container C --checkpoint NAME``:
  ``docker checkpoint create C NAME`` keeps the images in ``containers/<id>/checkpoints/NAME``
  (``--checkpoint`` may be left out when the container has only one);
* a host root holding the kubelet's checkpoint directory (``/var/lib/kubelet/checkpoints/*.tar``,
  or the kubelet's ``--root-dir``) with ``--checkpoint FILE`` naming one archive (left out when
  there is only one).

Views: ``info`` (the source and its container: engine, image, runtime, Kubernetes pod and
namespace), ``ps``, ``files``, ``sockets``, ``maps``, ``env``, ``cmdline``, ``changes`` (an
archive's rootfs-diff.tar and deleted.files), ``dump``, ``search``, ``yara``, ``diff A B`` and
``checkpoints HOST_ROOT`` (every kubelet checkpoint archive and Docker checkpoint of a host root).

Exit codes: 3 when the source is not a usable checkpoint (missing, not a checkpoint, corrupt
images), 4 when the named container, checkpoint, pid or mapping is not there, 2 for bad patterns
or an output directory inside the evidence, 5 when some of it could not be read (warnings).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from pensieve.commands.common import EPILOG, UsageError, add_output, described_parser
from pensieve.output import columns

SOURCE_HELP = (
    "a CRIU image directory, a checkpoint archive (Podman/CRI-O/containerd, tar[.gz|.zst]), "
    "a Docker data root / host root with --container and --checkpoint, or a host root with the "
    "kubelet's checkpoints (--checkpoint FILE)"
)


# ---- plumbing -----------------------------------------------------------------------------------


def _guard(fn):
    """Map library errors to the CLI's exit codes: unusable checkpoint 3, not found 4, usage 2."""

    @functools.wraps(fn)
    def run(opts):
        from pensieve.engines.docker import LookupFailed
        from pensieve.formats.criu.images import CriuImageError
        from pensieve.memory.sources import SourceError

        try:
            return fn(opts)
        except CriuImageError as exc:
            raise SourceError(f"unusable checkpoint: {exc}") from None
        except LookupFailed:
            raise
        except LookupError as exc:
            raise LookupFailed(str(exc.args[0]) if exc.args else str(exc)) from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    return run


def _open(opts, source: str | None = None, checkpoint: str | None = None):
    from pensieve.memory.sources import open_source

    return open_source(
        source or opts.source,
        container=getattr(opts, "container", None),
        checkpoint=checkpoint if checkpoint is not None else _first(getattr(opts, "checkpoint", None)),
    )


def _first(value):
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _problems(src, records=()) -> list:
    from pensieve.records import Problem

    out = [Problem(src.info.checkpoint, p) for p in src.problems]
    for r in records:
        for p in getattr(r, "problems", None) or []:
            out.append(Problem(src.info.checkpoint, f"pid {r.pid}: {p}"))
    return out


def _pids(opts) -> set[int] | None:
    return set(opts.pid) if getattr(opts, "pid", None) else None


def _select(opts, items: list, pids_of=lambda r: (r.pid,)) -> list:
    """ITEMS limited to the tasks named by --pid (the set built once); all of them without it."""
    wanted = _pids(opts)
    if not wanted:
        return items
    return [r for r in items if wanted.intersection(pids_of(r))]


def _add_source(p: argparse.ArgumentParser, nargs: str | None = None) -> None:
    if nargs:
        p.add_argument("source", metavar="SOURCE", nargs=nargs, help=SOURCE_HELP)
    else:
        p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument(
        "-c", "--container", metavar="C", help="container (id, prefix, name) in a Docker data root"
    )
    p.add_argument(
        "-k",
        "--checkpoint",
        metavar="NAME",
        action="append" if nargs else None,
        help="checkpoint name (docker checkpoint create C NAME)"
        + ("; twice for `diff` in one data root" if nargs else ""),
    )


def _pid_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    if required:
        p.add_argument("-p", "--pid", type=int, required=True, help="the process (pid in the checkpoint)")
    else:
        p.add_argument("-p", "--pid", type=int, action="append", help="only this process (repeatable)")


def _refuse_inside(src, dest: str) -> None:
    real = os.path.realpath(dest)
    for ev in (src.info.source, src.info.checkpoint.split(":", 1)[0]):
        root = os.path.realpath(ev)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            raise UsageError(f"refusing to write inside the evidence: {dest}")


# ---- views ---------------------------------------------------------------------------------------


@_guard
def cmd_info(o):
    """The checkpoint source: engine, container id and name, image, runtime, Kubernetes pod,
    namespace and container, command, when it was created and checkpointed, how many tasks."""
    from pensieve.output.render import emit_one

    with _open(o) as src:
        if src.archive is not None:
            src.changes()  # counts rootfs_changes
        emit_one(src.info, o.fmt)
        return _problems(src)


@_guard
def cmd_ps(o):
    """Every task of the checkpoint: pid, parent, state (zombies with their exit code), credentials,
    command line and environment as the process's memory held them at dump time."""
    from pensieve.memory import views as memory

    return _task_view(o, memory.processes, columns.processes(), task_problems=True)


def _task_view(o, read, spec, pids_of=lambda r: (r.pid,), task_problems: bool = False) -> list:
    """The records READ(checkpoint) gives, limited by --pid (PIDS_OF: the pids of one), as a
    table of SPEC (or a machine format); the source's problems (and, with TASK_PROBLEMS, each
    record's own, by pid)."""
    from pensieve.output.render import emit

    with _open(o) as src:
        items = _select(o, read(src.checkpoint), pids_of)
        emit(items, o.fmt, spec, title=_title(src))
        return _problems(src, items if task_problems else ())


def _title(src) -> str:
    i = src.info
    what = i.engine or "CRIU"
    name = i.container_name or (i.container_id or "")[:12]
    parts = [what] + ([name] if name else []) + ([f"checkpoint {i.name}"] if i.name else [])
    if i.pod:
        parts.append(f"pod {i.namespace}/{i.pod}" if i.namespace else f"pod {i.pod}")
    return " ".join(parts)


@_guard
def cmd_files(o):
    """Open descriptors of every task (and its cwd, root and exe) like /proc/PID/fd: regular files
    with position and flags, deleted-but-open files (content kept in the checkpoint), pipes with
    unread data, sockets, eventfds, ttys."""
    from pensieve.memory import views as memory

    return _task_view(o, memory.files, columns.open_files())


@_guard
def cmd_sockets(o):
    """Every socket with the tasks holding it: TCP/UDP endpoints and states, unix paths and peers,
    and the unread / unsent queues CRIU saved."""
    from pensieve.memory import views as memory

    return _task_view(o, memory.sockets, columns.sockets(), pids_of=lambda s: s.pids)


@_guard
def cmd_maps(o):
    """Memory mappings of every task (like /proc/PID/maps) with how many of their pages the
    checkpoint holds: present, in a parent checkpoint, lazy (not in the evidence)."""
    from pensieve.memory import views as memory

    return _task_view(o, memory.maps, columns.memory_maps())


def _strings_view(o, what: str):
    from pensieve.memory import views as memory
    from pensieve.output.render import emit

    with _open(o) as src:
        procs = [p for p in memory.processes(src.checkpoint) if p.state != "zombie"]
        procs = _select(o, procs)
        rows = [{"pid": p.pid, "comm": p.comm, what: getattr(p, what)} for p in procs]
        if o.fmt == "table" and what == "environ":
            flat = [(r["pid"], r["comm"], v) for r in rows for v in (r["environ"] or [])]
            emit(flat, o.fmt, columns.environment())
        else:
            emit(rows, o.fmt, columns.command_lines())
        return _problems(src, procs)


@_guard
def cmd_env(o):
    """The environment of every live task, read from its dumped stack (like /proc/PID/environ)."""
    return _strings_view(o, "environ")


@_guard
def cmd_cmdline(o):
    """The argument vector of every live task, read from its dumped stack (like /proc/PID/cmdline)."""
    return _strings_view(o, "cmdline")


@_guard
def cmd_changes(o):
    """The container's filesystem changes a checkpoint archive carries: entries of rootfs-diff.tar
    (added or modified: the archive does not keep the image's copy) and deleted.files."""
    from pensieve.output.render import emit

    with _open(o) as src:
        if src.archive is None:
            raise UsageError(
                "only checkpoint archives carry filesystem changes; for a Docker container use "
                "`pensieve diff DATA_ROOT CONTAINER`"
            )
        emit(
            src.changes(),
            o.fmt,
            columns.changes(engine=False),
            title=_title(src),
        )
        return _problems(src)


def _parse_range(text: str) -> tuple[int, int]:
    from pensieve.memory.scan import parse_address

    try:
        if "+" in text:
            a, n = text.split("+", 1)
            return parse_address(a), parse_address(a) + parse_address(n)
        a, b = text.split("-", 1)
        return parse_address(a), parse_address(b)
    except ValueError:
        raise UsageError(f"--range: not START-END or START+LENGTH: {text!r}") from None


@_guard
def cmd_dump(o):
    """Write one process's memory to files named with their addresses
    (pid<PID>-<start>-<end>-<perms>-<mapping>.bin, sparse, byte i = memory at start+i) and a
    manifest.json: address ranges (--range), the mappings holding an address or naming a file
    (--map), or every mapping.  Pages in a parent checkpoint are read through the chain; lazy and
    missing pages stay holes and are reported."""
    from pensieve.memory import scan as memscan
    from pensieve.output.render import emit

    ranges = [_parse_range(r) for r in o.range or []]
    if ranges and o.map:
        raise UsageError("--range and --map exclude each other")
    with _open(o) as src:
        _refuse_inside(src, o.out)
        regions = memscan.dump(src.checkpoint, o.pid, o.out, ranges=ranges or None, mapping=o.map)
        emit(
            regions,
            o.fmt,
            columns.dumped_regions(),
            title=f"pid {o.pid} -> {o.out}",
        )
        problems = _problems(src)
        from pensieve.records import Problem

        lazy = sum(r.lazy_pages for r in regions)
        if lazy:
            problems.append(
                Problem(src.info.checkpoint, f"{lazy} lazy pages are not in the evidence (holes)")
            )
        orphan = [g for r in regions for g in r.gaps if g["reason"] == "no-parent"]
        if orphan:
            problems.append(
                Problem(
                    src.info.checkpoint, f"{len(orphan)} ranges live in a parent checkpoint that is missing"
                )
            )
        return problems


@_guard
def cmd_search(o):
    """Find strings (-s), regular expressions (-e, Python syntax over bytes) and hex byte strings
    (-x) in the memory of every live process; each hit with pid, address, mapping and context."""
    from pensieve.memory import scan as memscan
    from pensieve.output.render import emit

    patterns: list = []
    for s in o.string or []:
        patterns += memscan.Pattern.string(s, ignore_case=o.ignore_case, utf16=o.utf16)
    for r in o.regex or []:
        patterns.append(memscan.Pattern.compile(r, ignore_case=o.ignore_case))
    for x in o.hex or []:
        patterns.append(memscan.Pattern.hex(x))
    if not patterns:
        raise UsageError("nothing to search for: give -s STRING, -e REGEX or -x HEX")
    with _open(o) as src:
        hits = memscan.search(src.checkpoint, patterns, _pids(o), context=o.context, max_hits=o.max_hits)
        if o.fmt in ("json", "jsonl"):
            _emit_hits_json(hits, o.fmt)
        else:
            emit(hits, o.fmt, columns.memory_hits(), title=_title(src))
        return _problems(src)


def _emit_hits_json(hits, fmt: str, out=None) -> int:
    """Search hits as ``emit`` writes them in FMT (json or jsonl), byte for byte, built per field:
    a search can print thousands of hits and the generic record encoder costs ~10 us each."""
    import json
    from json.encoder import encode_basestring as q

    from pensieve.output.render import _default
    from pensieve.records import to_dict

    out = out or sys.stdout

    def text(v) -> str:
        return "null" if v is None else q(v)

    def num(v) -> str:
        return "null" if v is None else int.__repr__(v)

    def line(h) -> str:
        if (
            h.rule is None
            and type(h.tags) is list
            and not h.tags
            and type(h.meta) is dict
            and not h.meta
            and type(h.pid) is int
            and type(h.address) is int
            and type(h.length) is int
            and (h.map_start is None or type(h.map_start) is int)
            and (h.map_offset is None or type(h.map_offset) is int)
        ):
            try:  # strings (str, or None) through json's own C quoting
                return (
                    f'{{"pid": {int.__repr__(h.pid)}, "address": {int.__repr__(h.address)}, '
                    f'"length": {int.__repr__(h.length)}, "pattern": {q(h.pattern)}, '
                    f'"comm": {text(h.comm)}, "mapping": {text(h.mapping)}, '
                    f'"map_start": {num(h.map_start)}, "perms": {text(h.perms)}, '
                    f'"map_offset": {num(h.map_offset)}, "context": {text(h.context)}, '
                    f'"context_hex": {q(h.context_hex)}, "rule": null, "tags": [], "meta": {{}}}}'
                )
            except TypeError:  # not a str: the generic encoder
                pass
        return json.dumps(to_dict(h), default=_default, ensure_ascii=False)

    n = 0
    if fmt == "jsonl":
        try:
            tty = out.isatty()
        except (AttributeError, ValueError):
            tty = False
        # lines go out in blocks of ~64 KiB (one write each, even on an unbuffered stdout) but
        # at once to a terminal, and whatever was found is written before an error goes up
        pending: list[str] = []
        size = 0
        try:
            for h in hits:
                text_line = line(h) + "\n"
                n += 1
                if tty:
                    out.write(text_line)
                    continue
                pending.append(text_line)
                size += len(text_line)
                if size >= 1 << 16:
                    out.write("".join(pending))
                    pending, size = [], 0
        finally:
            if pending:
                out.write("".join(pending))
        return n
    items = list(hits)  # like emit: nothing is written when the search fails half-way
    out.write("[" + ", ".join(line(h) for h in items) + "]\n")
    return len(items)


@_guard
def cmd_yara(o):
    """Run YARA rules (yara-python) over each live process's reconstructed memory; every string
    match with pid, address, mapping and context."""
    from pensieve.memory import scan as memscan
    from pensieve.output.render import emit

    if not o.rules and not o.rule:
        raise UsageError("no rules: give -r RULES_FILE or --rule 'rule x { ... }'")
    try:
        rules = memscan.compile_rules(o.rules, o.rule)
    except ImportError:
        raise UsageError("yara-python is not installed (pip install yara-python)") from None
    except Exception as exc:  # yara.SyntaxError, yara.Error: not importable without yara
        if type(exc).__module__ == "yara" or type(exc).__name__ in ("SyntaxError", "Error"):
            raise UsageError(f"YARA rules: {exc}") from None
        raise
    with _open(o) as src:
        hits = memscan.yara_scan(src.checkpoint, rules, _pids(o), context=o.context)
        emit(hits, o.fmt, columns.memory_hits(yara=True), title=_title(src))
        return _problems(src)


@_guard
def cmd_diff(o):
    """What changed between two checkpoints of the same tree: processes appeared / vanished /
    changed (command line, executable, credentials ...), sockets and files opened / closed, memory
    growth per process.  A B are two sources; in one Docker data root, name the container once and
    the checkpoints twice: SOURCE -c C -k BEFORE -k AFTER."""
    from pensieve.memory import scan as memscan
    from pensieve.output.render import emit

    names = o.checkpoint or []
    if len(o.source) == 2:
        if len(names) > 2:
            raise UsageError("diff: at most one --checkpoint per source")
        a = _open(o, o.source[0], names[0] if names else None)
        b_name = names[1] if len(names) > 1 else (names[0] if names else None)
        try:
            b = _open(o, o.source[1], b_name)
        except BaseException:
            a.close()
            raise
    elif len(o.source) == 1 and len(names) == 2:
        a = _open(o, o.source[0], names[0])
        try:
            b = _open(o, o.source[0], names[1])
        except BaseException:
            a.close()
            raise
    else:
        raise UsageError(
            "diff needs two sources (A B), or one data root with --container and two --checkpoint"
        )
    with a, b:
        changes = memscan.diff(a.checkpoint, b.checkpoint)
        emit(
            changes,
            o.fmt,
            columns.memory_changes(),
            title=f"{_title(a)} -> {_title(b)}",
        )
        return _problems(a) + _problems(b)


def _checkpoint_columns() -> list:
    """mem checkpoints: one row per checkpoint of a host root."""
    from pensieve.output.columns import ID, NUM, PATH, TIME, Column, clock, short_id

    return [
        Column("KIND", lambda i: i.kind),
        Column("NAME", lambda i: i.name, PATH),
        Column("NAMESPACE", lambda i: i.namespace),
        Column("POD", lambda i: i.pod),
        Column("CONTAINER", lambda i: i.k8s_container or i.container_name),
        Column("ID", lambda i: short_id(i.container_id), ID),
        Column("IMAGE", lambda i: i.image),
        Column("CHECKPOINTED", lambda i: clock(i.checkpointed), TIME),
        Column("TASKS", lambda i: i.tasks, NUM),
        Column("PROBLEMS", lambda i: len(i.problems) or "", NUM),
    ]


@_guard
def cmd_checkpoints(o):
    """Every checkpoint of a host root: the kubelet's forensic checkpoint archives
    (<kubelet root>/checkpoints/*.tar: /var/lib/kubelet, older k3s, k0s, MicroK8s, and any --root-dir a
    kubelet flags file names), each attributed to its pod, namespace and container from its file
    name and dumps, and Docker's checkpoints (containers/<id>/checkpoints/NAME).  An archive that
    cannot be read is listed with its problem; the others are still read."""
    from pensieve.evidence.base import EvidenceError
    from pensieve.memory.sources import docker_checkpoints, kubelet_checkpoints
    from pensieve.output.render import emit
    from pensieve.records import Problem
    from pensieve.records.memory import CheckpointInfo

    rows = kubelet_checkpoints(o.source)
    try:
        docker = docker_checkpoints(o.source)
    except (EvidenceError, OSError):
        docker = []
    for d in docker:
        rows.append(
            CheckpointInfo(
                kind="docker",
                source=o.source,
                checkpoint=d["path"],
                name=d["name"],
                engine="Docker",
                container_id=d["container_id"],
                container_name=d["container_name"],
            )
        )
    emit(rows, o.fmt, _checkpoint_columns(), title=f"checkpoints in {o.source}")
    return [Problem(r.checkpoint.removesuffix(":checkpoint"), p) for r in rows for p in r.problems]


# ---- the parser ----------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``mem`` and its views to the CLI's sub-parsers; returns the ``mem`` parser."""
    mem = described_parser(
        subparsers,
        "mem",
        "processes, files, sockets and memory of CRIU checkpoints (Docker, Podman, CRI-O, criu)",
        __doc__,
    )
    views = mem.add_subparsers(dest="mem_view", metavar="VIEW", required=True)

    def view(name: str, fn, help_text: str, nargs: str | None = None) -> argparse.ArgumentParser:
        p = views.add_parser(
            name, help=help_text, description=(fn.__doc__ or help_text).strip(), epilog=EPILOG
        )
        _add_source(p, nargs)
        add_output(p)
        p.set_defaults(func=fn)
        return p

    view("info", cmd_info, "the checkpoint source and its container (engine, image, runtime, pod, namespace)")
    _pid_arg(view("ps", cmd_ps, "processes at dump time: ids, state, credentials, command line"))
    _pid_arg(view("files", cmd_files, "open files of every process (like /proc/PID/fd)"))
    _pid_arg(view("sockets", cmd_sockets, "sockets with endpoints, states, holders and saved queues"))
    _pid_arg(view("maps", cmd_maps, "memory mappings with the pages the checkpoint holds"))
    _pid_arg(view("env", cmd_env, "environment of every process, from its dumped memory"))
    _pid_arg(view("cmdline", cmd_cmdline, "command line of every process, from its dumped memory"))
    view("changes", cmd_changes, "filesystem changes carried by an archive (rootfs-diff.tar, deleted.files)")

    p = view("dump", cmd_dump, "write one process's memory to files named with their addresses")
    _pid_arg(p, required=True)
    p.add_argument(
        "-o", "--out", required=True, metavar="DIR", help="output directory (outside the evidence)"
    )
    p.add_argument(
        "--range",
        action="append",
        metavar="START-END",
        help="an address range (hex 0x... or decimal; START+LENGTH works too); repeatable",
    )
    p.add_argument(
        "--map",
        metavar="ADDR|TEXT",
        help="the mapping holding ADDR, or the mappings whose path contains TEXT",
    )

    p = view("search", cmd_search, "find strings, regexes and hex bytes in process memory")
    _pid_arg(p)
    p.add_argument("-s", "--string", action="append", help="a string (UTF-8); repeatable")
    p.add_argument("-e", "--regex", action="append", help="a regular expression over bytes; repeatable")
    p.add_argument("-x", "--hex", action="append", help="hex bytes ('de ad be ef', 0xdeadbeef); repeatable")
    p.add_argument("-i", "--ignore-case", action="store_true", help="case-insensitive strings and regexes")
    p.add_argument("--utf16", action="store_true", help="also search strings as UTF-16LE")
    p.add_argument("--context", type=int, default=32, metavar="N", help="bytes of context each side (32)")
    p.add_argument("--max-hits", type=int, metavar="N", help="stop after N hits")

    p = view("yara", cmd_yara, "run YARA rules over each process's memory")
    _pid_arg(p)
    p.add_argument("-r", "--rules", action="append", metavar="FILE", help="a YARA rules file; repeatable")
    p.add_argument("--rule", action="append", metavar="TEXT", help="YARA rule source text; repeatable")
    p.add_argument("--context", type=int, default=32, metavar="N", help="bytes of context each side (32)")

    view(
        "diff", cmd_diff, "what changed between two checkpoints: processes, sockets, files, memory", nargs="+"
    )
    p = views.add_parser(
        "checkpoints",
        help="every checkpoint of a host root: the kubelet's checkpoint archives, Docker's checkpoints",
        description=(cmd_checkpoints.__doc__ or "").strip(),
        epilog=EPILOG,
    )
    p.add_argument(
        "source",
        metavar="HOST_ROOT",
        help="a host root: a mounted or copied node filesystem, or a disk image",
    )
    add_output(p)
    p.set_defaults(func=cmd_checkpoints)
    return mem


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - for trying the module alone
    """Run ``mem`` without the rest of the CLI (``python -m pensieve.commands.mem VIEW SOURCE``)."""
    from pensieve import cli

    parser = cli.base_parser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    return cli.main(["mem", *(argv if argv is not None else sys.argv[1:])], parser=parser)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
