"""What containerd's metadata store keeps, as read from its bbolt files (engines/containerd).

These records stay close to containerd's own bucket layout (metadata/buckets.go, v1 schema), one
record per object of a namespace; the Host layer maps containers and images onto the
engine-neutral :class:`~pensieve.records.host.Container` / :class:`~pensieve.records.host.Image`.
Times are integer nanoseconds (``Timestamp``); every record carries the problems met reading it.
"""

from __future__ import annotations

from typing import Any

from pensieve.records.core import Problem, Timestamp, field, record
from pensieve.records.host import Mount


@record
class Runtime:
    """A container's runtime: its name and the protobuf Any of its options, decoded when known."""

    name: str | None = None
    options_type: str | None = None  # the Any's type_url (containerd.runc.v1.Options ...)
    options: dict[str, Any] = field(default_factory=dict)  # decoded fields of known option types


@record
class SpecNamespace:
    type: str
    path: str | None = None  # joining an existing namespace (a path), else a new one


@record
class OciSpec:
    """The fields of an OCI runtime spec (runtime-spec config.md) a forensic reader needs."""

    type_url: str | None = None
    version: str | None = None  # ociVersion
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    terminal: bool = False
    no_new_privileges: bool = False
    hostname: str | None = None
    root_path: str | None = None
    root_readonly: bool = False
    mounts: list[Mount] = field(default_factory=list)
    namespaces: list[SpecNamespace] = field(default_factory=list)
    capabilities: dict[str, list[str]] = field(default_factory=dict)  # bounding/effective/...
    privileged: bool = False  # all of: CAP_SYS_ADMIN bounding, nothing masked, every device allowed
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    cgroups_path: str | None = None
    seccomp: bool = False  # a seccomp profile is set
    annotations: dict[str, str] = field(default_factory=dict)


@record
class ContainerdContainer:
    namespace: str
    id: str
    image: str | None = None
    runtime: Runtime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    snapshotter: str | None = None
    snapshot_key: str | None = None
    sandbox_id: str | None = None  # containerd 1.7+: the sandbox a container belongs to
    created: Timestamp | None = None
    updated: Timestamp | None = None
    spec: OciSpec | None = None
    extensions: dict[str, str] = field(default_factory=dict)  # name -> the Any's type_url
    source: str | None = None  # "<meta.db path>:/v1/<ns>/containers/<id>"
    problems: list[Problem] = field(default_factory=list)
    extension_values: dict[str, bytes] = field(default_factory=dict)  # name -> the Any's value


@record
class ContainerdImage:
    namespace: str
    name: str
    target_digest: str | None = None
    target_media_type: str | None = None
    target_size: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    created: Timestamp | None = None
    updated: Timestamp | None = None
    source: str | None = None
    problems: list[Problem] = field(default_factory=list)


@record
class ContentBlob:
    namespace: str
    digest: str
    size: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    created: Timestamp | None = None
    updated: Timestamp | None = None
    path: str | None = None  # evidence path of blobs/<alg>/<hex>, None when the file is gone
    source: str | None = None
    problems: list[Problem] = field(default_factory=list)


@record
class Lease:
    namespace: str
    id: str
    created: Timestamp | None = None
    labels: dict[str, str] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)  # "content/<digest>", "snapshots/<sn>/<key>" ...
    source: str | None = None
    problems: list[Problem] = field(default_factory=list)


@record
class Snapshot:
    """A snapshot: the namespace's view (meta.db) joined with the snapshotter's own record."""

    namespace: str
    snapshotter: str
    key: str
    parent: str | None = None  # the parent's key in the same namespace
    backing_key: str | None = None  # the snapshotter's key: "<ns>/<n>/<key>"
    labels: dict[str, str] = field(default_factory=dict)
    created: Timestamp | None = None
    updated: Timestamp | None = None
    id: str | None = None  # the snapshotter's id: the directory snapshots/<id>
    kind: str | None = None  # view | active | committed | unknown
    size: int | None = None  # committed snapshots: bytes used
    inodes: int | None = None
    path: str | None = None  # evidence path of snapshots/<id>/fs, None when missing
    source: str | None = None
    problems: list[Problem] = field(default_factory=list)


@record
class ContainerdNamespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    containers: list[ContainerdContainer] = field(default_factory=list)
    images: list[ContainerdImage] = field(default_factory=list)
    content: list[ContentBlob] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
