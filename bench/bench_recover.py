"""Bench: `pensieve recover` (whole-journal scan + inode table + content) against image size, and
The Sleuth Kit on the same images (`fls -rd` for the deleted entries, then `icat` of each).

Each image is a fresh ext4 filesystem (mkfs.ext4 defaults for its size, so the journal grows with
it: 4 MiB at 64 MiB, 16 MiB at 256 MiB, 32 MiB at 1 GiB) written by the kernel through a loop
mount: small files (4-64 KiB) and a few large ones (8 MiB) filling about a third of it, `sync`,
half of them deleted with rm, `sync`, unmount.  Built in /tmp (or $BENCH_TMP), never committed.

Usage (root: loop mounts):  python bench/bench_recover.py [64 256 1024] [--out bench/results/recover.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=True, capture_output=True, **kw)


def build(size_mb: int, work: Path, seed: int = 7, count: int = 0) -> tuple[Path, dict]:
    """A kernel-made ext4 image of SIZE_MB MiB: files filling a third of it (COUNT files when
    given, every 500th 8 MiB then, else every 50th), every other one deleted."""
    img = work / f"ext4-{size_mb}m.img"
    mnt = work / f"mnt-{size_mb}"
    mnt.mkdir(exist_ok=True)
    with open(img, "wb") as fh:
        fh.truncate(size_mb << 20)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(img))
    loop = sh("losetup", "-f", "--show", str(img), text=True).stdout.strip()
    try:
        sh("blockdev", "--setrw", loop)
        sh("mount", loop, str(mnt))
        rnd = random.Random(seed)
        budget = (size_mb << 20) // 3
        files: list[tuple[Path, str, int]] = []
        n = 0
        every = 500 if count else 50
        while (n < count) if count else budget > 0:
            big = n % every == every - 2  # even: among the deleted half
            size = 8 << 20 if big else rnd.randrange(4096, 65536)
            size = min(size, budget) if not count else size
            d = mnt / f"d{n % 37:02d}"
            d.mkdir(exist_ok=True)
            p = d / f"f{n:06d}.bin"
            data = rnd.randbytes(size)
            p.write_bytes(data)
            files.append((p, hashlib.sha256(data).hexdigest(), size))
            budget -= size
            n += 1
        sh("sync")
        deleted = files[::2]
        for p, _h, _s in deleted:
            p.unlink()
        sh("sync")
        sh("umount", str(mnt))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)
    truth = {"/" + str(p.relative_to(mnt)): (h, s) for p, h, s in deleted}
    return img, {"files": len(files), "deleted": truth}


def pensieve_child(img: str, truth_path: str) -> None:
    """In a fresh process: open the image and recover (timed, no tracer), then check every
    deleted file against its sha256; prints one JSON line (seconds, peak RSS, counts)."""
    import json
    import resource

    from pensieve.disk.recover import recover
    from pensieve.evidence import open_evidence

    truth = json.loads(Path(truth_path).read_text())
    t0 = time.perf_counter()
    ev = open_evidence(img)
    rep = recover(ev)
    ev.close()
    dt = time.perf_counter() - t0
    got = {f.path: f for f in rep.files if f.type == "file"}
    named = sum(1 for p in truth if p in got)
    exact = sum(1 for p, (h, _s) in truth.items() if p in got and got[p].sha256 == h)
    recovered = sum(f.bytes_recovered for p, f in got.items() if p in truth)
    print(json.dumps({
        "seconds": dt,
        "named": named,
        "exact": exact,
        "bytes": recovered,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "journal_mib": rep.journal.get("blocks", 0) * rep.journal.get("block_size", 0) / (1 << 20),
        "journalled_blocks": rep.journal.get("journalled_blocks"),
        "records": len(rep.files),
    }))


def run_pensieve(img: Path, truth_path: Path) -> dict:
    """pensieve_child in a new interpreter: its own timing, and the process's wall time."""
    import json

    t0 = time.perf_counter()
    out = sh(sys.executable, __file__, "--child", str(img), str(truth_path), text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["wall"] = time.perf_counter() - t0
    return res


def floor_ranges(img: Path) -> list[tuple[int, int]]:
    """The aim's floor: (first block, count) runs of the journal area (the journal inode's
    extents) and of every group's block and inode bitmap, from the superblock and the group
    descriptors, merged where they touch."""
    from pensieve.formats.ext4 import Ext4

    fd = os.open(img, os.O_RDONLY)
    try:
        fs = Ext4(lambda off, n: os.pread(fd, n, off))
        jino = fs.inode(fs.sb.journal_inum)
        blocks = [(pb, cnt) for _lb, pb, cnt, _u in fs.mapping(jino)]
        for g in range(fs.groups):
            gd = fs.group_desc(g)
            blocks += [(gd.block_bitmap, 1), (gd.inode_bitmap, 1)]
    finally:
        os.close(fd)
    runs: list[tuple[int, int]] = []
    for b, n in sorted(blocks):
        if runs and runs[-1][0] + runs[-1][1] >= b:
            s0, n0 = runs[-1]
            runs[-1] = (s0, max(n0, b + n - s0))
        else:
            runs.append((b, n))
    return runs


def run_floor(img: Path, runs: list[tuple[int, int]]) -> dict:
    """`dd` of exactly RUNS (4 KiB blocks) to /dev/null, one dd per run in one shell: seconds."""
    script = "; ".join(
        f"dd if={img} of=/dev/null bs=4096 skip={b} count={n} status=none" for b, n in runs
    )
    t0 = time.perf_counter()
    sh("sh", "-c", script)
    return {"seconds": time.perf_counter() - t0, "runs": len(runs), "mib": sum(n for _b, n in runs) / 256}


def run_tsk(img: Path, truth: dict) -> dict:
    t0 = time.perf_counter()
    out = sh("fls", "-rd", str(img), text=True).stdout
    inodes = []
    named = 0
    names = {p.lstrip("/") for p in truth}
    for line in out.splitlines():
        head, _, name = line.partition("\t")
        if not head.startswith(("r/r", "-/r")):
            continue
        ino = head.split()[-1].rstrip(":").split("-")[0]
        inodes.append(ino)
        named += name in names
    got = 0
    exact = 0
    hashes = {h for h, _s in truth.values()}
    for ino in inodes:
        data = subprocess.run(["icat", str(img), ino], capture_output=True).stdout
        got += len(data)
        exact += bool(data) and hashlib.sha256(data).hexdigest() in hashes
    dt = time.perf_counter() - t0
    return {"seconds": dt, "entries": len(inodes), "named": named, "exact": exact, "bytes": got}


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def measure(img: Path, truth_path: Path, reps: int, tsk_reps: int) -> dict:
    """The floor (dd), pensieve and TSK alternately, REPS times (TSK TSK_REPS times), warm."""
    runs = floor_ranges(img)
    sh("sh", "-c", f"cat {img} > /dev/null")  # page-cache the whole image first
    run_floor(img, runs)
    floors, pens, tsks, loads = [], [], [], []
    truth = json.loads(truth_path.read_text())
    for k in range(reps):
        loads.append(os.getloadavg()[0])
        floors.append(run_floor(img, runs))
        pens.append(run_pensieve(img, truth_path))
        if k < tsk_reps and shutil.which("fls"):
            tsks.append(run_tsk(img, truth))
        print(img.name, k, floors[-1], pens[-1], tsks[-1] if tsks else None, file=sys.stderr)
    loads.append(os.getloadavg()[0])
    return {"floor": floors, "pensieve": pens, "tsk": tsks, "load": loads}


def row(size: int, meta: dict, m: dict) -> str:
    n = len(meta["deleted"])
    total = sum(s for _h, s in meta["deleted"].values())
    pt = [r["seconds"] for r in m["pensieve"]]
    ft = [r["seconds"] for r in m["floor"]]
    ratios = [a / b for a, b in zip(pt, ft, strict=True)]
    p = m["pensieve"][pt.index(min(pt))]
    ok = all(r["exact"] == n for r in m["pensieve"])
    tt = [r["seconds"] for r in m["tsk"]]
    t = m["tsk"][0] if m["tsk"] else None
    tsk = f"{_med(tt):.2f} s | {t['named']} / {t['exact']}" if t else "n/a | n/a"
    return (
        f"| {size} MiB | {p['journal_mib']:.0f} MiB | {n} ({total / (1 << 20):.0f} MiB) "
        f"| {_med(pt):.2f} s (min {min(pt):.2f}) | {_med([r['wall'] for r in m['pensieve']]):.2f} s "
        f"| {_med(ft) * 1000:.0f} ms (min {min(ft) * 1000:.0f}, {m['floor'][0]['mib']:.1f} MiB) "
        f"| {_med(ratios):.1f}x (min {min(ratios):.1f}x) "
        f"| {p['named']} / {p['exact']}{'' if ok else ' (NOT every run)'} | {p['bytes']:,} "
        f"| {p['peak_mib']:.0f} MiB | {tsk} "
        f"| {min(m['load']):.1f}-{max(m['load']):.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[64, 256, 1024])
    ap.add_argument("--files", type=int, default=0, help="N files (half deleted)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tsk-reps", type=int, default=1)
    ap.add_argument("--keep", help="keep the images (and truth) in this directory; reuse them if there")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "recover.md"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.child:
        pensieve_child(*o.child)
        return
    if os.geteuid() != 0:
        sys.exit("bench_recover.py: needs root (loop mounts)")
    work = Path(o.keep or tempfile.mkdtemp(prefix="pbr.", dir=os.environ.get("BENCH_TMP", "/tmp")))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in o.sizes:
            tag = f"{size}m-{o.files}"
            img, truth_path = work / f"ext4-{size}m.img", work / f"truth-{tag}.json"
            if not (o.keep and img.exists() and truth_path.exists()):
                img, meta = build(size, work, count=o.files)
                truth_path.write_text(json.dumps(meta["deleted"]))
            meta = {"deleted": json.loads(truth_path.read_text())}
            m = measure(img, truth_path, o.reps, o.tsk_reps)
            rows.append(row(size, meta, m))
            print(rows[-1], file=sys.stderr)
            if not o.keep:
                img.unlink()
    finally:
        if not o.keep:
            shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# recover: jbd2 journal recovery against the journal + bitmap read floor, and The Sleuth Kit",
        "",
        "`python bench/bench_recover.py [SIZES] [--files N]` (root). Each image: fresh ext4 (mkfs",
        "defaults for its size), kernel-written through a loop mount: 4-64 KiB files, a third of the",
        "image (every 50th an 8 MiB one), or with `--files N` N files (every 500th 8 MiB); the 8 MiB",
        "ones are all among the deleted half; `sync`, every other file deleted with rm, `sync`, unmounted.",
        "Then, image page-cached, alternately: the floor (one `dd` per run of the journal inode's",
        "extents and of every group's block and inode bitmap, merged, computed from the superblock and",
        "group descriptors), pensieve (`open_evidence` + `recover()` timed inside a fresh interpreter:",
        "journal scan, inode table, content of every deleted file read and hashed; the process's wall",
        "time beside it), TSK 4.11 (`fls -rd`, then `icat` of every deleted regular file).",
        "named / exact: deleted files found by path / with the sha256 of the bytes written.",
        "",
        "| image | journal | deleted files | pensieve | pensieve process wall | floor (dd) | ratio "
        "| named / exact | bytes back | peak RSS | TSK fls+icat | TSK named / exact | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Machine: shared 2-CPU VM (load average in the last column, 1-minute, over the runs).",
        "TSK's `icat` of a kernel-deleted inode returns nothing (size and extents cleared).",
        "",
    ]
    Path(o.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
