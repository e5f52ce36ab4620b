"""A read-only reader of a live ``/proc`` (or a copy of one, or a test's): the only code of the live
commands that opens ``/proc``.

Every read is bounded (a ``cmdline`` can be megabytes; nothing here reads more than it was told)
and says what went wrong in one of two ways a caller can tell apart: :class:`ProcessGone` (the
process exited mid-read: ESRCH, ENOENT) and :class:`Unreadable` (EACCES, EPERM, or a file that
does not parse).  Executables are read through ``/proc/PID/exe`` with ``O_NOATIME``, so hashing a
binary does not change its access time on the live host (without the privilege for O_NOATIME the
hash is not taken, and the process says so).

References: proc(5) (``stat`` fields, ``status`` keys, ``/proc/stat`` ``btime``, ``ns/``, ``fd/``,
``cgroup``), user_namespaces(7) (``uid_map`` lines: inside, outside, count).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator

__all__ = ["IdMap", "ProcFS", "ProcessGone", "Unreadable", "map_id"]

#: the namespaces of /proc/PID/ns a process has (pid_for_children and time_for_children are
#: the namespaces its next children get, not its own)
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")

#: one uid_map/gid_map line: (first id inside, first id outside, count)
IdMap = list[tuple[int, int, int]]

_GONE = (errno.ENOENT, errno.ESRCH)
_DENIED = (errno.EACCES, errno.EPERM)
_OPEN = os.O_RDONLY | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)


class ProcessGone(Exception):
    """The process exited (or its /proc entry vanished) while being read."""


class Unreadable(Exception):
    """A /proc file exists but cannot be read (permission) or does not parse."""


def _raise(exc: OSError, what: str) -> None:
    if exc.errno in _GONE:
        raise ProcessGone(what) from exc
    if exc.errno in _DENIED:
        raise Unreadable(f"{what}: permission denied") from exc
    raise Unreadable(f"{what}: {exc.strerror or exc}") from exc


def map_id(mapping: IdMap, host_id: int) -> int | None:
    """The id inside a user namespace that HOST_ID (an id of the reader's namespace) maps to, or
    None when the map does not cover it (user_namespaces(7): ``inside outside count``)."""
    for inside, outside, count in mapping:
        if outside <= host_id < outside + count:
            return inside + (host_id - outside)
    return None


class ProcFS:
    """The ``/proc`` at PROC (default the live one): pids, and each pid's files, parsed."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc.rstrip("/") or "/"
        self._btime_ns: int | None = None
        self.clock_ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    # ---- raw access ------------------------------------------------------------------------

    def path(self, *parts: object) -> str:
        """PROC/part/part...: a path under this /proc."""
        return os.path.join(self.proc, *(str(p) for p in parts))

    def read(self, *parts: object, limit: int = 1 << 20) -> bytes:
        """At most LIMIT bytes of PROC/parts (ProcessGone or Unreadable on failure)."""
        path = self.path(*parts)
        try:
            fd = os.open(path, _OPEN)
        except OSError as exc:
            _raise(exc, path)
        try:
            chunks, left = [], limit
            while left > 0:
                chunk = os.read(fd, min(left, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        except OSError as exc:
            _raise(exc, path)
        finally:
            os.close(fd)
        return b""  # unreachable: _raise always raises

    def text(self, *parts: object, limit: int = 1 << 20) -> str:
        """PROC/parts as text (undecodable bytes escaped, as the kernel keeps them)."""
        return self.read(*parts, limit=limit).decode("utf-8", "surrogateescape")

    def readlink(self, *parts: object) -> str:
        """The target of the symbolic (or magic) link PROC/parts."""
        path = self.path(*parts)
        try:
            return os.readlink(path)
        except OSError as exc:
            _raise(exc, path)
        return ""  # unreachable

    def listdir(self, *parts: object) -> list[str]:
        """The names in the directory PROC/parts."""
        path = self.path(*parts)
        try:
            return os.listdir(path)
        except OSError as exc:
            _raise(exc, path)
        return []  # unreachable

    # ---- host-wide -------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The process ids /proc lists now (threads are not listed at the top level), ascending."""
        return sorted(int(n) for n in self.listdir() if n.isdigit())

    def boot_time_ns(self) -> int:
        """When the host booted (``btime`` of /proc/stat), in ns since the epoch."""
        if self._btime_ns is None:
            for line in self.text("stat").splitlines():
                if line.startswith("btime "):
                    self._btime_ns = int(line.split()[1]) * 1_000_000_000
                    break
            else:
                raise Unreadable(f"{self.path('stat')}: no btime line")
        return self._btime_ns

    # ---- one process -----------------------------------------------------------------------

    def stat(self, pid: int) -> tuple[str, list[str]]:
        """(comm, the fields after it) of /proc/PID/stat; field 3 of proc(5) (state) is the first
        of the list.  comm may hold spaces and parentheses: it ends at the LAST ')'."""
        raw = self.text(pid, "stat", limit=4096)
        open_at, close_at = raw.find("("), raw.rfind(")")
        if open_at < 0 or close_at < open_at:
            raise Unreadable(f"{self.path(pid, 'stat')}: no (comm)")
        return raw[open_at + 1 : close_at], raw[close_at + 2 :].split()

    def start_time_ns(self, pid: int, stat_fields: list[str] | None = None) -> int:
        """When PID started, ns since the epoch: field 22 (starttime, clock ticks after boot)."""
        fields = stat_fields if stat_fields is not None else self.stat(pid)[1]
        ticks = int(fields[22 - 3])
        return self.boot_time_ns() + ticks * 1_000_000_000 // self.clock_ticks

    def status(self, pid: int) -> dict[str, str]:
        """/proc/PID/status as key -> value (the value stripped, tabs between several kept as
        whitespace)."""
        out: dict[str, str] = {}
        for line in self.text(pid, "status", limit=65536).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key] = value.strip()
        return out

    def cmdline(self, pid: int, limit: int = 1 << 20) -> list[str]:
        """The arguments of /proc/PID/cmdline (NUL-separated; empty for kernel threads)."""
        raw = self.text(pid, "cmdline", limit=limit)
        return raw.split("\0")[:-1] if raw.endswith("\0") else raw.split("\0") if raw else []

    def namespaces(self, pid: int) -> dict[str, int]:
        """Namespace name -> inode number, from the links of /proc/PID/ns (``net:[4026531840]``);
        a namespace this kernel lacks is absent.  Unreadable when every link was refused (another
        user's process, read without privilege: the links need ptrace access)."""
        out: dict[str, int] = {}
        denied = 0
        for name in NAMESPACES:
            try:
                target = self.readlink(pid, "ns", name)
            except Unreadable as exc:
                denied += str(exc).endswith("permission denied")
                continue
            lb, rb = target.find("["), target.rfind("]")
            if lb >= 0 and rb > lb and target[lb + 1 : rb].isdigit():
                out[name] = int(target[lb + 1 : rb])
        if denied and not out:
            raise Unreadable(f"{self.path(pid, 'ns')}: permission denied")
        return out

    def fds(self, pid: int) -> Iterator[tuple[int, str]]:
        """(fd, link target) of each open descriptor of PID (``socket:[N]``, a path, ``pipe:[N]``);
        a descriptor closed between the listing and its readlink is skipped."""
        for name in self.listdir(pid, "fd"):
            if not name.isdigit():
                continue
            try:
                yield int(name), self.readlink(pid, "fd", name)
            except ProcessGone:
                if not os.path.lexists(self.path(pid)):
                    raise
            except Unreadable:
                continue

    def cgroups(self, pid: int) -> list[tuple[str, str, str]]:
        """(hierarchy id, controllers, path) of each line of /proc/PID/cgroup; cgroup v2's line
        is ``0::/path`` (controllers empty)."""
        out = []
        for line in self.text(pid, "cgroup", limit=65536).splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                out.append((parts[0], parts[1], parts[2]))
        return out

    def id_map(self, pid: int, kind: str = "uid") -> IdMap:
        """/proc/PID/uid_map (KIND ``uid``) or gid_map as (inside, outside, count) lines."""
        out: IdMap = []
        for line in self.text(pid, f"{kind}_map", limit=65536).splitlines():
            parts = line.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                out.append((int(parts[0]), int(parts[1]), int(parts[2])))
        return out

    def exe_digest(self, pid: int, limit: int = 1 << 32) -> tuple[str, int]:
        """(sha256 hex, size) of the executable behind /proc/PID/exe, read through the magic
        link, so a deleted or memfd executable still hashes; opened with O_NOATIME (Unreadable
        when that is not permitted: its access time would change)."""
        path = self.path(pid, "exe")
        try:
            fd = os.open(path, _OPEN | _NOATIME)
        except OSError as exc:
            if exc.errno == errno.EPERM and _NOATIME:
                raise Unreadable(f"{path}: O_NOATIME not permitted (would change the atime)") from exc
            _raise(exc, path)
        digest, size = hashlib.sha256(), 0
        try:
            while size < limit:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
        except OSError as exc:
            _raise(exc, path)
        finally:
            os.close(fd)
        return digest.hexdigest(), size
