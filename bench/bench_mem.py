#!/usr/bin/env python3
"""pensieve mem: process and fd listings against CRIU's own `crit x`, memory search against grep.

Checkpoints (same run, warm page cache):

* small: ``tests/fixtures/criu/criu-dumps.tar.gz`` ``after/`` (10 tasks, ~0.7 MiB of pages);
* big: a real ``criu dump`` of ~400 processes with a few hundred MiB of dirty memory, built once
  by ``bench/make_criu_big.sh`` into /tmp (not committed).

Measured, each as a process (start-up included on both sides):

* ``pensieve mem ps DIR --json``  vs  ``crit x DIR ps``;
* ``pensieve mem files DIR --json``  vs  ``crit x DIR fds``;
* ``pensieve mem search DIR -s NEEDLE --json`` (every process's memory rebuilt from pagemaps,
  hits with pid, address, mapping, context)  vs  ``grep -c -a NEEDLE pages-*.img`` over the same
  page files (no addresses, no processes: the floor for "scan this many bytes"); and the same with
  a regex (``-e`` / ``grep -E``).

``pensieve mem`` runs as ``python -m pensieve.commands.mem`` (the module behind ``pensieve mem``).

Usage: sudo python bench/bench_mem.py [--big DIR] [-r RUNS] [--out bench/results/mem.md]
Needs the CRIU environment (fixtures/capture/criu_env.sh; CRIU_ENV) for crit and the big dump.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CRIU_ENV = Path(os.environ.get("CRIU_ENV", "/var/tmp/pensieve-criu"))
CRIT = str(CRIU_ENV / "bin" / "crit")
BIG = Path("/tmp/pensieve-bench-cache/criu-big")
#: per checkpoint: a string and a regex that occur in its memory
NEEDLES = {
    "small": ("SECRET_TOKEN", "SECRET_[A-Z]+=[a-z-]+"),
    "big": ("PENSIEVE-BENCH-NEEDLE", "PENSIEVE-[A-Z]+-NEEDLE"),
}


def timed(cmd: list[str], runs: int, fail_ok: bool = False) -> tuple[float, float, bytes]:
    subprocess.run(cmd, capture_output=True, check=False)  # warm-up
    times, out = [], b""
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
        if p.returncode not in (0, 5) and not fail_ok:
            raise SystemExit(f"{cmd}: exit {p.returncode}: {p.stderr.decode()[-500:]}")
        out = p.stdout
    return statistics.median(times), min(times), out


def pensieve(*args: str) -> list[str]:
    return [sys.executable, "-m", "pensieve.commands.mem", *args]


def pages_bytes(d: Path) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(str(d / "pages-*.img")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big", type=Path, default=BIG)
    ap.add_argument("-r", "--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "mem.md")
    o = ap.parse_args()
    if not Path(CRIT).exists():
        raise SystemExit(f"no crit at {CRIT}: run fixtures/capture/criu_env.sh")
    if not (o.big / "inventory.img").exists():
        subprocess.run(["bash", str(HERE / "make_criu_big.sh"), str(o.big)], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="pensieve-bench-mem-"))
    with tarfile.open(REPO / "tests/fixtures/criu/criu-dumps.tar.gz") as tf:
        tf.extractall(tmp, filter="data")
    env_load = os.getloadavg()
    rows, search_rows = [], []
    for label, d in (("small", tmp / "after"), ("big", o.big)):
        n_procs = len(
            json.loads(subprocess.run(pensieve("ps", str(d), "--json"), capture_output=True).stdout)
        )
        size = pages_bytes(d)
        for view, ref in (("ps", "ps"), ("files", "fds")):
            pm, pmin, pout = timed(pensieve(view, str(d), "--json"), o.runs)
            # crit x fds dies on a zombie (no ids-<pid>.img): its output stops there
            cm, cmin, cout = timed([CRIT, "x", str(d), ref], o.runs, fail_ok=True)
            ours = len(json.loads(pout))
            theirs = len([line for line in cout.decode(errors="replace").splitlines()[1:] if line.strip()])
            rows.append((label, n_procs, size, view, pm, pmin, ours, ref, cm, cmin, theirs))
        files = sorted(glob.glob(str(d / "pages-*.img")))
        needle, regex = NEEDLES[label]
        for kind, p_args, g_args in (
            (f"`{needle}`", ["-s", needle], ["grep", "-c", "-a", needle]),
            (f"`/{regex}/`", ["-e", regex], ["grep", "-c", "-a", "-E", regex]),
        ):
            pm, pmin, pout = timed(pensieve("search", str(d), *p_args, "--jsonl"), o.runs)
            gm, gmin, gout = timed([*g_args, *files], o.runs, fail_ok=True)  # grep: 1 = no match
            hits = len(pout.splitlines())
            lines = sum(int(line.rsplit(":", 1)[-1]) for line in gout.decode().splitlines() if line)
            if len(files) == 1:
                lines = int(gout.decode().strip() or 0)
            search_rows.append((label, size, kind, pm, pmin, hits, gm, gmin, lines))
    mib = 1 << 20
    lines = [
        "# pensieve mem: listings vs crit, memory search vs grep",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- load average at start: {env_load[0]:.2f} / {env_load[1]:.2f} / {env_load[2]:.2f}",
        "- crit: python3-pycriu 4.2.1 (Debian sid, `fixtures/capture/criu_env.sh`); "
        "grep: GNU grep (Debian 12)",
        f"- small: `tests/fixtures/criu` `after/`; big: `{o.big}` (`bench/make_criu_big.sh`: "
        "~400 processes, 4 python3 hogs with 80 MiB of dirty memory each)",
        f"- {o.runs} timed runs per command after one warm-up, warm page cache; every command is a "
        "process (start-up included): `python -m pensieve.commands.mem ...` and `crit x ...`",
        "",
        "## ps / files vs crit x",
        "",
        "| checkpoint | tasks | pages MiB | pensieve | median s | min s | records "
        "| crit x | median s | min s | lines | pensieve / crit |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for label, n, size, view, pm, pmin, ours, ref, cm, cmin, theirs in rows:
        lines.append(
            f"| {label} | {n} | {size / mib:.1f} | mem {view} --json | {pm:.3f} | {pmin:.3f} | {ours} | "
            f"{ref} | {cm:.3f} | {cmin:.3f} | {theirs} | {pm / cm:.2f}x |"
        )
    lines += [
        "",
        "- `mem ps` reads every task's core, creds, mm, fs and its argv and environment from the dumped "
        "stack pages; `crit x ps` prints pid, pgid, sid and comm from pstree and core images.",
        "- `mem files` lists every descriptor plus cwd, root and exe with positions, flags, deleted-file "
        "content and queued pipe data; `crit x fds` prints fd -> name, and on the small checkpoint it "
        "dies at the zombie (`ids-<pid>.img` does not exist for zombies): its time and lines there cover "
        "only the tasks before it.",
        "",
        "## memory search vs grep -c -a over the pages-*.img files",
        "",
        "| checkpoint | pages MiB | pattern | pensieve median s | min s | MiB/s | hits | grep median s "
        "| min s | MiB/s | lines | pensieve / grep |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, size, kind, pm, pmin, hits, gm, gmin, glines in search_rows:
        lines.append(
            f"| {label} | {size / mib:.1f} | {kind} | {pm:.3f} | {pmin:.3f} | {size / mib / pm:.0f} "
            f"| {hits} | {gm:.3f} | {gmin:.3f} | {size / mib / gm:.0f} | {glines} | {pm / gm:.2f}x |"
        )
    lines += [
        "",
        "- pensieve rebuilds each process's memory from its pagemap (present pages, parent chain) and "
        "reports every hit with pid, address, mapping and 32 bytes of context each side (JSON lines); "
        "grep only counts matching lines in the raw page files: no process, no address.",
        "- hits vs lines: grep counts lines with a match, pensieve counts matches; in random data "
        "the two differ only where two needles share a line.",
        "- MiB/s = pages MiB / median wall time, start-up included.",
        "",
    ]
    o.out.parent.mkdir(parents=True, exist_ok=True)
    o.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
