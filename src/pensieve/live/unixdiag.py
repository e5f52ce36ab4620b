"""UNIX socket peers from the kernel's sock_diag netlink interface, one network namespace at a time
(what ``ss -xp`` shows and ``/proc/net/unix`` does not: which socket each one is connected to).

``/proc/net/unix`` lists a namespace's AF_UNIX sockets with their inode, but not their peer.  The
peer comes from NETLINK_SOCK_DIAG: a ``SOCK_DIAG_BY_FAMILY`` dump request for ``AF_UNIX`` with
``UDIAG_SHOW_PEER`` answers one ``unix_diag_msg`` per socket, with a ``UNIX_DIAG_PEER`` attribute
(the peer's inode) for a connected socket.  The dump covers the namespace the netlink socket was
created in, so each namespace is entered (``setns(2)`` with ``CLONE_NEWNET``, through
``/proc/PID/ns/net``) on a short-lived thread of our own (a network namespace is a per-thread
attribute; the netlink socket keeps the namespace it was made in after the thread ends), and the
dump is read from the caller's thread.  The caller's own namespace is read without entering.

Entering another namespace needs CAP_SYS_ADMIN over it (and ptrace access to the pid whose link is
opened); without it, or when the kernel refuses the dump, :class:`DiagRefused` says why and the
caller keeps the ``/proc/net/unix`` rows without peers.  Nothing here writes: the request is a
read-only dump.

Wire formats (all host byte order), include/uapi/linux/netlink.h, sock_diag.h, unix_diag.h:

* ``nlmsghdr``: u32 len, u16 type, u16 flags, u32 seq, u32 pid (16 bytes); ``NLMSG_ERROR`` (2)
  carries an ``int`` negative errno, ``NLMSG_DONE`` (3) ends a dump; messages are 4-aligned;
* ``unix_diag_req``: u8 family (AF_UNIX 1), u8 protocol (0), u16 pad, u32 states (a bit per
  state), u32 ino, u32 show, u32 cookie[2] (24 bytes);
* ``unix_diag_msg``: u8 family, u8 type, u8 state, u8 pad, u32 ino, u32 cookie[2] (16 bytes),
  then ``rtattr`` attributes (u16 len, u16 type, payload, 4-aligned): ``UNIX_DIAG_NAME`` (0, the
  ``sun_path`` bytes; an abstract name starts with NUL, printed ``@`` as ss and /proc do),
  ``UNIX_DIAG_PEER`` (2, u32 inode), ``UNIX_DIAG_ICONS`` (3, u32 inodes of the connections
  waiting in a listener's queue), ``UNIX_DIAG_RQLEN`` (4, u32 rqueue, u32 wqueue).

References: sock_diag(7), netlink(7), setns(2); linux net/unix/diag.c (sk_diag_fill), iproute2
misc/ss.c (unix_show_netlink).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass

__all__ = ["DiagRefused", "UnixDiag", "dump_unix", "is_live_proc"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER, UDIAG_SHOW_ICONS, UDIAG_SHOW_RQLEN = 0x1, 0x4, 0x8, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_PEER, UNIX_DIAG_ICONS, UNIX_DIAG_RQLEN = 0, 2, 3, 4
CLONE_NEWNET = 0x40000000
#: the most a dump may answer (a namespace with a million sockets is ~100 MB of messages)
MAX_DUMP = 1 << 28

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBHIIIII")
_MSG = struct.Struct("=BBBBIII")
_RTA = struct.Struct("=HH")
#: sk_state of a unix socket (include/net/tcp_states.h numbers), as ss(8) names them
STATES = {1: "ESTAB", 2: "SYN-SENT", 7: "UNCONN", 10: "LISTEN"}
TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}


class DiagRefused(Exception):
    """The namespace could not be entered, or the kernel refused the sock_diag dump."""


@dataclass(frozen=True, slots=True)
class UnixDiag:
    """One AF_UNIX socket as sock_diag describes it."""

    inode: int
    type: str
    state: str
    peer: int | None  # the connected peer's inode (None: not connected)
    name: str | None  # the bound path ("@name" abstract; None unbound)
    rqueue: int | None = None
    wqueue: int | None = None
    pending: tuple[int, ...] = ()  # a listener's queued connections (their inodes)


def is_live_proc(proc: str) -> bool:
    """Whether PROC is this kernel's proc as the caller sees it (its ``self/ns/net`` is ours), so
    its ``PID/ns/net`` links can be entered and netlink answers for the same namespaces."""
    try:
        theirs, ours = os.stat(os.path.join(proc, "self", "ns", "net")), os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """type -> payload of the rtattrs in DATA[OFFSET:END] (a truncated attribute ends the walk)."""
    out: dict[int, bytes] = {}
    while offset + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size or offset + length > end:
            break
        out[kind] = data[offset + _RTA.size : offset + length]
        offset += _align(length)
    return out


def _name(raw: bytes) -> str:
    if raw.startswith(b"\0"):
        return "@" + raw[1:].decode("utf-8", "surrogateescape")
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def parse_message(payload: bytes) -> UnixDiag:
    """One ``unix_diag_msg`` with its attributes (ValueError when shorter than the header)."""
    if len(payload) < _MSG.size:
        raise ValueError(f"unix_diag_msg of {len(payload)} bytes")
    _family, kind, state, _pad, inode, _c0, _c1 = _MSG.unpack_from(payload)
    attrs = _attrs(payload, _MSG.size, len(payload))
    raw_peer = attrs.get(UNIX_DIAG_PEER, b"")
    peer = struct.unpack_from("=I", raw_peer)[0] if len(raw_peer) >= 4 else None  # 0: an embryo peer
    name = _name(attrs[UNIX_DIAG_NAME]) if attrs.get(UNIX_DIAG_NAME) else None
    rq = attrs.get(UNIX_DIAG_RQLEN, b"")
    rqueue, wqueue = struct.unpack_from("=II", rq) if len(rq) >= 8 else (None, None)
    icons = attrs.get(UNIX_DIAG_ICONS, b"")
    pending = struct.unpack_from(f"={len(icons) // 4}I", icons) if len(icons) >= 4 else ()
    return UnixDiag(
        inode, TYPES.get(kind, f"type-{kind}"), STATES.get(state, f"state-{state}"), peer or None, name,
        rqueue, wqueue, tuple(pending),
    )  # fmt: skip


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    sock.settimeout(10)
    return sock


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _socket_in(ns_fd: int) -> socket.socket:
    """A sock_diag netlink socket made in the namespace of NS_FD, on a thread of its own that
    enters it (the caller's thread never changes namespace)."""
    result: dict[str, object] = {}

    def enter() -> None:
        try:
            _setns(ns_fd)
            result["sock"] = _netlink_socket()
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=enter, name="pensieve-netns", daemon=True)
    thread.start()
    thread.join(30)
    if "sock" in result:
        return result["sock"]  # type: ignore[return-value]
    exc = result.get("error")
    raise DiagRefused(f"setns: {getattr(exc, 'strerror', None) or exc or 'did not return'}")


def _open(netns_link: str | None, netns: int | None) -> socket.socket:
    """The netlink socket for the namespace NETNS_LINK names (None: the caller's), after checking
    the link still is namespace NETNS (a pid reused since it was read)."""
    if netns_link is None or netns == os.stat("/proc/thread-self/ns/net").st_ino:
        return _netlink_socket()  # our own namespace: nothing to enter (nor any link to open)
    try:
        fd = os.open(netns_link, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DiagRefused(f"{netns_link}: {exc.strerror or exc}") from exc
    try:
        inode = os.fstat(fd).st_ino
        if netns is not None and inode != netns:
            raise DiagRefused(f"{netns_link} is now net:[{inode}], not net:[{netns}] (the pid exited)")
        if inode == os.stat("/proc/thread-self/ns/net").st_ino:
            return _netlink_socket()
        return _socket_in(fd)
    finally:
        os.close(fd)


def _messages(sock: socket.socket):
    """The payloads of the dump's messages until NLMSG_DONE (DiagRefused on an error message)."""
    total = 0
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise DiagRefused("netlink: the dump ended without NLMSG_DONE")
        total += len(data)
        if total > MAX_DUMP:
            raise DiagRefused(f"netlink: dump larger than {MAX_DUMP} bytes")
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or offset + length > len(data):
                raise DiagRefused(f"netlink: message of {length} bytes at {offset} of {len(data)}")
            payload = data[offset + _NLMSGHDR.size : offset + length]
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                if code == 0:  # an acknowledgement
                    offset += _align(length)
                    continue
                raise DiagRefused(f"netlink: {errno.errorcode.get(code, code)} ({os.strerror(code)})")
            if kind == SOCK_DIAG_BY_FAMILY:
                yield payload
            offset += _align(length)


def dump_unix(netns_link: str | None = None, netns: int | None = None) -> dict[int, UnixDiag]:
    """inode -> UnixDiag of every AF_UNIX socket of the network namespace NETNS_LINK names (a
    ``/proc/PID/ns/net`` path; None: the caller's own), checked to be namespace NETNS when given.
    DiagRefused when the namespace cannot be entered or the kernel refuses the dump."""
    try:
        sock = _open(netns_link, netns)
    except OSError as exc:
        raise DiagRefused(f"netlink socket: {exc.strerror or exc}") from exc
    out: dict[int, UnixDiag] = {}
    with sock:
        request = _REQ.pack(
            socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0,
            UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN, 0, 0,
        )  # fmt: skip
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        try:
            sock.sendto(header + request, (0, 0))
            for payload in _messages(sock):
                try:
                    diag = parse_message(payload)
                except ValueError:
                    continue
                out[diag.inode] = diag
        except OSError as exc:  # a timeout, EPERM on send, ENOBUFS
            raise DiagRefused(f"netlink: {exc.strerror or exc}") from exc
    return out
