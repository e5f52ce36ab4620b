"""``live watch``: can ``/proc`` track a container's processes and connections over time?  Yes, at
the granularity of the poll; this module polls and writes what changed between two polls.

Each poll reads, for every pid, ``/proc/PID/stat`` alone (a pid is known by (pid, start time), so
a recycled pid is a new process); only a process not seen before costs more (its cgroup, command
line and network namespace).  Sockets are read per network namespace, not per process:
``/proc/PID/net/{tcp,tcp6,udp,udp6}`` of one pid of each namespace that holds a watched process; a
socket is known by (namespace, protocol, addresses, inode).  Those tables are what costs: the kernel
walks its whole TCP hash to print one namespace's ``tcp`` (about 4 ms a read here, with 262,144
buckets, whatever the namespace holds; NETLINK_SOCK_DIAG walks the same hash, 2.4 ms), so reading
every namespace at every poll costs 0.9 s a poll on a host of 100 containers.  Instead each poll
lists the watched processes' descriptors (``/proc/PID/fd``: socket inodes, and so the owners) and
re-reads a namespace's tables only when the socket inodes held there changed, on the poll after
such a change (a ``connect()`` that follows its ``socket()``), and at least every ``refresh``
seconds (default 10: a state change of a socket whose descriptor stays, ESTABLISHED to
CLOSE_WAIT, is seen within that time).

Events: ``process-present`` / ``listener-present`` / ``connection-present`` for what the first poll
finds, then ``process-started``, ``process-exited``, ``listener-appeared``, ``listener-closed``,
``connection-opened``, ``connection-closed``; each with the time of the poll that saw it, the
container (and pod) and the details.  What lives and dies between two polls is not seen: a
connection shorter than the interval leaves no event (the kernel keeps no history in /proc); the
interval is the resolution, and its cost is measured in ``bench/bench_live.py``.  A process that
moves to another network namespace (setns) keeps the one it had when first seen.

References: proc(5) (``stat`` field 22 starttime, ``net/tcp``), the parsers of
:mod:`pensieve.formats.procnet`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from pensieve.live.context import LiveContext
from pensieve.live.procfs import ProcessGone, Unreadable
from pensieve.records.core import Problem
from pensieve.records.live import LiveEvent

__all__ = ["Watcher", "watch"]

#: the socket tables a watch follows; unix sockets only when asked (``unix=True``, ``--unix``):
#: on a whole host every local IPC is an event
TABLES = ("tcp", "tcp6", "udp", "udp6")


class _Proc:
    """What the watch keeps of one process."""

    __slots__ = ("cmdline", "comm", "container", "netns", "ppid", "watched")

    def __init__(self) -> None:
        self.watched = False
        self.container: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)
        self.netns: int | None = None
        self.comm: str | None = None
        self.cmdline: list[str] = []
        self.ppid: int | None = None


class _Sock:
    """What the watch keeps of one socket."""

    __slots__ = ("container", "listener", "pids", "row")

    def __init__(self, row: dict, listener: bool) -> None:
        self.row = row
        self.listener = listener
        self.pids: list[int] = []
        self.container: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)


class Watcher:
    """The state between polls; :meth:`poll` returns the events of one poll."""

    def __init__(
        self, ctx: LiveContext, wanted: set[str] | None = None, refresh: float = 10.0, unix: bool = False
    ) -> None:
        self.ctx = ctx
        self.wanted = wanted
        self.refresh = refresh
        self.unix = unix
        #: netns -> (socket inodes its watched processes held at the last read, when, changed then)
        self._ns: dict[int, tuple[frozenset[int], float, bool]] = {}
        self.table_reads = 0
        self.procs: dict[tuple[int, str], _Proc] = {}
        self.socks: dict[tuple, _Sock] = {}
        self.first = True
        self.polls = 0
        self._warned: set[str] = set()

    def _problem(self, source: str, message: str) -> None:
        if source not in self._warned:  # one warning per file, not one per poll
            self._warned.add(source)
            self.ctx.problems.append(Problem(source, message))

    # ---- processes -------------------------------------------------------------------------

    def _learn(self, pid: int, fields: list[str]) -> _Proc:
        """A process not seen before: its container, command line and network namespace."""
        p = _Proc()
        p.ppid = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        procfs = self.ctx.procfs
        try:
            owner, _path, _paths = self.ctx.owner(pid)
        except (ProcessGone, Unreadable):
            return p
        if not LiveContext.selected(owner.container_id, self.wanted):
            return p
        p.watched = True
        record = self.ctx.container_for(owner)
        pod = None
        if record is not None:
            ns = record.labels.get("io.kubernetes.pod.namespace")
            name = record.labels.get("io.kubernetes.pod.name")
            pod = f"{ns}/{name}" if ns and name else None
        p.container = (
            owner.container_id,
            record.name.lstrip("/") if record is not None and record.name else None,
            record.engine if record is not None else owner.engine,
            pod,
        )
        try:
            p.cmdline = procfs.cmdline(pid, limit=65536)
            p.netns = procfs.namespaces(pid).get("net")
        except (ProcessGone, Unreadable):
            pass
        return p

    def _poll_processes(self, now: int, events: list[LiveEvent]) -> set[tuple[int, str]]:
        procfs = self.ctx.procfs
        seen: set[tuple[int, str]] = set()
        try:
            pids = procfs.pids()
        except (ProcessGone, Unreadable) as exc:
            self._problem(procfs.proc, f"processes not listed: {exc}")
            return set(self.procs)
        for pid in pids:
            try:
                comm, fields = procfs.stat(pid)
            except (ProcessGone, Unreadable):
                continue
            if len(fields) < 20:
                continue
            key = (pid, fields[19])  # field 22 (starttime), counted from field 3
            seen.add(key)
            if key in self.procs:
                continue
            p = self._learn(pid, fields)
            p.comm = comm
            self.procs[key] = p
            if p.watched:
                kind = "process-present" if self.first else "process-started"
                events.append(
                    self._event(now, kind, p, pid, {"ppid": p.ppid, "comm": comm, "cmdline": p.cmdline})
                )
        for key in [k for k in self.procs if k not in seen]:
            p = self.procs.pop(key)
            if p.watched:
                events.append(
                    self._event(now, "process-exited", p, key[0], {"comm": p.comm, "cmdline": p.cmdline})
                )
        return seen

    @staticmethod
    def _event(now: int, kind: str, owner: _Proc | _Sock, pid: int | None, details: dict) -> LiveEvent:
        cid, name, engine, pod = owner.container
        return LiveEvent(now, kind, cid, name, engine, pod, pid, details)

    # ---- sockets ---------------------------------------------------------------------------

    def _namespaces(self) -> dict[int, list[int]]:
        """Network namespace inode -> the pids of watched processes in it."""
        out: dict[int, list[int]] = {}
        for (pid, _start), p in self.procs.items():
            if p.watched and p.netns is not None:
                out.setdefault(p.netns, []).append(pid)
        return out

    def _read_tables(self, netns: int, pids: list[int]) -> list[dict] | None:
        """The inet socket rows of NETNS, read through the first pid of PIDS that answers."""
        from pensieve.formats.procnet import parse_inet

        for pid in pids:
            rows: list[dict] = []
            try:
                for table in TABLES:
                    try:
                        data = self.ctx.procfs.read(pid, "net", table, limit=1 << 28)
                    except ProcessGone:
                        if not os.path.lexists(self.ctx.procfs.path(pid, "net")):
                            raise
                        continue  # this kernel has no such table (no IPv6)
                    parsed = parse_inet(data, table)
                    rows += [_row(r) for r in parsed.rows]
                    if parsed.bad:
                        self._problem(self.ctx.procfs.path(pid, "net", table), f"{len(parsed.bad)} bad lines")
                if self.unix:
                    rows += self._unix_rows(netns, pid)
            except ProcessGone:
                continue
            except Unreadable as exc:
                self._problem(f"netns:{netns}", f"sockets not read: {exc}")
                return None
            return rows
        return None

    def _unix_rows(self, netns: int, pid: int) -> list[dict]:
        """The unix sockets of NETNS (read through PID): from sock_diag with each one's peer and
        the peer's bound name (a connection to ``/run/docker.sock`` shows that path), else from
        ``/proc/PID/net/unix`` without peers (a problem says so, once)."""
        from pensieve.live.unixdiag import DiagRefused, dump_unix, is_live_proc

        if is_live_proc(self.ctx.procfs.proc):
            try:
                diag = dump_unix(self.ctx.procfs.path(pid, "ns", "net"), netns)
            except DiagRefused as exc:
                self._problem(f"netns:[{netns}] unix", f"peer: not read ({exc})")
            else:
                return [_unix_row(d, diag.get(d.peer or 0)) for d in diag.values()]
        else:
            why = f"{self.ctx.procfs.proc} is not the live /proc"
            self._problem(f"netns:[{netns}] unix", f"peer: not read ({why})")
        from pensieve.formats.procnet import parse_unix

        parsed = parse_unix(self.ctx.procfs.read(pid, "net", "unix", limit=1 << 28))
        return [{"protocol": "unix", "type": r.type, "state": r.state, "local": r.path, "local_port": None,
                 "remote": None, "remote_port": None, "inode": r.inode, "peer_inode": None}
                for r in parsed.rows]  # fmt: skip

    def _held(self, pids: list[int]) -> dict[int, list[int]]:
        """Socket inode -> the pids of PIDS holding it, from their descriptors (``socket:[N]``)."""
        out: dict[int, list[int]] = {}
        for pid in pids:
            try:
                for _fd, target in self.ctx.procfs.fds(pid):
                    if target.startswith("socket:[") and target[8:-1].isdigit():
                        out.setdefault(int(target[8:-1]), []).append(pid)
            except (ProcessGone, Unreadable):
                continue
        return out

    def _due(self, netns: int, held: frozenset[int], now_s: float) -> bool:
        """Whether NETNS's tables are read this poll: never read, its processes' socket
        descriptors changed since the last read (or the poll before: a connect() following its
        socket() is caught), or the refresh interval passed (state changes of a socket whose
        descriptor stays, such as ESTABLISHED to CLOSE_WAIT)."""
        last = self._ns.get(netns)
        if last is None:
            return True
        last_held, read_at, changed = last
        return changed or held != last_held or now_s - read_at >= self.refresh

    def _poll_sockets(self, now: int, events: list[LiveEvent]) -> None:
        seen: set[tuple] = set()
        now_s = time.monotonic()
        spaces = self._namespaces()
        for netns, pids in spaces.items():
            held_by = self._held(pids)
            held = frozenset(held_by)
            rows = self._read_tables(netns, pids) if self._due(netns, held, now_s) else None
            if rows is None:  # not due, or unreadable: keep what it had, close nothing
                seen.update(k for k in self.socks if k[0] == netns)
                continue
            last = self._ns.get(netns)
            self._ns[netns] = (held, now_s, last is not None and held != last[0])
            self.table_reads += 1
            fresh: list[tuple[tuple, dict]] = []
            for row in rows:
                if row.get("inode") in (0, None):  # TIME_WAIT and orphans: no owner any more
                    continue
                if row["protocol"] == "unix" and row["inode"] not in held_by:
                    continue  # a namespace's unix table lists every process's: the watched ones' only
                key = (netns, row["protocol"], row.get("local"), row.get("local_port"), row.get("remote"),
                       row.get("remote_port"), row["inode"])  # fmt: skip
                seen.add(key)
                if key not in self.socks:
                    fresh.append((key, row))
            if fresh:
                self._add_sockets(now, pids, held_by, fresh, events)
        for netns in [
            n for n in self._ns if not any(k[0] == n for k in seen) and n not in self._namespaces()
        ]:
            del self._ns[netns]  # no watched process left in it
        for key in [k for k in self.socks if k not in seen]:
            s = self.socks.pop(key)
            kind = "listener-closed" if s.listener else "connection-closed"
            events.append(self._event(now, kind, s, s.pids[0] if s.pids else None, _sock_details(s)))

    def _add_sockets(
        self, now: int, pids: list[int], held_by: dict[int, list[int]], fresh: list, events: list[LiveEvent]
    ) -> None:
        by_pid = {pid: p for (pid, _start), p in self.procs.items() if p.watched}
        for key, row in fresh:
            s = _Sock(row, is_listener(row))
            s.pids = sorted(held_by.get(row["inode"], []))
            holder = by_pid.get(s.pids[0]) if s.pids else by_pid.get(pids[0])
            if holder is not None:
                s.container = holder.container
            self.socks[key] = s
            if self.first:
                kind = "listener-present" if s.listener else "connection-present"
            else:
                kind = "listener-appeared" if s.listener else "connection-opened"
            events.append(self._event(now, kind, s, s.pids[0] if s.pids else None, _sock_details(s)))

    # ---- one poll --------------------------------------------------------------------------

    def poll(self, now: int | None = None) -> list[LiveEvent]:
        """The events since the last poll (the first poll: what is present)."""
        now = time.time_ns() if now is None else now
        events: list[LiveEvent] = []
        self._poll_processes(now, events)
        self._poll_sockets(now, events)
        self.first = False
        self.polls += 1
        return events


def _row(r) -> dict:
    """An InetRow of formats/procnet as the dict a watch keeps."""
    return {
        "protocol": r.protocol,
        "state": r.state,
        "local": r.local,
        "local_port": r.local_port,
        "remote": r.remote,
        "remote_port": r.remote_port,
        "inode": r.inode,
    }


def _unix_row(d, peer) -> dict:
    """A sock_diag record (live/unixdiag.UnixDiag) as the dict a watch keeps: REMOTE is the peer's
    bound name, else ``peer:[INODE]``; an unconnected socket has none."""
    remote = None
    if d.peer:
        remote = peer.name if peer is not None and peer.name else f"peer:[{d.peer}]"
    return {"protocol": "unix", "type": d.type, "state": d.state, "local": d.name, "local_port": None,
            "remote": remote, "remote_port": None, "inode": d.inode, "peer_inode": d.peer}  # fmt: skip


def is_listener(row: dict) -> bool:
    """A listening TCP or unix socket, or a UDP socket bound with no peer."""
    if row.get("protocol") == "unix":
        return row.get("state") == "LISTEN"
    if row.get("protocol", "").startswith("tcp"):
        return row.get("state") == "LISTEN"
    return not row.get("remote_port")


def _unix_details(row: dict) -> dict:
    return {"type": row.get("type"), "peer_inode": row.get("peer_inode")}


def _sock_details(s: _Sock) -> dict:
    row = s.row
    return {
        "protocol": row.get("protocol"),
        "state": row.get("state"),
        "local": row.get("local"),
        "local_port": row.get("local_port"),
        "remote": row.get("remote"),
        "remote_port": row.get("remote_port"),
        "inode": row.get("inode"),
        "pids": s.pids,
    } | (_unix_details(row) if row.get("protocol") == "unix" else {})


def watch(
    ctx: LiveContext,
    emit: Callable[[Iterable[LiveEvent]], None],
    wanted: set[str] | None = None,
    interval: float = 1.0,
    duration: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    refresh: float = 10.0,
    unix: bool = False,
) -> Watcher:
    """Poll every INTERVAL seconds until DURATION has passed (None: until interrupted), passing
    each poll's events to EMIT; a namespace's socket tables are re-read at least every REFRESH
    seconds; returns the watcher (its ``polls`` count)."""
    watcher = Watcher(ctx, wanted, refresh, unix)
    start = clock()
    while True:
        began = clock()
        emit(watcher.poll())
        if duration is not None and clock() - start >= duration:
            return watcher
        pause = interval - (clock() - began)
        if duration is not None:
            pause = min(pause, duration - (clock() - start))
        if pause > 0:
            sleep(pause)
