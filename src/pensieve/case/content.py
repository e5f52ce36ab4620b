"""One read of each file for everything triage wants of its content: the sha256, what kind of
file it is (from its first bytes), and the matches of any content rules.

:class:`ContentScanner` is the ``digest`` hook of :func:`pensieve.filesystem.diff.container_diff`:
the diff opens each added or modified file once, the scanner reads it in blocks, and every
consumer sees the same blocks.  Kinds come from magic numbers (ELF ``7f 45 4c 46``, ``#!``
scripts, and the archive and compression magics the carver knows); what the first bytes do not
say is ``data``.

Small files the findings read line by line (``keep``: account files, crontabs, authorized keys)
are kept by sha256, so that the lines a container added to them can be told apart from the
image's.

Consumers: ``matchers`` are objects with ``feed(block)`` / ``finish() -> list`` made fresh for
each file by the factories given to the scanner (YARA and IOC matching plug in here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, BinaryIO

CHUNK = 1 << 20
#: the largest file whose content is kept for the findings (account files, crontabs ...)
KEEP_LIMIT = 256 << 10

#: leading bytes -> file kind (checked in order)
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "elf"),
    (b"#!", "script"),
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"PK\x03\x04", "zip"),
    (b"%PDF-", "pdf"),
    (b"SQLite format 3\x00", "sqlite"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)


def file_kind(head: bytes) -> str:
    """The kind of a file from its first bytes (``data`` when no magic matches, ``empty``)."""
    if not head:
        return "empty"
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    return "data"


class ContentScanner:
    """Hash, kind and matches of every file read through it, by evidence path."""

    def __init__(
        self, matchers: list[Callable[[str], Any]] | None = None, keep: Callable[[str], bool] | None = None
    ) -> None:
        self.factories = matchers or []
        self.keep = keep or (lambda _path: False)
        self.kinds: dict[str, str] = {}
        self.matches: dict[str, list] = {}
        self.kept: dict[str, bytes] = {}  # sha256 -> content of small files KEEP wants (account files ...)

    def __call__(self, fh: BinaryIO, host_path: str) -> str:
        h = hashlib.sha256()
        consumers = [make(host_path) for make in self.factories]
        head = b""
        kept: list[bytes] | None = [] if self.keep(host_path) else None
        size = 0
        while block := fh.read(CHUNK):
            if len(head) < 512:
                head += block[: 512 - len(head)]
            h.update(block)
            size += len(block)
            if kept is not None:
                if size <= KEEP_LIMIT:
                    kept.append(block)
                else:
                    kept = None  # too big to keep: hashed and scanned all the same
            for c in consumers:
                c.feed(block)
        self.kinds[host_path] = file_kind(head)
        digest = h.hexdigest()
        if kept is not None:
            self.kept[digest] = b"".join(kept)
        found = [m for c in consumers for m in c.finish()]
        if found:
            self.matches[host_path] = found
        return digest
