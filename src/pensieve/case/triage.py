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
import re
import time
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
    params: str | None = None  # what its output depends on besides the source (the rules' digest)
    strict: bool = True  # done with other PARAMS counts as not done (False: reused all the same)


class Context:
    """What tasks share about the source being triaged: its id and keys, the problems met."""

    def __init__(
        self, source: OpenedSource, source_id: int, hunting=None, store: CaseStore | None = None
    ) -> None:
        self.source = source
        self.source_id = source_id
        self.store = store  # the case (hunting tasks read what earlier tasks wrote, and replace their own)
        self.problems: list[Problem] = []
        self.hunting = hunting  # YARA rules and IOCs (pensieve.hunting.Hunting), or None
        # content-rule matcher factories (ContentScanner)
        self.matchers: list = hunting.matchers(self) if hunting is not None else []

    @property
    def evidence(self):
        """The source's evidence (a checkpoint source has none of its own)."""
        opened = self.source.opened
        return opened.evidence if isinstance(opened, DiskSource) else getattr(opened, "evidence", None)

    @property
    def host(self):
        """The Host the engine tasks read: the source's own, or the engines' on a disk image."""
        opened = self.source.opened
        return opened.host if isinstance(opened, DiskSource) else opened

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
    from pensieve.errors import NotADataRoot
    from pensieve.evidence import open_evidence
    from pensieve.evidence.disk import DiskImageEvidence

    evidence = open_evidence(real)
    disk = isinstance(evidence, DiskImageEvidence)
    try:
        host = open_engines(evidence)
    except NotADataRoot:
        if not disk and not _holds_kubelet_archives(evidence):
            evidence.close()
            raise
        host = None  # no engine root: a disk is still recovered and carved, checkpoints still read
    except EvidenceError:
        evidence.close()
        raise
    if host is not None:
        host.problems.extend(evidence.problems)
    if disk or host is None:
        kind = "disk" if disk else "node"
        return OpenedSource(real, kind, label, _hostname(evidence), fp, DiskSource(evidence, host))
    return OpenedSource(real, "host", label, _hostname(evidence), fp, host)


def _holds_kubelet_archives(evidence) -> bool:
    from pensieve.memory.sources import kubelet_archives

    try:
        return bool(kubelet_archives(evidence))
    except (EvidenceError, OSError):
        return False


class DiskSource:
    """A disk image, or a host root without engine roots, as triage reads it: its evidence, and
    the Host of the engine roots on it (None when it holds none)."""

    def __init__(self, evidence, host) -> None:
        self.evidence = evidence
        self.host = host
        self.problems = list(host.problems if host is not None else evidence.problems)

    def boundaries(self) -> list[str]:
        return list(self.evidence.boundaries())

    def close(self) -> None:
        if self.host is not None:
            self.host.close()
        self.evidence.close()


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
    host = ctx.host
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

    host = ctx.host
    if not container.layers:
        where = container.config_path or container.id
        ctx.problems.append(Problem(where, "no layers: no diff", container.id))
        return
    scanner = ContentScanner(ctx.matchers, keep=_watched)
    try:
        result = diff(host.evidence, container.layers, hash_files=True, digest=scanner)
    except EvidenceError as exc:  # a layer gone from the evidence: said, not a failed analysis
        ctx.problems.append(Problem(container.config_path or container.id, f"no diff: {exc}", container.id))
        return
    changes = host.diff_filter(container, result.changes)
    ctx.problems.extend(result.problems)
    table, keys = BY_NAME["changes"], ctx.keys(**_container_keys(container))
    rows = []
    for ch in changes:
        extra = {
            "file_kind": scanner.kinds.get(ch.host_path or ""),
            "matches": scanner.matches.get(ch.host_path or ""),
            "added_lines": _added_lines(scanner.kept, ch),
        }
        rows.append(record_row(table, ch, keys, extra))
    yield "changes", rows


def _checkpoint_rows(ctx: Context, src, keys: dict[str, Any]) -> Rows:
    """What checkpoint SRC says of itself, its processes, open files, sockets and carried changes,
    with KEYS (engine, container, pod, image)."""
    from pensieve.memory import views

    info, ckpt = src.info, src.checkpoint
    extra = {"checkpoint_name": info.name}
    yield "checkpoints", [record_row(BY_NAME["checkpoints"], info, ctx.keys(**keys), extra)]
    yield (
        "processes",
        [record_row(BY_NAME["processes"], p, ctx.keys(**keys), extra) for p in views.processes(ckpt)],
    )
    yield "sockets", [record_row(BY_NAME["sockets"], s, ctx.keys(**keys), extra) for s in views.sockets(ckpt)]
    yield "files", [record_row(BY_NAME["files"], f, ctx.keys(**keys), extra) for f in views.files(ckpt)]
    yield "changes", ctx.rows("changes", src.changes(), **keys)
    ctx.problems += [Problem(info.checkpoint or ctx.source.path, p, info.container_id) for p in src.problems]


def _info_keys(info) -> dict[str, Any]:
    return {
        "engine": (info.engine or "").lower() or None,
        "container_id": info.container_id,
        "image_id": info.image_id,
        "pod": f"{info.namespace}/{info.pod}" if info.pod and info.namespace else info.pod,
    }


#: files whose added lines the findings name (the tail of the evidence path)
WATCHED = re.compile(
    r"/(etc/(passwd|shadow|group|gshadow|sudoers|crontab|ld\.so\.preload)|etc/sudoers\.d/[^/]+"
    r"|etc/cron\.[a-z]+/[^/]+|etc/crontabs/[^/]+|var/spool/cron/(crontabs/)?[^/]+|[^/]+/\.ssh/authorized_keys2?)$"
)
MAX_LINES = 50


def _watched(host_path: str) -> bool:
    return WATCHED.search(host_path) is not None


def _added_lines(kept: dict[str, bytes], ch) -> list[str] | None:
    """The lines of a watched file that its lower copy lacks (all of them for an added file)."""
    now = kept.get(ch.sha256 or "")
    if now is None or ch.change == "deleted":
        return None
    before = kept.get((ch.lower or {}).get("sha256") or "", b"")
    old = set(before.splitlines())
    added = [line for line in now.splitlines() if line not in old]
    return [line.decode("utf-8", "backslashreplace") for line in added[:MAX_LINES]]


def checkpoint(ctx: Context) -> Rows:
    """A checkpoint source (a CRIU directory, a checkpoint archive)."""
    src = ctx.source.opened
    yield from _checkpoint_rows(ctx, src, _info_keys(src.info))


def container_checkpoint(ctx: Context, container, ev_dir: str) -> Rows:
    """A checkpoint an engine keeps of CONTAINER (``docker checkpoint create``), read in place."""
    from pensieve.memory.sources import container_checkpoint as open_checkpoint

    src = open_checkpoint(ctx.host, container, ev_dir, ctx.source.path)  # not closed: the host's evidence
    yield from _checkpoint_rows(ctx, src, {**_info_keys(src.info), **_container_keys(container)})


def kubelet_checkpoint(ctx: Context, ev_path: str) -> Rows:
    """A kubelet forensic checkpoint archive (``/var/lib/kubelet/checkpoints/*.tar``) of the host,
    tied to the container it names when the host holds it."""
    from pensieve.memory.sources import open_kubelet_archive

    with open_kubelet_archive(ctx.evidence, ev_path, ctx.source.path) as src:
        keys = _info_keys(src.info)
        c = _find_container(ctx.host, src.info.container_id) if ctx.host is not None else None
        if c is not None:
            keys.update(_container_keys(c))
        yield from _checkpoint_rows(ctx, src, keys)


def _find_container(host, cid: str | None):
    """The container CID of HOST, None when it holds none (or CID is unknown)."""
    if not cid:
        return None
    try:
        return host.container(cid)
    except LookupError:  # LookupFailed: not there, or ambiguous
        return None


def integrity(ctx: Context) -> Rows:
    """Every image layer of the source checked against its digest (``verify``)."""
    host = ctx.host
    if ctx.source.kind == "archive":
        from pensieve.images.verify_archive import verify_archive

        verdicts = verify_archive(host, None)
    else:
        verdicts, _images = host.verify_layers(None, False)
    yield "integrity", integrity_rows(ctx, verdicts)


def integrity_rows(ctx: Context, verdicts: Iterable[Any]) -> list[dict]:
    """The ``integrity`` rows of layer VERDICTS (LayerVerdict) of the source of CTX, each keyed by
    the engine whose data root holds the layer and by the layer's cache id."""
    host = ctx.host
    rows = []
    for v in verdicts:
        keys = ctx.keys(
            engine=_engine_of(host, v.data_root) or getattr(host, "engine", None), layer_id=v.cache_id
        )
        rows.append(record_row(BY_NAME["integrity"], v, keys))
    return rows


def container_logs(ctx: Context, container) -> Rows:
    """CONTAINER's log lines, whatever its engine keeps them in."""
    from pensieve.engines.logfiles import container_logs as read

    lines, _missing = read(ctx.host, container, ctx.problems)
    yield "logs", ctx.rows("logs", lines, **_container_keys(container))


def recovered(ctx: Context) -> Rows:
    """Deleted files of the disk's ext2/3/4 filesystem (journal and orphans), attributed to the
    container, layer and image they belonged to; nothing is written out."""
    from pensieve.disk.recover import recover

    disk = ctx.source.opened
    report = recover(disk.evidence, host=disk.host)
    ctx.problems.extend(report.problems)
    rows = []
    for f in report.files:
        engine = None if f.container is None and f.layer is None else _engine_of(disk.host, f.data_root)
        rows.append(record_row(BY_NAME["recovered"], f, ctx.keys(engine=engine)))
    yield "recovered", rows


def carved(ctx: Context) -> Rows:
    """Files carved from the disk's unallocated space (nothing is written out)."""
    from pensieve.disk import carve as carving

    img, filesystems = carving.open_for_carving(ctx.source.path)
    try:
        carver = carving.Carver(img, filesystems=filesystems)
        files = list(carver.run())
        ctx.problems.extend(
            p if isinstance(p, Problem) else Problem(ctx.source.path, str(p)) for p in carver.summary.problems
        )
    finally:
        img.close()
    yield "carved", ctx.rows("carved", files)


#: (bundle file, table) of the live snapshot views triage reads (live/cgroups.json is not)
LIVE_VIEWS = (("live/ps.json", "live_processes"), ("live/net.json", "live_sockets"))
#: the largest live snapshot file read (a view of one container's processes is a few KiB)
MAX_LIVE_BYTES = 64 << 20
_LIVE_TYPES = {"VARCHAR": (str,), "BIGINT": (int,), "BOOLEAN": (bool,), "DOUBLE": (int, float)}


def _bundle_path(ctx: Context) -> str | None:
    """The directory of the collect bundle the source is, None when it is no bundle."""
    from pensieve.evidence.bundle import BundleEvidence

    evidence = ctx.evidence
    return evidence.path if isinstance(evidence, BundleEvidence) else None


def live_snapshot(ctx: Context, bundle: str) -> Rows:
    """The processes and sockets of the bundle's live snapshot (``live/ps.json``, ``live/net.json``,
    written by :mod:`pensieve.collect.live_snapshot` as ``live ps --json`` prints them); a view
    missing, too large or not JSON is a problem, the other one is still read."""
    from pensieve.evidence.directory import DirectoryEvidence

    tree = DirectoryEvidence(bundle)
    try:
        for rel, table in LIVE_VIEWS:
            items = _live_items(ctx, tree, rel)
            records = [r for i, item in enumerate(items) if (r := _live_record(ctx, table, rel, i, item))]
            yield table, [record_row(BY_NAME[table], r, ctx.keys()) for r in records]
    finally:
        tree.close()


def _live_items(ctx: Context, tree, rel: str) -> list:
    """The JSON list of the bundle file REL ([] and a problem when it is unusable; [] alone when
    the bundle has no such file: collect then recorded why)."""
    from pensieve.formats.untrusted_json import parse

    where = f"{ctx.source.path}/{rel}"
    try:
        if not tree.exists("/" + rel):
            return []
        size = tree.lstat("/" + rel).size
        if size > MAX_LIVE_BYTES:
            too_big = f"live snapshot not read: {size} bytes, over {MAX_LIVE_BYTES}"
            ctx.problems.append(Problem(where, too_big))
            return []
        value = parse(tree.read_bytes("/" + rel, MAX_LIVE_BYTES + 1), where, max_bytes=MAX_LIVE_BYTES)
    except (EvidenceError, OSError, ValueError) as exc:
        ctx.problems.append(Problem(where, f"live snapshot not read: {exc}"))
        return []
    if not isinstance(value, list):
        kind = type(value).__name__
        ctx.problems.append(Problem(where, f"live snapshot not read: a JSON {kind}, not a list"))
        return []
    return value


def _live_record(ctx: Context, table: str, rel: str, index: int, item: Any):
    """The record of TABLE that ITEM (one element of the file REL) renders, every field checked
    against its declared type (a wrong one is null and a problem); None for an item that is no
    object or lacks a required field."""
    from pensieve.case.schema import columns
    from pensieve.times import parse_rfc3339

    t = BY_NAME[table]
    where = f"{ctx.source.path}/{rel}[{index}]"
    if not isinstance(item, dict):
        ctx.problems.append(Problem(where, "live snapshot item is not an object"))
        return None
    types = dict(columns(t))
    values: dict[str, Any] = {}
    for name in t.record.__record_fields__:
        if name in t.omit or name not in item or item[name] is None:
            continue
        value, sql = item[name], types.get(name, "JSON")
        if sql == "TIMESTAMP_NS":
            value = parse_rfc3339(value) if isinstance(value, str) else None
        elif sql in _LIVE_TYPES and (
            not isinstance(value, _LIVE_TYPES[sql]) or (sql != "BOOLEAN" and isinstance(value, bool))
        ):
            value = None
        if value is None:
            ctx.problems.append(Problem(where, f"{name}: not a {sql.lower()}: {str(item[name])[:80]}"))
            continue
        values[name] = value
    try:
        return t.record(**values)
    except TypeError as exc:  # a required field (pid, protocol ...) missing or unusable
        ctx.problems.append(Problem(where, f"live snapshot item skipped: {exc}"))
        return None


def _engine_of(host, data_root: str | None) -> str | None:
    """The engine whose root is DATA_ROOT on HOST (None when unknown)."""
    if host is None or data_root is None:
        return None
    from pensieve.engines.discover import engine_hosts

    for h in engine_hosts(host):
        roots = [getattr(r, "path", r) for r in getattr(h, "roots", None) or []]
        if data_root in roots or data_root == getattr(h, "root", None):
            return h.engine
    return None


# ---- planning --------------------------------------------------------------------------------


def _host_tasks(ctx: Context) -> list[Task]:
    host = ctx.host
    tasks = [Task("inventory", None, "inventory", lambda: inventory(ctx))]
    tasks.append(Task("integrity", None, "verify layers", lambda: integrity(ctx)))
    for c in host.containers():
        who = c.name or c.id[:12]
        digest = ctx.hunting.digest if ctx.hunting is not None else None
        diff = Task("diff", c.id, f"diff {who}", lambda c=c: container_diff(ctx, c), digest, strict=False)
        tasks.append(diff)
        tasks.append(Task("logs", c.id, f"logs {who}", lambda c=c: container_logs(ctx, c)))
        for name, ev_dir in _checkpoints_of(ctx, c).items():
            label = f"checkpoint {who}/{name}"
            tasks.append(
                Task(
                    "checkpoint",
                    f"{c.id}/{name}",
                    label,
                    lambda c=c, d=ev_dir: container_checkpoint(ctx, c, d),
                )
            )
    bundle = _bundle_path(ctx)
    if bundle is not None:
        tasks.append(Task("live-snapshot", None, "live snapshot", lambda: live_snapshot(ctx, bundle)))
    return tasks + _kubelet_tasks(ctx)


def _kubelet_tasks(ctx: Context) -> list[Task]:
    tasks = []
    for ev_path in _kubelet_archives(ctx):
        name = ev_path.rsplit("/", 1)[-1]
        tasks.append(
            Task("checkpoint", ev_path, f"checkpoint {name}", lambda p=ev_path: kubelet_checkpoint(ctx, p))
        )
    return tasks


def _checkpoints_of(ctx: Context, c) -> dict[str, str]:
    try:
        return ctx.host.checkpoints(c)
    except (EvidenceError, OSError) as exc:
        ctx.problems.append(Problem(c.config_path or c.id, f"checkpoints unreadable: {exc}", c.id))
        return {}


def _kubelet_archives(ctx: Context) -> list[str]:
    from pensieve.memory.sources import kubelet_archives

    try:
        return kubelet_archives(ctx.evidence)
    except (EvidenceError, OSError) as exc:
        ctx.problems.append(Problem(ctx.source.path, f"kubelet checkpoints unreadable: {exc}"))
        return []


def _checkpoint_tasks(ctx: Context) -> list[Task]:
    return [Task("checkpoint", None, "checkpoint", lambda: checkpoint(ctx))]


def _disk_tasks(ctx: Context) -> list[Task]:
    disk = ctx.source.opened
    tasks: list[Task] = []
    if disk.host is not None:
        tasks = _host_tasks(ctx)
    elif ctx.source.kind == "node":
        return _kubelet_tasks(ctx)
    else:
        tasks = _kubelet_tasks(ctx)
    if disk.evidence.fs_type.startswith("ext"):
        tasks.append(Task("recover", None, "recover", lambda: recovered(ctx)))
    tasks.append(Task("carve", None, "carve", lambda: carved(ctx)))
    return tasks


#: source kind -> the planner naming the tasks that apply to it
PLANNERS: dict[str, Callable[[Context], list[Task]]] = {
    "host": _host_tasks,
    "archive": lambda ctx: [
        Task("inventory", None, "inventory", lambda: inventory(ctx)),
        Task("integrity", None, "verify layers", lambda: integrity(ctx)),
    ],
    "checkpoint": _checkpoint_tasks,
    "disk": _disk_tasks,
    "node": _disk_tasks,
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
    """Run TASK into STORE in one transaction (:meth:`CaseStore.run_task`), the problems it met
    with it: (status, rows written, error message)."""
    before = len(ctx.problems)

    def write() -> int:
        n = sum(store.insert(table, rows) for table, rows in task.run())
        store.insert("problems", ctx.rows("problems", ctx.problems[before:], task=task.name))
        return n

    def failed(message: str) -> None:
        del ctx.problems[before:]
        problem = Problem(ctx.source.path, f"task {task.label} failed: {message}", task.subject, "error")
        store.insert("problems", ctx.rows("problems", [problem], task=task.name))
        ctx.problems.append(problem)

    return store.run_task(ctx.source_id, task.name, task.subject, write, failed, task.params)


def triage_source(
    store: CaseStore, source: OpenedSource, report: Callable[[dict], None], hunting=None
) -> TriageSummary:
    """Every task that applies to SOURCE, into STORE; REPORT gets one event per task; HUNTING
    (:class:`pensieve.hunting.Hunting`) adds its matchers and tasks."""
    sid = store.source_id(source.path, source.kind, source.label, source.host_name, source.fingerprint)
    ctx = Context(source, sid, hunting, store)
    opened_problems = list(getattr(source.opened, "problems", []) or [])
    tasks = PLANNERS[source.kind](ctx) + (hunting.tasks(ctx) if hunting is not None else [])
    if ctx.problems:  # met while naming the tasks (a checkpoint directory unreadable ...)
        with store.transaction():
            store.insert("problems", ctx.rows("problems", ctx.problems, task="plan"))
    done = reused = failed = 0
    for i, task in enumerate(tasks, 1):
        event = {"source": source.label, "task": task.label, "index": i, "total": len(tasks)}
        if store.task_done(sid, task.name, task.subject, task.params if task.strict else None):
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
    opened: list[OpenedSource | tuple[str, str]] = []  # a source, or (path, why it is unusable)
    for path in paths:
        try:
            opened.append(open_triage_source(path))
        except (EvidenceError, OSError, ValueError) as exc:
            opened.append((path, str(exc)))
    boundaries = [
        b
        for s in opened
        for b in (s.boundaries() if isinstance(s, OpenedSource) else [os.path.realpath(s[0])])
    ]
    store = CaseStore(case, boundaries=boundaries)
    total = TriageSummary(0, 0, 0, [])
    try:
        if hunting is not None:
            hunting.remember(store)
        for source in opened:  # in the order given: each source's id follows from its place
            if not isinstance(source, OpenedSource):
                total = _add(total, record_unopenable(store, source[0], source[1], report))
                continue
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


def record_unopenable(
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
