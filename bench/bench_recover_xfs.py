#!/usr/bin/env python3
"""Deleted files on XFS (issue 12 item 4): what fraction of the kernel-deleted files of the
`xfs_deleted` fixture (fixtures/capture/xfs_deleted_capture.sh: mkfs.xfs on a loop device, files
written, `rm`, sync, umount) comes back, with names and exact content, from pensieve, The Sleuth
Kit (`fls -rd` + `icat`) and xfsprogs (`xfs_logprint -t`, `xfs_db -r`), same run, same machine.

Usage: python bench/bench_recover_xfs.py [--out bench/results/recover_xfs.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

HERE = Path(__file__).resolve().parent
FIX = HERE.parent / "tests" / "fixtures" / "xfs_deleted"


def _run(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t, p


def _tsk(img: Path, deleted: list[dict]) -> tuple[float, int, int, str]:
    if not shutil.which("fls"):
        return 0.0, 0, 0, "fls not installed"
    secs, p = _run(["fls", "-rd", "-p", str(img)])
    named = exact = 0
    for f in deleted:
        if f["path"].lstrip("/") in p.stdout:
            named += 1
            cat = subprocess.run(["icat", str(img), str(f["inode"])], capture_output=True)
            exact += hashlib.sha256(cat.stdout).hexdigest() == f["sha256"]
    return secs, named, exact, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[0]


def _logprint(img: Path, deleted: list[dict]) -> tuple[float, int, str]:
    if not shutil.which("xfs_logprint"):
        return 0.0, 0, "xfs_logprint not installed"
    secs, p = _run(["xfs_logprint", "-t", str(img)])
    names = sum(1 for f in deleted if Path(f["path"]).name in p.stdout)
    return secs, names, f"{len(p.stdout.splitlines())} lines of transactions"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "results" / "recover_xfs.md"))
    args = ap.parse_args()
    truth = json.loads((FIX / "expected" / "truth.json").read_text())["files"]
    deleted = [f for f in truth if f["deleted"]]
    with tempfile.TemporaryDirectory(prefix="pensieve-bench-xfsd-") as tmp:
        img = Path(tmp) / "xfs_deleted.img"
        with open(FIX / "xfs_deleted.img.zst", "rb") as src, open(img, "wb") as out:
            zstandard.ZstdDecompressor().copy_stream(src, out)
        exe = [sys.executable, "-c", "import sys; from pensieve.cli import main; sys.exit(main())"]
        secs, p = _run([*exe, "recover", str(img), "--json"])
        data = json.loads(p.stdout)
        files = data["files"] if isinstance(data, dict) else data
        got = {r["inode"]: r for r in files}
        named = sum(1 for f in deleted if got.get(f["inode"], {}).get("path") == f["path"])
        exact = sum(1 for f in deleted if got.get(f["inode"], {}).get("sha256") == f["sha256"])
        t_secs, t_named, t_exact, t_note = _tsk(img, deleted)
        l_secs, l_names, l_note = _logprint(img, deleted)
    n = len(deleted)
    rows = [
        "| tool | deleted files named | content exact | time | note |",
        "| --- | --- | --- | --- | --- |",
        f"| pensieve `recover` | {named}/{n} | {exact}/{n} | {secs:.2f} s | |",
        f"| TSK `fls -rd` + `icat` | {t_named}/{n} | {t_exact}/{n} | {t_secs:.2f} s | {t_note} |",
        f"| `xfs_logprint -t` | {l_names}/{n} names seen | - | {l_secs:.2f} s | {l_note} |",
    ]
    text = "# Deleted files on XFS (`bench/bench_recover_xfs.py`)\n\n" + "\n".join(rows) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
