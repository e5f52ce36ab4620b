#!/usr/bin/env python3
"""`pensieve containers` and `pensieve diff` on a 4 GiB XFS image holding a Docker data root,
against the same commands on the same filesystem loop-mounted read-only (the kernel's xfs), same
run, same machine.  Aim (issue 12): the image within 1.5x of reading through the kernel.

Usage: sudo python bench/bench_xfs.py [--image IMG] [-r 7] [--out bench/results/xfs.md]

Without --image, the image is built once by fixtures/capture/xfs_capture.sh (XFS_SIZE_MB=4096,
XFS_EXTRA=5000: container c-bulk adds 5000 files; raw and sparse) into
/tmp/pensieve-bench-cache/xfs-4g/ and reused.  The mount is ``-o ro,norecovery`` on a read-only
loop device.  Each command runs as a user runs it, the ``pensieve`` console script of the running
interpreter under subprocess.run, timed with time.perf_counter: one untimed warm-up each, then R
timed runs alternating image / mount (page cache warm for both); the JSON of both is compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("PENSIEVE_BENCH_CACHE", "/tmp/pensieve-bench-cache"))
COMMANDS = [("containers",), ("diff", "c-bulk"), ("diff", "c-modified")]


def pensieve_script() -> str:
    cand = Path(sysconfig.get_path("scripts")) / "pensieve"
    found = str(cand) if cand.is_file() else shutil.which("pensieve")
    if not found:
        raise SystemExit("pensieve not installed (pip install -e .)")
    return found


def ensure_image(image: Path | None) -> Path:
    if image is not None:
        return image
    image = CACHE / "xfs-4g" / "xfs.img"
    if not image.is_file():
        print(f"building {image} (xfs_capture.sh) ...", file=sys.stderr)
        env = dict(os.environ, XFS_SIZE_MB="4096", XFS_EXTRA="5000", XFS_KEEP_RAW="1")
        script = HERE.parent / "fixtures" / "capture" / "xfs_capture.sh"
        subprocess.run(["bash", str(script), str(image.parent)], check=True, env=env)
    return image


class Mounted:
    """IMAGE on a read-only loop device, mounted ro,norecovery under a temp dir."""

    def __init__(self, image: Path) -> None:
        self.image = image

    def __enter__(self) -> Path:
        self.dir = Path(tempfile.mkdtemp(prefix="pensieve-bench-xfs."))
        out = subprocess.run(
            ["losetup", "-r", "-f", "--show", str(self.image)], capture_output=True, text=True
        )
        self.dev = out.stdout.strip()
        if out.returncode:
            raise SystemExit(f"losetup: {out.stderr.strip()}")
        subprocess.run(["mount", "-t", "xfs", "-o", "ro,norecovery", self.dev, str(self.dir)], check=True)
        return self.dir

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", str(self.dir)], check=False)
        subprocess.run(["losetup", "-d", self.dev], check=False)
        os.rmdir(self.dir)


def run(script: str, cmd: tuple[str, ...], source: Path) -> tuple[float, bytes]:
    argv = [script, cmd[0], str(source), *cmd[1:], "--json"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, check=False)
    took = time.perf_counter() - start
    if out.returncode not in (0, 5):
        raise SystemExit(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.decode()[-500:]}")
    return took, out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path)
    ap.add_argument("-r", "--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "xfs.md")
    o = ap.parse_args()
    image = ensure_image(o.image)
    script = pensieve_script()
    rows = []
    with Mounted(image) as mnt:
        for cmd in COMMANDS:
            _, on_image = run(script, cmd, image)
            _, on_mount = run(script, cmd, mnt)
            same = on_image == on_mount
            times: dict[str, list[float]] = {"image": [], "mount": []}
            for _ in range(o.repeat):
                times["image"].append(run(script, cmd, image)[0])
                times["mount"].append(run(script, cmd, mnt)[0])
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append((" ".join(cmd), med["image"], med["mount"], med["image"] / med["mount"], same))
            print(f"{' '.join(cmd)}: image {med['image']:.3f} s, mount {med['mount']:.3f} s", file=sys.stderr)
    size = image.stat().st_size
    used = image.stat().st_blocks * 512
    lines = [
        "# XFS image vs the loop-mounted filesystem",
        "",
        f"`bench/bench_xfs.py`, {platform.node() or 'this machine'}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, kernel {platform.release()}.",
        f"Image: {image.name}, {size >> 30} GiB XFS (sparse, {used >> 20} MiB allocated) made by "
        "`fixtures/capture/xfs_capture.sh` (XFS_EXTRA=5000: c-bulk adds 5000 files), the data root "
        "at /docker; the mount is `-o ro,norecovery` on a read-only loop device.",
        f"Median of {o.repeat} runs each, alternating, page cache warm; one warm-up each.",
        "",
        "| command | image (s) | mounted (s) | ratio | same JSON |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    lines += [f"| `{c}` | {a:.3f} | {b:.3f} | {r:.2f}x | {'yes' if s else 'NO'} |" for c, a, b, r, s in rows]
    o.out.parent.mkdir(parents=True, exist_ok=True)
    o.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
