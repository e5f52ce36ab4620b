"""pensieve.live.sockets (``live net``) against real sockets, compared with ss(8).

* the test process makes its own sockets (TCP listener on 127.0.0.1 with a connected client and
  5 bytes left unread, IPv6 ::1 listener, bound UDP, a unix socketpair and a named unix
  listener) and finds each with its pid, fd, state and queues; ``ss`` restricted to our pid
  gives the same (protocol, local, remote, state, pid) tuples;
* a child in a new network namespace (``unshare --net``, as root) is read as its own namespace,
  once, and agrees with ``nsenter -t PID -n ss``;
* a private dockerd (LAB rules: ``--network none`` and a ``--network host`` container bound to
  127.0.0.1 only) with a busybox listener, a client connected to it in the same netns, a shell
  whose stdio is the socket, checked against ``ss`` inside the container's netns, its
  attribution, and the undeclared-listener and host-network marks;
* faults: a pid that vanishes between the listing and its reading, a malformed /proc/net line.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from pensieve import api
from pensieve.live.context import LiveContext
from pensieve.live.sockets import live_sockets

SS_STATE = {"ESTABLISHED": "ESTAB", "TIME_WAIT": "TIME-WAIT", "SYN_SENT": "SYN-SENT", "SYN_RECV": "SYN-RECV"}


def _ours(sockets, pids: set[int]):
    return [s for s in sockets if set(s.pids) & pids]


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _split_endpoint(text: str) -> tuple[str, str]:
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]").split("%")[0]
    return ("::" if addr == "*" else addr), port  # ss: * is a dual-stack socket's unspecified ::


def _ss(pids: set[int], netns_pid: int | None = None) -> set[tuple]:
    """(proto, local, lport, remote, rport, state, pid) of the TCP and UDP lines of ss naming one
    of PIDS (in the network namespace of NETNS_PID when given)."""
    cmd = ["ss", "-H", "-n", "-p", "-t", "-u", "-a"]
    if netns_pid is not None:
        cmd = ["nsenter", "-t", str(netns_pid), "-n", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    rows = set()
    for line in out.splitlines():
        fields = line.split()
        netid, fields = fields[0], fields[1:]
        state, local, remote = fields[0], fields[3], fields[4]
        for pid in pids:
            if f"pid={pid}," in line:
                la, lp = _split_endpoint(local)
                ra, rp = _split_endpoint(remote)
                rows.add((netid, la, lp, ra, rp.replace("*", "0"), state, pid))
    return rows


def _ours_as_ss(sockets, pids: set[int], protocols: tuple[str, ...]) -> set[tuple]:
    rows = set()
    for s in sockets:
        if s.protocol not in protocols:
            continue
        netid = s.protocol.rstrip("6")
        for pid in set(s.pids) & pids:
            rows.add(
                (
                    netid,
                    s.local,
                    str(s.local_port),
                    s.remote,
                    str(s.remote_port),
                    SS_STATE.get(s.state, s.state),
                    pid,
                )
            )
    return rows


@pytest.fixture
def own_sockets(tmp_path):
    made = {}
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    client.sendall(b"hello")  # left unread by SERVER: its recv queue
    made.update(listener=listener, client=client, server=server)
    try:
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        v6.bind(("::1", 0))
        v6.listen(1)
        made["v6"] = v6
    except OSError:
        pass
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    named = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tempfile.mktemp(prefix="pensieve-net-", suffix=".sock", dir="/tmp")
    named.bind(path)
    named.listen(1)
    made.update(udp=udp, pair0=pair[0], pair1=pair[1], named=named)
    time.sleep(0.05)
    try:
        yield made, path
    finally:
        for s in made.values():
            s.close()
        os.unlink(path)


def test_own_sockets_found_with_pids_fds_states_queues(own_sockets):
    made, path = own_sockets
    me = os.getpid()
    ctx = LiveContext(roots=[])
    by_inode = {s.inode: s for s in _ours(live_sockets(ctx), {me})}
    for name, sock in made.items():
        found = by_inode.get(_inode(sock))
        assert found is not None, name
        assert found.pids == [me] and found.fds == [f"{me}:{sock.fileno()}"], (name, found)
    lst, cli, srv = (by_inode[_inode(made[n])] for n in ("listener", "client", "server"))
    port = made["listener"].getsockname()[1]
    assert (lst.protocol, lst.state, lst.local, lst.local_port) == ("tcp", "LISTEN", "127.0.0.1", port)
    assert (cli.state, cli.remote, cli.remote_port) == ("ESTABLISHED", "127.0.0.1", port)
    assert (srv.local_port, srv.remote_port, srv.recv_queue, srv.send_queue) == (
        port,
        made["client"].getsockname()[1],
        5,
        0,
    )
    udp = by_inode[_inode(made["udp"])]
    assert (udp.protocol, udp.state, udp.local_port) == ("udp", "UNCONN", made["udp"].getsockname()[1])
    if "v6" in made:
        v6 = by_inode[_inode(made["v6"])]
        assert (v6.protocol, v6.state, v6.local) == ("tcp6", "LISTEN", "::1")
    named = by_inode[_inode(made["named"])]
    assert (named.protocol, named.state, named.local) == ("unix", "LISTEN", path)
    assert by_inode[_inode(made["pair0"])].state == "ESTAB"
    for s in (lst, cli, srv, udp, named):
        assert s.container_id is None and not s.marks  # the test runs on the host, on loopback


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
def test_agrees_with_ss(own_sockets):
    made, path = own_sockets
    me = os.getpid()
    found = live_sockets(LiveContext(roots=[]))
    mine = _ours_as_ss(found, {me}, ("tcp", "tcp6", "udp", "udp6"))
    theirs = _ss({me})
    assert mine == theirs
    unix_ss = subprocess.run(
        ["ss", "-H", "-x", "-a", "-p"], capture_output=True, text=True, timeout=30
    ).stdout
    ss_unix = {int(line.split()[5]) for line in unix_ss.splitlines() if f"pid={me}," in line}
    assert {s.inode for s in found if s.protocol == "unix" and me in s.pids} == ss_unix


CHILD = r"""
import socket, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(2)
c = socket.create_connection(l.getsockname()); a, _ = l.accept()
print(l.getsockname()[1], flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_child_in_its_own_network_namespace_is_read_once(monkeypatch):
    child = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {sys.executable} -c '{CHILD}'"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(child.stdout.readline())
        ctx = LiveContext(roots=[])
        reads: list[tuple[int, str]] = []
        original = ctx.procfs.read

        def counting(*parts, **kw):
            if len(parts) == 3 and parts[1] == "net":
                reads.append((int(parts[0]), parts[2]))
            return original(*parts, **kw)

        monkeypatch.setattr(ctx.procfs, "read", counting)
        found = live_sockets(ctx)
        theirs = [s for s in found if child.pid in s.pids]
        assert len(theirs) == 3
        netns = {s.netns for s in theirs}
        assert len(netns) == 1 and netns != {ctx.host_namespaces().get("net")}
        assert {s.details["read_via_pid"] for s in theirs} == {child.pid}
        assert reads.count((child.pid, "tcp")) == 1
        per_netns_tcp = [pid for pid, name in reads if name == "tcp"]
        assert len(per_netns_tcp) == len(set(per_netns_tcp))  # no namespace read twice
        listener = next(s for s in theirs if s.state == "LISTEN")
        assert listener.local_port == port
        if shutil.which("ss") and shutil.which("nsenter"):
            assert _ours_as_ss(theirs, {child.pid}, ("tcp",)) == _ss({child.pid}, child.pid)
    finally:
        child.kill()
        child.wait(10)


def test_a_pid_that_vanishes_between_listing_and_reading(monkeypatch):
    gone = subprocess.Popen(["true"])
    gone.wait()
    ctx = LiveContext(roots=[])
    listed = ctx.procfs.pids
    monkeypatch.setattr(ctx.procfs, "pids", lambda: sorted([*listed(), gone.pid]))
    found = live_sockets(ctx)
    assert any(str(gone.pid) in p.source and "gone" in p.message for p in ctx.problems)
    assert found  # the rest is reported


def _fake_proc(root: Path) -> Path:
    """A hand-made proc tree for hostile input (not a capture): pid 100 in a Docker container's
    cgroup holding a listener; its netns's tcp table has one good and one malformed line."""
    cid = "ab" * 32
    proc = root / "proc"
    pid = proc / "100"
    (pid / "ns").mkdir(parents=True)
    (pid / "fd").mkdir()
    (pid / "net").mkdir()
    os.symlink("net:[4026539999]", pid / "ns" / "net")
    os.symlink("socket:[555]", pid / "fd" / "3")
    os.symlink("/dev/null", pid / "fd" / "0")
    (pid / "cgroup").write_text(f"0::/system.slice/docker-{cid}.scope\n")
    (pid / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 x\n"
        "   1: 0100007F:1F9 not-a-row\n"
    )
    (pid / "net" / "unix").write_text("Num       RefCount Protocol Flags    Type St Inode Path\n")
    return proc


def test_malformed_line_is_a_problem_and_the_rest_is_reported(tmp_path):
    proc = _fake_proc(tmp_path)
    sockets, problems = api.live_net(proc=str(proc), roots=[])
    (sock,) = sockets
    assert (sock.local, sock.local_port, sock.state, sock.fds) == ("127.0.0.1", 8080, "LISTEN", ["100:3"])
    assert sock.container_id == "ab" * 32 and sock.engine == "docker"
    assert "not checked" in sock.details["undeclared-listener"] and not sock.marks
    assert any("line 3" in p.message and p.source.endswith("100/net/tcp") for p in problems)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pensieve.cli",
            "live",
            "net",
            "--proc",
            str(proc),
            "--root",
            str(empty),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 5, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["fds"] == ["100:3"] and "line 3" in res.stderr


# ---- a real engine --------------------------------------------------------------------------

NET_SCRIPT = "nc -ll -p 8080 -e /bin/sh & sleep 1; sleep 100000 | nc 127.0.0.1 8080 & exec sleep 100000"


def _busybox_tar(busybox: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(ti)
        data = Path(busybox).read_bytes()
        ti = tarfile.TarInfo("bin/busybox")
        ti.mode, ti.size = 0o755, len(data)
        tar.addfile(ti, io.BytesIO(data))
        for applet in ("sh", "nc", "sleep", "httpd", "cat"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(ti)
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def docker_net():
    from test_live_dockerd import PrivateDockerd, _prerequisites

    dockerd, busybox = _prerequisites()
    tmp = Path(tempfile.mkdtemp(prefix="pnet.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateDockerd(dockerd, tmp, busybox)
    try:
        d.start()
        d.docker("import", "-c", 'CMD ["/bin/sh"]', "-", "pnet/bb:1", input=_busybox_tar(busybox))
        d.docker("run", "-d", "--name", "c-net", "--network", "none", "pnet/bb:1", "sh", "-c", NET_SCRIPT)
        port = _free_port()
        d.docker(
            "run", "-d", "--name", "c-host", "--network", "host", "pnet/bb:1",
            "httpd", "-f", "-h", "/tmp", "-p", f"127.0.0.1:{port}",
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the client has connected: an ESTAB on 8080
            pid = d.json("inspect", "c-net")[0]["State"]["Pid"]
            ss = subprocess.run(
                ["nsenter", "-t", str(pid), "-n", "ss", "-Htn"], capture_output=True, text=True
            )
            if ss.stdout.count("ESTAB") >= 2:
                break
            time.sleep(0.3)
        yield d, port
    finally:
        problems = d.teardown()
        assert not problems, problems


@pytest.mark.live
def test_docker_containers_sockets(docker_net):
    d, port = docker_net
    net, host = d.json("inspect", "c-net")[0], d.json("inspect", "c-host")[0]
    res = subprocess.run(
        [sys.executable, "-m", "pensieve.cli", "live", "net", "--root", str(d.data_root), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode in (0, 5), res.stderr
    rows = json.loads(res.stdout)
    in_net = [r for r in rows if r["container_id"] == net["Id"]]
    assert in_net and all(r["container_name"] == "c-net" and r["engine"] == "docker" for r in in_net)
    listener = next(r for r in in_net if r["protocol"] in ("tcp", "tcp6") and r["state"] == "LISTEN")
    assert listener["local_port"] == 8080 and "undeclared-listener" in listener["marks"]
    assert listener["details"]["declared_ports"] == []
    established = [r for r in in_net if r["protocol"] in ("tcp", "tcp6") and r["state"] == "ESTABLISHED"]
    assert len(established) == 2 and not any("external-peer" in r["marks"] for r in established)
    served = next(r for r in established if r["local_port"] == 8080)
    shells = [f for f in served["fds"] if Path(f"/proc/{f.split(':')[0]}/comm").read_text().strip() == "sh"]
    assert {f.split(":")[1] for f in shells} >= {"0", "1"}  # a shell whose stdio is the socket
    # the same tuples ss gives inside the container's network namespace
    pids = {p for r in in_net for p in r["pids"]}
    from types import SimpleNamespace

    mine = _ours_as_ss([SimpleNamespace(**r) for r in in_net], pids, ("tcp", "tcp6"))
    assert mine == _ss(pids, net["State"]["Pid"])
    on_host = [r for r in rows if r["container_id"] == host["Id"]]
    web = next(r for r in on_host if r["state"] == "LISTEN")
    assert (web["local"], web["local_port"]) == ("127.0.0.1", port)
    assert {"host-network", "undeclared-listener"} <= set(web["marks"])
    assert not any("host-network" in r["marks"] for r in in_net)
    # --container keeps one container's sockets
    one = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pensieve.cli",
                "live",
                "net",
                "--root",
                str(d.data_root),
                "-c",
                "c-host",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert one and {r["container_id"] for r in one} == {host["Id"]}
