"""What a SOURCE is -- a directory, an image archive or a disk image -- from its path and its
first bytes, before any engine is imported. Opens like every evidence read: a FIFO, character
device or socket is refused before anything opens it (reading one would block), and the first
bytes are read through an O_NOATIME descriptor.

Magic values: tar's ``ustar`` at offset 257 (POSIX.1-1988); gzip ``1f 8b`` (RFC 1952), zstd
``28 b5 2f fd`` (RFC 8878), xz ``fd 37 7a 58 5a 00``, bzip2 ``BZh``; an OCI image layout holds
``oci-layout`` and ``index.json`` (OCI image-layout spec), a ``docker save`` tar ``manifest.json``.
"""

from __future__ import annotations

import os

from pensieve.evidence.base import EvidenceError, open_noatime

__all__ = ["looks_like_archive", "source_kind"]

_ARCHIVE_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")


def source_kind(source: str) -> str:
    """``dir`` | ``archive`` | ``disk`` (EvidenceError for a missing or special SOURCE)."""
    from pensieve.evidence import refuse_special_file

    if os.path.isdir(source):
        manifest = os.path.isfile(os.path.join(source, "manifest.json"))
        if manifest:
            from pensieve.collect.bundle import is_bundle  # its manifest.json is not a docker save's

            if is_bundle(source):
                return "dir"
        layout = manifest or (
            os.path.isfile(os.path.join(source, "index.json"))
            and os.path.exists(os.path.join(source, "oci-layout"))
        )
        return "archive" if layout else "dir"
    if not os.path.exists(source):
        base = source.rsplit("@", 1)[0]
        if "@" in source and os.path.isfile(base):
            return "disk"  # disk.img@2, disk.img@offset=N
        raise EvidenceError(f"source does not exist: {source}")
    refuse_special_file(source)
    if not looks_like_archive(source):
        return "disk"
    from pensieve.evidence.tar_disk import disk_member  # a cloud image export: disk.raw in a tar

    return "disk" if disk_member(source) else "archive"


def looks_like_archive(path: str) -> bool:
    """A tar (ustar magic at 257), or a gzip/zstd/xz/bzip2 stream (a compressed tar)."""
    try:
        fd = open_noatime(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return True  # let the archive opener report it
    try:
        head = os.pread(fd, 512, 0)
    except OSError:
        return True
    finally:
        os.close(fd)
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"
