"""``timeline`` (the super-timeline of a case: table, JSON, JSONL, CSV, a TSK body file, Timesketch
JSONL) and ``links`` (what ties containers and hosts of a case together).

Both read the case read-only (:class:`pensieve.case.store.CaseStore`); ``--out FILE`` writes
through :class:`pensieve.output.sink.OutputSink`, refused inside any source of the case.
"""

from __future__ import annotations

import re
import sys

from pensieve.commands.common import Commands, UsageError, add_output, arg

COMMANDS = Commands()
command = COMMANDS.command

CASE = arg("case", metavar="CASE", help="the case file (DuckDB), made by pensieve triage")
OUT = arg("--out", metavar="FILE", help="write to FILE (a new file outside the evidence) instead of stdout")
CONTAINER = arg("--container", metavar="ID|NAME", help="only this container (an id prefix or a name)")
_NS = 1_000_000_000
_DAY = 86_400 * _NS
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAMES = (
    "LEFT JOIN (SELECT source_id, container_id, any_value(name) AS name FROM containers "
    "GROUP BY source_id, container_id) n ON n.source_id = e.source_id AND n.container_id = e.container_id"
)


def _when(text: str | None, end: bool) -> int | None:
    """--since/--until TEXT as ns: RFC 3339, or a date (its start; for --until, the next day's)."""
    from pensieve.times import parse_rfc3339

    if text is None:
        return None
    if _DATE.match(text.strip()):
        ns = parse_rfc3339(text.strip() + "T00:00:00Z")
        return None if ns is None else ns + (_DAY if end else 0)
    ns = parse_rfc3339(text)
    if ns is None:
        raise UsageError(f"not an RFC 3339 time or a date: {text!r}")
    return ns + (1 if end else 0)


class _Text:
    """A text stream over a file of the sink (what emit writes to)."""

    def __init__(self, written) -> None:
        self.written = written

    def write(self, text: str) -> int:
        self.written.write(text.encode("utf-8", "surrogateescape"))
        return len(text)

    def isatty(self) -> bool:
        return False


def _open_case(path: str):
    from pensieve.case.store import CaseStore

    return CaseStore(path, read_only=True)


def _write(o, store, write_to) -> None:
    """Call WRITE_TO(stream) with stdout, or with the file --out names (through the sink)."""
    if not o.out:
        write_to(sys.stdout)
        return
    from pensieve.output.sink import OutputSink

    boundaries = [row[0] for row in store.query("SELECT path FROM sources")[1] if row[0]]
    sink = OutputSink(o.out, boundaries, kind="file")
    try:
        with sink.create() as f:
            write_to(_Text(f))
    finally:
        sink.close()


def _container_filter(o, where: list[str], params: list, alias: str = "e") -> None:
    if o.container:
        where.append(f"({alias}.container_id LIKE ? || '%' OR n.name = ?)")
        params += [o.container.lower(), o.container.lstrip("/")]


def _kind_filter(o, where: list[str], params: list, alias: str = "e") -> None:
    if o.kind:
        where.append("(" + " OR ".join(f"starts_with({alias}.kind, ?)" for _k in o.kind) + ")")
        params += list(o.kind)


def event_rows(store, o) -> tuple[list[str], list[tuple]]:
    """The events of the case that pass the filters, in time order, with the container's name."""
    where, params = ["e.time IS NOT NULL"], []
    since, until = _when(o.since, False), _when(o.until, True)
    if since is not None:
        where.append("epoch_ns(e.time) >= ?")
        params.append(since)
    if until is not None:
        where.append("epoch_ns(e.time) < ?")
        params.append(until)
    _container_filter(o, where, params)
    _kind_filter(o, where, params)
    sql = (
        "SELECT epoch_ns(e.time) AS time, e.kind, e.timestamp_desc, e.message, e.path, n.name AS container, "
        "e.source_id, e.host, e.engine, e.container_id, e.pod, e.image_id, e.layer_id, e.producer, "
        "e.ref_table, "
        f"CAST(e.ref AS VARCHAR) AS ref FROM events e {_NAMES} WHERE {' AND '.join(where)} "
        "ORDER BY e.time, e.kind, e.message"
    )
    return store.query(sql, params)


def _records(names: list[str], rows: list[tuple]) -> list[dict]:
    """Rows as dicts: time as RFC 3339 with ns, ref as JSON."""
    import json

    from pensieve.times import iso_ns

    out = []
    for row in rows:
        d = dict(zip(names, row, strict=True))
        d["time"] = iso_ns(d["time"])
        d["ref"] = json.loads(d["ref"]) if d.get("ref") else None
        out.append(d)
    return out


def _write_events(o, names: list[str], rows: list[tuple], out) -> None:
    from pensieve.output.columns import Column
    from pensieve.output.render import emit

    if o.fmt == "timesketch":
        from pensieve.output.render import dumps
        from pensieve.output.timesketch import event

        for row in rows:
            d = dict(zip(names, row, strict=True))
            t, message, desc = d.pop("time"), d.pop("message"), d.pop("timestamp_desc")
            out.write(
                dumps(event(t, message, desc, data_type="pensieve:" + d["kind"], **d), indent=None) + "\n"
            )
        return
    records = _records(names, rows)
    cols = [
        Column("TIME", lambda r: r["time"], "time"),
        Column("KIND", lambda r: r["kind"], "id"),
        Column("CONTAINER", lambda r: r["container"] or (r["container_id"] or "")[:12], "id"),
        Column("MESSAGE", lambda r: r["message"], "text"),
    ]
    emit(records, o.fmt, cols, out=out)


def _file_metadata() -> str:
    """SQL of (ref_table, ref, type, octal mode, uid, gid, size, inode, deleted) of every row with
    file times (the ref built as the timeline builds it)."""
    from pensieve.case.timeline import REFS

    return (
        f"SELECT 'changes' AS ref_table, CAST({REFS['changes']} AS VARCHAR) AS ref, t.type, "
        "replace(t.mode, '0o', '') AS mode, t.uid, t.gid, t.size, NULL::BIGINT AS inode, "
        "t.change = 'deleted' AS deleted FROM changes t "
        f"UNION ALL SELECT 'recovered', CAST({REFS['recovered']} AS VARCHAR), t.type, "
        "CASE WHEN t.mode IS NULL THEN NULL ELSE printf('%o', t.mode) END, "
        "t.uid, t.gid, t.size, t.inode, TRUE "
        "FROM recovered t"
    )


def _write_bodyfile(store, names: list[str], rows: list[tuple], out) -> None:
    """One body-file line per file of the file.* events: its MACB times merged, its name
    ``HOST CONTAINER:PATH`` (`` (deleted)`` as fls writes it)."""
    from pensieve.output.bodyfile import line, mode_string

    files: dict[tuple[str, str], dict] = {}
    for row in rows:
        d = dict(zip(names, row, strict=True))
        if not d["kind"].startswith("file.") or d["ref"] is None:
            continue
        f = files.setdefault((d["ref_table"], d["ref"]), {"event": d})
        f[d["kind"][5:]] = d["time"]
    if not files:
        return
    meta = {(r[0], r[1]): r[2:] for r in store.query(_file_metadata())[1]}
    for key, f in files.items():
        d = f["event"]
        kind, mode, uid, gid, size, inode, deleted = meta.get(key, (None,) * 7)
        where = " ".join(p for p in (d["host"], d["container"] or (d["container_id"] or "")[:12]) if p)
        name = f"{where}:{d['path']}" + (" (deleted)" if deleted else "")
        out.write(
            line(
                name,
                inode,
                mode_string(kind, int(mode, 8) if mode else None),
                uid,
                gid,
                size,
                f.get("atime"),
                f.get("mtime"),
                f.get("ctime"),
                f.get("crtime"),
            )
            + "\n"
        )


def _timeline_output(p) -> None:
    """The output options of ``timeline``: every command's, and bodyfile and timesketch."""
    add_output(p)
    for action in p._actions:
        if action.dest == "fmt" and action.choices:
            action.choices = [*action.choices, "bodyfile", "timesketch"]


def cmd_timeline(o):
    """Every timestamped fact of CASE in time order (``events``: container lifecycle, image
    build steps, file MACB times of container changes and recovered files, log lines,
    checkpoints, findings ...). Formats: a table, --json/--jsonl/--csv (times RFC 3339 UTC with
    nanoseconds), ``--format bodyfile`` (TSK 3.x body file for ``mactime -b FILE -d -z UTC``:
    the file.* events only, one line per file with its times merged, in whole seconds, the name
    prefixed with the host and container), ``--format timesketch`` (JSONL for Timesketch's
    import: message, datetime RFC 3339 UTC with nanoseconds, timestamp in microseconds since the
    epoch as Timesketch counts, timestamp_desc, and kind, host, engine, container, pod, image,
    layer). --since/--until take RFC 3339 times or dates (UTC; --until DATE includes that day)."""
    store = _open_case(o.case)
    try:
        names, rows = event_rows(store, o)
        if o.fmt == "bodyfile":
            _write(o, store, lambda out: _write_bodyfile(store, names, rows, out))
        else:
            _write(o, store, lambda out: _write_events(o, names, rows, out))
    finally:
        store.close()
    return []


def link_rows(store, o) -> tuple[list[str], list[tuple]]:
    """The links of the case that pass the filters, by kind and value."""
    where, params = ["TRUE"], []
    _kind_filter(o, where, params, "l")
    if o.container:
        where.append(
            "(starts_with(l.a->>'container_id', ?) OR starts_with(l.b->>'container_id', ?) "
            "OR l.a->>'container' = ? OR l.b->>'container' = ?)"
        )
        cid, name = o.container.lower(), o.container.lstrip("/")
        params += [cid, cid, name, name]
    sql = (
        "SELECT l.kind, l.value, l.a_table, CAST(l.a AS VARCHAR) AS a, l.b_table, CAST(l.b AS VARCHAR) AS b, "
        "CAST(l.details AS VARCHAR) AS details, l.producer, l.source_id, l.host, l.container_id "
        f"FROM links l WHERE {' AND '.join(where)} ORDER BY l.kind, l.value, a, b"
    )
    return store.query(sql, params)


def _side(ref: dict | None, table: str | None) -> str:
    """One end of a link as a person reads it: ``c-web /etc/x`` or ``c-web 10.0.0.2:80``."""
    if not ref:
        return ""
    who = ref.get("container") or (ref.get("container_id") or "")[:12] or ref.get("host") or ""
    what = ref.get("path") or ""
    if table == "sockets" and ref.get("family") == "unix":
        what = ref.get("src") or ref.get("dst") or f"ino {ref.get('ino')}"
    elif table == "sockets":
        what = f"{ref.get('src')}:{ref.get('src_port')} -> {ref.get('dst')}:{ref.get('dst_port')}"
    elif table == "live_sockets" and ref.get("protocol") == "unix":
        what = ref.get("local") or f"inode {ref.get('inode')}"
    elif table == "live_sockets":
        what = f"{ref.get('local')}:{ref.get('local_port')} -> {ref.get('remote')}:{ref.get('remote_port')}"
    procs = ref.get("processes")
    if isinstance(procs, list) and procs:  # process.talk: who holds the socket
        held = [p for p in procs if isinstance(p, dict)]
        what += " " + ", ".join(f"{p.get('comm') or '?'}[{p.get('pid')}]" for p in held)
    return f"{who} {what}".strip()


def cmd_links(o):
    """What ties records of CASE together across containers and hosts, one row per pair
    (``links``): the same file hash (file.sha256), the same address (net.ip), a shared image
    (image.shared), a shared tampered layer (layer.tampered), both ends of a connection
    (socket.pair), a connection to another container's listener (net.peer), the processes of two
    containers at the two ends of one connection (process.talk), a shared volume
    (volume.shared). --kind filters by kind prefix, --container keeps the links with that
    container on either end."""
    import json

    from pensieve.output.columns import Column
    from pensieve.output.render import emit

    store = _open_case(o.case)
    try:
        names, rows = link_rows(store, o)
        records = []
        for row in rows:
            d = dict(zip(names, row, strict=True))
            for k in ("a", "b", "details"):
                d[k] = json.loads(d[k]) if d[k] else None
            records.append(d)
        cols = [
            Column("KIND", lambda r: r["kind"], "id"),
            Column("VALUE", lambda r: r["value"], "id"),
            Column("A", lambda r: _side(r["a"], r["a_table"]), "text"),
            Column("B", lambda r: _side(r["b"], r["b_table"]), "text"),
        ]
        _write(o, store, lambda out: emit(records, o.fmt, cols, out=out))
    finally:
        store.close()
    return []


KIND = arg(
    "--kind",
    action="append",
    metavar="KIND",
    help="only these kinds (a prefix: file. matches file.mtime); repeatable",
)


def add_parser(subparsers) -> None:
    """``timeline`` (with the body-file and Timesketch formats) and ``links``."""
    from pensieve.commands.common import EPILOG

    p = subparsers.add_parser(
        "timeline",
        help="the super-timeline of a case (table, JSON, CSV, TSK body file, Timesketch)",
        description=cmd_timeline.__doc__,
        epilog=EPILOG,
    )
    for names, kwargs in (
        CASE,
        arg("--since", metavar="TIME", help="events at or after TIME (RFC 3339 or a date, UTC)"),
        arg("--until", metavar="TIME", help="events up to TIME (RFC 3339, or a date: that whole day)"),
        CONTAINER,
        KIND,
        OUT,
    ):
        p.add_argument(*names, **kwargs)
    _timeline_output(p)
    p.set_defaults(func=cmd_timeline)
    COMMANDS.add_parser(subparsers)


command(
    "links",
    "what ties containers and hosts of a case together (hashes, addresses, layers ...)",
    CASE,
    KIND,
    CONTAINER,
    OUT,
)(cmd_links)
