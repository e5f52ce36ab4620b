#!/usr/bin/env python3
"""Time `pensieve report CASE --out DIR` end to end on synthetic cases.

Usage: python bench/bench_report.py [-n 500] [-e 10000] [-r 5] [--out bench/results/report.md]

A case is made with CaseStore.insert (no evidence needed): N containers on one host, each with
its image's layer chain (50 images of 6 layers, sharing 3 base layers), an init and an RW layer,
20 changes and 20 log lines; E events spread over a day, 300 findings of every severity, and
links (a file hash shared by container pairs, an address per container).  The same is built at
twice the size to show how the time grows.  Each report is written into a new directory; R timed
runs after one warm-up; `pensieve --version` is timed as the interpreter start-up floor.
No other tool writes a comparable report, so there is no reference to compare with: the figures
are absolute seconds and the growth ratio.  Target (issue 11): under 5 s for 10,000 events and
500 containers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from pensieve.case.store import CaseStore  # noqa: E402

SEVERITIES = ("critical", "high", "medium", "low", "info")
DAY_NS = 86_400 * 10**9
T0 = 1_790_000_000 * 10**9


def _hex(kind: str, i: int) -> str:
    import hashlib

    return hashlib.sha256(f"{kind}-{i}".encode()).hexdigest()


def make_case(path: Path, containers: int, events: int) -> None:
    """A synthetic case at PATH (see the module docstring)."""
    store = CaseStore(str(path))
    try:
        sid = store.source_id("/nonexistent/bench-host", "host", "bench-host", "bench-host", "bench")
        keys = {"source_id": sid, "host": "bench-host", "engine": "docker"}
        images = [f"sha256:{_hex('image', i)}" for i in range(50)]
        store.insert(
            "images",
            [
                {**keys, "image_id": img, "tags": [f"bench/app{i}:1"], "created": T0 + i}
                for i, img in enumerate(images)
            ],
        )
        chain = {
            img: [_hex("base", k) for k in range(3)] + [_hex(f"img{i}", k) for k in range(3)]
            for i, img in enumerate(images)
        }
        layer_rows = []
        for img, layers in chain.items():
            layer_rows += [
                {
                    **keys,
                    "owner": "image",
                    "image_id": img,
                    "layer_id": lid,
                    "position": p,
                    "role": "image",
                    "diff_id": "sha256:" + lid,
                    "size": 1000 * p,
                }
                for p, lid in enumerate(layers)
            ]
        cids = [_hex("container", i) for i in range(containers)]
        rows = []
        for i, cid in enumerate(cids):
            img = images[i % len(images)]
            rows.append(
                {
                    **keys,
                    "container_id": cid,
                    "image_id": img,
                    "name": f"web-{i}",
                    "image": f"bench/app{i % 50}:1",
                    "state": ("running", "exited", "created", "paused")[i % 4],
                    "created": T0 + i * 10**9,
                    "started": T0 + i * 10**9 + 5,
                    "command": ["/bin/sh", "-c", f"serve {i}"],
                    "privileged": i % 50 == 0,
                    "risks": ["privileged"] if i % 50 == 0 else [],
                    "networks": {"bridge": {"ip": f"172.17.{i // 250}.{i % 250 + 2}"}},
                }
            )
            layers = chain[img] + [_hex("init", i), _hex("rw", i)]
            layer_rows += [
                {
                    **keys,
                    "owner": "container",
                    "container_id": cid,
                    "image_id": img,
                    "layer_id": lid,
                    "position": p,
                    "role": "image" if p < 6 else ("init" if p == 6 else "rw"),
                }
                for p, lid in enumerate(layers)
            ]
        store.insert("containers", rows)
        store.insert("layers", layer_rows)
        store.insert(
            "changes",
            [
                {
                    **keys,
                    "container_id": cid,
                    "change": ("added", "modified", "deleted")[k % 3],
                    "path": f"/srv/app/file-{k}.txt",
                    "type": "file",
                    "size": k * 10,
                    "mtime": T0 + k,
                    "sha256": _hex("file", (i * 20 + k) % 700),
                }
                for i, cid in enumerate(cids)
                for k in range(20)
            ],
        )
        store.insert(
            "logs",
            [
                {
                    **keys,
                    "container_id": cid,
                    "time": T0 + i * 10**9 + k,
                    "stream": "stdout",
                    "message": f"GET /index.html 200 request {k}",
                }
                for i, cid in enumerate(cids)
                for k in range(20)
            ],
        )
        kinds = ("lifecycle", "file-mtime", "log", "build", "image")
        store.insert(
            "events",
            [
                {
                    **keys,
                    "container_id": cids[e % containers],
                    "time": T0 + e * DAY_NS // events,
                    "kind": kinds[e % len(kinds)],
                    "timestamp_desc": "synthetic",
                    "message": f"event {e} of web-{e % containers}",
                    "path": f"/srv/app/file-{e % 20}.txt",
                }
                for e in range(events)
            ],
        )
        store.insert(
            "findings",
            [
                {
                    **keys,
                    "container_id": cids[(f * 7) % containers],
                    "finding_id": f"F{f}",
                    "producer": "bench",
                    "severity": SEVERITIES[f % 5],
                    "title": f"finding {f}",
                    "rationale": "synthetic",
                    "evidence": [{"table": "changes", "n": f}],
                    "time": T0 + f * 10**9,
                }
                for f in range(300)
            ],
        )
        store.insert(
            "links",
            [
                {
                    **keys,
                    "kind": "sha256",
                    "value": _hex("file", k),
                    "a_table": "changes",
                    "a": {"container_id": cids[k % containers]},
                    "b_table": "changes",
                    "b": {"container_id": cids[(k * 13 + 1) % containers]},
                }
                for k in range(700)
            ],
        )
    finally:
        store.close()


def pensieve(*args: str) -> list[str]:
    return [sys.executable, "-c", "from pensieve.cli import console; console()", *args]


def timed(cmd: Sequence[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"failed: exit {proc.returncode}: {' '.join(cmd)}")
    return took


def view_times(report: Path) -> list[str]:
    """Seconds until the timeline is drawn and the graph laid out, in headless chromium (skipped
    without Playwright or chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return ["- view time: not measured (no Playwright)"]
    chromium = shutil.which("chromium")
    if chromium is None:
        return ["- view time: not measured (no chromium)"]
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        for name, ready in (
            ("timeline.html", "#tl-list tbody tr"),
            ("graph.html", "body[data-graph-ready='1']"),
        ):
            t0 = time.perf_counter()
            page.goto((report / name).as_uri())
            page.wait_for_selector(ready, timeout=120_000)
            out.append(f"{name} {time.perf_counter() - t0:.2f} s")
        browser.close()
    return [
        "- view time in headless chromium (software rendering), first case: "
        + ", ".join(out)
        + " (the graph: its force layout of every node, 300 iterations)"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=500, help="containers (default 500)")
    ap.add_argument("-e", type=int, default=10_000, help="events (default 10,000)")
    ap.add_argument("-r", "--repeats", type=int, default=5, help="timed runs per case (default 5)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "report.md")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pensieve-bench-report-"))
    try:
        sizes = [(args.n, args.e), (2 * args.n, 2 * args.e)]
        cases = {}
        for n, e in sizes:
            cases[(n, e)] = work / f"case-{n}-{e}.duckdb"
            t0 = time.perf_counter()
            make_case(cases[(n, e)], n, e)
            print(
                f"case {n} containers / {e} events made in {time.perf_counter() - t0:.1f} s", file=sys.stderr
            )
        times: dict[tuple[int, int], list[float]] = {s: [] for s in sizes}
        floor: list[float] = []
        for rnd in range(args.repeats + 1):  # round 0 is the warm-up
            for s in sizes:
                took = timed(pensieve("report", str(cases[s]), "--out", str(work / f"rep-{s[0]}-{rnd}")))
                if rnd:
                    times[s].append(took)
                shutil.rmtree(work / f"rep-{s[0]}-{rnd}")
            took = timed(pensieve("--version"))
            if rnd:
                floor.append(took)
        files = {s: 0 for s in sizes}
        for s in sizes:
            timed(pensieve("report", str(cases[s]), "--out", str(work / f"count-{s[0]}")))
            files[s] = sum(1 for _ in (work / f"count-{s[0]}").rglob("*.html"))
        table = [
            "| containers | events | findings | links | pages | median s | min s | target |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for n, e in sizes:
            t = times[(n, e)]
            target = (
                ("< 5 s: " + ("met" if statistics.median(t) < 5 else "NOT met")) if (n, e) == sizes[0] else ""
            )
            table.append(
                f"| {n} | {e} | 300 | 700 | {files[(n, e)]} | {statistics.median(t):.2f} | {min(t):.2f} "
                f"| {target} |"
            )
        table.append(
            f"| (`pensieve --version`) | | | | | {statistics.median(floor):.2f} | {min(floor):.2f} | |"
        )
        ratio = statistics.median(times[sizes[1]]) / statistics.median(times[sizes[0]])
        notes = [
            "",
            f"- {args.repeats} timed runs per case after one warm-up, rounds alternating over the cases; "
            "wall time of `subprocess.run` (the whole CLI: start-up, reading the case, rendering, writing "
            "through the sink with sha256 and manifest).",
            f"- twice the containers and events: {ratio:.2f}x the time (linear would be 2x).",
            "- no reference tool: nothing else renders a pensieve case, so these are absolute figures.",
            *view_times(work / f"count-{sizes[0][0]}"),
        ]
        lines = [
            "# pensieve report: time to write the HTML report of a case",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}",
            "- load average when the run started (1/5/15 min): "
            + " / ".join(f"{x:.2f}" for x in os.getloadavg())
            + " (a shared machine)",
            "- cases: synthetic (bench/bench_report.py make_case), one host, 50 images of 6 layers, "
            "20 changes and 20 log lines per container",
            "",
            *table,
            *notes,
        ]
        print("\n".join(lines))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"\nwritten to {args.out}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
