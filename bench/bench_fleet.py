"""Fleet triage speed: the same sources triaged in-process and on a local Dask cluster of 1 and 2
worker processes, alternating, several rounds; wall time, speedup against in-process, efficiency
against ideal, the units' granularity (worker compute time per unit, from the Dask task stream)
and the scheduler overhead per unit (worker-seconds not spent computing, per unit).

Usage: PYTHONPATH=src python3 bench/bench_fleet.py ROOT COPIES WORKDIR [ROUNDS] [OUT]
(ROOT: a Docker data root, e.g. from bench/make_docker_root.sh DIR 47: 50 containers; copied
COPIES times into WORKDIR with cp -a, which keeps whiteout devices and xattrs.)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from distributed import Client, LocalCluster

from pensieve.case.triage import triage
from pensieve.fleet.distributed import MAX_BATCH, UNITS_PER_WORKER, triage_fleet


def _copies(root: Path, copies: int, work: Path) -> list[str]:
    out = []
    for i in range(copies):
        dst = work / f"root{i}"
        if not dst.exists():
            subprocess.run(["cp", "-a", str(root), str(dst)], check=True)
        out.append(str(dst))
    return out


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def in_process(roots: list[str], case: Path) -> tuple[float, int]:
    case.unlink(missing_ok=True)
    t0 = time.perf_counter()
    s = triage(roots, str(case))
    return time.perf_counter() - t0, s.done


def on_cluster(roots: list[str], case: Path, n: int) -> dict:
    """One run on a fresh LocalCluster of N processes (its start-up not timed)."""
    case.unlink(missing_ok=True)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(cluster) as client:
            client.get_task_stream()  # starts recording
            t0 = time.perf_counter()
            triage_fleet(roots, str(case), client)
            wall = time.perf_counter() - t0
            stream = client.get_task_stream()
    finally:
        cluster.close()
    compute = [
        sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute") for t in stream
    ]
    units = len(compute)
    return {
        "wall": wall,
        "units": units,
        "compute": sum(compute),
        "unit_median": statistics.median(compute) if compute else 0.0,
        "unit_mean": sum(compute) / units if units else 0.0,
        "overhead": (n * wall - sum(compute)) / units if units else 0.0,
    }


def main() -> None:
    root, copies, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    out = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    work.mkdir(parents=True, exist_ok=True)
    roots = _copies(root, copies, work)
    base: list[float] = []
    runs: dict[int, list[dict]] = {1: [], 2: []}
    loads = []
    tasks = 0
    for r in range(rounds):
        loads.append(_load())
        wall, tasks = in_process(roots, work / "inproc.duckdb")
        base.append(wall)
        print(f"round {r}: in-process {wall:.2f} s ({tasks} tasks), load {loads[-1]}", flush=True)
        for n in (1, 2):
            got = on_cluster(roots, work / f"w{n}.duckdb", n)
            runs[n].append(got)
            print(f"round {r}: {n} workers {got}", flush=True)
    lines = _report(roots, tasks, base, runs, loads)
    text = "\n".join(lines) + "\n"
    print(text)
    if out is not None:
        out.write_text(text)


def _report(roots, tasks, base, runs, loads) -> list[str]:
    b = statistics.median(base)
    lines = [
        "| run | median wall s | min s | speedup (median) | efficiency | units "
        "| unit compute median / mean s | overhead / unit ms |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
        f"| in-process | {b:.2f} | {min(base):.2f} | 1.00x | - | {tasks} tasks "
        f"| {b / tasks * 1000:.1f} ms/task | - |",
    ]
    for n, got in runs.items():
        wall = statistics.median(g["wall"] for g in got)
        units = got[0]["units"]
        med = statistics.median(g["unit_median"] for g in got)
        mean = statistics.median(g["unit_mean"] for g in got)
        over = statistics.median(g["overhead"] for g in got) * 1000
        lines.append(
            f"| LocalCluster, {n} worker process{'es' if n > 1 else ''} | {wall:.2f} | "
            f"{min(g['wall'] for g in got):.2f} | {b / wall:.2f}x | {b / wall / n:.0%} | {units} | "
            f"{med:.3f} / {mean:.3f} | {over:.1f} |"
        )
    lines += [
        "",
        f"- sources: {len(roots)} copies; rounds: {len(base)}, alternating in-process / 1 / 2 workers",
        f"- load average (1/5/15 min) at the start of each round: {'; '.join(loads)} (2 CPUs, shared)",
        f"- granularity: one unit a source, containers in batches (about {UNITS_PER_WORKER} units a "
        f"worker, at most {MAX_BATCH} containers), one unit a layer",
        "- overhead / unit: (workers x wall - worker compute time) / units: scheduler, transport, "
        "client writes and idle workers, per unit",
    ]
    return lines


if __name__ == "__main__":
    main()
