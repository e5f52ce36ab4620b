"""libpod's state: what Podman knows beyond containers/storage (github.com/containers/podman,
libpod/boltdb_state.go, boltdb_state_internal.go, sqlite_state.go; libpod/define/containerstate.go).

Podman 4.x keeps it in ``<graphroot>/libpod/bolt_state.db`` (bbolt), Podman 5.x in
``<graphroot>/db.sql`` (SQLite, sqlite_state.go: the graphroot's top; ``libpod/db.sql`` is read
too, where a 4.x host set ``database_backend = "sqlite"`` by hand) by default.

bolt: bucket ``ctr`` has one sub-bucket per container id with ``config`` (the ContainerConfig
JSON: spec, name, pod, labels, namedVolumes, command, entrypoint, createdTime, logPath ...),
``state`` (ContainerState JSON: state number, pid, exitCode, startedTime, finishedTime,
oomKilled ...), ``pod-id``; ``pod`` has ``config``/``state`` per pod; ``vol`` ``config``/``state``
per volume; ``exit-code`` maps container id -> exit code text; ``runtime-config`` the paths.

SQLite (5.x, sqlite_state_internal.go sqliteInitSchema): tables ``ContainerConfig(ID, Name,
PodID, JSON)``, ``ContainerState(ID, State, ExitCode, JSON)`` (the columns are not kept current:
the JSON is the state), ``ContainerExitCode(ID, Timestamp, ExitCode)`` (bolt's exit-code bucket),
``ContainerVolume(ContainerID, VolumeName)``, ``PodConfig(ID, Name, JSON)``,
``PodState(ID, InfraContainerID, JSON)``, ``VolumeConfig(Name, StorageID, JSON)``,
``VolumeState(Name, JSON)``; the JSON documents are the same as bolt's.  The database is copied
into memory through the evidence (no -wal/-shm is ever created next to it).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pensieve.evidence import Evidence, EvidenceError
from pensieve.evidence.base import NotFound
from pensieve.formats.bolt import BoltDB, BoltError, Bucket
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import Problem
from pensieve.records.core import field, record

if TYPE_CHECKING:  # sqlite3 is imported where a db.sql is read (start-up time: 4.x roots are bolt)
    import sqlite3

#: libpod ContainerStatus numbers -> their String() names (define/containerstate.go)
LIBPOD_STATES = {
    0: "unknown",
    1: "created",  # ContainerStateConfigured
    2: "initialized",  # ContainerStateCreated: the runtime created it, never started
    3: "running",
    4: "stopped",
    5: "paused",
    6: "exited",
    7: "removing",
    8: "stopping",
}
#: libpod's state names in pensieve's record vocabulary (records/host.py Container.state)
RECORD_STATES = {"initialized": "created", "stopped": "exited"}

#: the largest state database read whole (bolt is read by offset from the file)
MAX_SQLITE_BYTES = 512 << 20
MAX_DOC_BYTES = 16 << 20
#: where a graphroot may hold libpod's SQLite state (first found with anything in it wins)
SQLITE_PLACES = ("db.sql", "libpod/db.sql")


@record
class LibpodContainer:
    id: str
    config: Doc
    state: Doc
    pod_id: str | None = None
    exit_code: int | None = None


@record
class LibpodPod:
    id: str
    name: str | None
    config: Doc
    state: Doc
    containers: list[str] = field(default_factory=list)


@record
class LibpodVolume:
    name: str
    config: Doc
    state: Doc
    users: list[str] = field(default_factory=list)


@record
class LibpodState:
    """Everything read from one libpod database."""

    path: str | None = None
    backend: str | None = None  # "boltdb" | "sqlite"
    containers: dict[str, LibpodContainer] = field(default_factory=dict)
    pods: dict[str, LibpodPod] = field(default_factory=dict)
    volumes: dict[str, LibpodVolume] = field(default_factory=dict)
    runtime: dict[str, str] = field(default_factory=dict)


def _drop_seccomp_rules(config: dict) -> None:
    """Forget the rules of the seccomp profile in a decoded ContainerConfig (``spec.linux.seccomp
    .syscalls``), once the whole document has been decoded and so checked: no reader of the
    state uses them, and they are most of what a container's config holds in memory (~36 of
    ~58 KiB of objects for Podman's default profile).  Kept for each of thousands of containers
    to the end of a listing, they made it touch (and fault in) that much fresh memory, which
    costs more than decoding them on these machines.  The profile's other keys (defaultAction,
    architectures, flags) stay: whether a profile was set, and its default, are still there."""
    spec = config.get("spec")
    linux = spec.get("linux") if isinstance(spec, dict) else None
    seccomp = linux.get("seccomp") if isinstance(linux, dict) else None
    if isinstance(seccomp, dict):
        seccomp.pop("syscalls", None)


def _doc(raw: bytes | str | None, source: str, problems: list[Problem], subject: str, what: str) -> Doc:
    """One JSON document of the state (an empty Doc and a problem when it is not one); a
    container's config without its seccomp rules (_drop_seccomp_rules)."""
    empty = Doc({}, source, problems, f"{what}.", subject)
    if raw is None:
        problems.append(Problem(source, f"{what} of {subject} missing", subject))
        return empty
    try:
        doc = load(raw, source, problems, subject=subject, max_bytes=MAX_DOC_BYTES)
    except UntrustedJSONError as exc:
        problems.append(Problem(source, f"{what} of {subject}: {exc}".replace(f"{source}: ", ""), subject))
        return empty
    doc.prefix = f"{what}."
    if what == "config":
        _drop_seccomp_rules(doc.value)
    return doc


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw else None


def state_name(state: Doc) -> str:
    """The record state of a libpod ContainerState (``state`` number; unknown numbers: unknown)."""
    number = state.int("state")
    name = LIBPOD_STATES.get(number if number is not None else 0, "unknown")
    return RECORD_STATES.get(name, name)


# ---- bolt (Podman 4.x) ------------------------------------------------------------------------


def _bolt_containers(db: BoltDB, path: str, out: LibpodState, problems: list[Problem]) -> None:
    exit_codes = db.bucket("exit-code")
    bucket = db.bucket("ctr")
    if bucket is None:
        return
    for key, ctr in bucket.buckets():
        cid = key.decode("utf-8", "replace")
        values: dict[bytes, bytes] = {}
        for k, v in ctr.items():  # one walk of the bucket's page for its three keys
            values.setdefault(k, v)  # the first of equal keys, as a get() finds it
        c = LibpodContainer(
            id=cid,
            config=_doc(values.get(b"config"), path, problems, cid, "config"),
            state=_doc(values.get(b"state"), path, problems, cid, "state"),
            pod_id=_text(values.get(b"pod-id")),
        )
        code = exit_codes.get(key) if exit_codes is not None else None
        if code is not None and code.strip().lstrip(b"-").isdigit() and len(code) < 12:
            c.exit_code = int(code)
        out.containers[cid] = c


def _bolt_items(db: BoltDB, name: str) -> Iterator[tuple[str, Bucket]]:
    """(key text, sub-bucket) of every sub-bucket of the top-level bucket NAME (none when absent)."""
    bucket = db.bucket(name)
    if bucket is not None:
        for key, sub in bucket.buckets():
            yield key.decode("utf-8", "replace"), sub


def _bolt_keys(bucket: Bucket, name: str) -> list[str]:
    """The keys of BUCKET's sub-bucket NAME as text ([] when it has none)."""
    sub = bucket.bucket(name)
    return [k.decode("utf-8", "replace") for k, _ in sub.items()] if sub else []


def _bolt_pods(db: BoltDB, path: str, out: LibpodState, problems: list[Problem]) -> None:
    for pid, pod in _bolt_items(db, "pod"):
        config = _doc(pod.get("config"), path, problems, pid, "config")
        out.pods[pid] = LibpodPod(
            id=pid,
            name=config.str("name"),
            config=config,
            state=_doc(pod.get("state"), path, problems, pid, "state"),
            containers=_bolt_keys(pod, "containers"),
        )


def _bolt_volumes(db: BoltDB, path: str, out: LibpodState, problems: list[Problem]) -> None:
    for name, vol in _bolt_items(db, "vol"):
        out.volumes[name] = LibpodVolume(
            name=name,
            config=_doc(vol.get("config"), path, problems, name, "config"),
            state=_doc(vol.get("state"), path, problems, name, "state"),
            users=_bolt_keys(vol, "vol-dependencies"),
        )


def read_bolt(ev: Evidence, path: str, problems: list[Problem]) -> LibpodState:
    """libpod's bolt_state.db at PATH (read by offset through the evidence)."""
    out = LibpodState(path=path, backend="boltdb")
    try:
        with ev.open(path) as fh:
            db = BoltDB(fh)
            config = db.bucket("runtime-config")
            if config is not None:
                out.runtime = {k.decode("utf-8", "replace"): _text(v) or "" for k, v in config.items()}
            _bolt_containers(db, path, out, problems)
            _bolt_pods(db, path, out, problems)
            _bolt_volumes(db, path, out, problems)
    except (BoltError, ValueError) as exc:
        problems.append(Problem(path, f"libpod bolt state unreadable (the rest is what it held): {exc}"))
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(path, f"libpod bolt state unreadable: {exc}"))
    return out


# ---- SQLite (Podman 5.x) ----------------------------------------------------------------------


def _rows(db: sqlite3.Connection, sql: str, path: str, problems: list[Problem]) -> list[tuple]:
    import sqlite3  # already loaded by read_sqlite: its module for the except clause

    try:
        return db.execute(sql).fetchall()
    except sqlite3.Error as exc:
        problems.append(Problem(path, f"libpod sqlite state: {sql.split(' FROM ')[-1].split()[0]}: {exc}"))
        return []


def _s(value: object) -> str | None:
    return (
        value
        if isinstance(value, str)
        else (value.decode("utf-8", "replace") if isinstance(value, bytes) else None)
    )


def _optional_rows(db: sqlite3.Connection, table: str, sql: str, path: str, problems: list[Problem]) -> list:
    """Rows of a table a hand-made or older database may lack (no problem when it is absent)."""
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return _rows(db, sql, path, problems) if found else []


def _sqlite_containers(db: sqlite3.Connection, path: str, out: LibpodState, problems: list[Problem]) -> None:
    states = {_s(i): j for i, j in _rows(db, "SELECT ID, JSON FROM ContainerState", path, problems)}
    codes = {
        _s(i): code
        for i, code in _optional_rows(
            db, "ContainerExitCode", "SELECT ID, ExitCode FROM ContainerExitCode", path, problems
        )
        if isinstance(code, int) and -1 <= code <= 255
    }
    for cid, pod_id, config in _rows(db, "SELECT ID, PodID, JSON FROM ContainerConfig", path, problems):
        cid = _s(cid)
        if not cid:
            continue
        out.containers[cid] = LibpodContainer(
            id=cid,
            config=_doc(_s(config), path, problems, cid, "config"),
            state=_doc(_s(states.get(cid)), path, problems, cid, "state"),
            pod_id=_s(pod_id) or None,
            exit_code=codes.get(cid),
        )


def _sqlite_tables(db: sqlite3.Connection, path: str, out: LibpodState, problems: list[Problem]) -> None:
    _sqlite_containers(db, path, out, problems)
    pod_states = {_s(i): j for i, j in _rows(db, "SELECT ID, JSON FROM PodState", path, problems)}
    for pid, name, config in _rows(db, "SELECT ID, Name, JSON FROM PodConfig", path, problems):
        pid = _s(pid)
        if not pid:
            continue
        members = [c.id for c in out.containers.values() if c.pod_id == pid]
        out.pods[pid] = LibpodPod(
            pid,
            _s(name),
            _doc(_s(config), path, problems, pid, "config"),
            _doc(_s(pod_states.get(pid)), path, problems, pid, "state"),
            members,
        )
    users: dict[str | None, list[str]] = {}
    for cid, vname in _optional_rows(
        db, "ContainerVolume", "SELECT ContainerID, VolumeName FROM ContainerVolume", path, problems
    ):
        if _s(cid):
            users.setdefault(_s(vname), []).append(_s(cid) or "")
    vol_states = {_s(i): j for i, j in _rows(db, "SELECT Name, JSON FROM VolumeState", path, problems)}
    for name, config in _rows(db, "SELECT Name, JSON FROM VolumeConfig", path, problems):
        name = _s(name)
        if name:
            out.volumes[name] = LibpodVolume(
                name,
                _doc(_s(config), path, problems, name, "config"),
                _doc(_s(vol_states.get(name)), path, problems, name, "state"),
                sorted(users.get(name, [])),
            )


#: DBConfig's columns (sqlite_state_internal.go) under the names of bolt's runtime-config keys
DB_CONFIG = {
    "StaticDir": "static-dir",
    "TmpDir": "tmp-dir",
    "GraphRoot": "graph-root",
    "RunRoot": "run-root",
    "GraphDriver": "graph-driver-name",
    "VolumeDir": "volume-path",
}


def _sqlite_runtime(db: sqlite3.Connection, path: str, problems: list[Problem]) -> dict[str, str]:
    """The paths the runtime that made the database used (its one DBConfig row), keyed as bolt's
    ``runtime-config`` bucket keys them."""
    cols = ", ".join(DB_CONFIG)
    rows = _optional_rows(db, "DBConfig", f"SELECT {cols} FROM DBConfig", path, problems)
    if not rows:
        return {}
    return {key: _s(value) or "" for key, value in zip(DB_CONFIG.values(), rows[0], strict=False)}


def read_sqlite(ev: Evidence, path: str, problems: list[Problem]) -> LibpodState:
    """libpod's db.sql at PATH: its bytes read through the evidence, deserialized into an
    in-memory SQLite database (the evidence file is never opened by SQLite itself)."""
    out = LibpodState(path=path, backend="sqlite")
    try:
        raw = ev.read_bytes(path, MAX_SQLITE_BYTES + 1)
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(path, f"libpod sqlite state unreadable: {exc}"))
        return out
    if len(raw) > MAX_SQLITE_BYTES:
        problems.append(Problem(path, f"libpod sqlite state larger than {MAX_SQLITE_BYTES} bytes: not read"))
        return out
    import sqlite3

    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(raw)
        db.execute("PRAGMA query_only = 1")
        _sqlite_tables(db, path, out, problems)
        out.runtime = _sqlite_runtime(db, path, problems)
    except sqlite3.Error as exc:
        problems.append(Problem(path, f"libpod sqlite state unreadable: {exc}"))
    finally:
        db.close()
    return out


def read_state(ev: Evidence, graphroot: str, problems: list[Problem]) -> LibpodState:
    """The libpod state of a graphroot: db.sql when present (Podman 5 prefers it: at the
    graphroot's top, or under libpod/), else bolt_state.db; an empty state when there is none
    (a store used only by buildah/CRI-O)."""
    bolt = posixpath.join(graphroot, "libpod", "bolt_state.db")
    state = LibpodState()
    for sql in SQLITE_PLACES:
        path = posixpath.join(graphroot, sql)
        if ev.is_file(path):
            state = read_sqlite(ev, path, problems)
            if state.containers or state.pods or state.volumes:
                break
    if ev.is_file(bolt) and not state.containers:
        state = read_bolt(ev, bolt, problems)
    return state


__all__ = [
    "LIBPOD_STATES",
    "LibpodContainer",
    "LibpodPod",
    "LibpodState",
    "LibpodVolume",
    "NotFound",
    "read_bolt",
    "read_sqlite",
    "read_state",
    "state_name",
]
