#!/usr/bin/env python3
"""Time `pensieve live ps --json` and `pensieve live net --json` on a live host with N running
containers, against what a responder scripts today, same run, same machine:

* `ps -eo pid,ppid,user,args` plus `ss -tanp` (one `sh -c`: every process and every TCP socket of
  the host's own network namespace, no container attribution);
* `docker top C` for every container (one `sh -c` loop over `docker ps -q`: the engine's process
  list per container, through the daemon).

Usage: sudo python bench/live_host.py -n 100          # the live host (left running)
       sudo python bench/bench_live.py [-r 5]         # the timing; writes bench/results/live.md
       sudo python bench/live_host.py --stop
       python bench/bench_live.py --dry-run           # the commands it would run, nothing run

Then the cost of `pensieve live watch` at 1 s intervals over the same host: CPU seconds (user +
system, from wait4's rusage) over wall seconds for `--watch-for` seconds (default 30).

The host is the one bench/live_host.py started (its state file gives the data root and the
daemon's socket): busybox containers with `--network none`, each with a loopback listener and one
established connection in its own network namespace.  pensieve joins the engine records of the
data root (`--root DATA_ROOT`).  Timing is bench_containers.py's run_alternating: one untimed
warm-up each, then R rounds alternating the commands, wall time of `subprocess.run` (interpreter
or shell start-up included) by `time.perf_counter`; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
STATE = Path("/tmp/pensieve-live-host.json")
DOCKER_CLIENT = "/usr/bin/docker"
PS, NET = "pensieve live ps", "pensieve live net"


def commands(pensieve: list[str], data_root: str, docker_host: str) -> dict[str, list[str]]:
    """The timed commands, by name."""
    top_loop = f"for c in $({DOCKER_CLIENT} ps -q); do {DOCKER_CLIENT} top $c; done"
    pids = f"$({DOCKER_CLIENT} ps -q | xargs {DOCKER_CLIENT} inspect -f '{{{{.State.Pid}}}}')"
    ss_loop = f"for p in {pids}; do nsenter -t $p -n ss -tanp; done"
    return {
        PS: [*pensieve, "live", "ps", "--json", "--root", data_root],
        NET: [*pensieve, "live", "net", "--json", "--root", data_root],
        "ps -eo + ss -tanp": ["sh", "-c", "ps -eo pid,ppid,user,args; ss -tanp"],
        "docker top (each)": ["env", f"DOCKER_HOST={docker_host}", "sh", "-c", top_loop],
        "nsenter ss -tanp (each)": ["env", f"DOCKER_HOST={docker_host}", "sh", "-c", ss_loop],
    }


def counts(last: dict[str, subprocess.CompletedProcess]) -> dict[str, str]:
    """What each command listed (processes, sockets, lines), for the report."""
    out: dict[str, str] = {}
    for name, proc in last.items():
        text = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode(errors="replace")
        if name.startswith("pensieve"):
            try:
                items = json.loads(text)
                in_containers = sum(1 for i in items if i.get("container_id"))
                out[name] = f"{len(items)} records, {in_containers} in a container"
            except ValueError:
                out[name] = f"{len(text.splitlines())} lines (not JSON)"
        else:
            out[name] = f"{len(text.splitlines())} lines"
    return out


def watch_cost(pensieve: list[str], data_root: str, seconds: float, interval: float) -> dict:
    """CPU a ``live watch`` uses: run it for SECONDS at INTERVAL, then (user + system CPU seconds of
    the process, from wait4's rusage) / wall seconds; the events it wrote, by kind."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pensieve-watch-") as tmp:
        out = Path(tmp) / "events.jsonl"
        cmd = [*pensieve, "live", "watch", "--root", data_root, "--interval", str(interval),
               "--for", str(seconds), "--out", str(out)]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        kinds: dict[str, int] = {}
        for line in out.read_text().splitlines() if out.exists() else []:
            kind = json.loads(line)["kind"]
            kinds[kind] = kinds.get(kind, 0) + 1
    cpu = usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "interval": interval, "wall": wall, "cpu": cpu, "share": cpu / wall,
            "exit": code, "events": kinds, "rss_kib": usage.ru_maxrss}  # fmt: skip


def report(
    state: dict,
    times: dict[str, list[float]],
    listed: dict[str, str],
    repeats: int,
    out: Path,
    watch: dict | None = None,
) -> str:
    med = {name: statistics.median(t) for name, t in times.items()}
    both = med[PS] + med[NET]
    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"# pensieve live ps / net on a live host with {len(state['ids'])} containers",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; pensieve git {commit or '?'}",
        "- load average when the run ended (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"- host: bench/live_host.py (private dockerd, data root `{state['tmp']}/data`; busybox containers "
        "with `--network none`, each a loopback listener and one established connection in its own netns)",
        "",
        "| command | median s | min s | listed |",
        "|---|---:|---:|---|",
    ]
    for name, t in times.items():
        lines.append(f"| `{name}` | {med[name]:.3f} | {min(t):.3f} | {listed.get(name, '')} |")
    lines += [
        "",
        "| ratio | value |",
        "|---|---:|",
        f"| (ps -eo + ss -tanp) / (pensieve live ps + live net) | {med['ps -eo + ss -tanp'] / both:.2f}x |",
        f"| docker top (each) / pensieve live ps | {med['docker top (each)'] / med[PS]:.2f}x |",
        f"| docker top (each) / (pensieve live ps + live net) | {med['docker top (each)'] / both:.2f}x |",
        f"| nsenter ss -tanp (each) / pensieve live net | {med['nsenter ss -tanp (each)'] / med[NET]:.2f}x |",
        "",
        f"- {repeats} timed runs per command after one warm-up each, alternating (bench_containers.py "
        "run_alternating); wall time of `subprocess.run`.",
        "- `ps -eo + ss -tanp`: one `sh -c` running both; it sees the host's network namespace only "
        "(the containers' sockets are in theirs) and attributes nothing to containers.",
        "- `docker top (each)`: `docker ps -q`, then `docker top C` per container, against the private "
        "daemon's socket.",
        "- `nsenter ss -tanp (each)`: every container's network namespace entered by its pid (from "
        "`docker inspect`) and listed by `ss`: the TCP sockets of each container, as a responder "
        "scripts it; `pensieve live net` lists TCP, UDP, raw, unix and packet sockets of every namespace.",
        "- Most of `live net`'s time is the kernel's: printing one namespace's `tcp` or `tcp6` walks "
        "the whole TCP hash (262,144 buckets here, about 4 ms a table whatever the namespace holds; "
        "`ss` pays the same over netlink), twice for each of the 101 namespaces.",
    ]
    if watch is not None:
        events = ", ".join(f"{k} {n}" for k, n in sorted(watch["events"].items()))
        lines += [
            "",
            f"## live watch: its cost at {watch['interval']:g} s intervals",
            "",
            f"`pensieve live watch --root DATA_ROOT --interval {watch['interval']:g} "
            f"--for {watch['seconds']:g}` over the same {len(state['ids'])} containers: "
            f"{watch['cpu']:.2f} s of CPU (user + system, from wait4) in {watch['wall']:.1f} s of wall "
            f"time, **{100 * watch['share']:.1f}% of one core**, start-up and the first full poll "
            f"included; peak RSS {watch['rss_kib'] / 1024:.0f} MiB; exit {watch['exit']}. "
            f"Events written: {events}.",
        ]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--repeats", type=int, default=5, help="timed runs per command (default 5)")
    ap.add_argument("--state", type=Path, default=STATE, help=f"live_host.py's state file (default {STATE})")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "live.md")
    ap.add_argument(
        "--pensieve", metavar="CMD", help="how to run pensieve (default: the installed console script)"
    )
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--watch-for", type=float, default=30.0, help="seconds of live watch for its CPU cost")
    args = ap.parse_args(argv)
    if args.state.exists():
        state = json.loads(args.state.read_text())
    elif args.dry_run:
        state = {"tmp": "/tmp/plh.XXXXXXXX", "env": {"DOCKER_HOST": "unix:///tmp/plh.XXXXXXXX/docker.sock"}}
    else:
        raise SystemExit(f"{args.state} not found: start the host with bench/live_host.py first")
    from bench_containers import find_script

    pensieve = shlex.split(args.pensieve) if args.pensieve else [find_script("pensieve")]
    cmds = commands(pensieve, f"{state['tmp']}/data", state["env"]["DOCKER_HOST"])
    if args.dry_run:
        for name, cmd in cmds.items():
            print(f"{name}: {shlex.join(cmd)}")
        print(f"then {args.repeats} alternating timed runs each; report to {args.out}")
        return 0
    from bench_containers import run_alternating

    times, last = run_alternating(cmds, args.repeats, {PS: (0, 5), NET: (0, 5)})
    watch = watch_cost(pensieve, f"{state['tmp']}/data", args.watch_for, 1.0) if args.watch_for else None
    print(report(state, times, counts(last), args.repeats, args.out, watch))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
