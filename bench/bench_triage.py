#!/usr/bin/env python3
"""Compare `pensieve triage` of the breach scenario (data root + disk image of its volume + two
checkpoints) with the sum of the same analyses run as separate commands, same run, same machine.

Usage: python bench/bench_triage.py [-r 3] [--out bench/results/triage.md]

The scenario is the real capture of tests/fixtures/scenario (fixtures/capture/scenario_capture.sh),
unpacked once into /tmp/pensieve-bench-cache/scenario (needs root: whiteouts and xattrs).

"Separate" is what a responder runs without triage, each command its own process: on the data
root and on the disk image `containers`, `images`, `volumes`, `verify`, and per container `diff`
and `logs`; on the disk image also `recover` and `carve`; per checkpoint `mem info`, `mem ps`,
`mem files`, `mem sockets`.  Triage does all of that (and the findings) into a fresh case each
round.  One untimed warm-up each, then R rounds alternating, page cache warm for both.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_containers import compile_pensieve, env_lines, find_script

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "tests" / "fixtures" / "scenario"
CACHE = Path(os.environ.get("PENSIEVE_BENCH_CACHE", "/tmp/pensieve-bench-cache")) / "scenario"


def unpacked() -> dict[str, Path]:
    """The scenario's sources, unpacked once."""
    out = {"root": CACHE / "root", "disk": CACHE / "data-root.img"}
    out |= {n: CACHE / "checkpoints" / n for n in ("before", "after")}
    if all(p.exists() for p in out.values()):
        return out
    if os.geteuid() != 0:
        raise SystemExit("unpacking the scenario needs root (whiteouts, trusted.* xattrs)")
    shutil.rmtree(CACHE, ignore_errors=True)
    for name, tarball in (("root", "data-root.tar.xz"), ("before", "checkpoint-before.tar.xz"),
                          ("after", "checkpoint-after.tar.xz")):  # fmt: skip
        out[name].mkdir(parents=True)
        tar = ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xf", str(SCENARIO / tarball)]
        subprocess.run([*tar, "-C", str(out[name])], check=True)
    with lzma.open(SCENARIO / "data-root.img.xz") as src, open(out["disk"], "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def separate_commands(pensieve: str, src: dict[str, Path]) -> list[list[str]]:
    """Every command the triage replaces, as a responder would run them one by one."""
    cmds: list[list[str]] = []
    for host in (src["root"], src["disk"]):
        h = str(host)
        cmds += [[pensieve, c, h, "--json"] for c in ("containers", "images", "volumes", "verify")]
        listing = subprocess.run([pensieve, "containers", h, "--json"], capture_output=True, text=True)
        for c in json.loads(listing.stdout):
            cmds += [[pensieve, "diff", h, c["id"], "--json"], [pensieve, "logs", h, c["id"], "--json"]]
    cmds += [
        [pensieve, "recover", str(src["disk"]), "--json"],
        [pensieve, "carve", str(src["disk"]), "--json"],
    ]
    for name in ("before", "after"):
        cmds += [[pensieve, "mem", v, str(src[name]), "--json"] for v in ("info", "ps", "files", "sockets")]
    return cmds


def run_all(cmds: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode not in (0, 5):
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "triage.md")
    o = ap.parse_args(argv)
    pensieve = find_script("pensieve")
    src = unpacked()
    compile_pensieve()
    cmds = separate_commands(pensieve, src)
    work = Path(tempfile.mkdtemp(prefix="pensieve-bench-triage."))
    order = [str(src[k]) for k in ("root", "disk", "before", "after")]

    def triage(i: int) -> float:
        return run_all([[pensieve, "triage", "-q", *order, "--case", str(work / f"case-{i}.duckdb")]])

    triage(-1), run_all(cmds)  # warm-up
    t_triage, t_sep = [], []
    for i in range(o.repeats):
        t_triage.append(triage(i))
        t_sep.append(run_all(cmds))
    shutil.rmtree(work)
    med_t, med_s = statistics.median(t_triage), statistics.median(t_sep)
    table = (
        "| what | median s | min s | processes |\n|---|---:|---:|---:|\n"
        f"| `pensieve triage` (4 sources, every analysis and the findings, into a new case) "
        f"| {med_t:.2f} | {min(t_triage):.2f} | 1 |\n"
        f"| the same analyses as separate commands | {med_s:.2f} | {min(t_sep):.2f} | {len(cmds)} |\n"
    )
    notes = [
        f"- triage takes **{med_t / med_s:.2f}x** the time of the separate commands "
        f"({med_s / med_t:.1f}x faster); aim: faster than their sum",
        "- triage also writes every record into DuckDB and runs the case-wide findings, which the "
        "separate commands do not; each file of a diff is read once for its hash, kind and rules",
        f"- {o.repeats} rounds after one warm-up each, alternating; wall time of whole processes",
    ]
    print(table)
    print("\n".join(notes))
    o.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [ln for ln in env_lines(src["root"]) if not ln.startswith("- data root")]
    where = SCENARIO.relative_to(HERE.parent)
    lines.append(f"- sources: the breach scenario ({where}), unpacked in {CACHE}")
    head = "# triage vs the same analyses as separate commands\n\n" + "\n".join(lines)
    o.out.write_text(f"{head}\n\n{table}\n" + "\n".join(notes) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
