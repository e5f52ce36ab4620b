"""Entries of layered filesystems, the changes a container made, and where a host path comes from."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import Timestamp, field, record


@record
class FileEntry:
    """A file in a (merged) container or image filesystem, with its layer provenance."""

    path: str
    type: str  # file|dir|symlink|char|block|fifo|socket|whiteout
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    mtime: Timestamp | None = None
    atime: Timestamp | None = None
    ctime: Timestamp | None = None
    inode: int | None = None
    nlink: int | None = None
    rdev: int | None = None
    link_target: str | None = None
    layer: str | None = None  # cache id of the providing layer
    layer_role: str | None = None  # image | init | rw
    layer_index: int | None = None
    created_by: str | None = None  # history step of the providing layer
    shadows: list[str] = field(default_factory=list)  # cache ids of lower layers it hides
    host_path: str | None = None  # evidence path of the bytes
    sha256: str | None = None


@record
class Change:
    """One entry of a container diff (against its image)."""

    change: str  # added | modified | deleted
    path: str
    type: str | None = None
    size: int | None = None
    mode: str | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: Timestamp | None = None
    ctime: Timestamp | None = None
    sha256: str | None = None
    layer: str | None = None  # layer holding the current version (rw) or the deleted original
    lower_layer: str | None = None  # layer of the lower (original) copy
    what_changed: list[str] = field(default_factory=list)  # content, size, mode, owner, mtime ...
    lower: dict[str, Any] | None = None  # metadata of the original
    engine_reports: bool = True  # False where `docker diff` would stay silent
    host_path: str | None = None


@record
class Attribution:
    """Where a host path inside a data root comes from."""

    host_path: str
    data_root: str | None
    driver: str | None = None
    layer: str | None = None  # cache / mount id
    layer_kind: str | None = None  # image | init | rw | unreferenced | volume | container-metadata
    container_path: str | None = None
    diff_id: str | None = None
    chain_id: str | None = None
    images: list[str] = field(default_factory=list)
    image_tags: list[str] = field(default_factory=list)  # the tags of those images, in their order
    containers: list[str] = field(default_factory=list)
    container_names: list[str] = field(default_factory=list)
    created_by: str | None = None
    notes: list[str] = field(default_factory=list)
