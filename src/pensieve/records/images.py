"""Records of image archives: a layer blob as an archive holds it, and an image with its blobs
(``pensieve.images.archive``; ``pensieve verify`` on an archive reads them); and of an image
compared on two sources (``pensieve.images.compare``)."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import Problem, field, record
from pensieve.records.host import Image

__all__ = ["ArchiveImage", "Blob", "Comparison", "FileDifference", "LayerMatch"]


@record
class Blob:
    """One layer of an image as the archive holds it."""

    path: str | None  # evidence path of the blob in the archive (symlinks resolved), None if absent
    name: str | None = None  # as the manifest names it
    digest: str | None = None  # sha256 the blob's bytes must have (descriptor, content address)
    size: int | None = None  # size the descriptor declares
    media_type: str | None = None
    diff_id: str | None = None  # sha256 of the uncompressed tar, from the image config
    chain_id: str | None = None
    problem: str | None = None  # why the blob cannot be read


@record
class ArchiveImage:
    """An image of an archive: the record, its layer blobs, and what verify checks it against."""

    image: Image
    blobs: list[Blob] = field(default_factory=list)
    config_path: str | None = None
    declared_id: str | None = None  # config digest the archive names (descriptor, file name)
    computed_id: str | None = None  # sha256 of the config bytes
    manifest_digest: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail) for verify


@record
class LayerMatch:
    """One layer of a comparison: in both images (by diff id) or in one only."""

    status: str  # shared | only-a | only-b
    diff_id: str | None
    index_a: int | None = None
    index_b: int | None = None
    layer_a: str | None = None  # the layer's id in A (cache id, blob digest)
    layer_b: str | None = None
    created_by: str | None = None
    same_position: bool = True  # shared at the same index on both sides


@record
class FileDifference:
    """One path whose entry differs between the two merged views."""

    change: str  # added (only in B) | deleted (only in A) | changed
    path: str
    what: list[str] = field(default_factory=list)
    type_a: str | None = None
    type_b: str | None = None
    a: dict[str, Any] | None = None  # metadata, sha256 and providing layer in A
    b: dict[str, Any] | None = None


@record
class Comparison:
    """An image compared on two sources (``pensieve compare``): layers, then files."""

    source_a: str
    source_b: str
    image_a: str
    image_b: str
    tags_a: list[str]
    tags_b: list[str]
    matched_by: str  # id | tag | given
    same_id: bool
    layers: list[LayerMatch] = field(default_factory=list)
    files: list[FileDifference] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
