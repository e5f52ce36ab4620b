"""What the report shows, read from a case (opened read-only) into plain dicts.

Every table is read with a few set-wide queries (never one query per container): the rows are
grouped here by container, ``(source_id, container_id)``, the key every table of a case starts
with (:mod:`pensieve.case.schema`).  Times stay integer nanoseconds (``CaseStore.select``); JSON
columns are parsed.  A table that is empty -- findings, events and links before the analyses
that fill them have run -- gives empty lists, never an error.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pensieve.case.schema import BY_NAME, columns
from pensieve.case.store import CaseStore

#: most to least severe; a severity not in this list sorts after them
SEVERITIES = ("critical", "high", "medium", "low", "info")
#: rows of one kind shown on a container page (the page says how many there are in all)
PAGE_LIMITS = {"changes": 2000, "logs": 200, "events": 500, "processes": 1000, "sockets": 1000}
_SAFE_NAME = re.compile(r"[0-9A-Za-z_.-]{1,100}")

Key = tuple[int | None, str | None]


def severity_rank(severity: str | None) -> int:
    """Position of SEVERITY in :data:`SEVERITIES` (unknown ones last)."""
    s = (severity or "").lower()
    return SEVERITIES.index(s) if s in SEVERITIES else len(SEVERITIES)


def _parse(value: Any) -> Any:
    """A JSON column's text as its value (text that does not parse stays text)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def rows(store: CaseStore, table: str, sql: str) -> list[dict]:
    """The rows of SQL (over TABLE) as dicts, JSON columns of TABLE parsed."""
    names, found, _times = store.select(sql)
    json_cols = {n for n, t in columns(BY_NAME[table]) if t == "JSON"} & set(names)
    out = []
    for r in found:
        d = dict(zip(names, r, strict=True))
        for n in json_cols:
            d[n] = _parse(d[n])
        out.append(d)
    return out


def page_name(container_id: str | None, source_id: int | None, taken: set[str]) -> str:
    """A file name for a container's page: its id when that is a safe name, else a digest of it;
    the source id is added when two sources hold the same id."""
    cid = container_id or ""
    base = (
        cid
        if _SAFE_NAME.fullmatch(cid) and cid not in (".", "..")
        else ("c-" + hashlib.sha256(cid.encode("utf-8", "surrogateescape")).hexdigest()[:16])
    )
    name, n = base, 1
    if name in taken:
        name = f"{base}-s{source_id}"
    while name in taken:
        n += 1
        name = f"{base}-s{source_id}-{n}"
    taken.add(name)
    return name


@dataclass
class CaseData:
    """Everything the pages show, grouped."""

    case: str
    sources: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    containers: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    problem_count: int = 0
    events: list[dict] = field(default_factory=list)
    events_derived: bool = False
    links: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: per container key: table -> rows (limited), and table -> count of all rows
    per_container: dict[Key, dict[str, list[dict]]] = field(default_factory=dict)
    per_container_counts: dict[Key, dict[str, int]] = field(default_factory=dict)
    pages: dict[Key, str] = field(default_factory=dict)

    def page_of(self, source_id: int | None, container_id: str | None) -> str | None:
        """The page name of a container (None: no such container in the case)."""
        if container_id is None:
            return None
        name = self.pages.get((source_id, container_id))
        if name is None:  # a row keyed by container only (another source's id is unlikely)
            name = self._by_id.get(container_id)
        return name

    @property
    def _by_id(self) -> dict[str, str]:
        cached = getattr(self, "_by_id_cache", None)
        if cached is None:
            cached = {}
            for (_sid, cid), name in self.pages.items():
                cached.setdefault(cid, name)
            self._by_id_cache = cached
        return cached


_PER_CONTAINER_SQL = {
    "changes": "SELECT source_id, container_id, change, path, type, size, mode, uid, gid, mtime, sha256 "
    "FROM changes",
    "logs": "SELECT source_id, container_id, time, stream, message FROM logs",
    "events": "SELECT source_id, container_id, time, kind, timestamp_desc, message, path FROM events",
    "processes": "SELECT source_id, container_id, checkpoint_name, pid, ppid, uid, comm, exe, cmdline, cwd "
    "FROM processes",
    "sockets": "SELECT source_id, container_id, checkpoint_name, family, type, proto, state, src, src_port, "
    "dst, dst_port, pids FROM sockets",
}
_ORDER = {
    "changes": "path",
    "logs": "time NULLS LAST",
    "events": "time NULLS LAST",
    "processes": "checkpoint_name, pid",
    "sockets": "checkpoint_name, src, src_port",
}


def _grouped(store: CaseStore, data: CaseData, table: str) -> None:
    """Rows of TABLE per container, at most PAGE_LIMITS[table] each, and the count of all."""
    limit = PAGE_LIMITS[table]
    sql = (
        f"{_PER_CONTAINER_SQL[table]} WHERE container_id IS NOT NULL "
        f"QUALIFY row_number() OVER (PARTITION BY source_id, container_id ORDER BY {_ORDER[table]}) "
        f"<= {limit} ORDER BY source_id, container_id, {_ORDER[table]}"
    )
    for r in rows(store, table, sql):
        data.per_container.setdefault((r["source_id"], r["container_id"]), {}).setdefault(table, []).append(r)
    _n, counted, _t = store.select(
        f"SELECT source_id, container_id, count(*) FROM {table} WHERE container_id IS NOT NULL GROUP BY ALL"
    )
    for sid, cid, n in counted:
        data.per_container_counts.setdefault((sid, cid), {})[table] = n


def load(case: str) -> CaseData:
    """Read CASE (read-only) into a :class:`CaseData`."""
    store = CaseStore(case, read_only=True)
    try:
        return _load(store, case)
    finally:
        store.close()


def _load(store: CaseStore, case: str) -> CaseData:
    data = CaseData(case)
    data.counts = store.counts()
    data.sources = rows(store, "sources", "SELECT * FROM sources ORDER BY source_id")
    data.tasks = rows(store, "tasks", "SELECT * FROM tasks ORDER BY source_id, task, subject")
    data.containers = rows(
        store, "containers", "SELECT * FROM containers ORDER BY source_id, host, name, container_id"
    )
    taken: set[str] = set()
    for c in data.containers:
        key = (c["source_id"], c["container_id"])
        if key not in data.pages:
            data.pages[key] = page_name(c["container_id"], c["source_id"], taken)
        c["page"] = data.pages[key]
    data.images = rows(store, "images", "SELECT * FROM images ORDER BY source_id, image_id")
    data.layers = rows(
        store,
        "layers",
        "SELECT source_id, host, owner, position, role, container_id, image_id, layer_id, diff_id, "
        "chain_id, size, driver, created_by, path FROM layers ORDER BY source_id, owner, container_id, "
        "image_id, position",
    )
    data.findings = rows(store, "findings", "SELECT * FROM findings")
    data.findings.sort(key=lambda f: (severity_rank(f["severity"]), -(f["time"] or 0), f["title"] or ""))
    data.problem_count = data.counts.get("problems", 0)
    data.problems = rows(store, "problems", "SELECT * FROM problems ORDER BY source_id, task LIMIT 500")
    data.events = rows(
        store,
        "events",
        "SELECT source_id, host, container_id, time, kind, timestamp_desc, message, path FROM events "
        "WHERE time IS NOT NULL ORDER BY time",
    )
    if not data.events:
        data.events = derived_events(data)
        data.events_derived = bool(data.events)
    data.links = rows(store, "links", "SELECT * FROM links")
    for table in PAGE_LIMITS:
        _grouped(store, data, table)
    return data


def derived_events(data: CaseData) -> list[dict]:
    """A timeline from the records' own times, for a case whose ``events`` table is still empty:
    container creation, start and finish, image creation, the time of each finding."""
    out: list[dict] = []

    def add(row: dict, time: int | None, kind: str, desc: str, message: str) -> None:
        if time is not None:
            out.append(
                {
                    "source_id": row.get("source_id"),
                    "host": row.get("host"),
                    "container_id": row.get("container_id"),
                    "time": time,
                    "kind": kind,
                    "timestamp_desc": desc,
                    "message": message,
                    "path": None,
                }
            )

    for c in data.containers:
        for col in ("created", "started", "finished"):
            add(c, c.get(col), "container", f"container {col}", f"{c.get('name') or c['container_id']} {col}")
    for i in data.images:
        add(i, i.get("created"), "image", "image created", f"image {i.get('image_id')} created")
    for f in data.findings:
        add(f, f.get("time"), "finding", f"finding ({f.get('severity')})", f.get("title") or "")
    out.sort(key=lambda e: e["time"])
    return out


def by_container(rows_: list[dict]) -> dict[Key, list[dict]]:
    """ROWS grouped by (source_id, container_id)."""
    out: dict[Key, list[dict]] = defaultdict(list)
    for r in rows_:
        if r.get("container_id") is not None:
            out[(r.get("source_id"), r["container_id"])].append(r)
    return out
