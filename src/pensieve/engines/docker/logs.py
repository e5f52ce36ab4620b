"""Offline readers for Docker container log files (json-file and local drivers).

Formats (moby ``daemon/logger``):

* json-file (``jsonfilelog``): ``<container dir>/<id>-json.log``, one JSON object per line,
  ``{"log": "text\\n", "stream": "stdout", "time": "<RFC3339Nano>", "attrs": {...}}``.
  A message split by the daemon (longer than its 16 KiB buffer) has no trailing ``\\n``.
* local (``local``): ``<container dir>/local-logs/container.log``, records framed as a 4-byte
  big-endian length, a protobuf ``LogEntry`` (``api/types/plugins/logdriver/entry.proto``), and
  the same length again.  The daemon never writes a record larger than 1e6 bytes.  The same
  format is used for the dual-logging cache ``<container dir>/container-cached.log`` kept for
  drivers that cannot be read back (fluentd, syslog, ...).
* rotation (``loggerutils.LogFile``): the live file is ``name``; older ones ``name.1``,
  ``name.2`` ... where a higher number is older; with compression they become ``name.N.gz``.

Everything is streamed: a file is never loaded whole, gzip is decompressed on the fly.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from typing import BinaryIO

from pensieve.engines.logfiles import each_file, open_log
from pensieve.evidence.base import Evidence, EvidenceError
from pensieve.formats.protobuf import ProtobufError, iter_fields
from pensieve.formats.untrusted_json import loads_line
from pensieve.records import LogLine, Problem
from pensieve.records.host import LocalLogEntry
from pensieve.times import parse_rfc3339

__all__ = ["log_files", "read_logs"]

#: moby local driver: ``maxMsgLen = 1e6``; allow some slack above it, refuse anything bigger.
MAX_RECORD = (1 << 20) + (64 << 10)
#: json-file lines hold at most 16 KiB of text, JSON-escaped (up to 6x) plus attrs.
MAX_JSON_LINE = 4 << 20

_CHUNK = 64 << 10
_LOCAL_NAMES = ("container.log", "container-cached.log")
_ROTATED = re.compile(r"^(?P<base>.+?)(?:\.(?P<n>[0-9]+)(?P<gz>\.gz)?)?$")
#: length (<= MAX_RECORD, so byte 0 is 0 and byte 1 <= 0x11), then key+length of field 1
_RECORD_START = re.compile(rb"\x00[\x00-\x11][\x00-\xff]{2}\x0a\x06std(?:out|err)")
_RECORD_START_LEN = 12


# ---- locating the files -------------------------------------------------------------------
def _regular_files(evidence: Evidence, directory: str) -> dict[str, bool]:
    """Names in *directory* -> is a regular file (missing/unreadable dir: empty)."""
    try:
        return {e.name: e.stat.is_file for e in evidence.scandir(directory)}
    except (EvidenceError, OSError):
        return {}


def _family(names: dict[str, bool], directory: str, base: str) -> list[str]:
    """``base`` and its rotations ``base.N`` / ``base.N.gz`` in *directory*, oldest first.

    If both ``base.N`` and ``base.N.gz`` exist the daemon was interrupted while compressing
    (it writes the .gz, then removes the original): the uncompressed file is the complete one.
    """
    rotated: dict[int, str] = {}
    for name, is_file in names.items():
        if not is_file or not name.startswith(base + "."):
            continue
        rest = name[len(base) + 1 :]
        number, gz = (rest[:-3], True) if rest.endswith(".gz") else (rest, False)
        if not number.isdigit() or not number.isascii():
            continue
        n = int(number)
        if n in rotated and gz:
            continue  # plain file wins
        rotated[n] = name
    out = [posixpath.join(directory, rotated[n]) for n in sorted(rotated, reverse=True)]
    if names.get(base):
        out.append(posixpath.join(directory, base))
    return out


def _newest_mtime(evidence: Evidence, files: list[str]) -> int:
    try:
        return evidence.lstat(files[-1]).mtime_ns
    except (EvidenceError, OSError):
        return 0


def log_files(evidence: Evidence, container_dir: str, log_path: str | None, driver: str | None) -> list[str]:
    """Evidence paths of all log files of a container, oldest first.

    *log_path* (``LogPath`` of config.v2.json) is a host path that need not exist in the
    evidence (copied data root), so only its file name is used, looked up in *container_dir*.
    Otherwise (or when that finds nothing) *container_dir* is scanned: ``*-json.log``
    families for json-file, ``local-logs/container.log`` for local, ``container-cached.log``
    (dual logging cache) for other drivers; all of them when the driver is unknown.
    """
    top = _regular_files(evidence, container_dir)
    local_dir = posixpath.join(container_dir, "local-logs")

    if log_path:
        name = posixpath.basename(log_path.rstrip("/"))
        if name:
            files = _family(top, container_dir, name)
            if files:
                return files

    groups: dict[str, list[list[str]]] = {"json-file": [], "local": [], "cache": []}
    bases = {
        m.group("base")
        for name, is_file in top.items()
        if is_file and (m := _ROTATED.match(name)) and m.group("base").endswith("-json.log")
    }
    for base in sorted(bases):
        if fam := _family(top, container_dir, base):
            groups["json-file"].append(fam)
    if fam := _family(_regular_files(evidence, local_dir), local_dir, "container.log"):
        groups["local"].append(fam)
    if fam := _family(top, container_dir, "container-cached.log"):
        groups["cache"].append(fam)

    if driver in ("json-file", "local"):
        wanted = groups[driver]
    elif driver:
        wanted = groups["cache"]
    else:
        wanted = []
    if not wanted:  # unknown driver or nothing where it should be: take whatever is there
        wanted = [fam for fams in groups.values() for fam in fams]
    wanted.sort(key=lambda fam: _newest_mtime(evidence, fam))
    return [path for fam in wanted for path in fam]


# ---- reading ------------------------------------------------------------------------------
def _kind(path: str) -> str | None:
    """'json' or 'local' from the file name, None when the name says nothing."""
    m = _ROTATED.match(posixpath.basename(path))
    base = m.group("base") if m else posixpath.basename(path)
    if base.endswith("-json.log"):
        return "json"
    if base in _LOCAL_NAMES:
        return "local"
    return None


def _sniff(evidence: Evidence, path: str) -> str:
    with open_log(evidence, path) as stream:
        first = stream.read(1)
    return "json" if first in (b"{", b" ", b"\n", b"\t", b"\r") else "local"


def read_logs(
    evidence: Evidence, container_id: str, files: list[str], problems: list[Problem]
) -> Iterator[LogLine]:
    """Stream the entries of *files* (oldest first, as from :func:`log_files`).

    Unreadable files, corrupt lines and broken records are appended to *problems*; reading
    always goes on with what follows.
    """

    def read(stream: BinaryIO, path: str) -> Iterator[LogLine]:
        reader = _read_json if (_kind(path) or _sniff(evidence, path)) == "json" else _read_local
        return reader(stream, path, container_id, problems)

    return each_file(evidence, files, read, problems, container_id, unit="entries")


def _read_json(stream: BinaryIO, path: str, container_id: str, problems: list[Problem]) -> Iterator[LogLine]:
    """json-file: ``{"log", "stream", "time"[, "attrs"]}`` per line (moby jsonfilelog)."""
    lineno = 0
    while True:
        raw = stream.readline(MAX_JSON_LINE + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_JSON_LINE and not raw.endswith(b"\n"):
            while (more := stream.readline(_CHUNK)) and not more.endswith(b"\n"):
                pass
            problems.append(
                Problem(
                    path,
                    f"line {lineno} of {path} longer than {MAX_JSON_LINE} bytes, skipped",
                    container_id,
                )
            )
            continue
        if not raw.strip():
            continue
        try:
            obj = loads_line(raw, path)
        except ValueError as exc:  # UntrustedJSONError: not JSON, nested too deeply
            msg = str(exc).replace(f"{path}: ", "")
            problems.append(Problem(path, f"corrupt JSON at line {lineno} of {path}: {msg}", container_id))
            continue
        text = obj.get("log") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            problems.append(
                Problem(path, f"line {lineno} of {path} is not a json-file log entry", container_id)
            )
            continue
        partial = not text.endswith("\n")
        src = obj.get("stream")
        time = obj.get("time")
        yield LogLine(
            container_id=container_id,
            time=parse_rfc3339(time),  # None for what is not an RFC 3339 time
            stream=src if isinstance(src, str) and src else None,
            message=text if partial else text[:-1],
            source=path,
            partial=partial,
        )


# ---- local driver: framing + LogEntry (protobuf wire format: pensieve.formats.protobuf) ------
_EXPECTED_WIRE = {1: 2, 2: 0, 3: 2, 4: 0, 5: 2}


def _decode_entry(data: bytes) -> LocalLogEntry:
    """``LogEntry``: 1 source, 2 time_nano, 3 line, 4 partial, 5 partial_log_metadata."""
    entry = LocalLogEntry()
    for number, wire, value in iter_fields(data):
        if number in _EXPECTED_WIRE and wire != _EXPECTED_WIRE[number]:
            raise ProtobufError(f"field {number} has wire type {wire}", 0)  # the offset is not shown
        if isinstance(value, bytes):
            if number == 1:
                entry.source = value.decode("utf-8", "replace")
            elif number == 3:
                entry.line = value
            elif number == 5:
                # PartialLogEntryMetadata: 1 last, 2 id, 3 ordinal
                entry.last = False
                for sub, _, sub_value in iter_fields(value):
                    if sub == 1 and isinstance(sub_value, int):
                        entry.last = bool(sub_value)
        elif number == 2:
            entry.time_nano = value - (1 << 64) if value >> 63 else value
        elif number == 4:
            entry.partial = bool(value)
    return entry


class _Window:
    """A sliding read buffer over a stream: ``buf[0]`` is at file offset ``base``."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.base = 0
        self.eof = False

    def ensure(self, end: int) -> bool:
        """Read until ``buf`` holds at least *end* bytes; False if the stream ends first."""
        while len(self.buf) < end and not self.eof:
            chunk = self.stream.read(max(_CHUNK, end - len(self.buf)))
            if chunk:
                self.buf += chunk
            else:
                self.eof = True
        return len(self.buf) >= end

    def drop(self, upto: int) -> None:
        del self.buf[:upto]
        self.base += upto


def _record_at(win: _Window, i: int) -> tuple[int, LocalLogEntry | None, str]:
    """Try the record at ``buf[i]``: (payload length, entry or None, reason it is bad)."""
    if not win.ensure(i + 4):
        return 0, None, f"truncated length field ({len(win.buf) - i} bytes)"
    size = int.from_bytes(win.buf[i : i + 4], "big")
    if size == 0:
        return 0, None, "zero record length"
    if size > MAX_RECORD:
        return size, None, f"record length {size} exceeds the {MAX_RECORD} byte maximum"
    if not win.ensure(i + 8 + size):
        have = max(len(win.buf) - i - 4, 0)
        return size, None, f"truncated record (length {size}, {have} bytes left)"
    trailer = int.from_bytes(win.buf[i + 4 + size : i + 8 + size], "big")
    if trailer != size:
        return size, None, f"length header {size} and trailer {trailer} disagree"
    try:
        return size, _decode_entry(bytes(win.buf[i + 4 : i + 4 + size])), ""
    except ProtobufError as exc:
        return size, None, f"bad protobuf LogEntry: {exc.message}"


def _resync(win: _Window, start: int) -> int | None:
    """Index of the next plausible record at or after ``buf[start]`` (None at end of file).

    Docker's marshaller writes fields in number order, so a record starts with a length in
    range (first byte 0) followed by field 1, ``source`` = "stdout"/"stderr": a regex finds
    those candidates in C; each must then have an agreeing trailer and decode.  The window is
    trimmed as the scan moves on, so memory stays bounded.
    """
    i = start
    while True:
        if i > MAX_RECORD:
            win.drop(i)
            i = 0
        m = _RECORD_START.search(win.buf, i)
        if m is None:
            if win.eof:
                return None
            i = max(i, len(win.buf) - _RECORD_START_LEN)  # a start may straddle the end
            win.ensure(len(win.buf) + _CHUNK)
            continue
        j = m.start()
        _, entry, _ = _record_at(win, j)
        if entry is not None and entry.source in ("stdout", "stderr"):
            return j
        i = j + 1


def _read_local(stream: BinaryIO, path: str, container_id: str, problems: list[Problem]) -> Iterator[LogLine]:
    """local driver: ``len32be | LogEntry protobuf | len32be`` records (moby daemon/logger/local).

    A bad record (length out of range, truncated, header/trailer mismatch, undecodable) is
    reported with its byte offset and skipped by scanning forward to the next plausible record.
    """
    win = _Window(stream)
    pos = 0
    while True:
        if pos > MAX_RECORD:
            win.drop(pos)
            pos = 0
        if not win.ensure(pos + 1):
            return
        size, entry, reason = _record_at(win, pos)
        if entry is None:
            offset = win.base + pos
            found = _resync(win, pos + 1)
            if found is None:
                skipped = win.base + len(win.buf) - offset
                tail = f"nothing readable after it ({skipped} bytes skipped)"
            else:
                skipped = win.base + found - offset
                tail = f"skipped {skipped} bytes, resumed at offset {win.base + found}"
            problems.append(
                Problem(path, f"{reason} at byte offset {offset} of {path}; {tail}", container_id)
            )
            if found is None:
                return
            pos = found
            continue
        pos += 8 + size
        # docker logs ends a line unless it continues in the next entry; the final chunk of
        # a split message carries partial=true with partial_log_metadata.last=true.
        partial = entry.partial and entry.last is not True
        yield LogLine(
            container_id=container_id,
            time=entry.time_nano,
            stream=entry.source or None,
            message=entry.line.decode("utf-8", "backslashreplace"),
            source=path,
            partial=partial,
        )
