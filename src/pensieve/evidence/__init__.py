"""Evidence sources: one read-only filesystem interface over directories, disk images (raw, split
raw, E01, qcow2; MBR/GPT partitions; ext2/3/4 and what else The Sleuth Kit reads) and archives."""

from __future__ import annotations

import os
import stat as statmod

from pensieve.evidence.base import (
    DirEntry,
    DirHandle,
    Evidence,
    EvidenceError,
    FileStat,
    NotFound,
    file_kind,
    normalize,
    open_noatime,
)
from pensieve.evidence.directory import DirectoryEvidence

__all__ = [
    "DirEntry",
    "DirHandle",
    "DirectoryEvidence",
    "Evidence",
    "EvidenceError",
    "FileStat",
    "NotFound",
    "file_kind",
    "normalize",
    "open_evidence",
    "open_noatime",
    "refuse_special_file",
]

_SPECIAL = {
    statmod.S_IFIFO: "a FIFO",
    statmod.S_IFCHR: "a character device",
    statmod.S_IFSOCK: "a socket",
}


def refuse_special_file(source: str) -> None:
    """EvidenceError when SOURCE is a FIFO, a character device or a socket: reading one would
    block or never end, and none is a disk image or an archive (a block device is allowed: it
    can be a disk).  Decided from stat(2), before anything opens it."""
    try:
        mode = os.stat(source).st_mode
    except OSError:
        return  # absent or unreadable: the caller's own open reports it
    what = _SPECIAL.get(statmod.S_IFMT(mode))
    if what is not None:
        raise EvidenceError(f"refusing {source}: it is {what}, not a directory, a disk image or an archive")


def open_evidence(source: str) -> Evidence:
    """Open SOURCE read-only: a directory (live root, mounted image, copied data root) or a disk
    image (``disk.img``, ``disk.E01``, ``disk.qcow2``, ``disk.001``; ``disk.img@2`` for partition 2,
    ``disk.img@offset=1048576`` for the filesystem at that byte offset: see
    ``pensieve.evidence.disk``)."""
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "manifest.json")):  # no bundle: skip its imports
            return DirectoryEvidence(source)
        from pensieve.evidence.bundle import is_bundle, open_bundle  # a ``pensieve collect`` bundle

        return open_bundle(source) if is_bundle(source) else DirectoryEvidence(source)
    from pensieve.evidence.disk import is_disk_image, open_disk_image, split_spec

    base, _part, _off = split_spec(source)
    if not os.path.exists(base):
        raise EvidenceError(f"source does not exist: {source}")
    refuse_special_file(base)
    if is_disk_image(source):
        return open_disk_image(source)
    raise EvidenceError(
        f"unsupported source {source}: neither a directory nor a disk image pensieve recognises "
        "(raw/dd with a partition table or a filesystem, split raw, E01, qcow2; "
        "name a partition or offset with SOURCE@N or SOURCE@offset=BYTES)"
    )
