"""The work units fleet triage sends to Dask workers, and how a worker runs one.

A *unit* is coarse on purpose: a Dask task costs milliseconds of scheduler and transport time,
about what one pensieve triage task of a small container takes, so one Dask task per triage task
would spend as long scheduling as working.  The kinds of units:

``source``
    opens the source, plans its tasks (:data:`pensieve.case.triage.PLANNERS` and the hunting
    tasks), runs every task about the whole source (inventory, live snapshot, kubelet
    checkpoints, recover ...) and the part of ``integrity`` that is not one Docker graph-driver
    layer; answers the plan: the source's kind and host name, its tasks, its container ids, its
    layerdb entries (:class:`~pensieve.images.verify_layers.LayerEntry`) and carving ranges;
``containers``
    every task of a batch of containers of one source (diff, logs, checkpoints);
``layer``
    one layerdb entry verified (:func:`~pensieve.images.verify_layers.verify_entry`): its
    ``integrity`` rows;
``carve``
    one range of a disk image's unallocated space carved.

A worker keeps the last few sources it opened (:data:`CACHE_SIZE`), keyed by the run, so the
units of one source that land on one worker open it once.  A task that raises is answered as
failed with its message (as in-process triage records it); only a unit that cannot answer (its
worker died, the source cannot be opened twice in a row) is retried by the scheduler.  Results
are plain picklable data: rows are ``(table, [row dict, ...])``; the client writes the case.

References:
  Dask distributed, futures and retries: https://distributed.dask.org/en/stable/client.html
"""

from __future__ import annotations

import os
import traceback
from collections import OrderedDict
from typing import Any, NamedTuple

from pensieve.errors import EvidenceError
from pensieve.records import Problem

#: how many opened sources a worker keeps (each holds file descriptors and parsed configs)
CACHE_SIZE = 4
#: tasks that read rows earlier tasks wrote to the case: run by the client, which has it
CLIENT_TASKS = frozenset({"yara-changes", "yara-recovered", "yara-carved"})
#: tasks split into units of their own (integrity: one per layer, carve: one per range)
SPLIT_TASKS = frozenset({"integrity", "carve"})


class HuntingSpec(NamedTuple):
    """What a worker needs to build the run's :class:`~pensieve.hunting.Hunting` again: the rule
    texts (namespace, text), the indicators, the size bound, and the digest it must come to."""

    rules: tuple[tuple[str, str], ...]
    iocs: tuple
    max_size: int
    digest: str

    @classmethod
    def of(cls, hunting) -> HuntingSpec | None:
        if hunting is None:
            return None
        texts = tuple(hunting.rules.texts) if hunting.rules is not None else ()
        return cls(texts, tuple(hunting.iocs), hunting.max_size, hunting.digest)

    def build(self):
        """The Hunting, compiled here (ValueError when it is not the client's)."""
        from pensieve.hunting import Hunting
        from pensieve.hunting.rules import RuleSet

        rules = RuleSet([], dict(self.rules)) if self.rules else None
        hunting = Hunting(rules, list(self.iocs), self.max_size)
        if hunting.digest != self.digest:
            raise ValueError(f"rules compiled on this worker differ ({hunting.digest} != {self.digest})")
        return hunting


class Unit(NamedTuple):
    """One unit of work about the source at PATH (already given its id in the case)."""

    kind: str  # source | containers | layer | carve
    path: str
    source_id: int
    run: str  # the triage run (a worker's cache is per run)
    done: dict  # (task, subject) -> params of the tasks the case holds as done
    hunting: HuntingSpec | None = None
    items: tuple = ()  # containers: their ids; layer: (LayerEntry,); carve: (start, end)
    carve_bytes: int = 256 << 20  # free bytes a carving unit covers (pensieve.fleet.carving)


class TaskInfo(NamedTuple):
    """A planned task as the client sees it."""

    name: str
    subject: str | None
    label: str
    params: str | None
    strict: bool


def is_done(done: dict, t) -> bool:
    """Whether task T (a Task or TaskInfo) is done in the case (as CaseStore.task_done says)."""
    key = (t.name, t.subject)
    return key in done and (not t.strict or t.params is None or done[key] == t.params)


class CaseView:
    """What a worker knows of the case: the tasks done (the hunting planner asks), and the
    DELETE / UPDATE statements a task would run on it, kept for the client to run."""

    def __init__(self, done: dict) -> None:
        self.done = done
        self.statements: list[tuple[str, list]] = []

    def task_params(self, source_id: int, task: str, subject: str | None) -> tuple[bool, str | None]:
        key = (task, subject)
        return (key in self.done, self.done.get(key))

    def task_done(self, source_id: int, task: str, subject: str | None, params: str | None = None) -> bool:
        done, had = self.task_params(source_id, task, subject)
        return done and (params is None or had == params)

    def query(self, sql: str, params: list | None = None):
        if sql.lstrip().split(None, 1)[0].upper() in ("DELETE", "UPDATE"):
            self.statements.append((sql, list(params or [])))
            return [], []
        raise RuntimeError("this task reads the case: it runs on the client")


class Opened(NamedTuple):
    """A source opened on a worker, planned once: its context, its tasks, what planning met."""

    source: Any  # OpenedSource
    ctx: Any  # Context
    tasks: list
    plan_problems: list[Problem]
    opened_problems: list[Problem]


_CACHE: OrderedDict[tuple, Opened] = OrderedDict()


def open_unit(unit: Unit) -> Opened:
    """The source of UNIT, opened and planned (from this worker's cache when it is there)."""
    key = (unit.run, unit.path, unit.source_id)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    from pensieve.case.triage import PLANNERS, Context, open_triage_source

    source = open_triage_source(unit.path)
    try:
        hunting = unit.hunting.build() if unit.hunting is not None else None
        ctx = Context(source, unit.source_id, hunting, CaseView(unit.done))
        tasks = PLANNERS[source.kind](ctx) + (hunting.tasks(ctx) if hunting is not None else [])
    except BaseException:
        source.close()
        raise
    opened = Opened(
        source, ctx, tasks, list(ctx.problems), list(getattr(source.opened, "problems", []) or [])
    )
    _CACHE[key] = opened
    while len(_CACHE) > CACHE_SIZE:
        _key, old = _CACHE.popitem(last=False)
        old.source.close()
    return opened


def drop_cache() -> None:
    """Close every source this process keeps open."""
    while _CACHE:
        _key, old = _CACHE.popitem()
        old.source.close()


def _fresh(ctx) -> None:
    """Forget what an earlier unit of this source left in CTX (the lists are shared with the
    matchers: emptied, not replaced)."""
    del ctx.problems[:]
    del ctx.store.statements[:]


def run_task(ctx, task) -> dict[str, Any]:
    """TASK run in CTX: its rows, problems and statements, or its error (as failed)."""
    before = len(ctx.problems)
    said = len(ctx.store.statements)
    try:
        rows = [(table, list(r)) for table, r in task.run()]
    except Exception as exc:  # noqa: BLE001 - one failed analysis must not end the others
        del ctx.problems[before:]
        return _failed(exc)
    met = ctx.problems[before:]
    return {
        "status": "done",
        "rows": rows,
        "problems": ctx.rows("problems", met, task=task.name),
        "met": list(met),
        "statements": list(ctx.store.statements[said:]),
    }


def _owner(subject: str | None) -> str | None:
    """The container a task's subject is about (``<id>`` or ``<id>/<checkpoint>``)."""
    return subject.split("/", 1)[0] if subject else None


def _container_ids(opened: Opened) -> set[str]:
    return {c.id for c in opened.ctx.host.containers()} if opened.ctx.host is not None else set()


def _source_unit(unit: Unit) -> dict[str, Any]:
    from pensieve.images.verify_layers import DEFERRED

    opened = open_unit(unit)
    ctx = opened.ctx
    _fresh(ctx)
    cids = _container_ids(opened)
    results: dict[tuple, dict] = {}
    layers: list = []
    ranges: list = []
    for task in opened.tasks:
        if is_done(unit.done, task) or task.name in CLIENT_TASKS or _owner(task.subject) in cids:
            continue
        if task.name == "integrity":
            token = DEFERRED.set(layers)
            try:
                results[(task.name, task.subject)] = run_task(ctx, task)
            finally:
                DEFERRED.reset(token)
        elif task.name == "carve":
            ranges = carve_ranges(ctx.source.path, unit.carve_bytes)
            if not ranges:
                results[(task.name, task.subject)] = run_task(ctx, task)
        else:
            results[(task.name, task.subject)] = run_task(ctx, task)
    s = opened.source
    return {
        "kind": s.kind,
        "label": s.label,
        "host_name": s.host_name,
        "fingerprint": s.fingerprint,
        "tasks": [TaskInfo(t.name, t.subject, t.label, t.params, t.strict) for t in opened.tasks],
        "plan_problems": ctx.rows("problems", opened.plan_problems, task="plan"),
        "opened_problems": opened.opened_problems + opened.plan_problems,
        "containers": sorted({_owner(t.subject) for t in opened.tasks if _owner(t.subject) in cids}),
        "layers": layers,
        "ranges": ranges,
        "results": results,
    }


def _containers_unit(unit: Unit) -> dict[str, Any]:
    opened = open_unit(unit)
    ctx = opened.ctx
    _fresh(ctx)
    wanted = set(unit.items)
    results = {}
    for task in opened.tasks:
        if _owner(task.subject) in wanted and task.name not in CLIENT_TASKS and not is_done(unit.done, task):
            results[(task.name, task.subject)] = run_task(ctx, task)
    return {"results": results}


def _layer_unit(unit: Unit) -> dict[str, Any]:
    from pensieve.case.triage import integrity_rows
    from pensieve.images.verify_layers import verify_entry

    opened = open_unit(unit)
    ctx = opened.ctx
    (entry,) = unit.items
    try:
        verdict = verify_entry(ctx.host, entry)
    except Exception as exc:  # noqa: BLE001 - the integrity task fails, the others go on
        return _failed(exc)
    return {"status": "done", "rows": integrity_rows(ctx, [verdict])}


def _failed(exc: BaseException) -> dict[str, Any]:
    """A unit's result for EXC: failed, with the message and the file:line it was raised at."""
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return {
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "where": f"{os.path.basename(where.filename)}:{where.lineno}",
    }


def carve_ranges(path: str, size: int) -> list[tuple[int, int]]:
    """The ranges a disk image's carving is split into ([] to carve it whole, in one unit)."""
    from pensieve.fleet.carving import carve_ranges as ranges

    return ranges(path, size)


def _carve_unit(unit: Unit) -> dict[str, Any]:
    from pensieve.fleet.carving import carve_range

    lo, hi = unit.items
    try:
        files, problems = carve_range(unit.path, lo, hi)
    except Exception as exc:  # noqa: BLE001 - the carve task fails, the others go on
        return _failed(exc)
    found = [p if isinstance(p, Problem) else Problem(unit.path, str(p)) for p in problems]
    return {"status": "done", "range": (lo, hi), "files": files, "met": found}


_RUNNERS = {
    "source": _source_unit,
    "containers": _containers_unit,
    "layer": _layer_unit,
    "carve": _carve_unit,
}


def run_unit(unit: Unit) -> dict[str, Any]:
    """On a worker: UNIT run, its answer as plain data. A source that cannot be opened is
    answered as ``{"unusable": message}`` (not retried: it would not open the next time)."""
    try:
        return _RUNNERS[unit.kind](unit)
    except (EvidenceError, OSError, ValueError) as exc:
        if unit.kind != "source":
            raise
        return {"unusable": str(exc)}
