"""Triage on Dask distributed: workers read the evidence in coarse units, the client writes the case.

The client gives every source its id (in the order given, as in-process triage does), sends one
``source`` unit per source (:mod:`pensieve.fleet.units`), and, as each comes back, writes its
source row and whole-source tasks, then sends its containers in batches (:func:`batch_size`), one
unit per Docker graph-driver layer, one per carving range.  Results stream back with
``as_completed``; each task is written in one transaction with its ``tasks`` row
(:meth:`CaseStore.run_task`), ``integrity`` once every layer of its source is back, so an
interrupted run (Ctrl-C) leaves only whole tasks and a re-run does what is missing.  A unit the
scheduler could not complete after its retries is a failed task and a problem row for each
task it held; the triage finishes with the rest.  Tasks that read the case (the YARA rescans of
recovered and carved files ...) run on the client at the end, as in-process.

References:
  Dask distributed, Client.submit (retries, pure, key): https://distributed.dask.org/en/stable/api.html
  as_completed: https://distributed.dask.org/en/stable/api.html#distributed.as_completed
  LocalCluster: https://distributed.dask.org/en/stable/api.html#cluster
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable
from typing import Any

from pensieve.case.triage import TriageSummary, fingerprint, record_unopenable
from pensieve.fleet.carving import RANGE_BYTES
from pensieve.fleet.units import CLIENT_TASKS, HuntingSpec, TaskInfo, Unit, is_done, run_unit
from pensieve.records import Problem

#: most containers in one unit, and units aimed at per worker
MAX_BATCH = 32
UNITS_PER_WORKER = 4
#: how often a unit is tried again after its worker died or it raised
RETRIES = 2


def batch_size(containers: int, workers: int) -> int:
    """Containers per unit: about UNITS_PER_WORKER units per worker, at most MAX_BATCH."""
    return max(1, min(MAX_BATCH, math.ceil(containers / max(1, workers * UNITS_PER_WORKER))))


class _Source:
    """What the client knows of one source of the run."""

    def __init__(self, index: int, path: str, fp: str, sid: int, done: dict) -> None:
        self.index, self.path, self.fingerprint, self.sid, self.done = index, path, fp, sid, done
        self.label = path
        self.host = path
        self.tasks: dict[tuple, TaskInfo] = {}
        self.integrity: list | None = None  # the rows of integrity gathered so far
        self.layers_left = 0
        self.integrity_error: dict | None = None
        self.carve_parts: list[dict] = []  # the answers of its carving units
        self.carve_left = 0

    def keys(self) -> dict[str, Any]:
        return {"source_id": self.sid, "host": self.host}


class FleetRun:
    """One triage run on a Dask client: the state of the sources and counts."""

    def __init__(
        self, store, client, hunting, report: Callable[[dict], None], remote, retries: int, carve_bytes: int
    ) -> None:
        self.carve_bytes = carve_bytes
        self.store, self.client, self.hunting, self.report = store, client, hunting, report
        self.remote, self.retries = remote, retries
        self.spec = HuntingSpec.of(hunting)
        self.run_id = uuid.uuid4().hex
        self.done = self.reused = self.failed = 0
        self.problems: list[Problem] = []
        self.units: dict = {}  # future -> (unit, _Source)
        self.pending: dict[int, dict] = {}  # source index -> its source unit's answer
        self.next_index = 0
        self.sources: list[_Source] = []
        self.workers = max(1, len(client.scheduler_info().get("workers", {})) or 1)

    # ---- submitting -----------------------------------------------------------------------
    def submit(self, src: _Source, kind: str, items: tuple = ()):
        unit = Unit(kind, src.path, src.sid, self.run_id, src.done, self.spec, items, self.carve_bytes)
        key = f"pensieve-{kind}-{src.sid}-{len(self.units)}-{self.run_id[:8]}-{uuid.uuid4().hex[:8]}"
        fut = self.client.submit(self.remote, unit, retries=self.retries, pure=False, key=key)
        self.units[fut] = (unit, src)
        self.report({"phase": PHASE[kind], "event": "submitted"})
        return fut

    # ---- writing --------------------------------------------------------------------------
    def write_task(self, src: _Source, info: TaskInfo, result: dict) -> str:
        """One task's RESULT into the case (done with its rows, or failed with its message)."""
        store = self.store
        if result["status"] == "failed":
            return self._write_failed(src, info, result["error"], result.get("where"))

        def write() -> int:
            for sql, params in result.get("statements", []):
                store.query(sql, params)
            n = sum(store.insert(table, rows) for table, rows in result["rows"])
            store.insert("problems", result.get("problems", []))
            return n

        def failed(message: str) -> None:
            self._problem_row(src, info, message)

        status, _n, _msg = store.run_task(src.sid, info.name, info.subject, write, failed, info.params)
        if status == "done":
            self.problems += result.get("met", [])
        self._count(status)
        return status

    def _write_failed(self, src: _Source, info: TaskInfo, message: str, where: str | None) -> str:
        import time

        with self.store.transaction():
            self._problem_row(src, info, message)
            now = time.time_ns()
            self.store.record_task(
                src.sid,
                info.name,
                info.subject,
                "failed",
                started=now,
                finished=now,
                message=f"{message} ({where})" if where else message,
            )
        self._count("failed")
        return "failed"

    def _problem_row(self, src: _Source, info: TaskInfo, message: str) -> None:
        from pensieve.case.schema import BY_NAME
        from pensieve.case.store import record_row

        problem = Problem(src.path, f"task {info.label} failed: {message}", info.subject, "error")
        self.store.insert(
            "problems", [record_row(BY_NAME["problems"], problem, src.keys(), {"task": info.name})]
        )
        self.problems.append(problem)

    def _count(self, status: str) -> None:
        self.done += status == "done"
        self.failed += status == "failed"

    # ---- answers --------------------------------------------------------------------------
    def answered(self, fut) -> None:
        """The answer of the unit of FUT (or its error after its retries) into the case."""
        unit, src = self.units.pop(fut)
        try:
            answer = fut.result()
        except Exception as exc:  # noqa: BLE001 - a unit that could not complete: its tasks fail
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        if unit.kind == "source":
            self.pending[src.index] = answer
            self._flush_sources()
        elif unit.kind == "layer":
            self._layer(src, answer)
        elif unit.kind == "carve":
            self._carve(src, unit, answer)
        else:
            self._results(src, unit, answer)
        self.report({"phase": PHASE[unit.kind], "event": "unit", "status": _status(answer)})

    def _flush_sources(self) -> None:
        """Write the sources whose answers are in, in the order given (so that their ids are the
        ones in-process triage gives)."""
        while self.next_index in self.pending:
            src = self.sources[self.next_index]
            answer = self.pending.pop(self.next_index)
            self.next_index += 1
            self._source(src, answer)

    def _source(self, src: _Source, answer: dict) -> None:
        if "unusable" in answer or "error" in answer:
            summary = record_unopenable(
                self.store, src.path, answer.get("unusable") or answer["error"], lambda e: None
            )
            self.failed += summary.failed
            self.problems += summary.problems
            return
        sid = self.store.source_id(
            src.path, answer["kind"], answer["label"], answer["host_name"], src.fingerprint
        )
        assert sid == src.sid, (sid, src.sid)  # noqa: S101 - ids follow the order given
        src.label, src.host = answer["label"], answer["host_name"] or src.path
        src.tasks = {(t.name, t.subject): t for t in answer["tasks"]}
        self.problems += answer["opened_problems"]
        if answer["plan_problems"]:
            with self.store.transaction():
                self.store.insert("problems", answer["plan_problems"])
        self.reused += sum(is_done(src.done, t) for t in answer["tasks"])
        for key, result in answer["results"].items():
            if key == ("integrity", None) and answer["layers"] and result["status"] == "done":
                continue  # written once its layers are back
            self._report_task(src, src.tasks[key], self.write_task(src, src.tasks[key], result), "sources")
        self._integrity(src, answer)
        src.carve_left = len(answer["ranges"])
        for lo, hi in answer["ranges"]:
            self.submit(src, "carve", (lo, hi))
        self._submit_containers(src, answer["containers"])

    def _integrity(self, src: _Source, answer: dict) -> None:
        """Hold the integrity rows of the source until every layer is back (or write them)."""
        key = ("integrity", None)
        result = answer["results"].get(key)
        if result is None or result["status"] != "done" or not answer["layers"]:
            return
        src.integrity = [r for _t, rows in result["rows"] for r in rows]
        src.layers_left = len(answer["layers"])
        for entry in answer["layers"]:
            self.submit(src, "layer", (entry,))

    def _layer(self, src: _Source, answer: dict) -> None:
        src.layers_left -= 1
        if answer.get("status") == "done":
            src.integrity += [r for r in answer["rows"]]
        elif src.integrity_error is None:
            src.integrity_error = answer
        if src.layers_left == 0:
            info = src.tasks[("integrity", None)]
            err = src.integrity_error
            if err is not None:
                result = {"status": "failed", "error": err.get("error"), "where": err.get("where")}
            else:
                result = {"status": "done", "rows": [("integrity", src.integrity)], "problems": []}
            self._report_task(src, info, self.write_task(src, info, result), "layers")

    def _carve(self, src: _Source, unit: Unit, answer: dict) -> None:
        """Hold the carving ranges of the source until all are back, then merge and write them."""
        src.carve_left -= 1
        src.carve_parts.append(answer if "error" not in answer else {"status": "failed", **answer})
        if src.carve_left:
            return
        info = src.tasks[("carve", None)]
        bad = next((p for p in src.carve_parts if p.get("status") != "done"), None)
        if bad is not None:
            result = {"status": "failed", "error": bad.get("error"), "where": bad.get("where")}
        else:
            result = _carve_result(src, src.carve_parts)
        self._report_task(src, info, self.write_task(src, info, result), "carve")

    def _submit_containers(self, src: _Source, containers: list[str]) -> None:
        todo = [
            c
            for c in containers
            if any(
                t.subject
                and t.subject.split("/", 1)[0] == c
                and t.name not in CLIENT_TASKS
                and not is_done(src.done, t)
                for t in src.tasks.values()
            )
        ]
        n = batch_size(len(todo) * max(1, len(self.sources)), self.workers)
        for i in range(0, len(todo), n):
            self.submit(src, "containers", tuple(todo[i : i + n]))

    def _results(self, src: _Source, unit: Unit, answer: dict) -> None:
        if "error" in answer:  # the unit itself failed: each of its tasks is a failed task
            owned = set(unit.items)
            for info in src.tasks.values():
                subject_owner = info.subject.split("/", 1)[0] if info.subject else None
                if subject_owner in owned and info.name not in CLIENT_TASKS and not is_done(src.done, info):
                    self._report_task(src, info, self._write_failed(src, info, answer["error"], None))
            return
        for key, result in answer["results"].items():
            self._report_task(src, src.tasks[key], self.write_task(src, src.tasks[key], result))

    def _report_task(self, src: _Source, info: TaskInfo, status: str, phase: str = "containers") -> None:
        """One line's worth for the CLI (the bars count units, not these)."""
        self.report(
            {"phase": phase, "event": "task", "source": src.label, "task": info.label, "status": status}
        )


def _carve_result(src: _Source, parts: list[dict]) -> dict:
    """The carve task's result from its ranges: files merged in image order (as one scan finds
    them), each problem once."""
    from pensieve.case.schema import BY_NAME
    from pensieve.case.store import record_row
    from pensieve.fleet.carving import merge

    files = merge(src.path, [(*p["range"], p["files"]) for p in parts])
    met: list[Problem] = []
    seen: set[tuple] = set()
    for part in sorted(parts, key=lambda p: p["range"]):
        for p in part["met"]:
            key = (p.source, p.message, p.subject, p.severity)
            if key not in seen:  # each range's Carver says what the image's spaces are
                seen.add(key)
                met.append(p)
    keys = src.keys()
    problems = [record_row(BY_NAME["problems"], p, keys, {"task": "carve"}) for p in met]
    rows = [record_row(BY_NAME["carved"], f, keys) for f in files]
    return {"status": "done", "rows": [("carved", rows)], "problems": problems, "met": met}


#: the progress phase of each kind of unit
PHASE = {"source": "sources", "containers": "containers", "layer": "layers", "carve": "carve"}


def _status(answer: dict) -> str:
    """done, or failed when the unit or any of its tasks failed."""
    results = list(answer.get("results", {}).values())
    if "error" in answer or "unusable" in answer or answer.get("status") == "failed":
        return "failed"
    return "failed" if any(r["status"] == "failed" for r in results) else "done"


def _existing(store, path: str, fp: str) -> int | None:
    row = store.db.execute(
        "SELECT source_id FROM sources WHERE path = ? AND fingerprint = ?", [path, fp]
    ).fetchone()
    return int(row[0]) if row else None


def _done_map(store, sid: int) -> dict:
    rows = store.db.execute(
        "SELECT task, subject, params FROM tasks WHERE source_id = ? AND status = 'done'", [sid]
    ).fetchall()
    return {(t, s): p for t, s, p in rows}


def _plan_sources(store, paths: list[str]) -> list[_Source]:
    """Each path with its id: the one the case holds, else the next free one, in order."""
    (top,) = store.db.execute("SELECT coalesce(max(source_id), 0) FROM sources").fetchone()
    nxt = int(top) + 1
    out = []
    for i, path in enumerate(paths):
        real = os.path.realpath(path)
        try:
            fp = fingerprint(real)
        except OSError:
            fp = "missing"
        sid = _existing(store, real, fp)
        if sid is None:
            sid, nxt = nxt, nxt + 1
        out.append(_Source(i, real, fp, sid, _done_map(store, sid)))
    return out


def _client_tasks(run: FleetRun) -> None:
    """The tasks that read the case, run here as in-process triage runs them."""
    from pensieve.case.triage import PLANNERS, Context, _run_task, open_triage_source

    for src in run.sources:
        wanted = [t for t in src.tasks.values() if t.name in CLIENT_TASKS and not is_done(src.done, t)]
        if not wanted:
            continue
        source = open_triage_source(src.path)
        try:
            ctx = Context(source, src.sid, run.hunting, run.store)
            tasks = PLANNERS[source.kind](ctx) + run.hunting.tasks(ctx)
            names = {(t.name, t.subject) for t in wanted}
            for task in tasks:
                if (task.name, task.subject) in names:
                    run.report({"phase": "client", "event": "submitted"})
                    status, _n, _m = _run_task(run.store, ctx, task)
                    run.report({"phase": "client", "event": "unit", "status": status})
                    run._count(status)
                    info = TaskInfo(task.name, task.subject, task.label, task.params, task.strict)
                    run._report_task(src, info, status, "client")
        finally:
            source.close()


def triage_fleet(
    paths: list[str],
    case: str,
    client,
    report: Callable[[dict], None] = lambda e: None,
    retries: int = RETRIES,
    remote: Callable[[Unit], dict[str, Any]] = run_unit,
    hunting=None,
    carve_bytes: int = RANGE_BYTES,
) -> TriageSummary:
    """Triage PATHS into CASE with the units run on CLIENT's cluster (a distributed.Client);
    HUNTING (pensieve.hunting.Hunting) is compiled again on each worker from its rule texts;
    a disk image is carved in units of CARVE_BYTES of free space."""
    from distributed import as_completed

    from pensieve.case.analyses import run_analyses
    from pensieve.case.store import CaseStore

    store = CaseStore(case, boundaries=[os.path.realpath(p) for p in paths])
    try:
        if hunting is not None:
            hunting.remember(store)
        run = FleetRun(store, client, hunting, report, remote, retries, carve_bytes)
        run.sources = _plan_sources(store, paths)
        report({"phase": "sources", "event": "total", "total": len(run.sources)})
        queue = as_completed([run.submit(s, "source") for s in run.sources])
        for fut in queue:
            before = set(run.units)
            run.answered(fut)
            for new in set(run.units) - before:
                queue.add(new)
        _client_tasks(run)
        a_done, a_failed = run_analyses(store, lambda e: report({"phase": "analyses", "event": "task", **e}))
        run.failed += a_failed
    finally:
        store.close()
    return TriageSummary(run.done, run.reused, run.failed, run.problems, a_done)


def local_client(workers: int | None = None):
    """A Client on a LocalCluster of worker processes sized to the machine (or WORKERS)."""
    from distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    return Client(LocalCluster(n_workers=n, threads_per_worker=1, processes=True))


def _lines(sink: Callable[[str], None]) -> Callable[[dict], None]:
    """Events as one line a task (``host1 diff web: done``), for a log that is not a terminal."""

    def line(e: dict) -> None:
        if e.get("event") == "task" and "source" in e:
            why = f": {e['error']}" if e.get("error") else ""
            sink(f"{e['source']} {e.get('task', '')}: {e.get('status')}{why}")

    return line


def triage_on(
    paths: list[str],
    case: str,
    scheduler: str | None,
    workers: int | None,
    report=None,
    hunting=None,
    bars=None,
) -> TriageSummary:
    """Triage PATHS into CASE on the Dask SCHEDULER (an address), or on a LocalCluster of WORKERS
    processes. BARS (a rich Console) draws a bar a phase (:class:`~pensieve.fleet.progress.PhaseBars`)
    with the dashboard address; else REPORT (a text sink, None: silent) gets the address and one
    line a task."""
    from distributed import Client

    from pensieve.fleet.progress import PhaseBars

    client = Client(scheduler) if scheduler else local_client(workers)
    try:
        if bars is not None:
            with PhaseBars(bars, client.dashboard_link) as progress:
                return triage_fleet(paths, case, client, progress, hunting=hunting)
        if report is not None and client.dashboard_link:
            report(f"dask dashboard: {client.dashboard_link}")
        events = _lines(report) if report is not None else (lambda e: None)
        return triage_fleet(paths, case, client, events, hunting=hunting)
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
