#!/usr/bin/env python3
"""Time ``pensieve live net --json`` with its UNIX socket peers (sock_diag per network namespace)
against what a responder scripts today: ``nsenter -t PID -n ss -xpanH`` for every namespace,
same run, alternating.

The host: N holders, each ``unshare -n`` python in a network namespace of its own with K
socketpairs and a listener with one accepted connection (2K + 3 unix sockets, all connected but
the listener).  Both tools list every unix socket of every namespace with its peer and holders
(``ss -p`` scans every pid's fds once per namespace; pensieve scans them once).  Then the
sock_diag part alone, in process: ``dump_unix`` of each namespace (setns on a thread each).

Usage: sudo python bench/bench_unix_peers.py [-n 50] [-k 5] [-r 5]   # writes bench/results/unix_peers.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

HOLDER = r"""
import socket, sys, time
k = int(sys.argv[1])
keep = [socket.socketpair() for _ in range(k)]
l = socket.socket(socket.AF_UNIX); l.bind("\0pensieve-bench-ux"); l.listen(4)
c = socket.socket(socket.AF_UNIX); c.connect("\0pensieve-bench-ux"); s, _ = l.accept()
print("up", flush=True)
time.sleep(3600)
"""


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - t0, proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50, help="holders (network namespaces)")
    ap.add_argument("-k", type=int, default=5, help="socketpairs per holder")
    ap.add_argument("-r", type=int, default=5, help="timed rounds")
    o = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (unshare -n, nsenter)")
    holders = []
    try:
        for _ in range(o.n):
            p = subprocess.Popen(
                ["unshare", "-n", sys.executable, "-c", HOLDER, str(o.k)], stdout=subprocess.PIPE, text=True
            )
            holders.append(p)
        for p in holders:
            assert p.stdout.readline().strip() == "up"
        pids = [p.pid for p in holders]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        pensieve = [sys.executable, "-m", "pensieve.cli", "live", "net", "--root", "/none", "--json"]
        script = "for p in " + " ".join(map(str, pids)) + "; do nsenter -t $p -n ss -xpanH; done"
        cmds = {"pensieve live net": pensieve, "nsenter ss -xpanH (each)": ["sh", "-c", script]}
        load_before = load()
        times: dict[str, list[float]] = {k: [] for k in cmds}
        last: dict[str, subprocess.CompletedProcess] = {}
        os.environ.update(env)
        for name, cmd in cmds.items():  # warm-up
            _, last[name] = timed(cmd)
        for _ in range(o.r):
            for name, cmd in cmds.items():
                dt, last[name] = timed(cmd)
                assert last[name].returncode in (0, 5), last[name].stderr[-400:]
                times[name].append(dt)
        rows = json.loads(last["pensieve live net"].stdout)
        mine = set(pids)
        ours = [r for r in rows if r["protocol"] == "unix" and set(r["pids"]) & mine]
        peered = sum(1 for r in ours if r["peer_inode"])
        ss_lines = [ln for ln in last["nsenter ss -xpanH (each)"].stdout.splitlines() if ln.strip()]
        from pensieve.live.unixdiag import dump_unix

        diag_times = []
        for _ in range(o.r):
            t0 = time.perf_counter()
            n_diag = sum(
                len(dump_unix(f"/proc/{pid}/ns/net", os.stat(f"/proc/{pid}/ns/net").st_ino)) for pid in pids
            )
            diag_times.append(time.perf_counter() - t0)
        load_after = load()
    finally:
        for p in holders:
            p.kill()
            p.wait(10)
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    pv, sv = times["pensieve live net"], times["nsenter ss -xpanH (each)"]
    out = [
        f"# live net unix peers on {o.n} network namespaces ({2 * o.k + 3} unix sockets each)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; pensieve git {git.stdout.strip()}",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}",
        "",
        "| command | median s | min s | listed |",
        "|---|---:|---:|---|",
        f"| `pensieve live net --json` (every namespace, every table) | {statistics.median(pv):.3f} "
        f"| {min(pv):.3f} | {len(ours)} unix sockets of the holders, {peered} with a peer "
        f"({len(rows)} records in all) |",
        f"| `nsenter -t PID -n ss -xpanH` for each namespace | {statistics.median(sv):.3f} "
        f"| {min(sv):.3f} | {len(ss_lines)} lines |",
        f"| sock_diag dumps alone (`dump_unix` per namespace, in process) "
        f"| {statistics.median(diag_times):.3f} | {min(diag_times):.3f} | {n_diag} sockets |",
        "",
        f"ratio (ss each / pensieve): **{med['nsenter ss -xpanH (each)'] / med['pensieve live net']:.2f}x**",
        "",
        f"- {o.r} timed rounds after one warm-up each, alternating; wall time of `subprocess.run` "
        "(interpreter or shell start-up included).",
        "- pensieve also reads every namespace's tcp/tcp6/udp/udp6/raw/raw6/packet tables and joins every "
        "pid's fds once; `ss -p` rescans every pid's fds for each namespace.",
    ]
    dest = HERE / "results" / "unix_peers.md"
    dest.write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
