#!/usr/bin/env python3
"""pensieve carve: throughput and recall against foremost on the same ext4 image, same run.

Builds (once, cached in /tmp) a 512 MiB raw ext4 image through the kernel (loop mount, writes,
sync, rm, sync, umount):

* allocated, kept: real system files -- ELF binaries from /usr/bin, gzip changelogs from
  /usr/share/doc, python modules -- about 200 MiB;
* planted and deleted: generated files of every carvable type, 20 of each, sizes from a few
  hundred bytes to ~1 MiB (ELF copies of /usr/bin binaries, shell and python scripts, gzip, zip,
  jar, tar, PDF, JPEG (cjpeg), PNG, SQLite, docker json-file logs, syslog-style logs); their sha256
  is the ground truth;
* deleted noise: 64 MiB of random bytes and 8 MiB of prose.

Then, with a warm page cache, alternating, RUNS times each (median wall time):

* ``foremost -Q -t all -i IMG -o DIR`` (Debian's foremost 1.5.7; whole image, every byte offset);
* ``pensieve carve IMG --all --out DIR --jsonl`` (whole image: the same bytes as foremost);
* ``pensieve carve IMG --out DIR --jsonl`` (the default: unallocated space only).

Recall: the share of planted deleted files whose exact sha256 is among a tool's output files,
overall and over the types foremost knows (jpg, png, pdf, zip).  "Unmatched" outputs are files
that are no planted file (embedded pieces, allocated files, fragments or noise).

Usage: sudo python bench/bench_carve.py [-r RUNS] [--out bench/results/carve.md] [--rebuild]
Needs root, e2fsprogs, foremost, libjpeg-turbo-progs (cjpeg).  Not part of the tests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path("/tmp/pensieve-bench-cache/carve")
IMG = CACHE / "carve-bench.img"
TRUTH = CACHE / "truth.json"
SIZE = 512 << 20
PER_TYPE = 20
FOREMOST_TYPES = {"jpeg", "png", "pdf", "zip"}


# ---- planted files ------------------------------------------------------------------------------


def _words(rnd: random.Random, n: int) -> str:
    vocab = [
        "container", "layer", "overlay", "runtime", "daemon", "socket", "volume", "secret", "token",
        "beacon", "cron", "payload", "miner", "kubelet", "namespace", "cgroup", "seccomp", "capability",
    ]  # fmt: skip
    return " ".join(rnd.choice(vocab) for _ in range(n))


def _png(rnd: random.Random, w: int, h: int) -> bytes:
    rows = b"".join(
        b"\0" + bytes((x * 3 + y + rnd.randrange(32)) % 256 for x in range(w * 3)) for y in range(h)
    )

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _jpeg(rnd: random.Random, w: int, h: int, progressive: bool) -> bytes:
    px = bytes(rnd.randrange(256) if (i // 3) % 7 == 0 else (i * 13 // w) % 256 for i in range(w * h * 3))
    args = ["cjpeg", "-quality", "80"] + (["-progressive"] if progressive else [])
    return subprocess.run(
        args, input=b"P6\n%d %d\n255\n" % (w, h) + px, capture_output=True, check=True
    ).stdout


def _pdf(rnd: random.Random, pages: int) -> bytes:
    """Objects: 1 catalog, 2 pages, 3 font, then per page a content stream and the page."""
    kids = [5 + 2 * k for k in range(pages)]
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>",
    ]
    for k in range(pages):
        text = "BT /F1 11 Tf 60 760 Td 14 TL " + " ".join(f"({_words(rnd, 9)}) '" for _ in range(40)) + " ET"
        stream = zlib.compress(text.encode())
        objs.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"
        )
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % (4 + 2 * k)
        )
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _sqlite(rnd: random.Random, rows: int, tmp: Path) -> bytes:
    path = tmp / f"db{rnd.randrange(1 << 30)}.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT, v TEXT)")
    con.executemany(
        "INSERT INTO t (ts, v) VALUES (?, ?)",
        [(f"2024-06-{i % 28 + 1:02d}", _words(rnd, 10)) for i in range(rows)],
    )
    con.commit()
    con.close()
    data = path.read_bytes()
    path.unlink()
    return data


def planted_files(tmp: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (type, content): PER_TYPE of every type, deterministic."""
    rnd = random.Random(4242)
    bins = sorted(
        p
        for p in Path("/usr/bin").iterdir()
        if p.is_file()
        and not p.is_symlink()
        and p.read_bytes()[:4] == b"\x7fELF"
        and 8 << 10 < p.stat().st_size < 2 << 20
    )
    out: dict[str, tuple[str, bytes]] = {}
    for i in range(PER_TYPE):
        n = 1 + i * 3
        text = "\n".join(_words(rnd, 12) for _ in range(40 * n)).encode() + b"\n"
        out[f"elf{i}"] = ("elf", bins[(i * 37) % len(bins)].read_bytes())
        out[f"s{i}.sh"] = (
            "script",
            b"#!/bin/bash\nset -eu\n"
            + b"".join(
                b"curl -s http://127.0.0.1:%d/%s | sh\n" % (8000 + k, _words(rnd, 1).encode())
                for k in range(10 * n)
            ),
        )
        out[f"p{i}.py"] = (
            "script",
            b"#!/usr/bin/env python3\nimport os\n\n"
            + b"".join(b"V%d = %r\n" % (k, _words(rnd, 6)) for k in range(10 * n)),
        )
        out[f"t{i}.gz"] = ("gzip", gzip.compress(text, mtime=1718000000 + i))
        zb = io.BytesIO()
        with zipfile.ZipFile(zb, "w", zipfile.ZIP_DEFLATED) as z:
            for k in range(3):
                z.writestr(
                    zipfile.ZipInfo(f"d/f{k}.txt", (2024, 6, 1, 0, 0, 0)), text[k::3], zipfile.ZIP_DEFLATED
                )
        out[f"z{i}.zip"] = ("zip", zb.getvalue())
        jb = io.BytesIO()
        with zipfile.ZipFile(jb, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(
                zipfile.ZipInfo("META-INF/MANIFEST.MF", (2024, 6, 1, 0, 0, 0)),
                b"Manifest-Version: 1.0\r\n\r\n",
            )
            z.writestr(zipfile.ZipInfo("a/B.class", (2024, 6, 1, 0, 0, 0)), b"\xca\xfe\xba\xbe" + text)
        out[f"j{i}.jar"] = ("zip", jb.getvalue())
        tb = io.BytesIO()
        with tarfile.open(fileobj=tb, mode="w", format=tarfile.USTAR_FORMAT) as t:
            for k in range(3):
                ti = tarfile.TarInfo(f"etc/f{k}")
                ti.size, ti.mtime = len(text) // 3, 1718000000
                t.addfile(ti, io.BytesIO(text[: len(text) // 3]))
        out[f"a{i}.tar"] = ("tar", tb.getvalue())
        out[f"d{i}.pdf"] = ("pdf", _pdf(rnd, 1 + i // 2))
        out[f"i{i}.jpg"] = ("jpeg", _jpeg(rnd, 64 + 24 * i, 48 + 16 * i, progressive=i % 3 == 0))
        out[f"i{i}.png"] = ("png", _png(rnd, 32 + 16 * i, 24 + 12 * i))
        out[f"b{i}.db"] = ("sqlite", _sqlite(rnd, 50 * n, tmp))
        out[f"c{i}-json.log"] = (
            "json",
            b"".join(
                json.dumps(
                    {
                        "log": _words(rnd, 6) + "\n",
                        "stream": "stdout",
                        "time": f"2024-06-11T10:{k // 60 % 60:02d}:{k % 60:02d}.{rnd.randrange(10**9):09d}Z",
                    }
                ).encode()
                + b"\n"
                for k in range(20 * n)
            ),
        )
        out[f"l{i}.log"] = (
            "log",
            b"".join(
                f"Jun 11 10:{k // 60 % 60:02d}:{k % 60:02d} node{i} kubelet[77]: {_words(rnd, 8)}\n".encode()
                for k in range(20 * n)
            ),
        )
    return out


# ---- the image ----------------------------------------------------------------------------------


def build(rebuild: bool) -> dict:
    if IMG.exists() and TRUTH.exists() and not rebuild:
        return json.loads(TRUTH.read_text())
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pcb.", dir="/tmp"))
    mnt = work / "mnt"
    mnt.mkdir()
    try:
        if IMG.exists():
            IMG.unlink()
        with open(IMG, "wb") as fh:
            fh.truncate(SIZE)
        subprocess.run(["mkfs.ext4", "-F", "-q", "-E", "nodiscard", str(IMG)], check=True)
        subprocess.run(["mount", "-o", "loop", str(IMG), str(mnt)], check=True)
        try:
            rnd = random.Random(99)
            keep = mnt / "kept"
            keep.mkdir()
            total = 0
            for p in sorted(Path("/usr/bin").iterdir()):
                if p.is_file() and not p.is_symlink() and total < 120 << 20:
                    shutil.copyfile(p, keep / ("bin-" + p.name))
                    total += p.stat().st_size
            for p in sorted(Path("/usr/share/doc").glob("*/changelog*.gz"))[:600]:
                shutil.copyfile(p, keep / ("doc-" + p.parent.name + "-" + p.name))
            pylib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
            for p in sorted(pylib.glob("*.py"))[:200]:
                shutil.copyfile(p, keep / ("py-" + p.name))
            dele = mnt / "scratch"
            dele.mkdir()
            truth = []
            files = planted_files(work)
            names = list(files)
            rnd.shuffle(names)
            noise_every = max(1, len(names) // 16)
            for k, name in enumerate(names):
                t, data = files[name]
                (dele / name).write_bytes(data)
                truth.append(
                    {"name": name, "type": t, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                )
                if k % noise_every == 0:  # noise between the planted files
                    (dele / f"noise{k}.bin").write_bytes(rnd.randbytes(4 << 20))
                    (dele / f"prose{k}.txt").write_bytes(
                        ("It was found that nothing happened. " * 14000).encode()
                    )
            subprocess.run(["sync"], check=True)
            shutil.rmtree(dele)
            subprocess.run(["sync"], check=True)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
        info = {"planted": truth, "image_size": SIZE}
        TRUTH.write_text(json.dumps(info))
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- runs ---------------------------------------------------------------------------------------


def allocated_hashes() -> set[str]:
    """sha256 of every allocated regular file of the image (read with pensieve, not mounted)."""
    from pensieve.evidence.disk import open_disk_image

    out = set()
    ev = open_disk_image(str(IMG))
    try:
        for top, entries in ev.walk("/"):
            for e in entries:
                if e.stat.is_file:
                    with ev.open(f"{top.rstrip('/')}/{e.name}") as fh:
                        out.add(hashlib.file_digest(fh, "sha256").hexdigest())
    finally:
        ev.close()
    return out


def hashes(out: Path) -> list[str]:
    res = []
    for root, _dirs, names in os.walk(out):
        for n in names:
            if n != "audit.txt":
                with open(os.path.join(root, n), "rb") as fh:
                    res.append(hashlib.file_digest(fh, "sha256").hexdigest())
    return res


def timed(cmd: list[str], out: Path) -> tuple[float, list[str], str]:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    return dt, hashes(out), proc.stdout.decode("utf-8", "replace")


def unmatched_kinds(name: str, stdout: str, out_hashes: list[str], planted: set[str]) -> str:
    """What the outputs that are no planted file are: pensieve's records by type, confidence and
    whether they start in allocated space; for foremost only a count (its audit has no hashes)."""
    from collections import Counter

    if not name.startswith("pensieve"):
        n = sum(h not in planted for h in out_hashes)
        return f"{n} (cut from allocated files, or planted files at a wrong length)"
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    c = Counter(
        f"{r['type']} {r['confidence']}{' in allocated space' if r['allocated'] else ''}"
        for r in rows
        if r["sha256"] not in planted
    )
    return ", ".join(f"{n} {k}" for k, n in c.most_common()) or "none"


def recall(truth: list[dict], got: list[str], only: set[str] | None = None) -> tuple[int, int]:
    want = [p for p in truth if only is None or p["type"] in only]
    have = set(got)
    return sum(p["sha256"] in have for p in want), len(want)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--runs", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "carve.md"))
    ap.add_argument("--rebuild", action="store_true")
    o = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_carve.py: needs root (loop mount)")
    info = build(o.rebuild)
    allocated = allocated_hashes()
    # planted ELFs that are byte-identical to a kept (allocated) binary: skipped by design
    dups = [p for p in info["planted"] if p["sha256"] in allocated]
    truth = [p for p in info["planted"] if p["sha256"] not in allocated]
    img_sha = hashlib.sha256(IMG.read_bytes()).hexdigest()
    scratch = Path(tempfile.mkdtemp(prefix="pcb-out.", dir="/tmp"))
    pensieve = [shutil.which("pensieve") or "pensieve"]
    tools = {
        "foremost -t all": lambda d: ["foremost", "-Q", "-t", "all", "-i", str(IMG), "-o", str(d)],
        "pensieve carve --all": lambda d: [
            *pensieve,
            "carve",
            str(IMG),
            "--all",
            "--out",
            str(d),
            "--jsonl",
            "--no-progress",
        ],
        "pensieve carve (unallocated)": lambda d: [
            *pensieve,
            "carve",
            str(IMG),
            "--out",
            str(d),
            "--jsonl",
            "--no-progress",
        ],
    }
    times: dict[str, list[float]] = {k: [] for k in tools}
    outputs: dict[str, list[str]] = {}
    stdouts: dict[str, str] = {}
    subprocess.run(["cat", str(IMG)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    for _ in range(o.runs):
        for name, cmd in tools.items():
            d = scratch / name.split()[0]
            dt, got, stdout = timed(cmd(d), d)
            times[name].append(dt)
            outputs[name] = got
            stdouts[name] = stdout
    shutil.rmtree(scratch, ignore_errors=True)
    assert hashlib.sha256(IMG.read_bytes()).hexdigest() == img_sha, "the image changed"
    from pensieve.disk.carve import carve

    _files, summary = carve(str(IMG))
    scanned_default = summary.scanned_bytes
    planted_sha = {p["sha256"] for p in truth}
    rows = []
    for name in tools:
        med = statistics.median(times[name])
        got = outputs[name]
        r_all = recall(truth, got)
        r_fm = recall(truth, got, FOREMOST_TYPES)
        unmatched = sum(h not in planted_sha for h in got)
        scanned = scanned_default if "unallocated" in name else SIZE
        rows.append((name, med, scanned, r_all, r_fm, len(got), unmatched))
    fm = rows[0][1]
    per_type = {}
    for t in sorted({p["type"] for p in truth}):
        per_type[t] = {name: recall(truth, outputs[name], {t}) for name in tools}
    lines = [
        "# carve: pensieve vs foremost",
        "",
        f"Image: {SIZE >> 20} MiB raw ext4 built through the kernel by `bench/bench_carve.py` (cached in "
        f"{CACHE}): ~200 MiB of allocated system files (ELF binaries, gzip changelogs, python modules), "
        f"{len(truth)} planted files ({PER_TYPE} of each of {len(per_type)} types) written and deleted, "
        "random and prose noise deleted between them.",
        f"Recall counts {len(truth)} planted files: {len(dups)} planted ELF copies of /usr/bin binaries are "
        "byte-identical to allocated ones and are left out (pensieve skips them as duplicates by design).",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; page cache "
        f"warm; {o.runs} runs each, alternating; median wall time (each tool writes its files to a fresh "
        "directory).",
        "",
        "| tool | median s | scanned | MiB/s | vs foremost | recall (all types) | recall (jpg/png/pdf/zip) "
        "| files out | not a planted file |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, med, scanned, r_all, r_fm, nout, unmatched in rows:
        lines.append(
            f"| {name} | {med:.2f} | {scanned / (1 << 20):.0f} MiB | {scanned / (1 << 20) / med:.0f} | "
            f"{fm / med:.2f}x | {r_all[0]}/{r_all[1]} ({r_all[0] / r_all[1]:.0%}) | "
            f"{r_fm[0]}/{r_fm[1]} ({r_fm[0] / r_fm[1]:.0%}) | {nout} | {unmatched} |"
        )
    lines += [
        "",
        "Recall per type (exact sha256 of the planted file among the tool's outputs):",
        "",
        "| type | " + " | ".join(tools) + " |",
        "| --- |" + " --- |" * len(tools),
    ]
    for t, by in per_type.items():
        lines.append(f"| {t} | " + " | ".join(f"{a}/{b}" for a, b in by.values()) + " |")
    lines += ["", "Outputs that are no planted file:", ""]
    for name in tools:
        lines.append(f"* {name}: {unmatched_kinds(name, stdouts[name], outputs[name], planted_sha)}")
    lines += [
        "",
        "With `--all`, allocated files are carved too and dropped when they equal an allocated file; "
        "what remains there is embedded content (valid gzip streams inside allocated binaries: CRC-32 "
        "and length check out) and large binaries that ext4 stored in several extents (carved "
        "contiguously they fail their section checks: partial).  foremost has no ELF, gzip, tar, "
        "SQLite, script, JSON or log signatures in its built-in set (`-t all`).",
    ]
    lines += [
        "",
        "Raw times (s): " + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in times.items()),
        "",
        f"Image sha256 unchanged by every run: {img_sha}",
    ]
    text = "\n".join(lines) + "\n"
    Path(o.out).parent.mkdir(parents=True, exist_ok=True)
    Path(o.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
