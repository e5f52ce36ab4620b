#!/usr/bin/env python3
"""A live host with N running containers for the `pensieve live` benchmarks (bench_live.py).

Usage: sudo python bench/live_host.py [-n 100]      start it, print its paths, leave it running
       sudo python bench/live_host.py --check       count each container's established connections
       sudo python bench/live_host.py --stop        stop it: only what this script started

Start: a private dockerd (tests/live/test_live_dockerd.py's PrivateDockerd: every path -- data root,
exec root, pid file, socket, daemon.json, cgroup parent -- in a fresh temp dir; `--bridge=none
--iptables=false`, so no bridge network and no firewall rule), a busybox-static rootfs imported as
`pensieve-live/busybox:1`, then N containers run with `--network none` (each in its own network
namespace with only `lo`), each holding one established loopback TCP connection:

    nc -ll -p 9000 -e cat &                  a persistent listener (busybox nc: -ll keeps
                                             listening, -e runs cat on each connection)
    sleep 1000000 | nc 127.0.0.1 9000 &      a client connected to it, idle (stdin never ends)
    exec sleep 1000000                       the container's pid 1

so each network namespace shows one LISTEN socket and two ESTABLISHED ones (both ends).  The
containers start 4 at a time; the script then waits until every one shows its connection,
counted from the host with `nsenter -t PID -n ss -tan state established` (PID: `docker inspect`'s
State.Pid).  The paths go to stdout (DATA_ROOT=..., EXEC_ROOT=..., DOCKER_HOST=...) and to the
state file (default /tmp/pensieve-live-host.json) that --check, --stop and bench_live.py read.

Stop: `docker kill` of the containers it ran, SIGTERM to its dockerd (by the pid file), then
PrivateDockerd's teardown: only processes whose command line names the temp dir or that sit in
its private cgroup parent are signalled, its mounts unmounted, its cgroups removed, the temp dir
deleted.  Needs root, docker.io (dockerd, containerd, runc), busybox-static, nsenter and ss.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "live"), str(HERE.parent / "tests")]
sys.path.append(str(HERE.parent / "src"))  # test_live_dockerd imports pensieve
import test_live_dockerd as live  # noqa: E402

STATE = Path("/tmp/pensieve-live-host.json")
IMAGE = "pensieve-live/busybox:1"
PORT = 9000
SCRIPT = (
    f"nc -ll -p {PORT} -e cat & sleep 1; sleep 1000000 | nc 127.0.0.1 {PORT} >/dev/null & exec sleep 1000000"
)
JOBS = 4


def _daemon(state: dict) -> live.PrivateDockerd:
    """The PrivateDockerd a state file describes (its process not ours: found by pid file)."""
    d = live.PrivateDockerd(state["dockerd"], Path(state["tmp"]), state["busybox"])
    d.env = dict(state["env"])
    return d


def _run(d: live.PrivateDockerd, i: int) -> str:
    name = f"plh-{i:04d}"
    res = d.docker("run", "-d", "--network", "none", "--name", name, "--ulimit", "nofile=1024:1024", IMAGE,
                   "sh", "-c", SCRIPT)  # fmt: skip
    return res.stdout.decode().strip()


def established(pid: int) -> int:
    """ESTABLISHED TCP sockets in the network namespace of PID (from the host, via nsenter)."""
    res = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ss", "-Htan", "state", "established"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return len([line for line in res.stdout.splitlines() if line.strip()]) if res.returncode == 0 else -1


def container_pids(d: live.PrivateDockerd, ids: Sequence[str]) -> dict[str, int]:
    """Container id -> its pid 1 on the host (docker inspect State.Pid)."""
    if not ids:
        return {}
    out = d.out("inspect", "--format", "{{.Id}} {{.State.Pid}}", *ids)
    return {cid: int(pid) for cid, pid in (line.split() for line in out.splitlines() if line.strip())}


def check(d: live.PrivateDockerd, ids: Sequence[str], timeout: float = 60) -> dict[str, int]:
    """Container id -> its established connections, waiting up to TIMEOUT for each to have 2."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while True:
        pids = container_pids(d, ids)
        counts = {cid: established(pid) for cid, pid in pids.items()}
        if all(n >= 2 for n in counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(1)


def start(n: int, state_path: Path) -> int:
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    if state_path.exists():
        raise SystemExit(f"{state_path} exists: a live host runs already (--stop it first)")
    for tool in ("nsenter", "ss"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    try:
        dockerd, busybox = live._prerequisites()
    except BaseException as exc:  # pytest.skip raises an OutcomeException
        raise SystemExit(f"prerequisites missing: {exc}") from None
    tmp = Path(tempfile.mkdtemp(prefix="plh.", dir="/tmp"))
    tmp.chmod(0o755)
    d = live.PrivateDockerd(dockerd, tmp, busybox)
    d.start()
    state = {"tmp": str(tmp), "dockerd": dockerd, "busybox": busybox, "env": d.env, "n": n, "ids": []}
    state_path.write_text(json.dumps(state, indent=1))
    try:
        live.APPLETS = (*live.APPLETS, "nc")  # the rootfs of test_live_dockerd, with nc
        d.docker("import", "-c", 'CMD ["/bin/sh"]', "-", IMAGE, input=live._rootfs_tar(busybox))
        started = time.monotonic()
        with ThreadPoolExecutor(JOBS) as pool:
            ids = list(pool.map(lambda i: _run(d, i), range(n)))
        state["ids"] = ids
        state_path.write_text(json.dumps(state, indent=1))
        counts = check(d, ids)
    except BaseException:  # a failed docker call (pytest.fail) or ^C: stop what was started
        print(d.log_tail(20), file=sys.stderr)
        state["ids"] = [line for line in d.out("ps", "-aq", "--no-trunc").split()]
        state_path.write_text(json.dumps(state, indent=1))
        stop(state_path)
        raise
    ok = sum(1 for c in counts.values() if c >= 2)
    print(f"DATA_ROOT={d.data_root}")
    print(f"EXEC_ROOT={d.exec_root}")
    print(f"DOCKER_HOST=unix://{d.sock}")
    print(f"CGROUP_PARENT=/{d.cgroup_parent}")
    print(f"STATE={state_path}")
    print(
        f"{len(ids)} containers running in {time.monotonic() - started:.0f}s; {ok} with an established "
        "loopback connection (2 ESTABLISHED sockets in their netns)",
        file=sys.stderr,
    )
    return 0 if ok == n else 1


def do_check(state_path: Path) -> int:
    state = json.loads(state_path.read_text())
    d = _daemon(state)
    counts = check(d, state["ids"], timeout=0)
    ok = sum(1 for c in counts.values() if c >= 2)
    print(f"{ok}/{len(state['ids'])} containers with an established loopback connection")
    bad = {cid[:12]: c for cid, c in counts.items() if c < 2}
    if bad:
        print(f"without: {bad}")
    return 0 if ok == len(state["ids"]) else 1


def stop(state_path: Path) -> int:
    state = json.loads(state_path.read_text())
    d = _daemon(state)
    if state["ids"]:
        d.docker("kill", *state["ids"], check=False, timeout=300)
    pidfile = d.tmp / "dockerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        pid, cmdline = None, b""
    if pid is not None and str(d.tmp).encode() in cmdline:  # our dockerd, not a reused pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    problems = d.teardown()
    state_path.unlink()
    for p in problems:
        print(f"WARNING: {p}", file=sys.stderr)
    print(f"stopped; {d.tmp} removed" if not problems else "stopped with problems", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100, help="containers to run (default 100)")
    ap.add_argument("--state", type=Path, default=STATE, help=f"state file (default {STATE})")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--stop", action="store_true", help="stop the live host the state file describes")
    g.add_argument("--check", action="store_true", help="count the containers' established connections")
    args = ap.parse_args(argv)
    if args.stop:
        return stop(args.state)
    if args.check:
        return do_check(args.state)
    return start(args.n, args.state)


if __name__ == "__main__":
    sys.exit(main())
