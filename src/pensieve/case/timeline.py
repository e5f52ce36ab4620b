"""The super-timeline of a case: every timestamped fact of every table, as rows of ``events``.

One case analysis per source table (``timeline.containers``, ``timeline.images``,
``timeline.files`` ...), each an ``INSERT INTO events ... SELECT`` run inside DuckDB in the
transaction :func:`pensieve.case.analyses.run_analyses` opens for it (no row goes through Python),
after the findings (order 60), so the findings' times are on the timeline too.

Every event has:

``time``
    TIMESTAMP_NS, UTC;
``kind``
    what happened: ``container.created`` | ``container.started`` | ``container.finished`` |
    ``container.oom_killed`` | ``container.updated`` | ``image.created`` | ``image.build`` |
    ``volume.created`` | ``file.mtime`` | ``file.ctime`` | ``file.atime`` | ``file.crtime`` |
    ``recovered.deleted`` | ``recovered.deleted_before`` | ``log`` | ``checkpoint`` |
    ``checkpoint.container_created`` | ``process.seen`` | ``process.started`` | ``finding``; the
    ``file.*`` kinds are the MACB times of the files of container changes (the file a change is
    about: the new one of an added or modified path, the original of a deleted one) and of
    recovered files;
``timestamp_desc``
    the time's meaning in Plaso's and Timesketch's words (``Content Modification Time``,
    ``Metadata Modification Time``, ``Creation Time`` ...);
``message``
    one line a person reads (``container c-web (3f2a...) started``);
``path``
    the file's path where there is one;
the key columns
    of the record it comes from (a container's event has its RW layer as ``layer_id``);
``ref_table``, ``ref``
    the table and a JSON object of the columns that identify the row it comes from, always built
    by the same expression for one table, so ``ref`` compares equal across events of one row.

Processes have no start time: CRIU does not record one (``core-*.img``'s ``task_core_entry``
holds state, exit code, personality, flags, signal masks, comm, timers, rlimits, cgroup set,
seccomp, loginuid, oom_score_adj, sigactions, child_subreaper, stop signal and membarrier
registrations -- CRIU's images/core.proto up to 4.2 -- and no ``/proc/PID/stat`` start time; nor
does ``stats-dump.img``, whose times are durations).  Each process of a checkpoint is instead a
``process.seen`` event at the checkpoint's own time (``checkpoints.checkpointed``: when the
engine or the archive says it was taken; a bare CRIU image directory says nothing, and its
processes have no event).  The processes of a collect bundle's live snapshot (``live_processes``)
do have one: ``/proc/PID/stat``'s start time, a ``process.started`` event.
"""

from __future__ import annotations

from collections.abc import Iterator

from pensieve.case.analyses import analysis
from pensieve.case.schema import KEY_NAMES
from pensieve.case.store import CaseStore

#: the columns every SELECT below yields, in this order (``producer`` is added by _insert)
EVENT_COLUMNS = (*KEY_NAMES, "time", "kind", "timestamp_desc", "message", "path", "ref_table", "ref")
ORDER = 60  # after the findings (they are events too), before nothing that needs events

#: how a container is named in messages: its name, else its short id
_CONTAINER = "coalesce(n.name, left(t.container_id, 12), '-')"
#: the container names of the case, to join on (source_id, container_id)
_NAMES = (
    "LEFT JOIN (SELECT source_id, container_id, any_value(name) AS name FROM containers "
    "GROUP BY source_id, container_id) n ON n.source_id = t.source_id AND n.container_id = t.container_id"
)
_IMAGE = (
    "coalesce(t.tags->>0, left(replace(t.image_id, 'sha256:', ''), 12), '-')"  # its first tag, else short id
)

#: ref JSON of a row of each table: the columns that identify it
REFS = {
    "containers": "json_object('source_id', t.source_id, 'container_id', t.container_id)",
    "images": "json_object('source_id', t.source_id, 'image_id', t.image_id)",
    "volumes": "json_object('source_id', t.source_id, 'name', t.name)",
    "changes": (
        "json_object('source_id', t.source_id, 'container_id', t.container_id, 'layer_id', t.layer_id, "
        "'path', t.path, 'change', t.change)"
    ),
    "recovered": (
        "json_object('source_id', t.source_id, 'path', t.path, 'inode', t.inode, 'method', t.method, "
        "'journal_transaction', t.journal_transaction)"
    ),
    "logs": (
        "json_object('source_id', t.source_id, 'container_id', t.container_id, 'source', t.source, "
        "'time', t.time, 'stream', t.stream)"
    ),
    "checkpoints": (
        "json_object('source_id', t.source_id, 'container_id', t.container_id, 'checkpoint', t.checkpoint, "
        "'checkpoint_name', t.checkpoint_name)"
    ),
    "findings": "json_object('source_id', t.source_id, 'finding_id', t.finding_id, 'producer', t.producer)",
    "processes": (
        "json_object('source_id', t.source_id, 'container_id', t.container_id, 'checkpoint', t.checkpoint, "
        "'checkpoint_name', t.checkpoint_name, 'pid', t.pid)"
    ),
    "live_processes": "json_object('source_id', t.source_id, 'container_id', t.container_id, 'pid', t.pid)",
}


def rfc3339_ns(text: str) -> str:
    """SQL of the TIMESTAMP_NS (UTC) of the RFC 3339 text TEXT (an SQL expression), its offset
    applied (DuckDB's cast ignores it), null for text that is no time."""
    offset = f"regexp_extract({text}, '([+-])(\\d\\d):?(\\d\\d)$', ['sign', 'h', 'm'])"
    has_offset = f"regexp_matches({text}, '[Tt ].*[+-]\\d\\d:?\\d\\d$')"
    minutes = (
        f"CASE WHEN {has_offset} THEN (CAST(({offset}).h AS BIGINT) * 60 + CAST(({offset}).m AS BIGINT)) "
        f"* CASE WHEN ({offset}).sign = '-' THEN -1 ELSE 1 END ELSE 0 END"
    )
    return f"make_timestamp_ns(epoch_ns(try_cast({text} AS TIMESTAMP_NS)) - ({minutes}) * 60000000000)"


def _keys(layer: str = "t.layer_id", image: str = "t.image_id") -> str:
    """The key columns of an event from the row ``t``."""
    return f"t.source_id, t.host, t.engine, t.container_id, t.pod, {image} AS image_id, {layer} AS layer_id"


def _insert(store: CaseStore, producer: str, selects: list[str]) -> None:
    """Run ``INSERT INTO events`` for each SELECT (yielding EVENT_COLUMNS), rows without a time
    left out, every row's producer PRODUCER."""
    cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    for select in selects:
        store.db.execute(
            f"INSERT INTO events ({cols}, producer) SELECT {cols}, ? FROM ({select}) e "
            "WHERE e.time IS NOT NULL",
            [producer],
        )


def _select(table: str, time: str, kind: str, desc: str, message: str, path: str = "NULL", **keys) -> str:
    """A SELECT of one event per row ``t`` of TABLE (container names joined as ``n``)."""
    return (
        f"SELECT {_keys(**keys)}, {time} AS time, '{kind}' AS kind, '{desc}' AS timestamp_desc, "
        f"{message} AS message, {path} AS path, '{table}' AS ref_table, {REFS[table]} AS ref "
        f"FROM {table} t {_NAMES}"
    )


def _nothing() -> Iterator[tuple[str, list[dict]]]:
    """An analysis that wrote its rows itself yields none."""
    yield from ()


@analysis("timeline.containers", ("events",), order=ORDER)
def container_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """Created, started, finished (with the exit code), OOM-killed, updated: from ``containers``."""
    who = f"'container ' || {_CONTAINER} || ' (' || left(t.container_id, 12) || ')'"
    image = "coalesce(t.image, left(replace(t.image_id, 'sha256:', ''), 12), '?')"
    rw = {"layer": "t.rw_layer"}
    _insert(
        store,
        "timeline.containers",
        [
            _select(
                "containers",
                "t.created",
                "container.created",
                "Creation Time",
                f"{who} || ' created from image ' || {image}",
                **rw,
            ),
            _select(
                "containers", "t.started", "container.started", "Start Time", f"{who} || ' started'", **rw
            ),
            _select(
                "containers",
                "t.finished",
                "container.finished",
                "End Time",
                f"{who} || ' finished' || coalesce(', exit code ' || t.exit_code, '')",
                **rw,
            ),
            _select(
                "containers",
                "CASE WHEN t.oom_killed THEN t.finished END",
                "container.oom_killed",
                "End Time",
                f"{who} || ' killed by the OOM killer'",
                **rw,
            ),
            _select(
                "containers",
                "t.updated",
                "container.updated",
                "Last Update Time",
                f"{who} || ' record updated'",
                **rw,
            ),
        ],
    )
    return _nothing()


@analysis("timeline.images", ("events",), order=ORDER)
def image_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """Each image's creation, and each step of its build history (``images.history``: created,
    created_by; the step's layer as ``layer_id``)."""
    step_ref = "json_object('source_id', t.source_id, 'image_id', t.image_id, 'step', t.i)"
    created_by = "coalesce(t.h->>'created_by', t.h->>'comment', '(no command recorded)')"
    step_layer, step_time = "t.h->>'cache_id'", "t.h->>'created'"
    steps = (
        "SELECT *, json_extract(history, '$[' || i || ']') AS h FROM (SELECT *, "
        "unnest(range(CAST(json_array_length(history) AS BIGINT))) AS i "
        "FROM images WHERE history IS NOT NULL)"
    )
    build = (
        f"SELECT {_keys(layer=step_layer)}, {rfc3339_ns(step_time)} AS time, "
        "'image.build' AS kind, 'Build Step Time' AS timestamp_desc, "
        f"'image ' || {_IMAGE} || ' step ' || (t.i + 1) || ': ' || {created_by} "
        "|| CASE WHEN (t.h->>'empty_layer') = 'true' THEN ' (no layer)' ELSE '' END AS message, "
        f"NULL AS path, 'images' AS ref_table, {step_ref} AS ref FROM ({steps}) t"
    )
    _insert(
        store,
        "timeline.images",
        [
            f"SELECT {_keys()}, t.created AS time, 'image.created' AS kind, "
            "'Creation Time' AS timestamp_desc, "
            f"'image ' || {_IMAGE} || ' created' AS message, NULL AS path, 'images' AS ref_table, "
            f"{REFS['images']} AS ref FROM images t",
            build,
        ],
    )
    return _nothing()


@analysis("timeline.volumes", ("events",), order=ORDER)
def volume_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """Each volume's creation."""
    _insert(
        store,
        "timeline.volumes",
        [
            f"SELECT {_keys()}, t.created AS time, 'volume.created' AS kind, "
            "'Creation Time' AS timestamp_desc, "
            "'volume ' || t.name || ' created' || coalesce(' (driver ' || t.driver || ')', '') AS message, "
            f"t.path AS path, 'volumes' AS ref_table, {REFS['volumes']} AS ref FROM volumes t"
        ],
    )
    return _nothing()


#: (time column, kind, timestamp_desc) of the MACB times a file record can hold
FILE_TIMES = (
    ("mtime", "file.mtime", "Content Modification Time"),
    ("atime", "file.atime", "Last Access Time"),
    ("ctime", "file.ctime", "Metadata Modification Time"),
    ("crtime", "file.crtime", "Creation Time"),
)


@analysis("timeline.files", ("events",), order=ORDER)
def file_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """The mtime and ctime of the file of every container change (``changes``), and every time of
    every recovered file (``recovered``: MACB, the inode's deletion time, or the commit time of
    the journal transaction that reused it)."""
    change = (
        f"{_CONTAINER} || ': ' || t.change || ' ' || t.path "
        "|| CASE WHEN t.change = 'deleted' THEN ' (the deleted original)' ELSE '' END "
        "|| CASE WHEN t.change = 'deleted' OR CAST(t.what_changed AS VARCHAR[]) IN ([], [t.change]) THEN '' "
        "ELSE coalesce(' (' || array_to_string(CAST(t.what_changed AS VARCHAR[]), ', ') || ')', '') END "
        "|| coalesce(' sha256 ' || left(t.sha256, 12), '')"
    )
    where = "coalesce(t.container_name, left(t.container_id, 12))"
    recovered = (
        f"'recovered ' || coalesce(t.type || ' ', '') || t.path "
        f"|| coalesce(' (container ' || {where} || coalesce(' ' || t.container_path, '') || ')', '') "
        "|| coalesce(' sha256 ' || left(t.sha256, 12), '')"
    )
    selects = [
        _select("changes", f"t.{col}", kind, desc, change, "t.path")
        for col, kind, desc in FILE_TIMES
        if col in ("mtime", "ctime")
    ]
    selects += [
        _select("recovered", f"t.{col}", kind, desc, recovered, _RECOVERED_PATH)
        for col, kind, desc in FILE_TIMES
    ]
    selects.append(
        _select(
            "recovered",
            "t.dtime",
            "recovered.deleted",
            "Deletion Time",
            "'deleted: ' || " + recovered,
            _RECOVERED_PATH,
        )
    )
    selects.append(
        _select(
            "recovered",
            "CASE WHEN t.dtime IS NULL THEN t.deleted_before END",
            "recovered.deleted_before",
            "Deleted Before (journal commit)",
            "'deleted before this time: ' || " + recovered,
            _RECOVERED_PATH,
        )
    )
    _insert(store, "timeline.files", selects)
    return _nothing()


#: a recovered file's path inside its container when known (as changes' paths are), else on the disk
_RECOVERED_PATH = "coalesce(t.container_path, t.path)"


@analysis("timeline.logs", ("events",), order=ORDER)
def log_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """Every container log line with a time."""
    message = f"{_CONTAINER} || coalesce(' [' || t.stream || ']', '') || ': ' || coalesce(t.message, '')"
    _insert(store, "timeline.logs", [_select("logs", "t.time", "log", "Log Entry Time", message)])
    return _nothing()


@analysis("timeline.checkpoints", ("events",), order=ORDER)
def checkpoint_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """When each checkpoint was taken, and the creation time of the container it records."""
    what = (
        "coalesce(t.kind || ' ', '') || 'checkpoint ' || coalesce(t.checkpoint_name, t.checkpoint, '?') "
        "|| coalesce(' of ' || coalesce(t.container_name, n.name, left(t.container_id, 12)), '')"
    )
    _insert(
        store,
        "timeline.checkpoints",
        [
            _select("checkpoints", "t.checkpointed", "checkpoint", "Checkpoint Time", what + " || ' taken'"),
            _select(
                "checkpoints",
                "t.created",
                "checkpoint.container_created",
                "Creation Time",
                "'container created (recorded by ' || " + what + " || ')'",
            ),
        ],
    )
    return _nothing()


@analysis("timeline.processes", ("events",), order=ORDER)
def process_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """Each checkpointed process, seen running when its checkpoint was taken (no start times:
    CRIU records none, see the module's docstring); each process of a live snapshot, started."""
    command = "coalesce(nullif(array_to_string(CAST(t.cmdline AS VARCHAR[]), ' '), ''), t.comm, '?')"
    message = (
        f"'pid ' || t.pid || ' ' || {command} || ' seen running in checkpoint ' || "
        "coalesce(t.checkpoint_name, t.checkpoint, '?') || coalesce(' of ' || " + _CONTAINER + ", '')"
    )
    select = (
        f"SELECT {_keys()}, c.checkpointed AS time, 'process.seen' AS kind, 'Checkpoint Time' AS "
        f"timestamp_desc, {message} AS message, t.exe AS path, 'processes' AS ref_table, "
        f"{REFS['processes']} AS ref FROM processes t JOIN checkpoints c ON c.source_id = t.source_id "
        f"AND c.checkpoint = t.checkpoint {_NAMES}"
    )
    message = (
        f"'pid ' || t.pid || ' ' || {command} || ' started' || "
        "coalesce(' in ' || coalesce(t.container_name, left(t.container_id, 12)), '')"
    )
    started = _select(
        "live_processes", "t.start_time", "process.started", "Process Start Time", message, "t.exe"
    )
    _insert(store, "timeline.processes", [select, started])
    return _nothing()


@analysis("timeline.findings", ("events",), order=ORDER)
def finding_events(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """Every finding with a time: ``[severity] title``."""
    message = "'[' || coalesce(t.severity, '?') || '] ' || coalesce(t.title, '')"
    _insert(store, "timeline.findings", [_select("findings", "t.time", "finding", "Finding Time", message)])
    return _nothing()
