#!/usr/bin/env python3
"""Compare `pensieve containers SOURCE --json` with containerd's own listing of the same fields,
`ctr -n k8s.io containers list` + `ctr -n k8s.io containers info ID` for each, same run, same machine.

Usage: sudo python bench/bench_containerd.py [-n 300 ...] [-r 10] [--out bench/results/containerd.md]

For each N a containerd root with N containers in namespace k8s.io is built once by a private
containerd 1.6 (tests/live/private_containerd.py: own config with the CRI plugin off, --root,
--state, sockets, cgroup parent) under /tmp/pensieve-bench-cache/containerd-N and reused: N - 3
containers only created (`ctr containers create`, pod/container labels like the CRI plugin's,
env on 1 in 2) and 3 with a running task.  Each run starts that daemon again on the cached root
(the engine's listing needs it live), re-creates the 3 tasks, times both tools alternately, then
stops it: SIGTERM by its pid file, kills its shims and tasks, unmounts their rootfs.

pensieve reads the evidence (root/ beside state/) while the daemon runs.  ctr's side is one
`sh -c` loop: `containers list` once, then `containers info` per id (ctr has no bulk info); that is
what a responder gets from the engine for image, labels, snapshotter/key, times, runtime and spec.
Timing and the warm-up/alternation are bench_containers.py's (run_alternating).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_containers import (  # noqa: E402
    CACHE,
    HERE,
    field_stats,
    find_script,
    growth_line,
    listing_table,
    run_alternating,
)

sys.path[:0] = [str(HERE.parent / "tests" / "live"), str(HERE.parent / "tests")]
from private_containerd import (  # noqa: E402
    PrivateContainerd,
    capture_module,
    missing_prerequisites,
    static_busybox,
)

NS = "k8s.io"
IMAGE = "docker.io/pensieve/bench-app:1.0"
TASKS = 3


def create_script(d: PrivateContainerd, first: int, last: int) -> str:
    """A shell loop creating containers c-FIRST .. c-(LAST-1) in k8s.io (one ctr process each)."""
    ctr = f"ctr -a {shlex.quote(str(d.sock))} -n {NS}"
    return (
        f"for i in $(seq {first} {last - 1}); do "
        f'env=""; [ $((i % 2)) = 0 ] && env="--env APP_INDEX=$i"; '
        f"{ctr} containers create $env --label io.kubernetes.pod.name=pod-$((i / 3)) "
        "--label io.kubernetes.pod.namespace=bench --label io.kubernetes.container.name=app-$i "
        f"{IMAGE} c-$i sleep 100000 >/dev/null || exit 1; done"
    )


def ensure_root(n: int) -> PrivateContainerd:
    """The private containerd of the cached root for N, started, with N containers (3 running)."""
    d = PrivateContainerd(CACHE / f"containerd-{n}")
    d.tmp.mkdir(parents=True, exist_ok=True)
    d.start()
    if IMAGE not in d.out("images", "ls", "-q", ns=NS).split():
        tar = d.tmp / "image.tar"
        capture_module("containerd_image").main(static_busybox(), str(tar), IMAGE)
        d.out("images", "import", str(tar), ns=NS)
    have = set(d.out("containers", "ls", "-q", ns=NS).split())
    created = [i for i in range(n - TASKS) if f"c-{i}" not in have]
    if created:
        print(f"creating {len(created)} containers in {d.root} ...", file=sys.stderr)
        subprocess.run(["sh", "-c", create_script(d, created[0], n - TASKS)], check=True)
    for k in range(TASKS):  # a task does not survive the power-off of the previous run
        cid = f"task-{k}"
        if cid in have:
            d.ctr("tasks", "rm", "-f", cid, ns=NS, check=False)
            d.out("containers", "rm", cid, ns=NS)
        d.out("run", "-d", *d.run_opts(NS, cid), "--label", "org.pensieve.role=task", IMAGE, cid, "sleep",
              "100000", ns=NS)  # fmt: skip
        d.wait_status(NS, cid, "RUNNING")
    return d


def engine_command(d: PrivateContainerd) -> list[str]:
    ctr = f"ctr -a {shlex.quote(str(d.sock))} -n {NS}"
    return [
        "sh",
        "-c",
        f"{ctr} containers list > /dev/null && "
        f'for id in $({ctr} containers list -q); do {ctr} containers info "$id" || exit 1; done',
    ]


def parse_infos(text: str) -> list[dict]:
    """The concatenated JSON documents `ctr containers info` printed, one per container."""
    dec, out, pos = json.JSONDecoder(), [], 0
    while (pos := _skip_space(text, pos)) < len(text):
        obj, pos = dec.raw_decode(text, pos)
        out.append(obj)
    return out


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def bench_one(n: int, repeats: int) -> dict:
    d = ensure_root(n)
    try:
        pensieve = find_script("pensieve")
        cmds = {"pensieve": [pensieve, "containers", str(d.evidence), "--json"], "ctr": engine_command(d)}
        times, last = run_alternating(cmds, repeats, {"pensieve": (0, 5)})
        p_items = [c for c in json.loads(last["pensieve"].stdout) if c.get("namespace") == NS]
        c_items = parse_infos(last["ctr"].stdout)
    finally:
        problems = d.power_off()
        if problems:
            print("WARNING: " + "; ".join(problems), file=sys.stderr)
    same = {c["id"] for c in p_items} == {c["ID"] for c in c_items}
    row = {"n": n, "same": same, "pensieve_exit": last["pensieve"].returncode}
    for name, items in (("pensieve", p_items), ("ctr", c_items)):
        top, leaf = field_stats(items)
        row[name] = {
            "median": statistics.median(times[name]),
            "min": min(times[name]),
            "count": len(items),
            "fields": top,
            "values": leaf,
            "bytes": len(last[name].stdout),
        }
    return row


def report(rows: list[dict], repeats: int, out: Path) -> str:
    table = listing_table(rows, "ctr", "containers in k8s.io")
    growth = growth_line(rows, "ctr")
    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    ctr_version = subprocess.run(["ctr", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# pensieve containers vs ctr containers list + info, containerd 1.6",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; pensieve git {commit or '?'}; {ctr_version}",
        "- load average when the run ended (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"- roots: `{CACHE}/containerd-N` (a private containerd's --root and --state; N - 3 containers "
        f"created, 3 with a running task, all in `{NS}`); the daemon runs during the timing",
        "",
        table,
        f"- {repeats} timed runs per tool after one warm-up each, alternating; wall time of `subprocess.run` "
        "(interpreter or shell start-up included) by `time.perf_counter`.",
        "- pensieve: `pensieve containers SOURCE --json` (SOURCE = root/ beside state/, every namespace; "
        f"only `{NS}` rows counted). ctr: `sh -c 'ctr -n {NS} containers list; for id in $(ctr ... "
        "containers list -q); do ctr ... containers info $id; done'` against the live daemon's socket.",
        "- same ids listed by both: " + ", ".join(f"{r['n']}: {'yes' if r['same'] else 'NO'}" for r in rows),
        "- pensieve exit codes: " + ", ".join(f"{r['n']}: {r['pensieve_exit']}" for r in rows),
        "- fields/container: top-level keys per container object; scalar values: leaf values after "
        "flattening (ctr's info carries the whole OCI spec, hence more leaves).",
    ]
    if growth:
        lines.append(growth)
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, nargs="+", default=[300], help="containers per root (default 300)")
    ap.add_argument("-r", "--repeats", type=int, default=10, help="timed runs per tool (default 10)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "containerd.md")
    args = ap.parse_args(argv)
    why = missing_prerequisites()
    if why:
        raise SystemExit(why)
    rows = [bench_one(n, args.repeats) for n in sorted(args.n)]
    print(report(rows, args.repeats, args.out))
    print(f"written to {args.out}", file=sys.stderr)
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
