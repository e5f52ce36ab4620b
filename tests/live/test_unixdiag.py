"""UNIX socket peers (pensieve.live.unixdiag, joined by ``live net``) against ``ss -xpanH``.

* the test's own sockets in the host's network namespace: a socketpair, a named listener with a
  client connected and accepted, an abstract listener with a client left in its queue; each
  socket's peer inode, the pids and fds holding the peer, and the whole namespace's (inode, peer)
  pairs as ss gives them;
* a child in a namespace of its own (``unshare -n``, root): entered with setns on a thread, the
  same pairs as ``nsenter -t PID -n ss -xpanH``, the namespace read through the child;
* refusals: a child running as nobody in a namespace of its own is read by a pensieve running as
  nobody (setpriv): its sockets are listed from /proc/PID/net/unix, without peers, and a problem
  says ``peer: not read``; a ``--proc`` that is not the live one (hand-made tree, hostile-input
  style) says the same;
* the netlink message parser on truncated and odd attributes (hand-made bytes: hostile input).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pensieve import api
from pensieve.live.context import LiveContext
from pensieve.live.sockets import live_sockets
from pensieve.live.unixdiag import DiagRefused, dump_unix, is_live_proc, parse_message

needs_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
    reason="needs root, unshare and nsenter",
)


def ss_unix(netns_pid: int | None = None) -> dict[int, tuple[int, set[tuple[int, int]]]]:
    """inode -> (peer inode, 0 for none; {(pid, fd)}) of every line of ``ss -xpanH`` (in the
    network namespace of NETNS_PID when given)."""
    cmd = ["ss", "-xpanH"]
    if netns_pid is not None:
        cmd = ["nsenter", "-t", str(netns_pid), "-n", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    rows = {}
    for line in out.splitlines():
        head, _, users = line.partition("users:(")
        fields = head.split()
        # netid state recv-q send-q local local-inode peer peer-inode (a local name may be absent: *)
        inode, peer = int(fields[5]), int(fields[7])
        holders = set()
        for part in users.split("),("):
            pid = part.partition("pid=")[2].partition(",")[0]
            fd = part.partition("fd=")[2].rstrip(")")
            if pid.isdigit() and fd.isdigit():
                holders.add((int(pid), int(fd)))
        rows[inode] = (peer, holders)
    return rows


def _ino(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


@pytest.fixture
def own_unix():
    made: dict[str, socket.socket] = {}
    path = tempfile.mktemp(prefix="pensieve-ux-", suffix=".sock", dir="/tmp")
    made["pair0"], made["pair1"] = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    made["listener"] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made["listener"].bind(path)
    made["listener"].listen(4)
    made["client"] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made["client"].connect(path)
    made["served"], _ = made["listener"].accept()
    abstract = f"\0pensieve-ux-{os.getpid()}"
    made["abstract"] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made["abstract"].bind(abstract)
    made["abstract"].listen(1)
    made["queued"] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made["queued"].connect(abstract)  # never accepted: its peer is an embryo with no inode
    made["dgram"] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        yield made, path
    finally:
        for s in made.values():
            s.close()
        os.unlink(path)


def test_own_peers_with_pids_and_fds(own_unix):
    made, path = own_unix
    me = os.getpid()
    by_inode = {s.inode: s for s in live_sockets(LiveContext(roots=[])) if s.protocol == "unix"}
    ino = {name: _ino(s) for name, s in made.items()}
    for a, b in (("pair0", "pair1"), ("client", "served")):
        for x, y in ((a, b), (b, a)):
            sock = by_inode[ino[x]]
            assert sock.peer_inode == ino[y], x
            assert sock.peer_pids == [me] and sock.peer_fds == [f"{me}:{made[y].fileno()}"], x
            assert sock.peer_container_id is None and sock.peer_container_name is None
    for alone in ("listener", "abstract", "dgram", "queued"):
        assert by_inode[ino[alone]].peer_inode is None, alone
        assert by_inode[ino[alone]].peer_pids == []
    assert by_inode[ino["abstract"]].local == f"@pensieve-ux-{me}"
    assert by_inode[ino["listener"]].local == path
    diag = dump_unix()
    assert diag[ino["abstract"]].pending and diag[ino["abstract"]].state == "LISTEN"
    assert diag[ino["abstract"]].name == f"@pensieve-ux-{me}"


@needs_ss
def test_host_namespace_agrees_with_ss(own_unix):
    made, _ = own_unix
    me = os.getpid()
    found = [s for s in live_sockets(LiveContext(roots=[])) if s.protocol == "unix"]
    theirs = ss_unix()
    ours = {s.inode: s for s in found}
    made_inodes = {_ino(s) for s in made.values()}
    # ss saw every socket the test made; it names this pid as holder of some of them only when
    # run inside the full suite (seen twice, cause unknown), so holders are compared where it
    # names them, and test_own_peers_with_pids_and_fds checks every holder against fileno()
    mine = {i for i, (_, h) in theirs.items() if any(pid == me for pid, _ in h)} & made_inodes
    assert made_inodes <= set(theirs) and mine
    both = set(theirs) & set(ours)
    assert made_inodes <= both
    # every socket both saw (other processes' too): the same peer
    assert {i: ours[i].peer_inode or 0 for i in both} == {i: theirs[i][0] for i in both}
    for i in mine:  # and the same holders
        assert {tuple(map(int, f.split(":"))) for f in ours[i].fds} == theirs[i][1]


CHILD = r"""
import os, socket, sys, time
a, b = socket.socketpair()
l = socket.socket(socket.AF_UNIX); l.bind("\0pensieve-ux-child"); l.listen(2)
c = socket.socket(socket.AF_UNIX); c.connect("\0pensieve-ux-child"); s, _ = l.accept()
print(" ".join(str(os.fstat(x.fileno()).st_ino) for x in (a, b, c, s)), flush=True)
time.sleep(120)
"""


def _child(*prefix: str) -> tuple[subprocess.Popen, list[int]]:
    child = subprocess.Popen(
        ["unshare", "-n", *prefix, sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    line = child.stdout.readline()
    if not line:
        child.wait(10)
        pytest.fail(f"the child did not start ({child.returncode})")
    return child, [int(x) for x in line.split()]


@needs_root
@needs_ss
def test_child_namespace_entered_agrees_with_ss():
    child, (a, b, c, s) = _child()
    try:
        host = os.stat("/proc/self/ns/net").st_ino
        assert os.stat(f"/proc/{child.pid}/ns/net").st_ino != host
        ctx = LiveContext(roots=[])
        found = [x for x in live_sockets(ctx) if child.pid in x.pids]
        assert not [p for p in ctx.problems if "peer" in p.message]
        ours = {x.inode: x for x in found if x.protocol == "unix"}
        assert set(ours) >= {a, b, c, s}
        assert (ours[a].peer_inode, ours[b].peer_inode, ours[c].peer_inode, ours[s].peer_inode) == (
            b,
            a,
            s,
            c,
        )
        assert {x.details["read_via_pid"] for x in found} == {child.pid}
        assert all(x.peer_pids == [child.pid] for x in (ours[a], ours[b], ours[c], ours[s]))
        theirs = ss_unix(child.pid)
        assert {i: x.peer_inode or 0 for i, x in ours.items()} == {i: p for i, (p, _) in theirs.items()}
        assert {i: {tuple(map(int, f.split(":"))) for f in x.fds} for i, x in ours.items()} == {
            i: h for i, (_, h) in theirs.items()
        }
        # the reader's own thread never left the host's namespace
        assert os.stat("/proc/thread-self/ns/net").st_ino == host
    finally:
        child.kill()
        child.wait(10)


@needs_root
def test_namespace_that_cannot_be_entered_keeps_rows_without_peers():
    """Both the child and the reader run as nobody: the reader may open the child's ns/net (same
    uid) but not setns into it (no CAP_SYS_ADMIN): rows from /proc/PID/net/unix, a problem."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    nobody = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    child, inodes = _child(*nobody)
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(api.__file__).resolve().parents[1])}
        res = subprocess.run(
            [*nobody, sys.executable, "-m", "pensieve.cli", "live", "net", "--root", "/none", "--json"],
            capture_output=True, text=True, timeout=120, cwd="/", env=env,
        )  # fmt: skip
        assert res.returncode == 5, res.stderr
        rows = [r for r in json.loads(res.stdout) if child.pid in r["pids"] and r["protocol"] == "unix"]
        assert {r["inode"] for r in rows} >= set(inodes)  # and the listener
        assert all(r["peer_inode"] is None and r["peer_pids"] == [] for r in rows)
        netns = os.stat(f"/proc/{child.pid}/ns/net").st_ino
        assert f"netns:[{netns}] (pid {child.pid}) unix: peer: not read (setns:" in res.stderr
        with pytest.raises(DiagRefused):  # the same refusal, seen from root: a reused pid's link
            dump_unix(f"/proc/{child.pid}/ns/net", netns + 1)
    finally:
        child.kill()
        child.wait(10)


def test_proc_that_is_not_live_says_peer_not_read(tmp_path):
    """A hand-made proc tree (hostile-input style, not a capture): pid 100 holds two unix sockets."""
    proc = tmp_path / "proc"
    pid = proc / "100"
    for d in ("ns", "fd", "net"):
        (pid / d).mkdir(parents=True)
    os.symlink("net:[4026539999]", pid / "ns" / "net")
    os.symlink("socket:[700]", pid / "fd" / "3")
    os.symlink("socket:[701]", pid / "fd" / "4")
    (pid / "cgroup").write_text("0::/\n")
    (pid / "net" / "unix").write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00000000 0001 03   700\n"
        "0000000000000000: 00000002 00000000 00000000 0001 03   701\n"
    )
    assert not is_live_proc(str(proc)) and is_live_proc("/proc")
    sockets, problems = api.live_net(proc=str(proc), roots=[])
    assert sorted(s.inode for s in sockets) == [700, 701]
    assert all(s.peer_inode is None for s in sockets)
    assert any("peer: not read" in p.message and "not the live /proc" in p.message for p in problems)


def _msg(inode: int, attrs: list[tuple[int, bytes]], kind: int = 1, state: int = 1) -> bytes:
    body = struct.pack("=BBBBIII", 1, kind, state, 0, inode, 0, 0)
    for t, payload in attrs:
        length = 4 + len(payload)
        body += struct.pack("=HH", length, t) + payload + b"\0" * ((-length) % 4)
    return body


def test_parse_message_hostile_bytes():
    ok = parse_message(
        _msg(9, [(0, b"/run/a.sock"), (2, struct.pack("=I", 10)), (4, struct.pack("=II", 1, 2))])
    )
    assert (ok.inode, ok.peer, ok.name, ok.rqueue, ok.wqueue, ok.state) == (
        9,
        10,
        "/run/a.sock",
        1,
        2,
        "ESTAB",
    )
    assert parse_message(_msg(9, [(0, b"\0abs")])).name == "@abs"
    assert parse_message(_msg(9, [(2, struct.pack("=I", 0))])).peer is None  # an embryo peer
    short_peer = parse_message(_msg(9, [(2, b"\1\2")]))
    assert short_peer.peer is None
    truncated = _msg(9, [(2, struct.pack("=I", 10))])[:-2]  # the attribute runs past the message
    assert parse_message(truncated).peer is None
    bogus = _msg(9, []) + struct.pack("=HH", 2, 2)  # a length below the attribute header
    assert parse_message(bogus).peer is None
    with pytest.raises(ValueError):
        parse_message(b"\1\1")
    odd = parse_message(_msg(5, [(3, struct.pack("=III", 1, 2, 3))], kind=9, state=42))
    assert (odd.type, odd.state, odd.pending) == ("type-9", "state-42", (1, 2, 3))
