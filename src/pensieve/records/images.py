"""Records of image archives: a layer blob as an archive holds it, and an image with its blobs
(``pensieve.images.archive``; ``pensieve verify`` on an archive reads them)."""

from __future__ import annotations

from pensieve.records.core import field, record
from pensieve.records.host import Image

__all__ = ["ArchiveImage", "Blob"]


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
