"""The tables of a case: what each holds, its columns and their SQL types, derived from the records.

A case is one DuckDB file.  Every table about evidence starts with the same key columns, so any two
tables join on them without knowing which analysis wrote them:

``source_id``
    the row of ``sources`` the record came from (a host root, a data root, a disk image, an
    archive, a checkpoint);
``host``
    the host's name (``/etc/hostname`` of a host root), else the source's label;
``engine``
    docker | containerd | podman | cri-o, or null where no engine is involved (a bare checkpoint);
``container_id``, ``pod``, ``image_id``, ``layer_id``
    the container (full id), its pod (``namespace/name`` of a Kubernetes pod, a Podman pod's
    name), the image (full id) and the layer (the storage driver's id, or the snapshot key) the
    record is about, null where they do not apply.

The record's own fields follow, typed from the record declaration (:mod:`pensieve.records`):
``str`` → VARCHAR, ``int`` → BIGINT, ``bool`` → BOOLEAN, ``float`` → DOUBLE, ``Timestamp`` →
TIMESTAMP_NS (UTC), anything else (lists, dicts, nested records) → JSON.  A field named like a key
column (a container's ``id``, a log line's ``container_id``) fills that key instead of a second
column.  :data:`TABLES` is the one declaration; ``docs/case.md``-style documentation is generated
from it by :func:`describe` (``pensieve case tables``).
"""

from __future__ import annotations

from typing import NamedTuple

from pensieve.records import (
    Change,
    Container,
    Image,
    Layer,
    LogLine,
    Problem,
    Volume,
)
from pensieve.records.disk import CarvedFile, RecoveredFile
from pensieve.records.integrity import LayerVerdict
from pensieve.records.live import LiveProcess, LiveSocket
from pensieve.records.memory import CheckpointInfo, OpenFile, Process, Socket

#: bumped whenever a table or column changes; a case of another version is migrated or refused
SCHEMA_VERSION = 4

KEYS: tuple[tuple[str, str], ...] = (
    ("source_id", "INTEGER"),
    ("host", "VARCHAR"),
    ("engine", "VARCHAR"),
    ("container_id", "VARCHAR"),
    ("pod", "VARCHAR"),
    ("image_id", "VARCHAR"),
    ("layer_id", "VARCHAR"),
)
KEY_NAMES = tuple(name for name, _t in KEYS)


class Table(NamedTuple):
    """One table of the case: its name, what a row is, the record it is made of (None for the
    case's own bookkeeping tables), the record fields it leaves out, the record field that is its
    key column, and columns of its own before the record's."""

    name: str
    doc: str
    record: type | None = None
    omit: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()  # (record field, key column it fills)
    extra: tuple[tuple[str, str], ...] = ()
    keyed: bool = True  # starts with the key columns


TABLES: tuple[Table, ...] = (
    Table(
        "sources",
        "one row per piece of evidence triaged into the case",
        extra=(
            ("source_id", "INTEGER"),
            ("path", "VARCHAR"),
            ("kind", "VARCHAR"),
            ("label", "VARCHAR"),
            ("host", "VARCHAR"),
            ("fingerprint", "VARCHAR"),
            ("added", "TIMESTAMP_NS"),
            ("pensieve_version", "VARCHAR"),
        ),
        keyed=False,
    ),
    Table(
        "tasks",
        "one row per analysis run on a source: done ones are reused when triage runs again",
        extra=(
            ("source_id", "INTEGER"),
            ("task", "VARCHAR"),
            ("subject", "VARCHAR"),
            ("status", "VARCHAR"),
            ("started", "TIMESTAMP_NS"),
            ("finished", "TIMESTAMP_NS"),
            ("rows", "BIGINT"),
            ("message", "VARCHAR"),
            ("pensieve_version", "VARCHAR"),
            ("params", "VARCHAR"),  # what the task's output depends on besides the source (rules digest)
        ),
        keyed=False,
    ),
    Table(
        "containers",
        "every container of every engine (also dead and removed ones the engine still records)",
        Container,
        omit=("layers", "problems"),
        renames=(("id", "container_id"),),
    ),
    Table("images", "every image an engine keeps", Image, renames=(("id", "image_id"),)),
    Table(
        "layers",
        "each layer of each image and container, bottom (position 0) to top",
        Layer,
        renames=(("cache_id", "layer_id"),),
        extra=(("owner", "VARCHAR"), ("position", "INTEGER")),
    ),
    Table("volumes", "named and anonymous volumes and who mounts them", Volume),
    Table(
        "changes",
        "what each container changed against its image (added | modified | deleted), with sha256, "
        "the kind of file (elf, script ... from its first bytes), content-rule matches, and for "
        "account files, crontabs and authorized keys the lines the container added",
        Change,
        renames=(("layer", "layer_id"),),
        extra=(("file_kind", "VARCHAR"), ("matches", "JSON"), ("added_lines", "JSON")),
    ),
    Table(
        "integrity",
        "each layer rebuilt from its directory and checked against its digest",
        LayerVerdict,
    ),
    Table(
        "checkpoints",
        "every checkpoint (CRIU images) found: Docker/Podman checkpoints, exports, kubelet archives",
        CheckpointInfo,
        extra=(("checkpoint_name", "VARCHAR"),),
        omit=("name", "pod", "engine"),  # keys as everywhere: pod is namespace/name, engine lower case
    ),
    Table(
        "processes",
        "the processes of checkpoints (CRIU images)",
        Process,
        extra=(("checkpoint_name", "VARCHAR"),),
    ),
    Table(
        "sockets", "the sockets of checkpointed processes", Socket, extra=(("checkpoint_name", "VARCHAR"),)
    ),
    Table(
        "files",
        "the open files of checkpointed processes (like /proc/PID/fd; saved contents left out)",
        OpenFile,
        omit=("content", "queued"),
        extra=(("checkpoint_name", "VARCHAR"),),
    ),
    Table(
        "live_processes",
        "the processes of a collect bundle's live snapshot (live/ps.json: /proc at collection time)",
        LiveProcess,
        omit=("problems",),  # rows of problems
    ),
    Table(
        "live_sockets",
        "the sockets of a collect bundle's live snapshot (live/net.json), with their pid:fd",
        LiveSocket,
        omit=("problems",),
    ),
    Table(
        "logs",
        "container log lines (json-file, local, CRI, k8s-file)",
        LogLine,
    ),
    Table(
        "recovered",
        "deleted files recovered from disk images (ext4 journal, orphans)",
        RecoveredFile,
        renames=(("container", "container_id"), ("layer", "layer_id")),
    ),
    Table(
        "carved",
        "files carved from a disk image's unallocated space",
        CarvedFile,
        renames=(("container", "container_id"), ("layer", "layer_id")),
    ),
    Table(
        "findings",
        "what the analyses conclude: severity, a one-line rationale, the records it rests on",
        extra=(
            ("finding_id", "VARCHAR"),
            ("producer", "VARCHAR"),
            ("severity", "VARCHAR"),
            ("title", "VARCHAR"),
            ("rationale", "VARCHAR"),
            ("techniques", "JSON"),
            ("subject", "VARCHAR"),
            ("evidence", "JSON"),
            ("details", "JSON"),
            ("time", "TIMESTAMP_NS"),
        ),
    ),
    Table(
        "events",
        "the super-timeline: one row per timestamped fact (lifecycle, build steps, file times ...)",
        extra=(
            ("time", "TIMESTAMP_NS"),
            ("producer", "VARCHAR"),
            ("kind", "VARCHAR"),
            ("timestamp_desc", "VARCHAR"),
            ("message", "VARCHAR"),
            ("path", "VARCHAR"),
            ("ref_table", "VARCHAR"),
            ("ref", "JSON"),
        ),
    ),
    Table(
        "links",
        "what ties records together across containers and hosts (a hash, an IP, a shared layer ...)",
        extra=(
            ("producer", "VARCHAR"),
            ("kind", "VARCHAR"),
            ("value", "VARCHAR"),
            ("a_table", "VARCHAR"),
            ("a", "JSON"),
            ("b_table", "VARCHAR"),
            ("b", "JSON"),
            ("details", "JSON"),
        ),
    ),
    Table(
        "problems",
        "what could not be read or parsed, and which task met it",
        Problem,
        extra=(("task", "VARCHAR"),),
    ),
)
BY_NAME = {t.name: t for t in TABLES}


def sql_type(annotation: str) -> str:
    """The SQL type of a record field from its annotation text (``int | None`` → BIGINT)."""
    parts = {p.strip() for p in annotation.split("|")} - {"None"}
    if len(parts) != 1:
        return "JSON"
    (only,) = parts
    return {
        "str": "VARCHAR",
        "int": "BIGINT",
        "bool": "BOOLEAN",
        "float": "DOUBLE",
        "Timestamp": "TIMESTAMP_NS",
    }.get(only, "JSON")


def columns(table: Table) -> list[tuple[str, str]]:
    """(name, SQL type) of every column of TABLE, in order: key columns, its own, the record's."""
    out: list[tuple[str, str]] = list(KEYS) if table.keyed else []
    out += list(table.extra)
    taken = {name for name, _t in out}
    if table.record is not None:
        renamed = dict(table.renames)
        annotations: dict[str, str] = {}
        for klass in reversed(table.record.__mro__):
            annotations.update({k: str(v) for k, v in klass.__dict__.get("__annotations__", {}).items()})
        for name in table.record.__record_fields__:
            if name in table.omit or name in renamed or name in taken:
                continue
            out.append((name, sql_type(annotations[name])))
            taken.add(name)
    return out


def create_statement(table: Table, if_missing: bool = False) -> str:
    """``CREATE TABLE`` of TABLE (``IF NOT EXISTS`` with IF_MISSING: a migration's)."""
    cols = ", ".join(f'"{n}" {typ}' for n, typ in columns(table))
    return f"CREATE TABLE {'IF NOT EXISTS ' if if_missing else ''}{table.name} ({cols})"


def create_statements() -> list[str]:
    """``CREATE TABLE`` for every table of the case."""
    return [create_statement(t) for t in TABLES]


def describe() -> list[dict]:
    """Every table and column, for ``pensieve case tables`` and the documentation."""
    return [
        {"table": t.name, "doc": t.doc, "columns": [f"{n} {typ}" for n, typ in columns(t)]} for t in TABLES
    ]
