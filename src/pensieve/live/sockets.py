"""Every socket of a live host, read once per network namespace and joined to its processes and
containers.

How (proc(5), namespaces(7), network_namespaces(7)):

1. every pid's network namespace is the inode of ``/proc/PID/ns/net``; its sockets are listed in
   ``/proc/PID/net/{tcp,tcp6,udp,udp6,raw,raw6,unix,packet}`` of ANY pid in that namespace, so
   each namespace is read once, through the first of its pids that can still be read;
2. a socket's owners are the descriptors whose ``/proc/PID/fd/N`` link reads ``socket:[INODE]``
   (every pid's descriptors are scanned once: that is the cost of the view);
3. a socket's container is its owning pids' (cgroup path, :meth:`LiveContext.owner`); a socket no
   descriptor holds (a TIME_WAIT, a kernel socket) gets the container of its namespace's pids.

Marks: ``undeclared-listener`` (a TCP listener or a bound UDP socket of a container whose engine
record declares no such port: ``Container.exposed_ports``, published ports, the image's exposed
ports), ``external-peer``
(a peer that is not loopback, link-local, unspecified, nor an address of any network namespace
of the host: IPv4 from each namespace's ``fib_trie`` ``/32 host LOCAL`` entries, IPv6 from its
``if_inet6``), ``host-network`` (a container's socket in the host's network namespace).

UNIX peers (what ``ss -xp`` shows): ``/proc/net/unix`` has no peer column, so each namespace with
unix sockets is also asked through sock_diag netlink (pensieve.live.unixdiag, entering the
namespace on a thread of its own); a socket's ``peer_inode`` is then joined, across namespaces, to
the pids and fds holding the peer and to its container (two containers talking over a socket in
a shared bind-mounted directory each name the other).  When netlink is refused (no privilege to
enter the namespace, a ``--proc`` that is not the live one) the rows stay, without peers, and a
problem says ``peer: not read``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from pensieve.formats.procnet import (
    INET_TABLES,
    InetRow,
    PacketRow,
    UnixRow,
    parse_fib_trie_local,
    parse_if_inet6,
    parse_table,
)
from pensieve.live.context import LiveContext, is_root
from pensieve.live.procfs import ProcessGone, Unreadable
from pensieve.live.unixdiag import DiagRefused, UnixDiag, dump_unix, is_live_proc
from pensieve.records.core import Problem
from pensieve.records.live import LiveSocket

__all__ = ["TABLES", "live_sockets"]

#: the files read in each network namespace, in output order
TABLES = (*INET_TABLES, "unix", "packet")
#: the files that give a namespace's own addresses
ADDRESSES = ("fib_trie", "if_inet6")


@dataclass
class _Pid:
    """What the join needs of one pid."""

    pid: int
    netns: int | None
    container_id: str | None = None
    container_name: str | None = None
    engine: str | None = None
    pod: str | None = None
    known: bool | None = None  # an engine record describes its container
    exposed: set[str] | None = None  # declared "PORT/PROTO" (None: no engine record)


@dataclass
class _Scan:
    """The pids by network namespace, and socket inode -> [(pid, fd)]."""

    pids: dict[int, _Pid] = field(default_factory=dict)
    by_netns: dict[int | None, list[int]] = field(default_factory=dict)
    owners: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _netns(ctx: LiveContext, pid: int) -> int | None:
    target = ctx.procfs.readlink(pid, "ns", "net")
    lb, rb = target.find("["), target.rfind("]")
    if lb >= 0 and rb > lb and target[lb + 1 : rb].isdigit():
        return int(target[lb + 1 : rb])
    raise Unreadable(f"{ctx.procfs.path(pid, 'ns', 'net')}: {target!r} is not a namespace link")


def _declared(ctx: LiveContext, container) -> set[str]:
    """The ports CONTAINER declares: its own exposed and published ports and its image's exposed
    ports (containerd and Podman keep them only in the image config)."""
    ports = set(container.exposed_ports)
    ports.update(b.container_port for b in container.published_ports)
    image = ctx.image_for(container)
    if image is not None:
        ports.update(image.exposed_ports)
    return {p if "/" in p else f"{p}/tcp" for p in ports}


def _pid_from_context(ctx: LiveContext, pid: int, netns: int | None) -> _Pid:
    owner, _path, _paths = ctx.owner(pid)
    entry = _Pid(pid, netns, container_id=owner.container_id, engine=owner.engine)
    record = ctx.container_for(owner) if owner.container_id else None
    if owner.container_id:
        entry.known = record is not None if ctx.roots else None
    if record is not None:
        entry.container_name = (record.name or "").lstrip("/") or None
        entry.engine = record.engine
        if record.pod_name:
            entry.pod = f"{record.pod_namespace}/{record.pod_name}"
        entry.exposed = _declared(ctx, record)
    return entry


def _pid_from_process(ctx: LiveContext, proc) -> _Pid:
    entry = _Pid(
        proc.pid,
        proc.namespaces.get("net"),
        container_id=proc.container_id,
        container_name=proc.container_name,
        engine=proc.engine,
        pod=proc.pod,
        known=proc.known,
    )
    if proc.container_id:
        record = ctx.containers().get(proc.container_id)
        if record is not None:
            entry.exposed = _declared(ctx, record)
    return entry


def _scan(ctx: LiveContext, processes: list | None) -> _Scan:
    """Each pid's namespace, container and socket descriptors (one pass over /proc).  A pid whose
    ``ns/net`` link is refused is left out (its namespace unknown); one whose ``fd`` directory is
    refused keeps its namespace (its sockets are listed, not joined to it).  Without root the
    refusals are said once per file, with how many processes and which (each pid otherwise)."""
    scan = _Scan()
    if processes is not None:
        known = {p.pid: p for p in processes}
        pids = sorted(known)
    else:
        known, pids = {}, ctx.procfs.pids()
    denied: dict[str, list[int]] = {}
    for pid in pids:
        try:
            if pid in known and "net" in known[pid].namespaces:
                entry = _pid_from_process(ctx, known[pid])
            else:
                entry = _pid_from_context(ctx, pid, _netns(ctx, pid))
        except ProcessGone as exc:
            scan.problems.append(Problem(ctx.procfs.path(pid), f"process gone mid-read: {exc}"))
            continue
        except Unreadable as exc:
            _refused(scan, denied, ctx, pid, "ns/net", exc)
            continue
        scan.pids[pid] = entry
        scan.by_netns.setdefault(entry.netns, []).append(pid)
        try:
            sockets = [
                (fd, int(target[8:-1]))
                for fd, target in ctx.procfs.fds(pid)
                if target.startswith("socket:[") and target.endswith("]") and target[8:-1].isdigit()
            ]
        except ProcessGone as exc:
            scan.problems.append(Problem(ctx.procfs.path(pid), f"process gone mid-read: {exc}"))
            continue
        except Unreadable as exc:
            _refused(scan, denied, ctx, pid, "fd", exc)
            continue
        for fd, inode in sockets:
            scan.owners.setdefault(inode, []).append((pid, fd))
    for what, refused in sorted(denied.items()):
        shown = ", ".join(map(str, refused[:20])) + (", ..." if len(refused) > 20 else "")
        effect = (
            "their network namespaces not read" if what == "ns/net" else "their sockets not joined to them"
        )
        scan.problems.append(
            Problem(
                ctx.procfs.proc,
                f"not root: {what} of {len(refused)} processes unreadable without privilege ({effect}; "
                f"pids {shown}; run as root)",
            )
        )
    return scan


def _refused(scan: _Scan, denied: dict[str, list[int]], ctx: LiveContext, pid: int, what: str, exc) -> None:
    """A read of PID's WHAT refused: gathered in DENIED when unprivileged, else a problem of its own."""
    if not is_root() and str(exc).endswith("permission denied"):
        denied.setdefault(what, []).append(pid)
    else:
        scan.problems.append(Problem(ctx.procfs.path(pid), f"not read: {exc}"))


def _read_netns(
    ctx: LiveContext, pids: list[int], names: tuple[str, ...]
) -> tuple[int | None, dict[str, bytes], list[Problem]]:
    """(the pid read through, file -> bytes, problems) of one namespace: its files NAMES through the
    first of PIDS that can still be read (a pid may exit before its turn).  A table the kernel
    does not have (no IPv6, no packet sockets) is empty; one that cannot be read is a problem."""
    problems: list[Problem] = []
    for pid in pids:
        files: dict[str, bytes] = {}
        try:
            for name in names:
                try:
                    files[name] = ctx.procfs.read(pid, "net", name, limit=1 << 28)
                except ProcessGone:
                    if not os.path.lexists(ctx.procfs.path(pid, "net")):
                        raise
                    files[name] = b""  # this kernel has no such table
                except Unreadable as exc:
                    files[name] = b""
                    problems.append(Problem(ctx.procfs.path(pid, "net", name), f"not read: {exc}"))
        except ProcessGone:
            continue  # the next pid of the namespace
        return pid, files, problems
    return None, {}, problems


def _is_external(address: str | None, own: set[str]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast:
        return False
    return str(ip) not in own


def _socket(netns: int | None, table: str, row) -> LiveSocket:
    if isinstance(row, InetRow):
        return LiveSocket(
            netns=netns,
            protocol=table,
            state=row.state,
            local=row.local,
            local_port=row.local_port,
            remote=row.remote,
            remote_port=row.remote_port,
            recv_queue=row.recv_queue,
            send_queue=row.send_queue,
            inode=row.inode,
            uid=row.uid,
        )
    if isinstance(row, UnixRow):
        return LiveSocket(
            netns=netns, protocol="unix", state=row.state, local=row.path, inode=row.inode,
            details={"type": row.type},
        )  # fmt: skip
    assert isinstance(row, PacketRow)
    return LiveSocket(
        netns=netns,
        protocol="packet",
        state="UNCONN" if not row.running else "RUNNING",
        local=f"ifindex {row.ifindex}" if row.ifindex else "*",
        inode=row.inode,
        uid=row.uid,
        details={"type": row.type, "ethertype": f"0x{row.ethertype:04x}", "rmem": row.rmem},
    )


def _attribute(sock: LiveSocket, scan: _Scan, netns_owner: _Pid | None) -> _Pid | None:
    """Fill the socket's pids, fds and container; return the pid entry whose container it got."""
    held = scan.owners.get(sock.inode or 0, []) if sock.inode else []
    sock.pids = sorted({pid for pid, _ in held})
    sock.fds = [f"{pid}:{fd}" for pid, fd in sorted(held)]
    entries = [scan.pids[p] for p in sock.pids if p in scan.pids]
    with_container = [e for e in entries if e.container_id]
    chosen = with_container[0] if with_container else entries[0] if entries else netns_owner
    if chosen is None:
        return None
    others = sorted({e.container_id for e in with_container if e.container_id != chosen.container_id})
    if others:
        sock.details["also_held_by_containers"] = others
    if not entries:
        sock.details["attributed_by"] = "network namespace"
    sock.container_id, sock.container_name = chosen.container_id, chosen.container_name
    sock.engine, sock.pod = chosen.engine, chosen.pod
    return chosen


def _mark(sock: LiveSocket, owner: _Pid | None, host_netns: int | None, own: set[str]) -> None:
    in_container = owner is not None and owner.container_id is not None
    if in_container and host_netns is not None and sock.netns == host_netns:
        sock.marks.append("host-network")
    listening = sock.protocol in ("tcp", "tcp6") and sock.state == "LISTEN"
    bound = sock.protocol in ("udp", "udp6") and sock.state == "UNCONN" and bool(sock.local_port)
    if in_container and (listening or bound):
        port = f"{sock.local_port}/{sock.protocol.rstrip('6')}"
        if owner.exposed is None:
            sock.details["undeclared-listener"] = "not checked: no engine record of this container"
        elif port not in owner.exposed:
            sock.marks.append("undeclared-listener")
            sock.details["declared_ports"] = sorted(owner.exposed)
    if sock.protocol in INET_TABLES and sock.remote_port and _is_external(sock.remote, own):
        sock.marks.append("external-peer")


def _netns_owner(scan: _Scan, pids: list[int]) -> _Pid | None:
    """The pid entry standing for a namespace, for the sockets no descriptor holds: a host pid
    when any pid of the namespace is in no container (the host's namespace, shared by
    ``--network host`` containers), else the first pid's (a pod's containers share one)."""
    entries = [scan.pids[p] for p in pids if p in scan.pids]
    return next((e for e in entries if not e.container_id), entries[0] if entries else None)


def _sockets_of(
    ctx: LiveContext, scan: _Scan, netns_read: tuple, wanted, host_netns, own, everything: dict
) -> list[LiveSocket]:
    """The sockets of one namespace read: (netns, the pid standing for it, pid read via, files,
    its unix sockets by inode from sock_diag or None); EVERYTHING gets each socket by inode,
    selected or not (the peers' index)."""
    netns, standing, via, files, diag = netns_read
    out: list[LiveSocket] = []
    for table in TABLES:
        parsed = parse_table(table, files.get(table, b""))
        for bad in parsed.bad:
            source = ctx.procfs.path(via, "net", table)
            ctx.problems.append(Problem(source, f"line {bad.line_no}: {bad.reason}: {bad.text!r}"))
        for row in parsed.rows:
            sock = _socket(netns, table, row)
            owner = _attribute(sock, scan, standing)
            if table == "unix" and diag is not None and sock.inode in diag:
                sock.peer_inode = diag[sock.inode].peer
            if sock.inode:
                everything.setdefault(sock.inode, sock)
            if not LiveContext.selected(sock.container_id, wanted):
                continue
            _mark(sock, owner, host_netns, own)
            sock.details["read_via_pid"] = via
            out.append(sock)
    return out


def _host_netns(ctx: LiveContext, scan: _Scan) -> int | None:
    """The host's network namespace: pid 1's, or (pid 1's links unreadable) kthreadd's, pid 2 with
    parent 0: kernel threads always live in the initial namespaces."""
    host = ctx.host_namespaces().get("net")
    if host is not None:
        return host
    try:
        comm, fields = ctx.procfs.stat(2)
    except (ProcessGone, Unreadable):
        comm, fields = "", []
    if comm == "kthreadd" and fields[1:2] == ["0"] and 2 in scan.pids:
        return scan.pids[2].netns
    ctx.problems.append(
        Problem(ctx.procfs.path(1, "ns", "net"), "host network namespace unknown: not marked")
    )
    return None


def live_sockets(
    ctx: LiveContext, wanted: set[str] | None = None, processes: list | None = None
) -> list[LiveSocket]:
    """Every socket of every network namespace of CTX's host (only those of the containers in
    WANTED, ids as :meth:`LiveContext.matches` gives them, when given).  PROCESSES (the
    LiveProcess records of ``live ps``), when given, are the pids and their containers instead of
    a pass of our own over /proc.  What could not be read is in ``ctx.problems``."""
    scan = _scan(ctx, processes)
    ctx.problems.extend(scan.problems)
    host_netns = _host_netns(ctx, scan)
    read: list[tuple[int | None, _Pid | None, int, dict[str, bytes], dict[int, UnixDiag] | None]] = []
    own: set[str] = set()
    live = is_live_proc(ctx.procfs.proc)
    others: list[tuple[int | None, list[int]]] = []
    for netns, pids in scan.by_netns.items():
        skipped = wanted is not None and not any(
            LiveContext.selected(scan.pids[p].container_id, wanted) for p in pids
        )  # a namespace of other containers: only its addresses (peers that are not external)
        via, files, problems = _read_netns(ctx, pids, ADDRESSES if skipped else (*TABLES, *ADDRESSES))
        ctx.problems.extend(problems)
        if via is None:
            ctx.problems.append(Problem(f"netns:[{netns}]", f"network namespace of pids {pids[:8]} not read"))
            continue
        own |= parse_fib_trie_local(files["fib_trie"]) | parse_if_inet6(files["if_inet6"])
        if skipped:
            others.append((netns, pids))
        else:
            diag = _unix_diag(ctx, netns, via, files.get("unix", b""), live)
            read.append((netns, _netns_owner(scan, pids), via, files, diag))
    out: list[LiveSocket] = []
    everything: dict[int, LiveSocket] = {}
    for netns_read in read:
        out.extend(_sockets_of(ctx, scan, netns_read, wanted, host_netns, own, everything))
    if others and _held_elsewhere(scan, wanted, everything):
        out.extend(_unix_of_others(ctx, scan, others, wanted, (host_netns, own, live), everything))
    for sock in out:
        if sock.peer_inode:
            _join_peer(sock, scan, everything.get(sock.peer_inode))
    return out


def _held_elsewhere(scan: _Scan, wanted: set[str] | None, seen: dict[int, LiveSocket]) -> bool:
    """Whether a pid of the WANTED containers holds a socket no namespace read so far lists."""
    return any(
        inode not in seen
        and any(LiveContext.selected(scan.pids[pid].container_id, wanted) for pid, _ in held)
        for inode, held in scan.owners.items()
    )


def _unix_of_others(
    ctx: LiveContext, scan: _Scan, others: list, wanted, marks: tuple, everything: dict
) -> list[LiveSocket]:
    """The unix sockets the WANTED containers hold in the namespaces of OTHER containers: a
    connection to a socket path a directory shared the two (the accepted end is made in the
    connecting socket's namespace: net/unix/af_unix.c unix_stream_connect), a descriptor passed
    over SCM_RIGHTS.  Their /proc/net/unix is read (and sock_diag asked) only when such a socket
    was not found in the wanted containers' own namespaces."""
    host_netns, own, live = marks
    out: list[LiveSocket] = []
    for netns, pids in others:
        via, files, problems = _read_netns(ctx, pids, ("unix",))
        ctx.problems.extend(problems)
        if via is None:
            continue
        diag = _unix_diag(ctx, netns, via, files.get("unix", b""), live)
        netns_read = (netns, _netns_owner(scan, pids), via, files, diag)
        out.extend(_sockets_of(ctx, scan, netns_read, wanted, host_netns, own, everything))
    return out


def _unix_diag(
    ctx: LiveContext, netns: int | None, via: int, unix_table: bytes, live: bool
) -> dict[int, UnixDiag] | None:
    """The unix sockets of namespace NETNS by inode from sock_diag, entered through VIA's
    ``ns/net``; None (with a problem) when not read.  A namespace whose /proc/net/unix lists no
    socket is not asked."""
    if unix_table.count(b"\n") <= 1:  # the header only
        return None
    source = f"netns:[{netns}] (pid {via}) unix"
    if not live:
        ctx.problems.append(Problem(source, f"peer: not read ({ctx.procfs.proc} is not the live /proc)"))
        return None
    try:
        return dump_unix(ctx.procfs.path(via, "ns", "net"), netns)
    except DiagRefused as exc:
        ctx.problems.append(Problem(source, f"peer: not read ({exc})"))
        return None


def _join_peer(sock: LiveSocket, scan: _Scan, peer: LiveSocket | None) -> None:
    """SOCK's peer pids, fds and container: the descriptors holding the peer inode (in any
    namespace), else the peer's own record's container (an unheld peer)."""
    held = scan.owners.get(sock.peer_inode or 0, [])
    sock.peer_pids = sorted({pid for pid, _ in held})
    sock.peer_fds = [f"{pid}:{fd}" for pid, fd in sorted(held)]
    entries = [scan.pids[p] for p in sock.peer_pids if p in scan.pids]
    chosen = next((e for e in entries if e.container_id), None)
    if chosen is not None:
        sock.peer_container_id, sock.peer_container_name = chosen.container_id, chosen.container_name
    elif peer is not None:
        sock.peer_container_id, sock.peer_container_name = peer.container_id, peer.container_name
