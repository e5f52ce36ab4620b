"""Per container resource use, read from the cgroup filesystem: memory, CPU and throttling, pids, IO.

The processes of the live host are grouped by their container (the owner their cgroup path names,
:meth:`pensieve.live.context.LiveContext.owner`); each container's cgroup directory is then read
per controller from whichever hierarchy holds that controller for it: the unified (v2) hierarchy
when the container's v2 path names it and the controller is enabled there, else the v1 hierarchy
the controller is mounted in.  A hybrid host (v1 controllers plus a v2 ``unified`` mount with few
or no controllers) keeps a container's limits in v1; a v2-only host has them all in v2.

The mount points come from ``/proc/self/mountinfo`` of the proc read (``cgroup2`` mounts, and each
``cgroup`` mount's super options naming its controllers); a hierarchy not found there is looked
for under the CGROUPFS root (``/sys/fs/cgroup/<controller>`` for v1, the root itself or its
``unified`` for v2).  With a CGROUPFS other than the default, mount points under ``/sys/fs/cgroup``
are taken below CGROUPFS instead (a copy of a host's cgroup filesystem, or a test's).

Files read (a missing file is an unknown value, a file that exists but cannot be read or parse is a
problem of the container's record):

* v2 (Documentation/admin-guide/cgroup-v2.rst): ``memory.current``, ``memory.peak``,
  ``memory.max``, ``memory.events`` (``oom``, ``oom_kill``), ``cpu.stat`` (``usage_usec``,
  ``nr_periods``, ``nr_throttled``, ``throttled_usec``), ``cpu.max``, ``pids.current``,
  ``pids.max``, ``io.stat`` (``rbytes``/``wbytes`` summed over devices);
* v1 (Documentation/admin-guide/cgroup-v1/): ``memory.usage_in_bytes``,
  ``memory.max_usage_in_bytes``, ``memory.limit_in_bytes`` (the page-rounded LONG_MAX the kernel
  writes means unlimited), ``memory.failcnt`` (times the limit was hit), ``memory.oom_control``
  (``oom_kill``), ``cpuacct.usage`` (ns), ``cpu.stat`` (``nr_periods``, ``nr_throttled``,
  ``throttled_time`` in ns), ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (shown as ``cpu.max``
  spells them: ``50000 100000``, ``max 100000``), ``pids.current``, ``pids.max``,
  ``blkio.throttle.io_service_bytes_recursive`` (or without ``_recursive``; ``Read``/``Write``
  summed over devices).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pensieve.live.attribution import container_path
from pensieve.live.procfs import ProcessGone, ProcFS, Unreadable
from pensieve.records.core import Problem
from pensieve.records.live import CgroupUsage, Owner

__all__ = [
    "CgroupFS",
    "Hierarchies",
    "live_cgroups",
    "parse_blkio",
    "parse_io_stat",
    "parse_keyed",
    "parse_limit",
    "parse_number",
]

DEFAULT_CGROUPFS = "/sys/fs/cgroup"
#: a cgroup v1 memory limit at or above this is "no limit" (the kernel writes PAGE_COUNTER_MAX
#: pages: LONG_MAX rounded down to a page, 9223372036854771712 with 4 KiB pages)
V1_UNLIMITED = 1 << 62
#: the largest cgroup file read (io.stat and blkio files have a line per device and operation)
READ_LIMIT = 1 << 16
#: the v1 controllers read, and the v2 controller each one is in the unified hierarchy
V1_TO_V2 = {"memory": "memory", "cpu": "cpu", "cpuacct": "cpu", "pids": "pids", "blkio": "io"}


# ---- parsers (pure: text in, values out; ValueError for what does not parse) ------------------


def parse_number(text: str) -> int:
    """The one non-negative integer of a single-value file (``memory.current``, ``pids.current``)."""
    value = text.strip()
    if not value.isdigit():
        raise ValueError(f"not a number: {value[:40]!r}")
    return int(value)


def parse_limit(text: str, unlimited_at: int | None = None) -> int | None:
    """A limit file: ``max`` (v2) is None, so is a v1 value at or above UNLIMITED_AT."""
    value = text.strip()
    if value == "max":
        return None
    number = parse_number(value)
    return None if unlimited_at is not None and number >= unlimited_at else number


def parse_keyed(text: str) -> dict[str, int]:
    """A flat-keyed file (``key value`` a line: ``memory.events``, ``cpu.stat``,
    ``memory.oom_control``); a line of another shape is a ValueError."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"not a 'key value' line: {line[:60]!r}")
        out[parts[0]] = int(parts[1])
    return out


def parse_io_stat(text: str) -> tuple[int, int]:
    """(read bytes, written bytes) of a v2 ``io.stat``: ``MAJ:MIN rbytes=N wbytes=N ...`` lines,
    summed over the devices."""
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if ":" not in parts[0]:
            raise ValueError(f"not a device line: {line[:60]!r}")
        for item in parts[1:]:
            key, sep, value = item.partition("=")
            if not sep or not value.isdigit():
                raise ValueError(f"not a key=value item: {item[:40]!r}")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                written += int(value)
    return read, written


def parse_blkio(text: str) -> tuple[int, int]:
    """(read bytes, written bytes) of a v1 ``blkio.throttle.io_service_bytes``: ``MAJ:MIN Op N``
    lines summed over the devices (the ``Total`` line is not counted twice)."""
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts or (parts[0] == "Total" and len(parts) == 2):
            continue
        if len(parts) != 3 or ":" not in parts[0] or not parts[2].isdigit():
            raise ValueError(f"not a 'MAJ:MIN Op bytes' line: {line[:60]!r}")
        if parts[1] == "Read":
            read += int(parts[2])
        elif parts[1] == "Write":
            written += int(parts[2])
    return read, written


# ---- the reader ---------------------------------------------------------------------------------


class CgroupFS:
    """Bounded, read-only reads of cgroup files (through :class:`ProcFS`'s reader): a missing file
    is None; one that exists but cannot be read is :class:`Unreadable`."""

    def __init__(self) -> None:
        self._reader = ProcFS("/")

    def text(self, directory: str, name: str) -> str | None:
        """DIRECTORY/NAME as text, None when it is not there."""
        try:
            return self._reader.text(directory, name, limit=READ_LIMIT)
        except ProcessGone:  # ENOENT/ESRCH: no such file (or the cgroup went away)
            return None

    @staticmethod
    def has(directory: str, name: str) -> bool:
        """Whether DIRECTORY/NAME exists."""
        return os.path.exists(os.path.join(directory, name))


def _unescape(field_text: str) -> str:
    r"""A mountinfo field with its octal escapes (``\040`` for a space) decoded."""
    if "\\" not in field_text:
        return field_text
    out, i = [], 0
    while i < len(field_text):
        chunk = field_text[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and all(c in "01234567" for c in chunk[1:]):
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field_text[i])
            i += 1
    return "".join(out)


@dataclass
class Hierarchies:
    """Where each cgroup hierarchy is mounted: v2 (mount point, root inside it) and each v1
    controller's (mount point, root)."""

    cgroupfs: str = DEFAULT_CGROUPFS
    v2: tuple[str, str] | None = None
    v1: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def from_mountinfo(cls, text: str | None, cgroupfs: str = DEFAULT_CGROUPFS) -> Hierarchies:
        """The hierarchies mountinfo TEXT (proc(5) ``/proc/PID/mountinfo``) lists; the first mount
        of each wins.  Mount points under /sys/fs/cgroup move below CGROUPFS when it differs."""
        found = cls(cgroupfs=cgroupfs.rstrip("/") or "/")
        for line in (text or "").splitlines():
            left, sep, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            mount = (found._rebase(_unescape(fields[4])), _unescape(fields[3]))
            if tail[0] == "cgroup2":
                found.v2 = found.v2 or mount
                continue
            for option in tail[2].split(","):
                if option in V1_TO_V2:
                    found.v1.setdefault(option, mount)
        return found

    def _rebase(self, mount_point: str) -> str:
        if self.cgroupfs == DEFAULT_CGROUPFS:
            return mount_point
        if mount_point == DEFAULT_CGROUPFS or mount_point.startswith(DEFAULT_CGROUPFS + "/"):
            return self.cgroupfs + mount_point[len(DEFAULT_CGROUPFS) :]
        return mount_point

    def v1_mount(self, controllers: str) -> tuple[str, str] | None:
        """The (mount point, root) of the v1 hierarchy whose ``/proc/PID/cgroup`` controllers are
        CONTROLLERS (``cpu,cpuacct``); under CGROUPFS when mountinfo does not list it."""
        for name in controllers.split(","):
            if name in self.v1:
                return self.v1[name]
        for candidate in (controllers, *controllers.split(",")):
            path = os.path.join(self.cgroupfs, candidate)
            if os.path.isdir(path):
                return path, "/"
        return None

    def v2_mount(self) -> tuple[str, str] | None:
        """The (mount point, root) of the unified hierarchy (CGROUPFS or its ``unified`` when
        mountinfo lists none)."""
        if self.v2 is not None:
            return self.v2
        for path in (self.cgroupfs, os.path.join(self.cgroupfs, "unified")):
            if os.path.exists(os.path.join(path, "cgroup.controllers")):
                return path, "/"
        return None


def _cgroup_dir(mount: tuple[str, str], path: str) -> str:
    """The directory of cgroup PATH (as /proc/PID/cgroup spells it) in the hierarchy at MOUNT."""
    mount_point, root = mount
    if root not in ("", "/") and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")) :]
    return os.path.join(mount_point, path.lstrip("/"))


def _container_cgroup(path: str, container_id: str) -> str | None:
    """PATH cut after the component that names CONTAINER_ID (a process in a nested cgroup counts
    for its whole container), None when PATH names another container or none."""
    found = container_path(path)
    if found is None or found[2] != container_id:
        return None
    return "/".join(path.split("/")[: found[0] + 1]) or "/"


# ---- one container --------------------------------------------------------------------------------


@dataclass
class _Container:
    """The pids of one container and the cgroup paths they were found in."""

    owner: Owner
    path: str
    pids: list[int] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)  # hierarchy controllers -> path


class _Reader:
    """Reads one container's cgroup files into its CgroupUsage, problems on the record."""

    def __init__(self, fs: CgroupFS, usage: CgroupUsage) -> None:
        self.fs, self.usage = fs, usage

    def value(self, directory: str, name: str, parse: Callable[[str], object]) -> object | None:
        """PARSE of DIRECTORY/NAME; None when the file is missing, a problem when it cannot be read
        or parsed."""
        path = os.path.join(directory, name)
        try:
            text = self.fs.text(directory, name)
        except Unreadable as exc:
            self.usage.problems.append(Problem(path, f"not read: {exc}", self.usage.container_id))
            return None
        if text is None:
            return None
        try:
            return parse(text)
        except (ValueError, OverflowError) as exc:
            self.usage.problems.append(Problem(path, f"not parsed: {exc}", self.usage.container_id))
            return None

    # -- v2 --------------------------------------------------------------------------------------
    def memory_v2(self, d: str) -> None:
        u = self.usage
        u.memory_current = self.value(d, "memory.current", parse_number)  # type: ignore[assignment]
        u.memory_peak = self.value(d, "memory.peak", parse_number)  # type: ignore[assignment]
        u.memory_limit = self.value(d, "memory.max", parse_limit)  # type: ignore[assignment]
        events = self.value(d, "memory.events", parse_keyed) or {}
        u.oom_events, u.oom_kills = events.get("oom"), events.get("oom_kill")  # type: ignore[union-attr]

    def cpu_v2(self, d: str) -> None:
        u = self.usage
        stat = self.value(d, "cpu.stat", parse_keyed) or {}
        u.cpu_usage_usec = stat.get("usage_usec")  # type: ignore[union-attr]
        u.cpu_periods = stat.get("nr_periods")  # type: ignore[union-attr]
        u.cpu_throttled_periods = stat.get("nr_throttled")  # type: ignore[union-attr]
        u.cpu_throttled_usec = stat.get("throttled_usec")  # type: ignore[union-attr]
        u.cpu_quota = self.value(d, "cpu.max", _cpu_max)  # type: ignore[assignment]

    def pids_v2(self, d: str) -> None:
        self.usage.pids_current = self.value(d, "pids.current", parse_number)  # type: ignore[assignment]
        self.usage.pids_limit = self.value(d, "pids.max", parse_limit)  # type: ignore[assignment]

    def io_v2(self, d: str) -> None:
        io = self.value(d, "io.stat", parse_io_stat)
        if io is not None:
            self.usage.io_read_bytes, self.usage.io_write_bytes = io  # type: ignore[misc]

    # -- v1 --------------------------------------------------------------------------------------
    def memory_v1(self, d: str) -> None:
        u = self.usage
        u.memory_current = self.value(d, "memory.usage_in_bytes", parse_number)  # type: ignore[assignment]
        u.memory_peak = self.value(d, "memory.max_usage_in_bytes", parse_number)  # type: ignore[assignment]
        u.memory_limit = self.value(  # type: ignore[assignment]
            d, "memory.limit_in_bytes", lambda t: parse_limit(t, V1_UNLIMITED)
        )
        u.oom_events = self.value(d, "memory.failcnt", parse_number)  # type: ignore[assignment]
        control = self.value(d, "memory.oom_control", parse_keyed) or {}
        u.oom_kills = control.get("oom_kill")  # type: ignore[union-attr]

    def cpuacct_v1(self, d: str) -> None:
        usage_ns = self.value(d, "cpuacct.usage", parse_number)
        self.usage.cpu_usage_usec = None if usage_ns is None else usage_ns // 1000  # type: ignore[operator]

    def cpu_v1(self, d: str) -> None:
        u = self.usage
        stat = self.value(d, "cpu.stat", parse_keyed) or {}
        u.cpu_periods = stat.get("nr_periods")  # type: ignore[union-attr]
        u.cpu_throttled_periods = stat.get("nr_throttled")  # type: ignore[union-attr]
        throttled_ns = stat.get("throttled_time")  # type: ignore[union-attr]
        u.cpu_throttled_usec = None if throttled_ns is None else throttled_ns // 1000
        quota = self.value(d, "cpu.cfs_quota_us", _signed)
        period = self.value(d, "cpu.cfs_period_us", parse_number)
        if quota is not None and period is not None:
            u.cpu_quota = f"{'max' if quota < 0 else quota} {period}"  # type: ignore[operator]

    def pids_v1(self, d: str) -> None:
        self.pids_v2(d)  # the same files, the same syntax

    def blkio_v1(self, d: str) -> None:
        name = "blkio.throttle.io_service_bytes_recursive"
        if not self.fs.has(d, name):
            name = "blkio.throttle.io_service_bytes"
        io = self.value(d, name, parse_blkio)
        if io is not None:
            self.usage.io_read_bytes, self.usage.io_write_bytes = io  # type: ignore[misc]


def _cpu_max(text: str) -> str:
    """``cpu.max`` as written (``max 100000``, ``50000 100000``), checked."""
    parts = text.split()
    if len(parts) != 2 or not (parts[0] == "max" or parts[0].isdigit()) or not parts[1].isdigit():
        raise ValueError(f"not '$MAX $PERIOD': {text.strip()[:40]!r}")
    return " ".join(parts)


def _signed(text: str) -> int:
    value = text.strip()
    if not value.lstrip("-").isdigit():
        raise ValueError(f"not a number: {value[:40]!r}")
    return int(value)


#: the reader of each v2 controller and of each v1 controller
_V2_READERS = {
    "memory": _Reader.memory_v2,
    "cpu": _Reader.cpu_v2,
    "pids": _Reader.pids_v2,
    "io": _Reader.io_v2,
}
_V1_READERS = {
    "memory": _Reader.memory_v1,
    "cpuacct": _Reader.cpuacct_v1,
    "cpu": _Reader.cpu_v1,
    "pids": _Reader.pids_v1,
    "blkio": _Reader.blkio_v1,
}


def _v2_controllers(fs: CgroupFS, directory: str, usage: CgroupUsage) -> set[str]:
    """The controllers enabled in the v2 cgroup DIRECTORY (its ``cgroup.controllers``)."""
    try:
        text = fs.text(directory, "cgroup.controllers")
    except Unreadable as exc:
        usage.problems.append(Problem(os.path.join(directory, "cgroup.controllers"), str(exc)))
        return set()
    return set((text or "").split())


def _read_container(fs: CgroupFS, mounts: Hierarchies, group: _Container, usage: CgroupUsage) -> None:
    """Fill USAGE from GROUP's cgroup directories: per controller, v2 when the container's v2
    cgroup has it enabled, else the v1 hierarchy holding it.  USAGE's version and cgroup are
    those of the hierarchy its memory came from (else v1's, else v2's)."""
    reader, cid = _Reader(fs, usage), group.owner.container_id or ""
    done: set[str] = set()
    v2_path = _container_cgroup(group.paths[""], cid) if "" in group.paths else None
    v2_mount = mounts.v2_mount() if v2_path is not None else None
    v2_dir = _cgroup_dir(v2_mount, v2_path) if v2_mount is not None and v2_path is not None else None
    if v2_dir is not None and os.path.isdir(v2_dir):
        enabled = _v2_controllers(fs, v2_dir, usage)
        for controller in ("memory", "cpu", "pids", "io"):
            if controller in enabled:
                _V2_READERS[controller](reader, v2_dir)
                done.add(controller)
    v1_used: tuple[str, bool] | None = None  # (path, holds memory)
    for controllers, path in group.paths.items():
        names = [n for n in controllers.split(",") if n in _V1_READERS and V1_TO_V2[n] not in done]
        own = _container_cgroup(path, cid) if names else None
        mount = mounts.v1_mount(controllers) if own is not None else None
        directory = _cgroup_dir(mount, own) if mount is not None and own is not None else None
        if directory is None or not os.path.isdir(directory):
            continue
        for name in names:
            _V1_READERS[name](reader, directory)
        if v1_used is None or ("memory" in names and not v1_used[1]):
            v1_used = (own, "memory" in names)  # type: ignore[assignment]
    if usage.cpu_usage_usec is None and v2_dir is not None and fs.has(v2_dir, "cpu.stat"):
        stat = reader.value(v2_dir, "cpu.stat", parse_keyed) or {}  # a core file: usage_usec always
        usage.cpu_usage_usec = stat.get("usage_usec")  # type: ignore[union-attr]
        done.add("cpu-usage")
    if "memory" in done or (done and v1_used is None):
        usage.version, usage.cgroup = 2, v2_path or usage.cgroup
    elif v1_used is not None:
        usage.version, usage.cgroup = 1, v1_used[0]


def _groups(ctx, wanted: set[str] | None, problems: list[Problem]) -> dict[str, _Container]:
    """The host's pids grouped by the container their cgroup names (containers only; a monitor
    such as conmon is not in its container)."""
    groups: dict[str, _Container] = {}
    for pid in ctx.procfs.pids():
        try:
            owner, path, paths = ctx.owner(pid)
        except ProcessGone:
            continue
        except Unreadable as exc:
            problems.append(Problem(ctx.procfs.path(pid, "cgroup"), f"cgroup not read: {exc}"))
            continue
        if owner.kind != "container" or owner.container_id is None or path is None:
            continue
        if not ctx.selected(owner.container_id, wanted):
            continue
        group = groups.setdefault(owner.container_id, _Container(owner, path))
        group.pids.append(pid)
        for controllers, p in paths.items():
            group.paths.setdefault(controllers, p)
    return groups


def live_cgroups(ctx, wanted: set[str] | None = None, cgroupfs: str = DEFAULT_CGROUPFS) -> list[CgroupUsage]:
    """One CgroupUsage per running container of the host CTX reads (a
    :class:`pensieve.live.context.LiveContext`), those of WANTED only when given (container ids,
    as :meth:`LiveContext.matches` gives them); problems of the whole run go to ``ctx.problems``."""
    fs = CgroupFS()
    try:
        mountinfo = ctx.procfs.text("self", "mountinfo")
    except (ProcessGone, Unreadable):
        mountinfo = None
    mounts = Hierarchies.from_mountinfo(mountinfo, cgroupfs)
    out = []
    for cid, group in _groups(ctx, wanted, ctx.problems).items():
        record = ctx.container_for(group.owner)
        usage = CgroupUsage(
            container_id=cid,
            cgroup=_container_cgroup(group.path, cid) or group.path,
            version=1,
            container_name=(record.name or "").lstrip("/") or None if record is not None else None,
            engine=group.owner.engine or (getattr(record, "engine", None) if record is not None else None),
            pod=_pod(record),
            processes=sorted(group.pids),
        )
        _read_container(fs, mounts, group, usage)
        out.append(usage)
    out.sort(key=lambda u: (u.container_name or "", u.container_id or ""))
    return out


def _pod(record) -> str | None:
    """``namespace/name`` of the Kubernetes pod of a container record, None outside one."""
    if record is None or not getattr(record, "pod_name", None):
        return None
    return f"{record.pod_namespace}/{record.pod_name}" if record.pod_namespace else record.pod_name
