"""Fleet triage speed: the same sources triaged in-process and on a local Dask cluster of 1 and 2
worker processes; wall time, speedup against in-process, efficiency against ideal, and the
scheduler overhead per task (cluster wall time of 1 worker minus in-process, per task).

Usage: PYTHONPATH=src python3 bench/bench_fleet.py ROOT COPIES WORKDIR
(ROOT: a Docker data root, e.g. from bench/make_docker_root.sh; copied COPIES times into WORKDIR.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from distributed import Client, LocalCluster

from pensieve.case.triage import triage
from pensieve.fleet.distributed import triage_fleet


def main() -> None:
    root, copies, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    roots = []
    for i in range(copies):
        dst = work / f"root{i}"
        if not dst.exists():
            subprocess.run(["cp", "-a", str(root), str(dst)], check=True)  # whiteouts are devices
        roots.append(str(dst))
    t0 = time.perf_counter()
    s = triage(roots, str(work / "inproc.duckdb"))
    base = time.perf_counter() - t0
    tasks = s.done
    print(f"in-process: {base:.2f} s, {tasks} tasks, {base / tasks * 1000:.1f} ms/task")
    for n in (1, 2):
        case = work / f"w{n}.duckdb"
        case.unlink(missing_ok=True)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        with Client(cluster) as client:
            t0 = time.perf_counter()
            triage_fleet(roots, str(case), client)
            wall = time.perf_counter() - t0
        cluster.close()
        over = (wall * n - base) / tasks * 1000
        print(
            f"{n} workers: {wall:.2f} s, speedup {base / wall:.2f}x, efficiency {base / wall / n:.0%}, "
            f"overhead {over:.1f} ms/task"
        )


if __name__ == "__main__":
    main()
