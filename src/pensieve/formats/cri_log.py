"""The CRI container log format, as containerd's CRI plugin and CRI-O write it for the kubelet.

Format (Kubernetes CRI ``api.proto`` / KEP "CRI container log format"; containerd
``internal/cri/io/logger.go``; read back by the kubelet's ``pkg/kubelet/kuberuntime/logs``)::

    <RFC3339Nano time> SP <stdout|stderr> SP <tags> SP <message> LF

``tags`` is ``:``-separated; its first tag is ``P`` (partial: the runtime split a long line at
its buffer size, 16 KiB by default, and the message continues in the next ``P``/``F`` record of
the same stream) or ``F`` (full: the line ends here).  A message has no trailing LF of its own.

Rotation (kubelet ``container_log_manager.go``): the live file ``<attempt>.log`` is renamed to
``<attempt>.log.<YYYYMMDD-HHMMSS>`` (local time of the rotation), then gzipped to
``....gz`` (written as ``.gz.tmp`` and renamed; the original removed after).  Older rotations
sort first by their stamp; the live file is the newest.

Everything here is pure: the caller opens the files (:mod:`pensieve.engines.containerd.cri`).
Bad input (a bad time, a missing field, a non-UTF-8 message, a run of ``P`` records that never
ends) is a :class:`~pensieve.records.Problem`; the text is kept wherever it can be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from pensieve.records import LogLine, Problem
from pensieve.times import parse_rfc3339

__all__ = ["MAX_JOINED", "CriRecord", "join_partials", "read_records", "rotation_order"]

#: the longest message kept from one run of P records (the rest is dropped, with a problem)
MAX_JOINED = 16 << 20
#: the longest physical line read at once (a runtime writes 16 KiB chunks; allow far more)
MAX_PHYSICAL = MAX_JOINED + 256
#: problems reported per file before the rest are only counted
MAX_PROBLEMS_PER_FILE = 50
STREAMS = ("stdout", "stderr")
_ROTATED_STAMP = re.compile(r"[0-9]{8}-[0-9]{6}")
_CHUNK = 1 << 20


class CriRecord(NamedTuple):
    """One physical record of a CRI log file."""

    time: int | None  # nanoseconds; None when the time is missing or not RFC 3339
    stream: str | None  # stdout | stderr; None when the line has no such field
    partial: bool  # a P record: the message continues in the next record of the stream
    message: bytes
    source: str  # the file
    lineno: int


def rotation_order(names: Iterable[str], base: str) -> list[str]:
    """BASE's rotations among NAMES (a directory listing) and BASE itself, oldest first.

    ``BASE.<stamp>`` and ``BASE.<stamp>.gz`` are rotations; when both exist the compression
    was interrupted before the original was removed, and the uncompressed file (complete) wins.
    ``.tmp`` files (a compression in progress) are left out."""
    names = set(names)
    rotated: dict[str, str] = {}
    for name in names:
        if not name.startswith(base + "."):
            continue
        rest = name[len(base) + 1 :]
        stamp, gz = (rest[:-3], True) if rest.endswith(".gz") else (rest, False)
        if not _ROTATED_STAMP.fullmatch(stamp):
            continue
        if stamp in rotated and gz:
            continue
        rotated[stamp] = name
    out = [rotated[stamp] for stamp in sorted(rotated)]
    if base in names:
        out.append(base)
    return out


class _Reporter:
    """Problems of one file, at most MAX_PROBLEMS_PER_FILE of them, then one count of the rest."""

    def __init__(self, path: str, subject: str | None, problems: list[Problem]) -> None:
        self.path, self.subject, self.problems = path, subject, problems
        self.count = 0

    def __call__(self, lineno: int, message: str) -> None:
        self.count += 1
        if self.count <= MAX_PROBLEMS_PER_FILE:
            self.problems.append(Problem(self.path, f"line {lineno} of {self.path}: {message}", self.subject))

    def close(self) -> None:
        if self.count > MAX_PROBLEMS_PER_FILE:
            more = self.count - MAX_PROBLEMS_PER_FILE
            self.problems.append(
                Problem(self.path, f"{more} more bad lines in {self.path} not listed", self.subject)
            )


def _parse(raw: bytes, path: str, lineno: int, report: _Reporter) -> CriRecord:
    """One physical line (without its LF) as a record; what does not parse keeps its text."""
    parts = raw.split(b" ", 3)
    if len(parts) < 4 or parts[1].decode("latin-1") not in STREAMS:
        report(lineno, "not a CRI log line (<time> <stdout|stderr> <P|F> <message>); kept as text")
        return CriRecord(None, None, False, raw, path, lineno)
    stamp, stream, tags, message = parts
    time = parse_rfc3339(stamp.decode("latin-1")) if stamp.isascii() else None
    if time is None:
        report(lineno, f"not an RFC 3339 time: {stamp[:40]!r}")
    tag = tags.split(b":", 1)[0]
    if tag not in (b"P", b"F"):
        report(lineno, f"unknown log tag {tags[:20]!r} (P or F expected); taken as F")
    return CriRecord(time, stream.decode("ascii"), tag == b"P", message, path, lineno)


def read_records(
    stream: BinaryIO, path: str, problems: list[Problem], subject: str | None = None
) -> Iterator[CriRecord]:
    """The physical records of one CRI log file (decompressed already), in file order.

    A line longer than MAX_PHYSICAL is cut there (a problem) and the rest of it skipped."""
    report = _Reporter(path, subject, problems)
    lineno = 0
    try:
        while raw := stream.readline(MAX_PHYSICAL + 1):
            lineno += 1
            if len(raw) > MAX_PHYSICAL and not raw.endswith(b"\n"):
                skipped = 0
                while (more := stream.readline(_CHUNK)) and not more.endswith(b"\n"):
                    skipped += len(more)
                skipped += len(more)
                report(lineno, f"line longer than {MAX_PHYSICAL} bytes; cut, {skipped} bytes skipped")
                raw = raw[:MAX_PHYSICAL]
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if not line.strip():
                report(lineno, "empty line")
                continue
            yield _parse(line, path, lineno, report)
    finally:
        report.close()


class _Run:
    """A run of P records of one stream being joined."""

    __slots__ = ("first", "parts", "size", "cut")

    def __init__(self, first: CriRecord) -> None:
        self.first = first
        self.parts: list[bytes] = []
        self.size = 0
        self.cut = False

    def add(self, message: bytes, limit: int) -> bool:
        """Append MESSAGE up to LIMIT bytes in all; True the first time the limit cuts."""
        room = limit - self.size
        if len(message) > room:
            message = message[: max(room, 0)]
            newly_cut = not self.cut
            self.cut = True
        else:
            newly_cut = False
        if message:
            self.parts.append(message)
            self.size += len(message)
        return newly_cut


def _text(message: bytes, rec: CriRecord, subject: str | None, problems: list[Problem]) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(
            Problem(
                rec.source,
                f"line {rec.lineno} of {rec.source}: message not UTF-8 (byte {exc.start}); "
                "undecodable bytes kept as \\x escapes",
                subject,
            )
        )
        return message.decode("utf-8", "backslashreplace")


def join_partials(
    records: Iterable[CriRecord], container_id: str, problems: list[Problem], limit: int = MAX_JOINED
) -> Iterator[LogLine]:
    """Log lines from records (of one or several consecutive files): each stream's P records
    joined with the F record that ends them, under the time and file of the first one.

    A joined line is kept up to LIMIT bytes (a problem says how much was dropped).  A run still
    open at the end (the runtime stopped mid-line, or the file was cut) is a ``partial`` line."""
    runs: dict[str | None, _Run] = {}
    for rec in records:
        run = runs.get(rec.stream)
        if run is None and not rec.partial:
            yield LogLine(
                container_id,
                rec.time,
                rec.stream,
                _text(rec.message, rec, container_id, problems),
                rec.source,
            )
            continue
        if run is None:
            run = runs[rec.stream] = _Run(rec)
        if run.add(rec.message, limit):
            problems.append(
                Problem(
                    run.first.source,
                    f"line {run.first.lineno} of {run.first.source}: partial (P) lines joined past "
                    f"{limit} bytes; the rest of that line is dropped",
                    container_id,
                )
            )
        if not rec.partial:
            del runs[rec.stream]
            yield _joined(run, container_id, problems, partial=False)
    for run in runs.values():
        yield _joined(run, container_id, problems, partial=True)


def _joined(run: _Run, container_id: str, problems: list[Problem], partial: bool) -> LogLine:
    first = run.first
    text = _text(b"".join(run.parts), first, container_id, problems)
    return LogLine(container_id, first.time, first.stream, text, first.source, partial=partial)
