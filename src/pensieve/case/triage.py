"""``triage``: every analysis over every source and engine, into one case.

A source is opened once (:func:`open_triage_source`): a directory or disk image becomes the Host of
every engine root on it (:func:`pensieve.engines.discover.open_engines`), an image archive its
ArchiveHost, a checkpoint (CRIU image directory, Podman/CRI-O/kubelet checkpoint archive) a
memory source.  Planners (:data:`PLANNERS`) look at the opened source and name the tasks that
apply to it -- the inventory, a diff per container, ... -- and each task is run on its own:

* a task yields ``(table, rows)`` pairs; they are written in one transaction, with the task's
  ``tasks`` row, so a task is in the case whole or not at all;
* a task that raises is rolled back and recorded as ``failed`` with its message, and its error
  is a row of ``problems``: the other tasks still run;
* the problems a task meets while it works (unreadable files ...) are rows of ``problems`` too,
  with the task's name;
* a task already ``done`` for the same source (same path, same fingerprint) is not run again:
  re-running triage on the same sources reuses the case, and only what failed or is new runs.

Progress goes to the caller's ``report(event)`` (the CLI prints one line per task on stderr).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from pensieve.case.schema import BY_NAME
from pensieve.case.store import CaseStore, record_row
from pensieve.errors import EvidenceError
from pensieve.records import Problem

Rows = Iterator[tuple[str, list[dict]]]


class OpenedSource(NamedTuple):
    """One source as triage sees it: what it is, its keys, and the object the tasks read."""

    path: str
    kind: str  # host (directory or disk image with engine roots) | archive | checkpoint
    label: str
    host_name: str | None
    fingerprint: str
    opened: Any  # a Host, an ArchiveHost, or a memory Source

    def boundaries(self) -> list[str]:
        return list(self.opened.boundaries())

    def close(self) -> None:
        close = getattr(self.opened, "close", None)
        if close is not None:
            close()


class Task(NamedTuple):
    """One analysis of one subject of a source."""

    name: str  # inventory | diff | ...
    subject: str | None  # the container id, the checkpoint ... (None: the whole source)
    label: str  # how progress names it
    run: Callable[[], Rows]


class Context:
    """What tasks share about the source being triaged: its id and keys, the problems met."""

    def __init__(self, source: OpenedSource, source_id: int, hunting=None) -> None:
        self.source = source
        self.source_id = source_id
        self.problems: list[Problem] = []
        self.hunting = hunting  # YARA rules and IOCs (pensieve.hunting.Hunting), or None
        # content-rule matcher factories (ContentScanner)
        self.matchers: list = hunting.matchers(self) if hunting is not None else []

    def keys(self, **more: Any) -> dict[str, Any]:
        """The key columns of a row about this source (plus MORE: engine, container_id ...)."""
        out = {"source_id": self.source_id, "host": self.source.host_name or self.source.path}
        out.update({k: v for k, v in more.items() if v is not None})
        return out

    def rows(self, table: str, records: Iterable[Any], **keys: Any) -> list[dict]:
        """The rows of TABLE for RECORDS, each with this source's keys and KEYS."""
        t = BY_NAME[table]
        base = self.keys(**keys)
        return [record_row(t, r, base) for r in records]


# ---- opening a source ------------------------------------------------------------------------


def fingerprint(path: str) -> str:
    """What identifies a source between two triage runs without reading it: a file's size, mtime
    and inode; a directory's device and inode (its contents may change: a live host)."""
    st = os.stat(path)
    if os.path.isdir(path):
        return f"dir:{st.st_dev}:{st.st_ino}"
    return f"file:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _hostname(evidence) -> str | None:
    """``/etc/hostname`` of a host root (None for a data root or an unreadable file)."""
    try:
        if not evidence.is_file("/etc/hostname"):
            return None
        name = evidence.read_text("/etc/hostname", 256).strip().splitlines()
    except (EvidenceError, OSError, UnicodeDecodeError):
        return None
    return name[0].strip() if name and name[0].strip() else None


def source_label(path: str) -> str:
    """A short name of a source for progress lines: its last two path components."""
    parts = [p for p in path.split("/") if p]
    return "/".join(parts[-2:]) or path


def _is_checkpoint(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "inventory.img"))


def open_triage_source(path: str) -> OpenedSource:
    """PATH opened for triage (EvidenceError / SourceError when it is unusable)."""
    from pensieve.evidence.sniff import source_kind

    real = os.path.realpath(path)
    label = source_label(real)
    fp = fingerprint(real)
    if _is_checkpoint(real):
        from pensieve.memory.sources import open_source

        return OpenedSource(real, "checkpoint", label, None, fp, open_source(real))
    if source_kind(real) == "archive":
        return _open_archive(real, label, fp)
    from pensieve.engines.discover import open_engines
    from pensieve.evidence import open_evidence

    evidence = open_evidence(real)
    try:
        host = open_engines(evidence)
    except EvidenceError:
        evidence.close()
        raise
    host.problems.extend(evidence.problems)
    return OpenedSource(real, "host", label, _hostname(evidence), fp, host)


def _open_archive(path: str, label: str, fp: str) -> OpenedSource:
    """An image archive, else a checkpoint archive (the error of the image reader when neither)."""
    from pensieve.images.archive import open_archive

    try:
        return OpenedSource(path, "archive", label, None, fp, open_archive(path))
    except (EvidenceError, OSError, ValueError) as first:
        from pensieve.memory.sources import SourceError, open_source

        try:
            return OpenedSource(path, "checkpoint", label, None, fp, open_source(path))
        except (SourceError, EvidenceError, OSError, ValueError):
            raise first from None


# ---- the analyses ----------------------------------------------------------------------------


def _pod(c) -> str | None:
    if c.pod_name and c.pod_namespace:
        return f"{c.pod_namespace}/{c.pod_name}"
    return c.pod_name


def _container_keys(c) -> dict[str, Any]:
    return {"engine": c.engine, "container_id": c.id, "pod": _pod(c), "image_id": c.image_id}


def inventory(ctx: Context) -> Rows:
    """Containers, images, their layers, and volumes of every engine of the source."""
    host = ctx.source.opened
    containers = host.containers()
    images = host.images()
    yield (
        "containers",
        [record_row(BY_NAME["containers"], c, ctx.keys(**_container_keys(c))) for c in containers],
    )
    yield "images", [record_row(BY_NAME["images"], i, ctx.keys(engine=i.engine)) for i in images]
    layers: list[dict] = []
    for c in containers:
        for pos, layer in enumerate(c.layers):
            extra = {"owner": "container", "position": pos}
            layers.append(record_row(BY_NAME["layers"], layer, ctx.keys(**_container_keys(c)), extra))
    for i in images:
        try:
            chain = host.image_layers(i)
        except (LookupError, EvidenceError, OSError) as exc:
            ctx.problems.append(Problem(i.config_path or i.id, f"layers unknown: {exc}", i.id))
            continue
        for pos, layer in enumerate(chain):
            keys = ctx.keys(engine=i.engine, image_id=i.id)
            layers.append(record_row(BY_NAME["layers"], layer, keys, {"owner": "image", "position": pos}))
    yield "layers", layers
    volumes = getattr(host, "volumes", lambda: [])()
    yield "volumes", [record_row(BY_NAME["volumes"], v, ctx.keys(engine=v.engine)) for v in volumes]


def container_diff(ctx: Context, container) -> Rows:
    """What CONTAINER changed against its image, every added or modified file read once for its
    sha256, its kind and its content-rule matches (:class:`~pensieve.case.content.ContentScanner`)."""
    from pensieve.case.content import ContentScanner
    from pensieve.filesystem.diff import container_diff as diff

    host = ctx.source.opened
    if not container.layers:
        where = container.config_path or container.id
        ctx.problems.append(Problem(where, "no layers: no diff", container.id))
        return
    scanner = ContentScanner(ctx.matchers)
    result = diff(host.evidence, container.layers, hash_files=True, digest=scanner)
    changes = host.diff_filter(container, result.changes)
    ctx.problems.extend(result.problems)
    table, keys = BY_NAME["changes"], ctx.keys(**_container_keys(container))
    rows = []
    for ch in changes:
        extra = {
            "file_kind": scanner.kinds.get(ch.host_path or ""),
            "matches": scanner.matches.get(ch.host_path or ""),
        }
        rows.append(record_row(table, ch, keys, extra))
    yield "changes", rows


def checkpoint(ctx: Context) -> Rows:
    """A checkpoint source: what it says of itself, its processes, sockets and carried changes."""
    from pensieve.memory import views

    src = ctx.source.opened
    info = src.info
    keys = {
        "engine": (info.engine or "").lower() or None,
        "container_id": info.container_id,
        "image_id": info.image_id,
        "pod": f"{info.namespace}/{info.pod}" if info.pod and info.namespace else info.pod,
    }
    extra = {"checkpoint_name": info.name}
    yield "checkpoints", [record_row(BY_NAME["checkpoints"], info, ctx.keys(**keys), extra)]
    ckpt = src.checkpoint
    yield (
        "processes",
        [record_row(BY_NAME["processes"], p, ctx.keys(**keys), extra) for p in views.processes(ckpt)],
    )
    yield "sockets", [record_row(BY_NAME["sockets"], s, ctx.keys(**keys), extra) for s in views.sockets(ckpt)]
    yield "files", [record_row(BY_NAME["files"], f, ctx.keys(**keys), extra) for f in views.files(ckpt)]
    yield "changes", ctx.rows("changes", src.changes(), **keys)
    ctx.problems += [Problem(ctx.source.path, p, info.container_id) for p in src.problems]


# ---- planning --------------------------------------------------------------------------------


def _host_tasks(ctx: Context) -> list[Task]:
    host = ctx.source.opened
    tasks = [Task("inventory", None, "inventory", lambda: inventory(ctx))]
    for c in host.containers():
        label = f"diff {c.name or c.id[:12]}"
        tasks.append(Task("diff", c.id, label, lambda c=c: container_diff(ctx, c)))
    return tasks


def _checkpoint_tasks(ctx: Context) -> list[Task]:
    return [Task("checkpoint", None, "checkpoint", lambda: checkpoint(ctx))]


#: source kind -> the planner naming the tasks that apply to it
PLANNERS: dict[str, Callable[[Context], list[Task]]] = {
    "host": _host_tasks,
    "archive": lambda ctx: [Task("inventory", None, "inventory", lambda: inventory(ctx))],
    "checkpoint": _checkpoint_tasks,
}


# ---- running ---------------------------------------------------------------------------------


class TriageSummary(NamedTuple):
    """What one triage run did: tasks done, reused and failed, and the problems met."""

    done: int
    reused: int
    failed: int  # tasks and case analyses that failed
    problems: list[Problem]
    analysed: int = 0  # case analyses run (findings, timeline, links), after every source


def _run_task(store: CaseStore, ctx: Context, task: Task) -> tuple[str, int, str | None]:
    """Run TASK into STORE in one transaction: (status, rows written, error message)."""
    started = time.time_ns()
    before = len(ctx.problems)
    try:
        with store.transaction():
            n = 0
            for table, rows in task.run():
                n += store.insert(table, rows)
            mine = ctx.problems[before:]
            store.insert("problems", ctx.rows("problems", mine, task=task.name))
            store.record_task(
                ctx.source_id,
                task.name,
                task.subject,
                "done",
                started=started,
                finished=time.time_ns(),
                rows=n,
            )
        return "done", n, None
    except Exception as exc:  # noqa: BLE001 - one failed analysis must not end the others
        del ctx.problems[before:]
        message = f"{type(exc).__name__}: {exc}"
        where = traceback.extract_tb(exc.__traceback__)[-1]
        problem = Problem(ctx.source.path, f"task {task.label} failed: {message}", task.subject, "error")
        with store.transaction():
            store.insert("problems", ctx.rows("problems", [problem], task=task.name))
            store.record_task(
                ctx.source_id,
                task.name,
                task.subject,
                "failed",
                started=started,
                finished=time.time_ns(),
                message=f"{message} ({os.path.basename(where.filename)}:{where.lineno})",
            )
        ctx.problems.append(problem)
        return "failed", 0, message


def triage_source(
    store: CaseStore, source: OpenedSource, report: Callable[[dict], None], hunting=None
) -> TriageSummary:
    """Every task that applies to SOURCE, into STORE; REPORT gets one event per task; HUNTING
    (:class:`pensieve.hunting.Hunting`) adds its matchers and tasks."""
    sid = store.source_id(source.path, source.kind, source.label, source.host_name, source.fingerprint)
    ctx = Context(source, sid, hunting)
    opened_problems = list(getattr(source.opened, "problems", []) or [])
    tasks = PLANNERS[source.kind](ctx) + (hunting.tasks(ctx) if hunting is not None else [])
    done = reused = failed = 0
    for i, task in enumerate(tasks, 1):
        event = {"source": source.label, "task": task.label, "index": i, "total": len(tasks)}
        if store.task_done(sid, task.name, task.subject):
            reused += 1
            report({**event, "status": "reused", "rows": None, "seconds": 0.0})
            continue
        t0 = time.monotonic()
        status, rows, message = _run_task(store, ctx, task)
        done += status == "done"
        failed += status == "failed"
        report({**event, "status": status, "rows": rows, "seconds": time.monotonic() - t0, "error": message})
    return TriageSummary(done, reused, failed, opened_problems + ctx.problems)


def triage(
    paths: list[str], case: str, report: Callable[[dict], None] = lambda e: None, hunting=None
) -> TriageSummary:
    """Triage every source of PATHS into the case file CASE (created when missing); HUNTING
    (:func:`pensieve.hunting.load_hunting`) runs YARA rules and IOCs over them.

    A source that cannot be opened at all is a failed ``open`` task in the case; the others
    still run."""
    opened: list[OpenedSource] = []
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            opened.append(open_triage_source(path))
        except (EvidenceError, OSError, ValueError) as exc:
            failures.append((path, str(exc)))
    boundaries = [b for s in opened for b in s.boundaries()] + [os.path.realpath(p) for p, _m in failures]
    store = CaseStore(case, boundaries=boundaries)
    total = TriageSummary(0, 0, 0, [])
    try:
        if hunting is not None:
            hunting.remember(store)
        for path, message in failures:
            total = _add(total, _record_unopenable(store, path, message, report))
        for source in opened:
            try:
                total = _add(total, triage_source(store, source, report, hunting))
            finally:
                source.close()
        from pensieve.case.analyses import run_analyses

        done, failed = run_analyses(store, report)
        total = _add(total, TriageSummary(0, 0, failed, [], done))
    finally:
        store.close()
    return total


def _record_unopenable(
    store: CaseStore, path: str, message: str, report: Callable[[dict], None]
) -> TriageSummary:
    real = os.path.realpath(path)
    try:
        fp = fingerprint(real)
    except OSError:
        fp = "missing"
    label = source_label(real)
    sid = store.source_id(real, "unusable", label, None, fp)
    problem = Problem(real, f"source unusable: {message}", None, "error")
    with store.transaction():
        row = record_row(BY_NAME["problems"], problem, {"source_id": sid, "host": real}, {"task": "open"})
        store.insert("problems", [row])
        store.record_task(sid, "open", None, "failed", message=message)
    report({"source": label, "task": "open", "index": 1, "total": 1, "status": "failed", "error": message})
    return TriageSummary(0, 0, 1, [problem])


def _add(a: TriageSummary, b: TriageSummary) -> TriageSummary:
    return TriageSummary(
        a.done + b.done,
        a.reused + b.reused,
        a.failed + b.failed,
        a.problems + b.problems,
        a.analysed + b.analysed,
    )
