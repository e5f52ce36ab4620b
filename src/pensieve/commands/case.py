"""``triage`` (every analysis of every source into a case), ``query`` (SQL over a case) and
``case`` (``tables``: what a case holds; ``export``: the case as Parquet files).
"""

from __future__ import annotations

from pensieve.commands.common import EPILOG, Commands, UsageError, add_output, arg, err

COMMANDS = Commands()
command = COMMANDS.command

CASE = arg("case", metavar="CASE", help="the case file (DuckDB)")


def _progress_line(event: dict) -> None:
    """One line on stderr per finished task: ``[3/12] host1 diff web: done, 42 rows, 0.3 s``."""
    status = event["status"]
    rows = "" if event.get("rows") is None else f", {event['rows']} rows"
    secs = f", {event['seconds']:.1f} s" if event.get("seconds") else ""
    why = f": {event['error']}" if event.get("error") else ""
    code = {"done": "32", "reused": "36", "failed": "31"}.get(status, "33")
    err(
        f"[{event['index']}/{event['total']}] {event['source']} {event['task']}: {status}{rows}{secs}{why}",
        code,
    )


@command(
    "triage",
    "run every analysis over every source and engine into a case (DuckDB), reusing what is done",
    arg(
        "sources",
        metavar="SOURCE",
        nargs="+",
        help="host roots, data roots, disk images, archives, checkpoints",
    ),
    arg(
        "--case",
        required=True,
        metavar="CASE",
        help="the case file to create or add to (outside the evidence)",
    ),
    arg("-q", "--quiet", action="store_true", help="no progress lines on stderr"),
    arg("--yara", action="append", metavar="PATH", help="YARA rules: a file, or a directory of *.yar/*.yara"),
    arg("--ioc", action="append", metavar="PATH", help="IOC list: an indicator a line, or a STIX 2.1 bundle"),
    arg("--yara-max-size", metavar="SIZE", default="64M", help="larger files are not YARA-scanned (64M)"),
    arg("--scheduler", metavar="ADDRESS", help="run the tasks on this Dask scheduler (tcp://host:8786)"),
    arg(
        "--workers",
        type=int,
        metavar="N",
        help="local Dask cluster of N processes (default: PENSIEVE_WORKERS, else one a CPU; 1: in-process)",
    ),
    arg("--progress", action="store_true", help="progress bars on stderr even when it is not a terminal"),
    arg("--manifest", metavar="FILE", help="more sources, one path a line (as every worker sees it)"),
    output=False,
)
def cmd_triage(o):
    """For every SOURCE and every engine on it, run each analysis as a task of its own -- the
    inventory (containers, images, layers, volumes), a diff of every container with hashes, the
    processes, sockets and changes of checkpoints ... -- and store the records in CASE, each
    keyed by source, host, engine, container, pod, image and layer. A task that fails is a
    record of the case (``tasks``, ``problems``); the others complete. Running triage again on
    the same sources reuses the tasks already done. Query the case with ``pensieve query``.
    With --yara / --ioc, rules and indicators run over what the diff reads, image layers and
    checkpoint memory (findings.rules)."""
    from pensieve.case.triage import triage
    from pensieve.evidence.spool import parse_size
    from pensieve.hunting import load_hunting
    from pensieve.records import Problem

    try:
        max_size = parse_size(o.yara_max_size)
    except ValueError as exc:
        raise UsageError(f"--yara-max-size: {exc}") from None
    hunting = load_hunting(o.yara, o.ioc, max_size)  # RuleError (exit 2) names file and line
    for note in hunting.notes if hunting is not None else []:
        err(f"note: {note}", "33")
    report = (lambda e: None) if o.quiet else _progress_line
    sources = list(o.sources) + (_manifest(o.manifest) if o.manifest else [])
    workers = _workers(o.workers)
    if o.scheduler or workers > 1:
        from pensieve.fleet.distributed import triage_on

        bars = None if o.quiet else _bars(o.progress)
        line = None if o.quiet else err
        summary = triage_on(sources, o.case, o.scheduler, workers, line, hunting, bars)
    else:
        summary = triage(sources, o.case, report=report, hunting=hunting)
    err(
        f"case {o.case}: {summary.done} tasks done, {summary.reused} reused, {summary.failed} failed",
        "32" if not summary.failed else "33",
    )
    if summary.problems:
        n = len(summary.problems)
        return [
            Problem(o.case, f"{n} problems met, kept in the case: pensieve query {o.case} 'FROM problems'")
        ]
    return []


def _workers(given: int | None) -> int:
    """How many local worker processes: --workers, else PENSIEVE_WORKERS, else one a CPU."""
    import os

    if given is not None:
        if given < 1:
            raise UsageError("--workers: at least 1")
        return given
    env = os.environ.get("PENSIEVE_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError(f"PENSIEVE_WORKERS: not a number: {env!r}") from None
    return os.cpu_count() or 1


def _bars(force: bool):
    """The rich Console the progress bars are drawn on: stderr when it is a terminal or FORCE
    (None: one line a task instead, for logs)."""
    import sys

    from rich.console import Console

    if force or sys.stderr.isatty():
        return Console(stderr=True, force_terminal=force or None)
    return None


def _manifest(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


@command(
    "query",
    "run SQL over a case (read-only): a table, JSON, JSONL or CSV",
    CASE,
    arg("sql", metavar="SQL", help='a DuckDB SQL statement, e.g. "SELECT name, state FROM containers"'),
)
def cmd_query(o):
    """Run one SQL statement over CASE, opened read-only (the case cannot change), and print the
    rows. Tables and columns: ``pensieve case tables``."""
    from pensieve.case.store import CaseStore

    store = CaseStore(o.case, read_only=True)
    try:
        names, rows, kinds = _run_sql(store, o.sql)
    finally:
        store.close()
    _emit_rows(names, rows, kinds, o.fmt)
    return []


def _run_sql(store, sql: str) -> tuple[list[str], list[tuple], dict[str, str]]:
    import duckdb

    try:
        return store.select_kinds(sql)
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {str(exc).splitlines()[0]}") from None


def _emit_rows(names: list[str], rows: list[tuple], kinds: dict[str, str], fmt: str) -> None:
    """ROWS as records of NAMES: times RFC 3339 UTC with nanoseconds, JSON columns parsed (by
    their type: a text column that happens to start with a bracket stays text)."""
    import json

    from pensieve.output.columns import Column
    from pensieve.output.render import emit
    from pensieve.times import iso_ns

    def convert(kind: str | None):
        if kind == "time":
            return lambda v: iso_ns(v) if isinstance(v, int) else v
        if kind == "json":
            return lambda v: json.loads(v) if isinstance(v, str) else v
        return lambda v: v

    fns = [convert(kinds.get(n)) for n in names]
    dicts = [{n: f(v) for n, f, v in zip(names, fns, row, strict=True)} for row in rows]
    cols = [Column(n, (lambda r, n=n: r[n]), "text") for n in names]
    emit(dicts, fmt, cols)


def cmd_tables(o):
    """Every table of a case and its columns (key columns first)."""
    from pensieve.case.schema import describe
    from pensieve.output.columns import Column
    from pensieve.output.render import emit

    rows = [{"table": t["table"], "doc": t["doc"], "columns": t["columns"]} for t in describe()]
    if o.fmt == "table":
        cols = [Column("TABLE", lambda r: r["table"], "id"), Column("HOLDS", lambda r: r["doc"], "long")]
        emit(rows, o.fmt, cols)
    else:
        emit(rows, o.fmt)
    return []


def cmd_export(o):
    """Write every table of CASE as a Parquet file into DIR (through the sink: never into the
    evidence, never over an earlier export, a manifest with each file's sha256)."""
    from pensieve.case.export import export_parquet

    written = export_parquet(o.case, o.parquet)
    err(f"wrote {len(written)} tables into {o.parquet}", "32")
    return []


def add_parser(subparsers) -> None:
    """``triage`` and ``query``, then ``case`` with its sub-commands."""
    COMMANDS.add_parser(subparsers)
    case = subparsers.add_parser("case", help="what a case holds, and the case as Parquet", epilog=EPILOG)
    subs = case.add_subparsers(dest="case_command", metavar="COMMAND", required=True)
    p = subs.add_parser("tables", help=cmd_tables.__doc__.splitlines()[0], epilog=EPILOG)
    add_output(p)
    p.set_defaults(func=cmd_tables)
    p = subs.add_parser(
        "export", help="write every table as Parquet into DIR", description=cmd_export.__doc__
    )
    p.add_argument("case", metavar="CASE")
    p.add_argument(
        "--parquet", required=True, metavar="DIR", help="destination directory (outside the evidence)"
    )
    p.set_defaults(func=cmd_export)
