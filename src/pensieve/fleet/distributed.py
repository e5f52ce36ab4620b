"""Triage tasks as Dask distributed tasks: workers read evidence, only the client writes the case.

Each task is one (source path, task name, subject) triple. A worker opens the source read-only
(through :mod:`pensieve.evidence`, as in-process triage does), plans its tasks, runs the one named
and returns plain picklable rows ``[(table, [row dict, ...]), ...]`` plus the problems met. The
client streams results back with ``as_completed`` and writes each into the case in one
transaction (:meth:`CaseStore.run_task`), so an interrupted run leaves only whole tasks and a
re-run skips what is done. Failed tasks are retried by the scheduler (``retries``), then recorded
as a problem row for that item.

References:
  Dask distributed, Client.submit (retries, pure, key): https://distributed.dask.org/en/stable/api.html
  as_completed: https://distributed.dask.org/en/stable/api.html#distributed.as_completed
  LocalCluster: https://distributed.dask.org/en/stable/api.html#cluster
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pensieve.case.triage import (
    PLANNERS,
    Context,
    TriageSummary,
    open_triage_source,
)
from pensieve.records import Problem


def run_remote(path: str, source_id: int, name: str, subject: str | None) -> dict[str, Any]:
    """On a worker: run task NAME on SUBJECT of the source at PATH; plain rows and problems."""
    source = open_triage_source(path)
    try:
        ctx = Context(source, source_id, None, None)
        for task in PLANNERS[source.kind](ctx):
            if task.name == name and task.subject == subject:
                before = len(ctx.problems)
                rows = [(table, list(r)) for table, r in task.run()]
                problems = ctx.rows("problems", ctx.problems[before:], task=name)
                return {"rows": rows, "problems": problems}
        raise LookupError(f"no task {name} {subject} on {path}")
    finally:
        source.close()


def triage_fleet(
    paths: list[str],
    case: str,
    client,
    report: Callable[[dict], None] = lambda e: None,
    retries: int = 2,
    remote: Callable[..., dict[str, Any]] = run_remote,
) -> TriageSummary:
    """Triage PATHS into CASE with the tasks run on CLIENT's cluster (a distributed.Client)."""
    from distributed import as_completed

    from pensieve.case.store import CaseStore

    opened = [open_triage_source(p) for p in paths]
    store = CaseStore(case, boundaries=[b for s in opened for b in s.boundaries()])
    done = reused = failed = 0
    problems: list[Problem] = []
    try:
        futures = {}
        ctxs = {}
        for source in opened:
            sid = store.source_id(
                source.path, source.kind, source.label, source.host_name, source.fingerprint
            )
            ctx = Context(source, sid, None, store)
            ctxs[source.path] = ctx
            for task in PLANNERS[source.kind](ctx):
                if store.task_done(sid, task.name, task.subject, task.params if task.strict else None):
                    reused += 1
                    continue
                fut = client.submit(
                    remote, source.path, sid, task.name, task.subject, retries=retries, pure=False
                )
                futures[fut] = (ctx, task)
            source.close()
        for fut in as_completed(list(futures)):
            ctx, task = futures.pop(fut)
            status = _write(store, ctx, task, fut)
            done += status == "done"
            failed += status == "failed"
            report({"source": ctx.source.label, "task": task.label, "status": status})
        from pensieve.case.analyses import run_analyses

        a_done, a_failed = run_analyses(store, report)
        failed += a_failed
        problems = [p for c in ctxs.values() for p in c.problems]
    finally:
        store.close()
    return TriageSummary(done, reused, failed, problems, a_done)


def _write(store, ctx: Context, task, fut) -> str:
    def write() -> int:
        result = fut.result()  # raises the task's error after its retries
        n = sum(store.insert(table, rows) for table, rows in result["rows"])
        store.insert("problems", result["problems"])
        return n

    def failed(message: str) -> None:
        problem = Problem(ctx.source.path, f"task {task.label} failed: {message}", task.subject, "error")
        store.insert("problems", ctx.rows("problems", [problem], task=task.name))
        ctx.problems.append(problem)

    status, _rows, _msg = store.run_task(ctx.source_id, task.name, task.subject, write, failed, task.params)
    return status


def local_client(workers: int | None = None):
    """A Client on a LocalCluster of worker processes sized to the machine (or WORKERS)."""
    from distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    return Client(LocalCluster(n_workers=n, threads_per_worker=1, processes=True))


def triage_on(
    paths: list[str], case: str, scheduler: str | None, workers: int | None, report=None
) -> TriageSummary:
    """Triage PATHS into CASE on the Dask SCHEDULER (an address), or on a LocalCluster of WORKERS
    processes; REPORT (a text sink) gets the dashboard address and one line per task."""
    from distributed import Client

    client = Client(scheduler) if scheduler else local_client(workers)
    try:
        if report is not None and client.dashboard_link:
            report(f"dask dashboard: {client.dashboard_link}")
        events = (
            (lambda e: report(f"{e['source']} {e.get('task', '')}: {e.get('status')}"))
            if report
            else (lambda e: None)
        )
        return triage_fleet(paths, case, client, events)
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
