"""The case store: one DuckDB file holding every record of a triage, keyed by source, host,
engine, container, pod, image and layer (:mod:`pensieve.case.schema`).

Why DuckDB: a case is queried far more than it is written, by analysts with SQL and by the
timeline, links and report, and exported to Parquet for other tools; DuckDB does all of that in
process, with typed columns (TIMESTAMP_NS, JSON) and no server.

Writing: rows are turned into JSON lines in a private temporary file (system temp, removed at
once) and loaded with one ``INSERT ... SELECT FROM read_json`` per batch -- tens of times faster
than parameter binding row by row.  Every task writes in one transaction: a task that fails leaves
nothing half-written, only its ``tasks`` row and its problem.

Never in the evidence: :func:`pensieve.output.sink.prepare_database` refuses a case path inside,
or holding, any evidence boundary, a symlink, or anything but a regular file, and creates missing
parent directories the way the sink does.  The case file and
DuckDB's ``.wal`` beside it are the only files written; ``pensieve query`` opens the case
read-only.

Versions: ``meta`` holds the schema version.  A case from a newer pensieve is refused; one from
an older pensieve is migrated by the steps of :data:`MIGRATIONS` when there are any, refused with a
message saying so otherwise; a DuckDB file that is not a case is refused.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pensieve import __version__
from pensieve.case.schema import (
    BY_NAME,
    KEY_NAMES,
    SCHEMA_VERSION,
    TABLES,
    Table,
    columns,
    create_statement,
    create_statements,
)
from pensieve.errors import UsageError
from pensieve.records import record_fields

#: schema version -> SQL statements bringing a case of that version to the next one
MIGRATIONS: dict[int, list[str]] = {
    # 2: tasks.params, the digest of the rules and indicators a task ran with (triage --yara/--ioc)
    1: ["ALTER TABLE tasks ADD COLUMN params VARCHAR"],
    # 3: the live snapshot of a collect bundle (triage's live-snapshot task), new tables only
    2: [create_statement(BY_NAME[name], if_missing=True) for name in ("live_processes", "live_sockets")],
    # 4: a live socket's UNIX peer (sock_diag UNIX_DIAG_PEER) and who holds it
    3: [
        f'ALTER TABLE live_sockets ADD COLUMN IF NOT EXISTS "{name}" {typ}'
        for name, typ in columns(BY_NAME["live_sockets"])
        if name.startswith("peer_")
    ],
}
BATCH = 50_000
_INT64 = (-(1 << 63), (1 << 63) - 1)


class CaseError(UsageError):
    """A case file pensieve will not use (not a case, a newer or unmigratable schema)."""


def _json_value(value: Any) -> Any:
    """VALUE as JSON-ready builtins: records as dicts, bytes as base64, text valid UTF-8."""
    from pensieve.records import to_dict

    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {_text(str(k)): _json_value(v) for k, v in value.items()}
    if record_fields(type(value)) is not None:
        return _json_value(to_dict(value))
    return value


def _text(value: str) -> str:
    """VALUE with any lone surrogate (a name that was not UTF-8) as a backslash escape."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _scalar(value: Any, sql: str) -> Any:
    """VALUE for a column of type SQL (JSON columns get their value, encoded later)."""
    if value is None:
        return None
    if sql == "JSON":
        return _json_value(value)
    if sql in ("BIGINT", "INTEGER", "TIMESTAMP_NS"):
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if _INT64[0] <= value <= _INT64[1] else None
    if sql == "VARCHAR":
        return _text(value if isinstance(value, str) else str(value))
    return value


def record_row(table: Table, record: Any, keys: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
    """The row of TABLE for RECORD: KEYS (context), then the record's own fields (a field named
    like a key, or renamed to one, fills the key when it has a value), then EXTRA."""
    row: dict[str, Any] = dict(keys)
    renames = dict(table.renames)
    for name in record_fields(type(record)) or ():
        if name in table.omit:
            continue
        value = getattr(record, name)
        column = renames.get(name, name)
        if column in KEY_NAMES and value is None and row.get(column) is not None:
            continue
        row[column] = value
    if extra:
        row.update(extra)
    return row


class CaseStore:
    """One case file, open for triage (read-write) or for queries (``read_only``)."""

    def __init__(self, path: str, read_only: bool = False, boundaries: Iterable[str] = ()) -> None:
        import duckdb

        self.read_only = read_only
        if read_only:
            if not os.path.isfile(path):
                raise CaseError(f"no case at {path}")
            self.path = path
        else:
            from pensieve.output.sink import prepare_database

            self.path = prepare_database(path, list(boundaries))
        fresh = not os.path.exists(self.path)
        try:
            self.db = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            raise CaseError(f"{path} is not a case (DuckDB cannot open it: {exc})") from None
        self._types = {t.name: dict(columns(t)) for t in TABLES}
        if fresh:
            self._create()
        else:
            self._check_version()

    # ---- schema ------------------------------------------------------------------------
    def _create(self) -> None:
        self.db.execute("BEGIN")
        self.db.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        for sql in create_statements():
            self.db.execute(sql)
        self.db.execute(
            "INSERT INTO meta VALUES ('schema_version', ?), ('created_by', ?)",
            [str(SCHEMA_VERSION), f"pensieve {__version__}"],
        )
        self.db.execute("COMMIT")

    def version(self) -> int | None:
        """The case's schema version (None: not a pensieve case)."""
        import duckdb

        try:
            row = _first(self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'"))
        except duckdb.Error:
            return None
        try:
            return int(row[0]) if row else None
        except ValueError:
            return None

    def _check_version(self) -> None:
        version = self.version()
        if version is None:
            self.close()
            raise CaseError(f"{self.path} is a DuckDB file but not a pensieve case (no schema version)")
        if version > SCHEMA_VERSION:
            self.close()
            raise CaseError(
                f"{self.path} was written by a newer pensieve (case schema {version}, this one reads "
                f"{SCHEMA_VERSION}): upgrade pensieve"
            )
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        steps = [MIGRATIONS.get(v) for v in range(version, SCHEMA_VERSION)]
        if any(s is None for s in steps) or self.read_only:
            self.close()
            why = (
                "open it read-write to migrate it" if self.read_only and None not in steps else "no migration"
            )
            raise CaseError(
                f"{self.path} has case schema {version}, this pensieve writes {SCHEMA_VERSION} ({why}): "
                "triage the sources into a new case"
            )
        self.db.execute("BEGIN")
        for step in steps:
            for sql in step or ():
                self.db.execute(sql)
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
        self.db.execute("COMMIT")

    def close(self) -> None:
        db, self.db = getattr(self, "db", None), None
        if db is not None:
            db.close()

    # ---- writing -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One task's writes: all of them, or none when the block raises."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def insert(self, table: str, rows: Iterable[dict]) -> int:
        """Add ROWS (column -> value; missing columns are null) to TABLE; returns how many."""
        types = self._types[table]
        names = list(types)
        n = 0
        batch: list[dict] = []
        for row in rows:
            unknown = set(row) - types.keys()
            if unknown:
                raise ValueError(f"{table} has no column {sorted(unknown)[0]!r}")
            batch.append(row)
            if len(batch) >= BATCH:
                n += self._load(table, names, types, batch)
                batch = []
        if batch:
            n += self._load(table, names, types, batch)
        return n

    def _load(self, table: str, names: list[str], types: dict[str, str], batch: list[dict]) -> int:
        spec = {n: ("BIGINT" if t == "TIMESTAMP_NS" else t) for n, t in types.items()}
        targets = ", ".join(f'"{n}"' for n in names)  # by name: a migrated table has added columns last
        select = ", ".join(
            f'make_timestamp_ns("{n}")' if types[n] == "TIMESTAMP_NS" else f'"{n}"' for n in names
        )
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8") as f:
            for row in batch:
                f.write(json.dumps({n: _scalar(row.get(n), types[n]) for n in names}, ensure_ascii=False))
                f.write("\n")
            f.flush()
            self.db.execute(
                f"INSERT INTO {table} ({targets}) SELECT {select} FROM read_json(?, "
                f"format='newline_delimited', columns={_struct(spec)})",
                [f.name],
            )
        return len(batch)

    # ---- sources and tasks ---------------------------------------------------------------
    def source_id(self, path: str, kind: str, label: str, host: str | None, fingerprint: str) -> int:
        """The id of the source at PATH with FINGERPRINT, added when new."""
        row = _first(
            self.db.execute(
                "SELECT source_id FROM sources WHERE path = ? AND fingerprint = ?", [path, fingerprint]
            )
        )
        if row:
            return int(row[0])
        (top,) = _first(self.db.execute("SELECT coalesce(max(source_id), 0) FROM sources"))
        sid = int(top) + 1
        self.insert(
            "sources",
            [
                {
                    "source_id": sid,
                    "path": path,
                    "kind": kind,
                    "label": label,
                    "host": host,
                    "fingerprint": fingerprint,
                    "added": time.time_ns(),
                    "pensieve_version": __version__,
                }
            ],
        )
        return sid

    def task_done(self, source_id: int, task: str, subject: str | None, params: str | None = None) -> bool:
        """Whether TASK on SUBJECT of the source already completed in this case (with PARAMS, when
        given: a task done with other rules is not done for these)."""
        done, had = self.task_params(source_id, task, subject)
        return done and (params is None or had == params)

    def task_params(self, source_id: int, task: str, subject: str | None) -> tuple[bool, str | None]:
        """(done, params) of TASK on SUBJECT of the source: whether it completed, and with what."""
        row = _first(
            self.db.execute(
                "SELECT params FROM tasks WHERE source_id = ? AND task = ? "
                "AND subject IS NOT DISTINCT FROM ? AND status = 'done' LIMIT 1",
                [source_id, task, subject],
            )
        )
        return (row is not None), (row[0] if row else None)

    def record_task(self, source_id: int, task: str, subject: str | None, status: str, **info: Any) -> None:
        """The outcome of one task (done | failed), replacing an earlier failed attempt."""
        self.db.execute(
            "DELETE FROM tasks WHERE source_id = ? AND task = ? AND subject IS NOT DISTINCT FROM ?",
            [source_id, task, subject],
        )
        row = {"source_id": source_id, "task": task, "subject": subject, "status": status}
        row.update(info, pensieve_version=__version__)
        self.insert("tasks", [row])

    def run_task(
        self,
        source_id: int,
        task: str,
        subject: str | None,
        write: Callable[[], int],
        failed: Callable[[str], None],
        params: str | None = None,
    ) -> tuple[str, int, str | None]:
        """One analysis, alone: WRITE (it adds its rows, returns how many) runs in one transaction
        with the task's ``done`` row; when it raises, all it wrote is rolled back and, in a second
        transaction, FAILED(message) records what it must (its problem) beside the ``failed`` row.
        Returns (status, rows, error message or None)."""
        started = time.time_ns()
        try:
            with self.transaction():
                n = write()
                self.record_task(
                    source_id,
                    task,
                    subject,
                    "done",
                    started=started,
                    finished=time.time_ns(),
                    rows=n,
                    params=params,
                )
            return "done", n, None
        except Exception as exc:  # noqa: BLE001 - one failed analysis must not end the others
            message = f"{type(exc).__name__}: {exc}"
            where = traceback.extract_tb(exc.__traceback__)[-1]
            with self.transaction():
                failed(message)
                self.record_task(
                    source_id,
                    task,
                    subject,
                    "failed",
                    started=started,
                    finished=time.time_ns(),
                    message=f"{message} ({os.path.basename(where.filename)}:{where.lineno})",
                )
            return "failed", 0, message

    # ---- reading -------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of SQL, as DuckDB gives them."""
        cur = self.db.execute(sql, params or [])
        names = [d[0] for d in cur.description or []]
        return names, cur.fetchall()

    def select(self, sql: str) -> tuple[list[str], list[tuple], set[str]]:
        """(column names, rows, the time columns) of SQL, every time as integer nanoseconds since
        the epoch (UTC) -- DuckDB hands Python datetimes, which stop at microseconds."""
        names, rows, kinds = self.select_kinds(sql)
        return names, rows, {n for n, k in kinds.items() if k == "time"}

    def select_kinds(self, sql: str) -> tuple[list[str], list[tuple], dict[str, str]]:
        """(column names, rows, column -> ``time`` | ``json`` for the columns of those types) of
        SQL; times as in :meth:`select`, JSON columns as their text."""
        rel = self.db.sql(sql)
        if rel is None:  # a statement without rows
            return [], [], {}
        names = list(rel.columns)
        types = [str(t) for t in rel.types]
        kinds = {n: "json" for n, t in zip(names, types, strict=True) if t == "JSON"}
        times = {n for n, t in zip(names, types, strict=True) if t.startswith("TIMESTAMP")}
        if times and len(set(names)) == len(names):
            quoted = ['"' + n.replace('"', '""') + '"' for n in names]
            rel = rel.project(
                ", ".join(
                    f"epoch_ns({q}) AS {q}" if n in times else q for n, q in zip(names, quoted, strict=True)
                )
            )
            kinds.update(dict.fromkeys(times, "time"))
        return names, rel.fetchall(), kinds

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {t.name: _first(self.db.execute(f"SELECT count(*) FROM {t.name}"))[0] for t in TABLES}


def _first(cursor) -> tuple | None:
    """The first row of CURSOR's result, the result read to its end (DuckDB refuses new work on a
    connection with a result left unread)."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


def _struct(spec: dict[str, str]) -> str:
    """A DuckDB struct literal of column -> type, for read_json's ``columns``."""
    return "{" + ", ".join(f"'{n}': '{t}'" for n, t in spec.items()) + "}"


def table(name: str) -> Table:
    """The declaration of table NAME (KeyError for none)."""
    return BY_NAME[name]
