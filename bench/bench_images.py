"""Image open + inventory of a 20 GiB sparse VMDK and VHDX against ``qemu-img convert -O raw``.

The disk: tests/fixtures/disk's 128 MiB image (GPT, a real Docker host root written by dockerd)
grown to 20 GiB of sparse zeros, converted by ``qemu-img`` to a monolithic sparse VMDK and a
dynamic VHDX (both hold only the allocated clusters).  Measured, per format:

* pensieve: ``pensieve containers IMAGE --json`` (a process of its own: image open, volume
  system, filesystem, data root, every container), the median of R runs;
* reference: ``qemu-img convert -O raw IMAGE OUT`` into a sparse file in /var/tmp (deleted
  after), the cheapest way to get the same disk into a form The Sleuth Kit or a mount could read,
  the median of R runs.

The aim is that no full read is needed: pensieve reads the metadata and the clusters it needs,
so its time should not grow with the virtual size.  Writes bench/results/images.md.

    python bench/bench_images.py [-r RUNS] [--size GIB] [--out FILE]
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DISK = ROOT / "tests" / "fixtures" / "disk" / "disk.img.xz"


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=20, help="virtual size in GiB (default 20)")
    ap.add_argument("--out", default=str(HERE / "results" / "images.md"))
    o = ap.parse_args()
    qemu = shutil.which("qemu-img")
    if qemu is None:
        print("needs qemu-img (qemu-utils)", file=sys.stderr)
        return 1
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled once, as an installed pensieve is
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True, env=env)
    pensieve = [sys.executable, "-c", "from pensieve.cli import console; console()"]
    # the same, printing the bytes the process read (rchar: every read(2), the .pyc files too)
    counted = [
        sys.executable,
        "-c",
        "import sys; from pensieve.cli import main; main(sys.argv[1:]); "
        "sys.stderr.write(open('/proc/self/io').read())",
    ]
    rows = []
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="pensieve-bench-img-") as tmp:
        raw = Path(tmp) / "disk.raw"
        with lzma.open(DISK) as src, open(raw, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.truncate(raw, o.size << 30)
        for fmt, opts, name in (("vmdk", [], "disk.vmdk"), ("vhdx", [], "disk.vhdx")):
            img = Path(tmp) / name
            subprocess.run([qemu, "convert", "-f", "raw", "-O", fmt, *opts, str(raw), str(img)], check=True)
            ours, ref = [], []
            for _ in range(o.runs):
                ours.append(timed([*pensieve, "containers", str(img), "--json"], env))
                out = Path(tmp) / "qemu-out.raw"
                ref.append(timed([qemu, "convert", "-O", "raw", str(img), str(out)]))
                out.unlink()
            p, q = statistics.median(ours), statistics.median(ref)
            io_text = subprocess.run(
                [*counted, "containers", str(img), "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stderr
            rchar = int(next(x.split()[1] for x in io_text.splitlines() if x.startswith("rchar:")))
            rows.append((fmt.upper(), img.stat().st_size, p, q, rchar))
            img.unlink()
    lines = [
        f"# image open + inventory, {o.size} GiB sparse disk, {o.runs} runs (medians)",
        "",
        "| format | file size | `pensieve containers --json` | bytes pensieve read (all files) "
        "| `qemu-img convert -O raw` | qemu time / pensieve time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fmt, size, p, q, rchar in rows:
        lines.append(
            f"| {fmt} | {size / 2**20:.1f} MiB | {p:.3f} s | {rchar / 2**20:.1f} MiB of {o.size} GiB "
            f"| {q:.3f} s | {q / p:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    Path(o.out).parent.mkdir(parents=True, exist_ok=True)
    Path(o.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
