"""Records of the disk analyses: deleted files recovered from an ext4 journal (``recover``) and
files carved from unallocated space (``carve``).  Times are ``Timestamp`` (integer ns since the
epoch, UTC), rendered RFC 3339 by :func:`pensieve.records.core.to_dict`."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import Problem, Timestamp, field, record


@record
class RecoveredFile:
    """One deleted file (or directory ...) and what came back of it."""

    path: str  # full path on the filesystem ($OrphanFiles/... when no name survived)
    inode: int
    type: str  # file | dir | symlink | fifo | socket | char | block | unknown
    size: int | None  # i_size before deletion (None: unknown)
    bytes_recovered: int
    confidence: str  # complete | partial | metadata-only
    sha256: str | None  # of the recovered content (missing blocks as zeros); None if nothing
    method: str  # journal | orphan
    container: str | None = None  # container id (also of a removed container) or None
    container_name: str | None = None
    container_path: str | None = None  # the path inside the container
    layer: str | None = None  # storage driver layer id
    layer_kind: str | None = None  # rw | init | image | unreferenced | volume | ...
    images: list[str] = field(default_factory=list)
    data_root: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: Timestamp | None = None
    mtime: Timestamp | None = None
    ctime: Timestamp | None = None
    crtime: Timestamp | None = None
    dtime: Timestamp | None = None  # deletion time (inode dtime)
    deleted_before: Timestamp | None = None  # no dtime: commit time of the transaction that reused it
    links_seen: list[str] = field(default_factory=list)  # every name the journal shows for it
    journal_transaction: int | None = None  # newest transaction holding its inode or name
    blocks: int = 0  # data blocks it mapped
    reused_blocks: int = 0  # of those, allocated to something else now
    out_path: str | None = None
    notes: list[str] = field(default_factory=list)


@record
class RecoverReport:
    """What `recover` found: the files, the journal it read them from, and the problems."""

    files: list[RecoveredFile]
    journal: dict = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@record
class CarvedFile:
    """One carved file: where it lies in the image, what it is, how far it validated."""

    path: str | None  # the owning path when the block owners know it, else None
    container: str | None  # container id, when the path is in a container's layer
    layer: str | None  # storage-driver layer id of that path
    method: str  # always "carve"
    confidence: str  # complete | partial | header-only
    sha256: str
    offset: int  # byte offset in the image
    length: int
    type: str  # one of the carving types
    validation: dict[str, Any] = field(default_factory=dict)
    inode: int | None = None
    attribution: str = "unattributed"  # unattributed | block-owner
    fs_offset: int | None = None  # byte offset of the filesystem holding it
    block: int | None = None  # first filesystem block
    allocated: bool = False  # starts in allocated space (only when scanning the whole image)
    output: str | None = None  # file written under --out
    duplicate_of: str | None = None  # the allocated file it equals (sha256): reported, not written


@record
class CarveSummary:
    """What a carving run scanned and found, by type."""

    image: str
    scope: str  # unallocated | whole
    scanned_bytes: int = 0
    image_bytes: int = 0
    ranges: int = 0
    seconds: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)  # signature hits per type
    rejected: dict[str, int] = field(default_factory=dict)  # hits whose structure did not validate
    carved: dict[str, int] = field(default_factory=dict)
    confidence: dict[str, int] = field(default_factory=dict)
    inside_carved: int = 0  # hits inside a file already carved complete
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # equal to an allocated file
    filesystems: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
