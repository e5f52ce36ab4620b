"""Records of image integrity (``pensieve verify``): layer and image verdicts and how each differs
from what the engine recorded (moby ``layer`` store: diff ids, chain ids, tar-split records; OCI
image spec: config digests, chain ids)."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import field, record

OK = "ok"
TAMPERED = "tampered"
UNVERIFIABLE = "unverifiable"

#: problem kinds, per path: how the host differs from the record
FILE_KINDS = ("content", "size", "type", "mode", "owner", "link", "device", "xattr", "missing", "added")


@record
class LayerProblem:
    """How one path of a layer (or the layer itself, path None) differs from its record."""

    path: str | None  # path inside the layer, no leading slash ("opt/app/config.txt")
    kind: str  # one of FILE_KINDS, or digest | chain-id | record for the layer itself
    detail: str | None = None
    expected: Any = None  # what the record says
    actual: Any = None  # what the host holds
    host_path: str | None = None  # evidence path


@record
class LayerVerdict:
    """One layer rebuilt and checked: ``ok``, ``tampered`` (problems say how) or
    ``unverifiable`` (reason says why)."""

    chain_id: str
    diff_id: str | None
    status: str  # ok | tampered | unverifiable
    problems: list[LayerProblem] = field(default_factory=list)
    reason: str | None = None  # why unverifiable
    computed_diff_id: str | None = None  # sha256 of the rebuilt stream
    stream_size: int | None = None  # bytes of the rebuilt stream
    entries: int = 0  # file entries of the record
    payload_bytes: int = 0  # file bytes read from the layer directory
    cache_id: str | None = None
    parent: str | None = None
    driver: str | None = None
    data_root: str | None = None
    layer_path: str | None = None  # evidence path of the layer contents
    tar_split: str | None = None  # evidence path of the record
    end_marker: bool | None = None  # the record ends with the tar end-of-archive blocks
    images: list[str] = field(default_factory=list)  # tags (or ids) of the images using it
    containers: list[str] = field(default_factory=list)  # names (or ids) of their containers


@record
class ImageProblem:
    """How an image differs from its config digest or layer chain."""

    # config-digest | missing-layer | layer-diff-id | unreadable | layer-tampered | layer-unverifiable
    kind: str
    detail: str
    chain_id: str | None = None


@record
class ImageVerdict:
    """One image's config digest recomputed and its layer chain checked."""

    id: str
    status: str  # ok | tampered | unverifiable
    tags: list[str] = field(default_factory=list)
    computed_id: str | None = None  # sha256 of the config blob
    problems: list[ImageProblem] = field(default_factory=list)
    config_path: str | None = None
    data_root: str | None = None
    driver: str | None = None
    chain_ids: list[str] = field(default_factory=list)
