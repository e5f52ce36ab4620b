"""The socket tables of ``/proc/net`` (and ``/proc/PID/net``, the same files of PID's network
namespace), parsed: bytes in, rows out.  Pure: the caller reads the files (pensieve.live.sockets).

Formats (proc(5) ``/proc/net/*``; the kernel's printers are the reference):

* ``tcp``, ``tcp6``, ``udp``, ``udp6``, ``raw``, ``raw6`` (net/ipv4/tcp_ipv4.c ``get_tcp4_sock``,
  net/ipv6/tcp_ipv6.c ``get_tcp6_sock``, net/ipv4/udp.c ``udp4_format_sock``, net/ipv6/datagram.c
  ``__ip6_dgram_sock_seq_show``, net/ipv4/raw.c ``raw_sock_seq_show``)::

      sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...

  An address is ``%08X`` of each 32-bit word of the address *as it lies in memory* (so in host
  byte order: 127.0.0.1 is ``0100007F`` on a little-endian host); IPv4 is one word, IPv6 four.
  The port is ``%04X`` of the number (big-endian text).  ``st`` is the socket state in hex, the
  TCP states of include/net/tcp_states.h (a UDP or raw socket is ``07`` CLOSE when unconnected,
  ``01`` ESTABLISHED when connected); for a raw socket the "port" is the IP protocol number.
* ``unix`` (net/unix/af_unix.c ``unix_seq_show``)::

      Num RefCount Protocol Flags Type St Inode Path

  Type 1 stream, 2 dgram, 5 seqpacket (include/linux/net.h ``sock_type``); St is the
  ``socket_state`` (1 unconnected, 2 connecting, 3 connected, 4 disconnecting); Flags ``0x10000``
  (``__SO_ACCEPTCON``) marks a listener.  An abstract name's leading NUL is printed ``@``;
  Path is absent for an unbound socket.
* ``packet`` (net/packet/af_packet.c ``packet_seq_show``)::

      sk RefCnt Type Proto Iface R Rmem User Inode

  Proto is the EtherType in hex (host order after ``ntohs``), Iface the interface index, R 1 when
  the socket is running (bound and up).
* ``fib_trie`` (net/ipv4/fib_trie.c ``fib_trie_seq_show``): an address line ``|-- A.B.C.D``
  followed by ``/32 host LOCAL`` is one of the namespace's own IPv4 addresses;
  ``if_inet6`` (net/ipv6/addrconf.c ``if6_seq_show``): 32 hex digits, ifindex, prefix length,
  scope, flags, name -- the namespace's own IPv6 addresses.

Bounded: a line that does not parse becomes a :class:`BadLine` (line number, text, reason),
never an exception; the header line is skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "INET_TABLES",
    "TCP_STATES",
    "BadLine",
    "InetRow",
    "PacketRow",
    "Table",
    "UnixRow",
    "decode_address",
    "parse_fib_trie_local",
    "parse_if_inet6",
    "parse_inet",
    "parse_packet",
    "parse_table",
    "parse_unix",
]

#: include/net/tcp_states.h (the numbering of enum { TCP_ESTABLISHED = 1, ... })
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
    13: "BOUND_INACTIVE",
}
#: a datagram socket's state as ss(8) names it: unconnected (CLOSE) or connected (ESTABLISHED)
DGRAM_STATES = {7: "UNCONN", 1: "ESTAB"}
#: include/linux/net.h enum sock_type
UNIX_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket"}
#: include/uapi/linux/net.h socket_state, as ss(8) names them
UNIX_STATES = {0: "FREE", 1: "UNCONN", 2: "CONNECTING", 3: "ESTAB", 4: "DISCONNECTING"}
UNIX_ACCEPTCON = 0x10000  # include/linux/net.h __SO_ACCEPTCON: a listening socket
PACKET_TYPES = {1: "stream", 2: "dgram", 3: "raw", 10: "packet"}
#: the inet tables: file name -> (address family, datagram states)
INET_TABLES = {
    "tcp": (4, False),
    "tcp6": (6, False),
    "udp": (4, True),
    "udp6": (6, True),
    "raw": (4, True),
    "raw6": (6, True),
}
_MAX_LINE = 8192  # no kernel row is this long; a longer one is not a row


class BadLine(NamedTuple):
    """A line of a table that does not parse: 1-based line number, its text (cut), why."""

    line_no: int
    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class InetRow:
    """One row of tcp/tcp6/udp/udp6/raw/raw6."""

    protocol: str
    local: str
    local_port: int
    remote: str
    remote_port: int
    state_code: int
    state: str  # tcp: tcp_states.h name; udp/raw: UNCONN | ESTAB (else the tcp name)
    send_queue: int  # tx_queue
    recv_queue: int  # rx_queue
    uid: int
    inode: int


@dataclass(frozen=True, slots=True)
class UnixRow:
    """One row of /proc/net/unix."""

    refcount: int
    flags: int
    type: str  # stream | dgram | seqpacket ...
    state: str  # LISTEN | UNCONN | CONNECTING | ESTAB | DISCONNECTING
    inode: int
    path: str | None  # None: unbound; "@name": abstract


@dataclass(frozen=True, slots=True)
class PacketRow:
    """One row of /proc/net/packet."""

    refcount: int
    type: str  # raw | dgram ...
    ethertype: int
    ifindex: int
    running: bool
    rmem: int
    uid: int
    inode: int


class Table(NamedTuple):
    """The rows of one file and the lines that did not parse."""

    rows: list
    bad: list[BadLine]


def _lines(data: bytes) -> list[tuple[int, str]]:
    """(line number, text) of each non-empty line after the header."""
    text = data.decode("utf-8", "surrogateescape")
    out = []
    for no, line in enumerate(text.split("\n")[1:], start=2):
        if line.strip():
            out.append((no, line))
    return out


def _bad(no: int, line: str, reason: str) -> BadLine:
    return BadLine(no, line[:200], reason)


def decode_address(hex_addr: str) -> str:
    """The address a kernel table spells HEX_ADDR (8 or 32 hex digits, words in host byte
    order), as text (ValueError when it is neither); an IPv4-mapped IPv6 address is
    ``::ffff:A.B.C.D``."""
    if len(hex_addr) not in (8, 32):
        raise ValueError(f"address of {len(hex_addr)} hex digits")
    words = [int(hex_addr[i : i + 8], 16) for i in range(0, len(hex_addr), 8)]
    ip = ipaddress.ip_address(struct.pack(f"={len(words)}I", *words))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"  # as ss(8) and RFC 4291 2.5.5.2 write it
    return str(ip)


def _endpoint(text: str, family: int) -> tuple[str, int]:
    addr, sep, port = text.partition(":")
    if not sep or len(addr) != (8 if family == 4 else 32) or len(port) != 4:
        raise ValueError(f"endpoint {text[:60]!r}")
    return decode_address(addr), int(port, 16)


def _hexint(text: str) -> int:
    if not text or len(text) > 16:
        raise ValueError(f"hex field {text[:40]!r}")
    return int(text, 16)


def _decint(text: str) -> int:
    if not text.isdigit() or len(text) > 20:
        raise ValueError(f"number {text[:40]!r}")
    return int(text)


def _inet_row(protocol: str, family: int, dgram: bool, line: str) -> InetRow:
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        raise ValueError(f"{len(fields)} fields")
    local, lport = _endpoint(fields[1], family)
    remote, rport = _endpoint(fields[2], family)
    state = _hexint(fields[3])
    tx, sep, rx = fields[4].partition(":")
    if not sep:
        raise ValueError(f"queues {fields[4][:40]!r}")
    name = (DGRAM_STATES.get(state) if dgram else None) or TCP_STATES.get(state, f"state-{state}")
    return InetRow(
        protocol=protocol,
        local=local,
        local_port=lport,
        remote=remote,
        remote_port=rport,
        state_code=state,
        state=name,
        send_queue=_hexint(tx),
        recv_queue=_hexint(rx),
        uid=_decint(fields[7]),
        inode=_decint(fields[9]),
    )


def parse_inet(data: bytes, protocol: str) -> Table:
    """The rows of /proc/net/PROTOCOL (one of :data:`INET_TABLES`)."""
    family, dgram = INET_TABLES[protocol]
    rows, bad = [], []
    for no, line in _lines(data):
        if len(line) > _MAX_LINE:
            bad.append(_bad(no, line, "line too long"))
            continue
        try:
            rows.append(_inet_row(protocol, family, dgram, line))
        except ValueError as exc:
            bad.append(_bad(no, line, str(exc)))
    return Table(rows, bad)


def _unix_row(line: str) -> UnixRow:
    fields = line.split(None, 7)
    if len(fields) < 7 or not fields[0].endswith(":"):
        raise ValueError(f"{len(fields)} fields")
    _hexint(fields[0][:-1])  # the socket's kernel address (hashed by %pK): only checked
    refcount, _protocol, flags = _hexint(fields[1]), _hexint(fields[2]), _hexint(fields[3])
    kind, state = _hexint(fields[4]), _hexint(fields[5])
    inode = _decint(fields[6])
    path = fields[7].rstrip("\r") if len(fields) == 8 else None
    state_name = "LISTEN" if flags & UNIX_ACCEPTCON else UNIX_STATES.get(state, f"state-{state}")
    return UnixRow(refcount, flags, UNIX_TYPES.get(kind, f"type-{kind}"), state_name, inode, path)


def parse_unix(data: bytes) -> Table:
    """The rows of /proc/net/unix."""
    rows, bad = [], []
    for no, line in _lines(data):
        if len(line) > _MAX_LINE:
            bad.append(_bad(no, line, "line too long"))
            continue
        try:
            rows.append(_unix_row(line))
        except ValueError as exc:
            bad.append(_bad(no, line, str(exc)))
    return Table(rows, bad)


def _packet_row(line: str) -> PacketRow:
    fields = line.split()
    if len(fields) != 9:
        raise ValueError(f"{len(fields)} fields")
    _hexint(fields[0])
    kind = _decint(fields[2])
    return PacketRow(
        refcount=_decint(fields[1]),
        type=PACKET_TYPES.get(kind, f"type-{kind}"),
        ethertype=_hexint(fields[3]),
        ifindex=_decint(fields[4]),
        running=_decint(fields[5]) != 0,
        rmem=_decint(fields[6]),
        uid=_decint(fields[7]),
        inode=_decint(fields[8]),
    )


def parse_packet(data: bytes) -> Table:
    """The rows of /proc/net/packet."""
    rows, bad = [], []
    for no, line in _lines(data):
        if len(line) > _MAX_LINE:
            bad.append(_bad(no, line, "line too long"))
            continue
        try:
            rows.append(_packet_row(line))
        except ValueError as exc:
            bad.append(_bad(no, line, str(exc)))
    return Table(rows, bad)


def parse_table(name: str, data: bytes) -> Table:
    """The rows of the /proc/net file NAME (tcp ... raw6, unix, packet)."""
    if name == "unix":
        return parse_unix(data)
    if name == "packet":
        return parse_packet(data)
    return parse_inet(data, name)


def parse_fib_trie_local(data: bytes) -> set[str]:
    """The IPv4 addresses /proc/net/fib_trie lists as ``/32 host LOCAL`` (the namespace's own)."""
    out: set[str] = set()
    last: str | None = None
    for line in data.decode("ascii", "replace").splitlines():
        text = line.strip(" |+-")
        if line.lstrip().startswith("|--"):
            last = text
        elif last is not None and text.startswith("/32 host LOCAL"):
            try:
                out.add(str(ipaddress.IPv4Address(last)))
            except ValueError:
                pass
    return out


def parse_if_inet6(data: bytes) -> set[str]:
    """The IPv6 addresses of /proc/net/if_inet6 (the namespace's own)."""
    out: set[str] = set()
    for line in data.decode("ascii", "replace").splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                out.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
            except ValueError:
                pass
    return out
