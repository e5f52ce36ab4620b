"""An engine's log files, read one after another (the rotated ones first, as each engine orders
them): a gzip-compressed rotation is read through gzip, and a file that cannot be read -- or
breaks off in the middle -- is one problem naming it and how far it got, never the end of the
listing.  Docker's json-file and local drivers and the CRI logs of Kubernetes read through here."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, TypeVar

from pensieve.evidence.base import Evidence, EvidenceError
from pensieve.records import Problem

T = TypeVar("T")


@contextlib.contextmanager
def open_log(evidence: Evidence, path: str) -> Iterator[BinaryIO]:
    """The bytes of the log file PATH, decompressed where its name ends in ``.gz``."""
    with evidence.open(path) as fh:
        if path.endswith(".gz"):
            with gzip.open(fh, "rb") as gz:
                yield gz  # type: ignore[misc]  # GzipFile is a binary file object
        else:
            yield fh


def each_file(
    evidence: Evidence,
    files: Iterable[str],
    read: Callable[[BinaryIO, str], Iterable[T]],
    problems: list[Problem],
    container_id: str | None,
    unit: str = "lines",
) -> Iterator[T]:
    """What READ(stream, path) yields for each of FILES in turn; an unreadable or truncated file
    (OSError covers gzip.BadGzipFile, EOFError a cut gzip stream) is a problem saying after how
    many UNIT it stopped, and the next file is read."""
    for path in files:
        count = 0
        try:
            with open_log(evidence, path) as stream:
                for item in read(stream, path):
                    count += 1
                    yield item
        except (EvidenceError, OSError, EOFError, zlib.error) as exc:
            where = f" after {count} {unit}" if count else ""
            problems.append(Problem(path, f"cannot read log file {path}{where}: {exc}", container_id))
