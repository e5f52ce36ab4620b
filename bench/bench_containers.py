#!/usr/bin/env python3
"""Compare `pensieve containers ROOT --json` with google/docker-explorer's
`de.py -r ROOT list all_containers` on one real Docker data root, same run, same machine.

Usage: python bench/bench_containers.py [--root ROOT] [-n 300] [-r 10] [--out bench/results/containers.md]

Without --root, a data root with N inventory containers (+3 diff containers) is built once by
bench/make_docker_root.sh into /tmp/pensieve-bench-cache/docker-root-N (needs root and docker.io)
and reused on later runs.

Both tools run as a user would run them: their installed console scripts, found next to the
running interpreter (not through a pyenv shim, whose ~70 ms of bash would be added to both),
each under subprocess.run, timed with time.perf_counter. One untimed warm-up run each, then R
timed runs alternating pensieve / docker-explorer (page cache warm for both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("PENSIEVE_BENCH_CACHE", "/tmp/pensieve-bench-cache"))


# ---------------------------------------------------------------------------- helpers
def find_script(name: str) -> str:
    """The console script NAME of the running interpreter's environment, else the one on PATH."""
    cand = Path(sysconfig.get_path("scripts")) / name
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install -e '.[bench]' (docker-explorer) first")
    return found


def ensure_root(root: Path | None, n: int) -> Path:
    """ROOT if given; else the cached root for N, built by make_docker_root.sh when missing."""
    if root is not None:
        if not (root / "containers").is_dir():
            raise SystemExit(f"{root}: not a Docker data root (no containers/ directory)")
        return root
    root = CACHE / f"docker-root-{n}"
    have = len(list((root / "containers").iterdir())) if (root / "containers").is_dir() else 0
    if have < n + 3:
        print(f"building {root} with {n} containers (make_docker_root.sh) ...", file=sys.stderr)
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", str(HERE / "make_docker_root.sh"), str(root), str(n)], check=True)
    return root


def timed(cmd: Sequence[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def check(name: str, proc: subprocess.CompletedProcess, ok_codes: Sequence[int] = (0,)) -> None:
    if proc.returncode not in ok_codes:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{name} failed: exit {proc.returncode}: {' '.join(proc.args)}")


def leaves(value) -> int:
    """Number of scalar values in a JSON value (an empty list/dict counts as one field)."""
    if isinstance(value, dict):
        return sum(leaves(v) for v in value.values()) or 1
    if isinstance(value, list):
        return sum(leaves(v) for v in value) or 1
    return 1


def field_stats(items: list[dict]) -> tuple[float, float]:
    """(mean top-level keys, mean scalar leaves) per container."""
    if not items:
        return 0.0, 0.0
    return (
        statistics.fmean(len(i) for i in items),
        statistics.fmean(leaves(i) for i in items),
    )


def compile_pensieve() -> None:
    """Byte-compile pensieve as `pip install .` would: an editable install under
    PYTHONDONTWRITEBYTECODE=1 (set on these machines) otherwise re-compiles every module on
    every run, while docker-explorer, installed normally, runs from .pyc."""
    import pensieve

    pkg = Path(pensieve.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], check=True)


def run_alternating(cmds: dict[str, list[str]], repeats: int, ok_codes: dict[str, Sequence[int]]):
    """Warm up once each, then REPEATS rounds alternating the tools; returns times and last outputs."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    last: dict[str, subprocess.CompletedProcess] = {}
    compile_pensieve()
    for name, cmd in cmds.items():  # warm-up (page cache, .pyc)
        _, last[name] = timed(cmd)
        check(name, last[name], ok_codes.get(name, (0,)))
    for _ in range(repeats):
        for name, cmd in cmds.items():
            dt, proc = timed(cmd)
            check(name, proc, ok_codes.get(name, (0,)))
            times[name].append(dt)
            last[name] = proc
    return times, last


def listing_table(rows: list[dict], other: str, n_label: str = "containers") -> str:
    """The markdown table of a listing bench: per size N, pensieve and OTHER (median, min, how
    many listed, fields and scalar values per container) and the ratio OTHER / pensieve."""
    head = (
        f"| {n_label} | tool | median s | min s | listed | fields/container "
        f"| scalar values/container | ratio ({other} median / pensieve median) |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|\n"
    )
    body = ""
    for r in rows:
        ratio = r[other]["median"] / r["pensieve"]["median"]
        for name in ("pensieve", other):
            t = r[name]
            body += (
                f"| {r['n']} | {name} | {t['median']:.3f} | {t['min']:.3f} | {t['count']} "
                f"| {t['fields']:.1f} | {t['values']:.1f} "
                f"| {f'**{ratio:.1f}x**' if name == 'pensieve' else ''} |\n"
            )
    return head + body


def growth_line(rows: list[dict], other: str) -> str:
    """How both tools' median times grew from the smallest to the largest N ("" for one N)."""
    if len(rows) < 2:
        return ""
    a, b = rows[0], rows[-1]
    return (
        f"- growth {a['n']} -> {b['n']} containers ({b['n'] / a['n']:.0f}x): pensieve "
        f"{b['pensieve']['median'] / a['pensieve']['median']:.2f}x, {other} "
        f"{b[other]['median'] / a[other]['median']:.2f}x (median wall time, start-up included)"
    )


def write_report(out: Path, title: str, root: Path, table: str, notes: list[str]) -> None:
    """Print TABLE and NOTES, and write them under TITLE and the machine facts to OUT."""
    print(table)
    print("\n".join(notes))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {title}\n\n" + "\n".join(env_lines(root)) + f"\n\n{table}\n" + "\n".join(notes) + "\n")
    print(f"\nwritten to {out}", file=sys.stderr)


def env_lines(root: Path) -> list[str]:
    def ver(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- pensieve {ver('pensieve')} (git {commit or '?'}), docker-explorer {ver('docker-explorer')}",
        "- load average when the run started (1/5/15 min): "
        + " / ".join(f"{x:.2f}" for x in os.getloadavg())
        + f" on {os.cpu_count()} CPUs (a shared machine; runs alternate so both tools see the same load)",
        f"- data root: `{root}` (overlay2, written by dockerd 20.10, host crash simulated by kill -9)",
    ]


# ---------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="Docker data root (default: build/reuse a cached one)")
    ap.add_argument("-n", type=int, default=300, help="containers in the built root (default 300)")
    ap.add_argument("-r", "--repeats", type=int, default=10, help="timed runs per tool (default 10)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "containers.md")
    args = ap.parse_args(argv)

    root = ensure_root(args.root, args.n)
    pensieve = find_script("pensieve")
    de = find_script("de.py")
    cmds = {
        "pensieve": [pensieve, "containers", str(root), "--json"],
        "docker-explorer": [de, "-r", str(root), "list", "all_containers"],
    }
    # pensieve exits 5 when it finished but some evidence was unreadable: still a full answer
    times, last = run_alternating(cmds, args.repeats, {"pensieve": (0, 5)})

    p_items = json.loads(last["pensieve"].stdout)
    d_items = json.loads(last["docker-explorer"].stdout)  # de.py prints one indented JSON list
    p_ids = {c["id"] for c in p_items}
    d_ids = {c["container_id"] for c in d_items}
    on_disk = sum(1 for e in (root / "containers").iterdir() if (e / "config.v2.json").is_file())

    rows = []
    for name, items in (("pensieve", p_items), ("docker-explorer", d_items)):
        top, leaf = field_stats(items)
        rows.append((name, statistics.median(times[name]), min(times[name]), len(items), top, leaf))
    ratio = rows[1][1] / rows[0][1]

    header = (
        "| tool | median s | min s | containers | fields/container | scalar values/container "
        "| ratio (docker-explorer median / pensieve median) |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    body = ""
    for name, med, mn, count, top, leaf in rows:
        r = f"{ratio:.2f}" if name == "pensieve" else ""
        body += f"| {name} | {med:.3f} | {mn:.3f} | {count} | {top:.1f} | {leaf:.1f} | {r} |\n"
    table = header + body

    same = (
        "yes"
        if p_ids == d_ids
        else (f"NO (only pensieve: {len(p_ids - d_ids)}, only de.py: {len(d_ids - p_ids)})")
    )
    notes = [
        f"- {args.repeats} timed runs per tool after one warm-up each, alternating; "
        "wall time of `subprocess.run` (interpreter start-up included) by `time.perf_counter`.",
        f"- commands: `pensieve containers ROOT --json` and `de.py -r ROOT list all_containers` "
        f"(console scripts `{pensieve}`, `{de}`).",
        f"- containers on disk (containers/*/config.v2.json): {on_disk}; same IDs listed by both: {same}",
        "- fields/container: mean number of top-level keys per container object; scalar values: "
        "mean number of leaf values after flattening nested objects and lists.",
        f"- pensieve exit code {last['pensieve'].returncode}, de.py exit code "
        f"{last['docker-explorer'].returncode}; output sizes {len(last['pensieve'].stdout):,} and "
        f"{len(last['docker-explorer'].stdout):,} bytes.",
    ]
    write_report(args.out, "pensieve containers vs docker-explorer", root, table, notes)
    if p_ids != d_ids or len(p_items) != len(d_items):
        print("MISMATCH: the tools list different containers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
