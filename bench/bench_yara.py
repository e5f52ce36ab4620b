#!/usr/bin/env python3
"""Compare pensieve's YARA over every layer directory of a Docker data root with the YARA command
line tool (`yara -r`, libyara) over the same directories, same run, same machine.

Usage: python bench/bench_yara.py [--root ROOT] [-r 5] [--out bench/results/yara.md]

pensieve: the layer scan of `triage --yara` (pensieve.hunting.tasks.scan_tree: each regular file
of each `overlay2/*/diff` read once through the evidence layer in 1 MiB blocks, scanned with
yara-x), in a fresh interpreter per run (start-up, imports and rule compilation included).
Reference: `yara -r -N` (Debian's yara package: apt-get install yara) over `ROOT/overlay2` (the
same layer directories, plus the tiny `link`/`lower` files), once with one thread (`-p 1`, the
same work as pensieve's single thread) and once with yara's default threads.  Both print one line
per (rule, file) match; the bench checks that the two sets are the same.

Without --root, /tmp/pensieve-bench-cache/docker-root-300 (bench/make_docker_root.sh) is used, or
the overlay2 fixture unpacked.  The rules are generated (a mix of text, wide/nocase, hex and
regex strings, some matching files of ordinary images).  One untimed warm-up run each, then R
timed runs alternating the tools (page cache warm for all).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_containers import CACHE, env_lines, run_alternating  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "tests" / "fixtures" / "overlay2-root.tar.gz"

WORKER = r"""
import sys
from pensieve.evidence import open_evidence
from pensieve.hunting import Hunting
from pensieve.hunting.rules import load_rules
from pensieve.hunting.tasks import scan_tree

root, rules_path = sys.argv[1], sys.argv[2]
hunting = Hunting(load_rules([rules_path]), [])
problems = []
out = []
with open_evidence(root) as ev:
    for name in sorted(ev.listdir("/overlay2")):
        top = f"/overlay2/{name}/diff"
        if not ev.is_dir(top):
            continue
        for path, _size, m in scan_tree(ev, top, hunting, problems):
            out.append(f"{m['rule']} {root}{path}")
sys.stdout.write("\n".join(out) + "\n")
sys.stderr.write(f"{len(problems)} problems\n")
"""

TEXT = [
    "xmrig",
    "stratum+tcp://",
    "minerd",
    "cpuminer",
    "kinsing",
    "kdevtmpfsi",
    "/dev/tcp/",
    "nc -e /bin/sh",
    "bash -i >& /dev/tcp",
    "python -c 'import socket",
    "chmod +x /tmp/",
    "wget -q -O - http",
    "curl -fsSL",
    "base64 -d | sh",
    "LD_PRELOAD",
    "/etc/ld.so.preload",
    "authorized_keys",
    "ssh-rsa AAAA",
    "BEGIN RSA PRIVATE",
    "AWS_SECRET_ACCESS_KEY",
    "docker.sock",
    "/proc/self/exe",
    "memfd_create",
    "ptrace",
    "masscan",
    "zgrab",
    "tsunami",
    "mirai",
    "gafgyt",
    "busybox",
]


def make_rules(path: Path) -> int:
    """Write the generated rule set to PATH; the number of rules."""
    rules = []
    for i, s in enumerate(TEXT):
        mods = " ascii wide nocase" if i % 3 == 0 else ""
        lit = s.replace("\\", "\\\\").replace('"', '\\"')
        rules.append(f'rule text_{i} {{ strings: $s = "{lit}"{mods} condition: $s }}')
    rules += [
        'rule elf_with_socket { strings: $a = "socket" $b = "connect" condition: uint32(0) == 0x464c457f'
        " and $a and $b }",
        "rule hex_jump { strings: $h = { 48 89 e5 [2-8] 48 83 ec } condition: $h }",
        "rule hex_alt { strings: $h = { 7f 45 4c 46 ( 01 | 02 ) 01 01 } condition: $h at 0 }",
        "rule re_ip_url { strings: $r = /https?:\\/\\/[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/"
        " condition: $r }",
        "rule re_onion { strings: $r = /[a-z2-7]{16,56}\\.onion/ condition: $r }",
        "rule re_wallet { strings: $r = /4[0-9AB][1-9A-HJ-NP-Za-km-z]{93}/ condition: $r }",
        'rule script_pipe { strings: $a = "| sh" $b = "| bash" condition: any of them and filesize < 1MB }',
    ]
    path.write_text("\n".join(rules) + "\n")
    return len(rules)


def ensure_root(root: Path | None) -> Path:
    if root is not None:
        return root
    cached = CACHE / "docker-root-300"
    if (cached / "overlay2").is_dir():
        return cached
    dest = CACHE / "overlay2-fixture"
    if not (dest / "overlay2").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "tar",
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "-xf",
                str(FIXTURE),
                "-C",
                str(dest),
            ],
            check=True,
        )
    return dest


def hits(text: str, root: Path) -> set[tuple[str, str]]:
    """(rule, path) pairs of a run's output, only those inside a layer's diff directory."""
    out = set()
    for line in text.splitlines():
        rule, _, path = line.partition(" ")
        if rule and "/diff/" in path and path.startswith(str(root)):
            out.add((rule, os.path.normpath(path)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path)
    ap.add_argument("-r", "--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "yara.md")
    o = ap.parse_args(argv)
    yara = shutil.which("yara")
    if yara is None:
        raise SystemExit("yara not found: apt-get install yara")
    root = ensure_root(o.root).resolve()
    rules = CACHE / "bench-yara-rules.yar"
    CACHE.mkdir(parents=True, exist_ok=True)
    n_rules = make_rules(rules)
    cmds = {
        "pensieve": [sys.executable, "-c", WORKER, str(root), str(rules)],
        "yara -p 1": [yara, "-r", "-N", "-p", "1", str(rules), str(root / "overlay2")],
        "yara": [yara, "-r", "-N", str(rules), str(root / "overlay2")],
    }
    times, last = run_alternating(cmds, o.repeats, {})
    found = {name: hits(proc.stdout, root) for name, proc in last.items()}
    files = int(
        subprocess.run(
            ["find", str(root / "overlay2"), "-path", "*/diff/*", "-type", "f"],
            capture_output=True,
            text=True,
        ).stdout.count("\n")
    )
    du = subprocess.run(["du", "-sb", str(root / "overlay2")], capture_output=True, text=True)
    size = du.stdout.split()[0]
    ref = statistics.median(times["pensieve"])
    table = (
        "| tool | median s | min s | (rule, file) matches | ratio (tool / pensieve median) |\n"
        "|---|---:|---:|---:|---:|\n"
    )
    for name, t in times.items():
        med = statistics.median(t)
        table += f"| {name} | {med:.3f} | {min(t):.3f} | {len(found[name])} | {med / ref:.2f}x |\n"
    same = found["pensieve"] == found["yara -p 1"] == found["yara"]
    notes = [
        f"- {n_rules} generated rules; {files} regular files in the layer directories, "
        f"{int(size) / 2**20:.0f} MiB under overlay2/; {o.repeats} timed runs each",
        f"- the (rule, file) matches are {'the same' if same else 'NOT the same'} for all three",
        f"- pensieve is {ref / statistics.median(times['yara -p 1']):.2f}x the time of `yara -p 1` and "
        f"{ref / statistics.median(times['yara']):.2f}x that of `yara` with its default threads "
        f"({os.cpu_count()} CPUs); the aim is within 1.2x",
        f"- yara: {subprocess.run([yara, '--version'], capture_output=True, text=True).stdout.strip()}; "
        f"yara-x (python): {_version('yara-x')}",
    ]
    if not same:
        diff = (found["pensieve"] ^ found["yara -p 1"]) | (found["pensieve"] ^ found["yara"])
        notes.append("- differing matches (first 10): " + "; ".join(f"{r} {p}" for r, p in sorted(diff)[:10]))
    print(table)
    print("\n".join(notes))
    o.out.parent.mkdir(parents=True, exist_ok=True)
    env = [line for line in env_lines(root) if "docker-explorer" not in line and "data root" not in line]
    env.append(f"- data root: `{root}`")
    o.out.write_text(
        "# YARA over layers: pensieve against `yara -r`\n\n"
        + "\n".join(env)
        + f"\n\n{table}\n"
        + "\n".join(notes)
        + "\n"
    )
    print(f"\nwritten to {o.out}", file=sys.stderr)
    return 0


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
