"""``live watch`` on this machine's real /proc: processes the test starts and stops, sockets it
opens and closes, seen as events between two polls; the loop's timing with a fake clock; the CLI
writing JSONL through the output sink."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from pensieve.live.context import LiveContext
from pensieve.live.watch import Watcher, watch


def _ctx() -> LiveContext:
    return LiveContext("/proc", roots=[])  # no engine data: attribution by cgroup alone


def _kinds(events, pid=None):
    return [(e.kind, e.pid) for e in events if pid is None or e.pid == pid]


def test_process_started_and_exited_are_seen_once():
    w = Watcher(_ctx())
    first = w.poll()
    assert any(e.kind == "process-present" and e.pid == os.getpid() for e in first)
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = w.poll()
        assert ("process-started", child.pid) in _kinds(started, child.pid)
        ev = next(e for e in started if e.pid == child.pid)
        assert ev.details["cmdline"] == ["sleep", "30"] and ev.details["ppid"] == os.getpid()
        assert _kinds(w.poll(), child.pid) == []  # nothing new: no event
    finally:
        child.kill()
        child.wait()
    assert _kinds(w.poll(), child.pid) == [("process-exited", child.pid)]


def test_recycled_pid_is_a_new_process():
    w = Watcher(_ctx())
    w.poll()
    # the same pid with another start time is another process: fake it by editing the state
    key = next(k for k in w.procs if k[0] == os.getpid())
    w.procs[(key[0], "0")] = w.procs.pop(key)
    kinds = _kinds(w.poll(), os.getpid())
    assert ("process-exited", os.getpid()) in kinds and ("process-started", os.getpid()) in kinds


def _port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def test_listener_and_connection_lifecycle():
    w = Watcher(_ctx())
    w.poll()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = _port(server)
    try:
        events = w.poll()
        mine = [e for e in events if e.details.get("local_port") == port]
        assert [e.kind for e in mine] == ["listener-appeared"]
        assert mine[0].pid == os.getpid() and mine[0].details["protocol"] == "tcp"
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        events = w.poll()
        opened = [e for e in events if e.kind == "connection-opened" and port in (
            e.details.get("local_port"), e.details.get("remote_port"))]  # fmt: skip
        assert len(opened) == 2  # the client's end and the accepted end
        assert all(e.pid == os.getpid() and e.details["state"] == "ESTABLISHED" for e in opened)
        client.close()
        accepted.close()
        events = w.poll()
        closed = [e for e in events if e.kind == "connection-closed" and port in (
            e.details.get("local_port"), e.details.get("remote_port"))]  # fmt: skip
        assert len(closed) == 2
    finally:
        server.close()
    events = w.poll()
    assert [e.kind for e in events if e.details.get("local_port") == port] == ["listener-closed"]


def test_loop_polls_for_the_duration_with_a_fake_clock():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    batches: list[int] = []
    w = watch(_ctx(), lambda ev: batches.append(len(list(ev))), interval=1.0, duration=3.0,
              sleep=sleep, clock=lambda: now[0])  # fmt: skip
    assert w.polls == 4 and len(batches) == 4  # t = 0, 1, 2, 3
    assert slept and all(0 < s <= 1.0 for s in slept)


def test_cli_writes_jsonl_through_the_sink(tmp_path):
    out = tmp_path / "events.jsonl"
    (tmp_path / "root").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable,
        "-c",
        "import sys; from pensieve.cli import main; sys.exit(main())",
        "live",
        "watch",
        "--root",
        str(tmp_path / "root"),
        "--for",
        "1",
        "--interval",
        "0.5",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode in (0, 5), r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(e["kind"] == "process-present" for e in lines)
    assert all(e["time"].endswith("Z") for e in lines)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "exist" in r.stderr  # never overwritten


def test_unknown_container_is_not_found():
    from pensieve.errors import LookupFailed

    with pytest.raises(LookupFailed):
        _ctx().wanted(["no-such-container"])


def test_tables_are_read_only_when_descriptors_change_or_refresh_is_due():
    """Reading a namespace's tcp table walks the kernel's whole hash: a poll with no descriptor
    change reads no table, a changed one reads it (and the poll after), refresh forces it."""
    w = Watcher(_ctx(), refresh=3600)
    w.poll()
    w.poll()  # settles
    before = w.table_reads
    w.poll()
    w.poll()
    quiet = w.table_reads - before
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        n = w.table_reads
        events = w.poll()
        assert any(e.kind == "listener-appeared" for e in events) and w.table_reads > n
    finally:
        server.close()
    forced = Watcher(_ctx(), refresh=0)
    forced.poll()
    n = forced.table_reads
    forced.poll()
    assert quiet <= 2  # only a namespace whose processes opened or closed a socket meanwhile
    assert forced.table_reads - n == len(forced._namespaces())


def test_unix_connections_name_the_path_they_reach(tmp_path):
    """With unix=True a connection to a bound path (the way a container reaches /run/docker.sock)
    is a connection-opened whose remote is that path and whose peer is the accepted end, then a
    connection-closed; without it no unix socket is an event."""
    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    plain, w = Watcher(_ctx()), Watcher(_ctx(), unix=True)
    plain.poll()
    first = w.poll()
    lino = os.fstat(server.fileno()).st_ino
    assert [e.kind for e in first if e.details.get("inode") == lino] == ["listener-present"]
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    accepted, _ = server.accept()
    try:
        cino, aino = (os.fstat(s.fileno()).st_ino for s in (client, accepted))
        events = {e.details["inode"]: e for e in w.poll() if e.details.get("protocol") == "unix"}
        assert events[cino].kind == "connection-opened" and events[cino].pid == os.getpid()
        assert events[cino].details["remote"] == path and events[cino].details["peer_inode"] == aino
        assert events[aino].details["local"] == path and events[aino].details["peer_inode"] == cino
        assert not [e for e in plain.poll() if e.details.get("protocol") == "unix"]
    finally:
        client.close()
        accepted.close()
    closed = [e for e in w.poll() if e.kind == "connection-closed" and e.details.get("protocol") == "unix"]
    assert {e.details["inode"] for e in closed} == {cino, aino}
    server.close()
