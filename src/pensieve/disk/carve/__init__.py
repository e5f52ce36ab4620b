"""File carving: deleted files found by their content in the unallocated space of a disk image.

What is scanned
    By default the unallocated space: the free blocks of every ext2/3/4 filesystem (read from the
    block bitmaps of its group descriptors; a group flagged ``BLOCK_UNINIT`` counts as free) and
    the space outside every partition.  A partition whose filesystem is not ext is skipped with a
    problem (``whole=True`` scans it).  ``whole=True`` (``--all``) scans every byte of the image;
    a file that is not a disk image at all (a memory dump, a raw blob) is scanned whole.

How
    The image is read in chunks (8 MiB, with an overlap for signatures that straddle two chunks),
    never mapped, never written.  Binary formats are found by their magic bytes at any offset
    (``bytes.find`` per signature); text formats (scripts, JSON, logs) only where a file can
    begin: at a filesystem block boundary (512-byte boundary outside filesystems).  Hits are
    taken in image order; each goes to its format's validator, which parses the structure and
    infers the length, reading what it needs through a small window cache, in bounded pieces and
    within a per-format length bound: memory does not grow with the image or with a declared
    length.  A hit inside a file already carved (complete or partial: the part that validated)
    is not carved again (embedded thumbnails, members of a stored zip, the later local headers
    of a zip cut before its central directory), and the next chunk starts after it.  Where a
    truncated compressed or entropy-coded stream runs on into the zero fill of its last block,
    the carved length stops where the zeros begin.

    ============  ================================================================================
    type          structure checked, and where the length comes from
    ============  ================================================================================
    elf           header fields, program headers, section headers (null section 0, names in the
                  section-name table): the end of the last segment/section/header table
    script        ``#!/interpreter`` line, printable text to the first NUL (python: compiled)
    gzip          header flags, every member inflated to its end (bounded output), CRC-32/ISIZE
    zip (jar)     local headers walked (data descriptors found by inflating), member CRC-32s,
                  central directory, end of central directory (zip64 too): to its comment's end
    tar           ustar/GNU header checksums, member sizes, two zero blocks; zero padding to the
                  10240-byte record tar writes
    pdf           ``%PDF-1.x`` to the last ``%%EOF`` before zero fill / another header; its
                  ``startxref`` must point at an ``xref`` table or an xref stream object
    jpeg          SOI, marker segments, entropy-coded scans to EOI (SOF and a scan required)
    png           signature, IHDR first, every chunk's CRC, to IEND
    sqlite        header fields (page size, versions, payload fractions, formats), page 1 b-tree
                  header: page size x page count
    json          JSON lines (docker json-file logs) or one JSON document, to the first NUL
    log           text whose lines begin with timestamps (ISO 8601, syslog, dmesg, access logs,
                  logfmt), to the first NUL
    ============  ================================================================================

Confidence: ``complete`` when the structure validates end to end (and a text file ends in
the zero fill of its last block), ``partial`` when it validates only up to a point (truncated,
overwritten or fragmented: the carved length is what validated), ``header-only`` when only the
header does.  Structure checks cannot see every fragmentation: a fragmented file whose format
has no checksums (ELF, tar, SQLite, text) can read as complete with foreign blocks in it.

Duplicates: a carved file whose sha256 equals an allocated file of the same filesystem is
reported with ``duplicate_of`` (the allocated path) and not written a second time (a deleted copy
of an implant that is also installed is evidence); ``skip_duplicates`` hides them.  Either way they
are counted in the summary, with the allocated path.  Allocated files are listed once, lazily, and
only those of the same size are hashed.

Attribution: carving knows no owner.  A *block owner* lookup (``owners``: a mapping or a function
from a filesystem block number to ``(inode, path)``, e.g. from the ext4 journal's copies of old
inodes and directory blocks) attributes a carved file whose first block it knows; its path then
goes through the ``whence`` of every engine root on the filesystem (Docker, containerd, Podman)
for the layer and container.  Without
one every carved file is ``unattributed``.

The package: :mod:`~pensieve.disk.carve.base` (types, bounds, the verdict and the windowed reader),
:mod:`~pensieve.disk.carve.validators` (one module per type, registered in one table),
:mod:`~pensieve.disk.carve.scan` (the engine: spaces, signatures, duplicates, attribution, output).
"""

from __future__ import annotations

from pensieve.disk.carve import base
from pensieve.disk.carve.base import (
    ALIASES,
    COMPLETE,
    EXTENSIONS,
    HEADER_ONLY,
    MAX_INFLATE,
    MAX_LENGTH,
    PARTIAL,
    TYPES,
    BufferImage,
    Verdict,
)
from pensieve.disk.carve.scan import (
    BlockOwners,
    Carver,
    carve,
    free_ranges,
    journal_block_owners,
    normalise_types,
    open_for_carving,
    owners_from_map,
)
from pensieve.disk.carve.validators import MAGICS, VALIDATORS
from pensieve.records.disk import CarvedFile, CarveSummary

__all__ = [
    "base",
    "ALIASES",
    "COMPLETE",
    "EXTENSIONS",
    "HEADER_ONLY",
    "MAGICS",
    "MAX_INFLATE",
    "MAX_LENGTH",
    "PARTIAL",
    "TYPES",
    "VALIDATORS",
    "BlockOwners",
    "BufferImage",
    "CarveSummary",
    "CarvedFile",
    "Carver",
    "Verdict",
    "carve",
    "free_ranges",
    "journal_block_owners",
    "normalise_types",
    "open_for_carving",
    "owners_from_map",
]
