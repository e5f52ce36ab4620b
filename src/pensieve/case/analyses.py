"""Case-wide analyses: what can only be seen once every source is in the case -- findings over
all records, the super-timeline, links across containers and hosts.

Each analysis is a function ``fn(store) -> Iterator[(table, rows)]`` registered with
:func:`analysis` under a name and the table it fills.  After every triage, each analysis runs
again over the whole case (new sources change what it sees): in one transaction, its earlier rows
are removed (every row of ``findings``, ``events`` and ``links`` names the analysis that made it
in ``producer``) and its new rows written, so the case never holds two generations of one
analysis.  A failing analysis is rolled back, recorded as a failed
task of the case (source 0) with a problem, and the others still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from pensieve.case.store import CaseStore
from pensieve.records import Problem

Rows = Iterator[tuple[str, list[dict]]]
#: the source id of tasks and problems that belong to the whole case
CASE_SOURCE = 0


class CaseAnalysis(NamedTuple):
    name: str
    tables: tuple[str, ...]  # the tables it fills (rows with producer = name)
    run: Callable[[CaseStore], Rows]
    order: int  # lower first: findings before the timeline and links that show them


#: every registered analysis, by name
ANALYSES: dict[str, CaseAnalysis] = {}


def analysis(name: str, tables: tuple[str, ...], order: int = 50) -> Callable:
    """Register ``fn(store) -> rows`` as the case analysis NAME filling TABLES."""

    def register(fn: Callable[[CaseStore], Rows]) -> Callable[[CaseStore], Rows]:
        ANALYSES[name] = CaseAnalysis(name, tables, fn, order)
        return fn

    return register


def _load_builtin() -> None:
    """Import the modules that register the built-in analyses."""
    import importlib

    for module in ("findings", "timeline", "links", "pensieve.hunting.findings"):
        name = module if "." in module else f"pensieve.case.{module}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def _forget_problems(store: CaseStore, name: str) -> None:
    store.db.execute("DELETE FROM problems WHERE source_id = ? AND task = ?", [CASE_SOURCE, name])


def run_analyses(store: CaseStore, report: Callable[[dict], None] = lambda e: None) -> tuple[int, int]:
    """Every registered analysis over the case, each alone: (done, failed)."""
    _load_builtin()
    todo = sorted(ANALYSES.values(), key=lambda a: (a.order, a.name))
    done = failed = 0
    for i, a in enumerate(todo, 1):
        t0 = time.monotonic()
        event = {"source": "case", "task": a.name, "index": i, "total": len(todo)}
        status, n, message = store.run_task(
            CASE_SOURCE, a.name, None, lambda a=a: _write(store, a), lambda m, a=a: _failed(store, a, m)
        )
        done += status == "done"
        failed += status == "failed"
        if status == "done":
            report({**event, "status": "done", "rows": n, "seconds": time.monotonic() - t0})
        else:
            report({**event, "status": "failed", "error": message})
    return done, failed


def _write(store: CaseStore, a: CaseAnalysis) -> int:
    """A's rows in place of its earlier ones (and of its earlier problems)."""
    _forget_problems(store, a.name)
    for table in a.tables:
        store.db.execute(f"DELETE FROM {table} WHERE producer = ?", [a.name])
    n = 0
    for table, rows in a.run(store):
        for row in rows:
            row.setdefault("producer", a.name)
        n += store.insert(table, rows)
    return n


def _failed(store: CaseStore, a: CaseAnalysis, message: str) -> None:
    """A's failure as its one problem of the case."""
    _forget_problems(store, a.name)
    problem = Problem("case", f"analysis {a.name} failed: {message}", None, "error")
    row = {"source_id": CASE_SOURCE, "host": None, "task": a.name}
    row.update(source=problem.source, message=problem.message, severity=problem.severity)
    store.insert("problems", [row])
