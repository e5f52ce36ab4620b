#!/usr/bin/env python3
"""Compare `pensieve containers GRAPHROOT --json` with Podman's own listing of the same root,
`podman --root GRAPHROOT --runroot RUNROOT ... ps -a --format json`, same run, same machine.

Usage: sudo python bench/bench_podman.py [-n 300 ...] [-r 10] [--out bench/results/podman.md]

For each N a Podman 4.3 graphroot with N containers is built once by the system podman on
PRIVATE paths under /tmp/pensieve-bench-cache/podman-N (its own --root, --runroot, --tmpdir, a
private containers.conf and storage.conf, cgroupfs, the file events backend, `--network none`;
never /var/lib/containers or the system's configuration (the import runs in a private mount
namespace with a tmpfs over root's blob info cache); the flags of
fixtures/capture/podman_capture.sh) and reused: an image imported from busybox-static, N - 3
containers only created (`podman create`, labels, env on 1 in 2) and 3 that are started for
each run (`podman start`) and stopped after it (`podman stop`, then any process still naming
our private paths is killed by its pid, our mounts below the cache dir are unmounted and the
private cgroup parent removed).

podman is daemonless: every `ps -a` opens libpod's bolt_state.db and c/storage itself, and
asks the runtime about each running container; that start-up is part of what it costs a
responder, as pensieve's interpreter start-up is.  Beside both tools each round also times the
interpreter floor pensieve cannot go below on this machine: `python3 -c pass` (with this
sandbox's site/.pth start-up) and `python3 -S -c pass` (without site).  After one warm-up each,
REPEATS rounds run the four commands one after the other, the order rotated every round; each
run's wall time (time.perf_counter around the child) and CPU time (user + system of the child,
os.wait4) are kept, and the load average is read before and after each N.

pensieve is the console script of the running interpreter's environment; to time a checkout,
run the bench with PYTHONPATH=<checkout>/src (the script then imports that code; it is
byte-compiled first, as an installed package would be).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_containers import (  # noqa: E402
    CACHE,
    HERE,
    check,
    compile_pensieve,
    field_stats,
    find_script,
)

IMAGE = "localhost/pensieve/bench-busybox:1.0"
STARTED = 3
BUSYBOX = Path("/bin/busybox")
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
CGROUP_PARENT = "pensieve-bench-podman"
#: run by sh in a private mount namespace before podman: a tmpfs over the nearest existing of root's
#: blob-info-cache directory and its parents (podman_capture.sh explains why), then podman itself
PRIVATE_CACHE = (
    "for d in /var/lib/containers/cache /var/lib/containers /var/lib; do "
    'if [ -d "$d" ]; then mount -t tmpfs -o mode=0700,size=64m pensieve-bench-cache "$d" || exit 1; '
    "break; fi; "
    'done; exec "$@"'
)


class PrivatePodman:
    """The system podman pointed at one private graphroot/runroot/tmpdir under BASE."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.graph = base / "storage"
        self.runroot = base / "run"
        self.tmp = base / "tmp"
        self.etc = base / "etc"

    def prepare(self) -> None:
        """Create the private directories and the two configuration files naming them."""
        for d in (self.graph, self.runroot, self.tmp, self.etc):
            d.mkdir(parents=True, exist_ok=True)
        (self.etc / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.graph}"\nrunroot = "{self.runroot}"\n'
        )
        (self.etc / "containers.conf").write_text(
            "[containers]\n"
            'netns = "none"\n'
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.tmp}/events.log"\n'
            'runtime = "runc"\n'
            f'tmp_dir = "{self.tmp}"\n'
            f'static_dir = "{self.graph}/libpod"\n'
            f'volume_path = "{self.graph}/volumes"\n'
            'database_backend = "boltdb"\n'
        )
        (self.etc / "registries.conf").write_text("")

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.etc / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.etc / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.etc / "registries.conf"),
        }

    def argv(self, *args: str) -> list[str]:
        return [
            "podman", "--root", str(self.graph), "--runroot", str(self.runroot), "--tmpdir", str(self.tmp),
            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", "runc", *args,
        ]  # fmt: skip

    def out(self, *args: str, check: bool = True, private_cache: bool = False) -> str:
        """podman ARGS' stdout; PRIVATE_CACHE: in a private mount namespace with a tmpfs over root's
        blob info cache (fixtures/capture/podman_capture.sh: podman 4.3's import writes
        /var/lib/containers/cache otherwise)."""
        argv = self.argv(*args)
        if private_cache:
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_CACHE, "sh", *argv]
        proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True)
        if check and proc.returncode:
            raise SystemExit(f"podman {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def ours(self) -> list[int]:
        """Pids whose command line names our graphroot or runroot (conmon, the container's init)."""
        marks = (str(self.graph).encode(), str(self.runroot).encode())
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in cmdline for m in marks):
                pids.append(int(entry.name))
        return pids

    def clean_up(self) -> list[str]:
        """Kill our leftover pids, unmount what is mounted below BASE; returns what stayed behind."""
        for pid in self.ours():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(self.base) + "/")
        ]
        for target in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False)
        deadline = time.monotonic() + 10  # conmon and the killed inits take a moment to go
        while self.ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        problems = [f"pid {p} still alive" for p in self.ours()]
        return problems + remove_cgroups(CGROUP_PARENT)


def remove_cgroups(name: str) -> list[str]:
    """Remove our private cgroup NAME and its children in every hierarchy (empty ones: rmdir)."""
    left = []
    for top in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError as err:
                left.append(f"cgroup {dirpath}: {err.strerror}")
    return left


def busybox_tar(dest: Path) -> None:
    """A rootfs tar: /bin/busybox (static) with sh and sleep links, /etc/passwd."""
    with tarfile.open(dest, "w") as tar:
        for d in ("bin", "etc", "tmp", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), "bin/busybox")
        for applet in ("sh", "sleep", "true"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        data = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


def ensure_root(n: int) -> PrivatePodman:
    """The private podman of the cached root for N, with N containers of which STARTED are running."""
    p = PrivatePodman(CACHE / f"podman-{n}")
    p.prepare()
    if IMAGE not in p.out("images", "--format", "{{.Repository}}:{{.Tag}}"):
        tar = p.tmp / "rootfs.tar"
        busybox_tar(tar)
        p.out(
            "import", "--change", 'CMD ["/bin/sh"]', "-m", "busybox-static rootfs", str(tar), IMAGE,
            private_cache=True,
        )  # fmt: skip
    have = set(p.out("ps", "-a", "--format", "{{.Names}}").split())
    names = [f"c-{i}" for i in range(n - STARTED)] + [f"run-{k}" for k in range(STARTED)]
    todo = [name for name in names if name not in have]
    if todo:
        print(f"creating {len(todo)} containers in {p.graph} ...", file=sys.stderr)
    for name in todo:
        i = int(name.split("-")[1])
        env = ["--env", f"APP_INDEX={i}"] if i % 2 == 0 else []
        p.out("create", "--name", name, *ULIMITS, "--network", "none", "--cgroup-parent", f"/{CGROUP_PARENT}",
              "--label", f"org.pensieve.group=g-{i // 3}", "--label", f"org.pensieve.name={name}", *env,
              IMAGE, "sleep", "100000")  # fmt: skip
    for k in range(STARTED):
        p.out("start", f"run-{k}")
    return p


#: the tools of one round, in their first order: the two interpreter floors, then both listings
TOOLS = ("python -c pass", "python -S -c pass", "pensieve", "podman")


def run_child(cmd: Sequence[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child: user + system, the finished process) of one run of CMD."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # grown by what the reaped child used
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, proc


def rounds(cmds: dict[str, list[str]], repeats: int) -> tuple[dict, dict, dict]:
    """One warm-up of each command, then REPEATS rounds of all of them, the order rotated by one
    every round: (wall times, CPU times, last finished process) per tool."""
    compile_pensieve()
    names = list(cmds)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    last: dict[str, subprocess.CompletedProcess] = {}
    for name in names:  # warm-up: page cache, .pyc
        _w, _c, last[name] = run_child(cmds[name])
        check(name, last[name], (0, 5) if name == "pensieve" else (0,))
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            w, c, proc = run_child(cmds[name])
            check(name, proc, (0, 5) if name == "pensieve" else (0,))
            wall[name].append(w)
            cpu[name].append(c)
            last[name] = proc
    return wall, cpu, last


def bench_one(n: int, repeats: int) -> dict:
    p = ensure_root(n)
    load_before = os.getloadavg()
    try:
        pensieve = find_script("pensieve")
        cmds = {
            TOOLS[0]: [sys.executable, "-c", "pass"],
            TOOLS[1]: [sys.executable, "-S", "-c", "pass"],
            "pensieve": [pensieve, "containers", str(p.graph), "--json"],
            "podman": ["env", *(f"{k}={v}" for k, v in p.env().items() if k.startswith("CONTAINERS_")),
                       *p.argv("ps", "-a", "--format", "json")],
        }  # fmt: skip
        wall, cpu, last = rounds(cmds, repeats)
        p_items = json.loads(last["pensieve"].stdout)
        m_items = json.loads(last["podman"].stdout)
        running = sum(1 for c in m_items if c.get("State") == "running")
    finally:
        p.out("stop", "-t", "1", *(f"run-{k}" for k in range(STARTED)), check=False)
        problems = p.clean_up()
        if problems:
            print("WARNING: " + "; ".join(problems), file=sys.stderr)
    same = {c["id"] for c in p_items} == {c["Id"] for c in m_items}
    row = {
        "n": n,
        "same": same,
        "running": running,
        "pensieve_exit": last["pensieve"].returncode,
        "load": (load_before, os.getloadavg()),
    }
    counts = {
        "pensieve": field_stats(p_items) + (len(p_items),),
        "podman": field_stats(m_items) + (len(m_items),),
    }
    for name in cmds:
        top, leaf, count = counts.get(name, (None, None, None))
        row[name] = {
            "median": statistics.median(wall[name]),
            "min": min(wall[name]),
            "cpu_median": statistics.median(cpu[name]),
            "cpu_min": min(cpu[name]),
            "count": count,
            "fields": top,
            "values": leaf,
        }
    return row


def table(rows: list[dict]) -> str:
    """Per N: the two floors and both tools (wall and CPU, median and min), how many listed and
    how much of each, and podman / pensieve (median and min wall time)."""
    out = (
        "| containers | tool | median s | min s | CPU median s | CPU min s | listed | fields/container "
        "| scalar values/container | podman / pensieve (median; min) |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in rows:
        m, p = r["podman"], r["pensieve"]
        ratio = f"**{m['median'] / p['median']:.2f}x**; {m['min'] / p['min']:.2f}x"
        for name in TOOLS:
            t = r[name]
            listed = "" if t["count"] is None else t["count"]
            fields = "" if t["fields"] is None else f"{t['fields']:.1f}"
            values = "" if t["values"] is None else f"{t['values']:.1f}"
            out += (
                f"| {r['n']} | {name} | {t['median']:.3f} | {t['min']:.3f} | {t['cpu_median']:.3f} "
                f"| {t['cpu_min']:.3f} | {listed} | {fields} | {values} "
                f"| {ratio if name == 'pensieve' else ''} |\n"
            )
    return out


def growth(rows: list[dict]) -> list[str]:
    """Each tool's cost per container between consecutive sizes (median wall time), and the growth
    from the smallest to the largest."""
    lines = []
    for a, b in zip(rows, rows[1:], strict=False):
        per = {
            t: (b[t]["median"] - a[t]["median"]) / (b["n"] - a["n"]) * 1000 for t in ("pensieve", "podman")
        }
        lines.append(
            f"- {a['n']} -> {b['n']} containers: each added container costs pensieve "
            f"{per['pensieve']:.2f} ms, podman {per['podman']:.2f} ms (difference of medians)"
        )
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        lines.append(
            f"- growth {a['n']} -> {b['n']} containers ({b['n'] / a['n']:.0f}x): pensieve "
            f"{b['pensieve']['median'] / a['pensieve']['median']:.2f}x, podman "
            f"{b['podman']['median'] / a['podman']['median']:.2f}x (median wall time, start-up included)"
        )
    return lines


def report(rows: list[dict], repeats: int, out: Path) -> str:
    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    version = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    import pensieve

    lines = [
        "# pensieve containers vs podman ps -a, Podman 4.3",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; pensieve git {commit or '?'} (imported from "
        f"`{Path(pensieve.__file__).parent}`); {version}",
        "- load average (1/5/15 min) before -> after each size: "
        + "; ".join(
            f"{r['n']}: "
            + " / ".join(f"{x:.2f}" for x in r["load"][0])
            + " -> "
            + " / ".join(f"{x:.2f}" for x in r["load"][1])
            for r in rows
        ),
        f"- roots: `{CACHE}/podman-N/storage` (the graphroot of the system podman on private --root, "
        f"--runroot, --tmpdir and configuration; N - {STARTED} containers created, {STARTED} running "
        "during the timing)",
        "",
        table(rows),
        f"- {repeats} timed rounds after one warm-up of each command; a round runs the four commands one "
        "after the other, the order rotated by one each round; wall time by `time.perf_counter` around the "
        "child, CPU time = the child's user + system time.",
        "- `python -c pass` / `python -S -c pass`: the interpreter pensieve runs on "
        f"(`{sys.executable}`), with and without site (this sandbox's site imports certifi from a .pth "
        "file): the floor under any Python tool here.",
        "- pensieve: `pensieve containers GRAPHROOT --json`. podman: `podman --root GRAPHROOT --runroot "
        "RUNROOT --tmpdir TMP --storage-driver overlay --cgroup-manager cgroupfs --events-backend file "
        "--runtime runc ps -a --format json` (daemonless: opens bolt_state.db and c/storage itself, "
        "asks runc about the running ones).",
        "- pensieve above its floor (median pensieve - median `python -c pass`): "
        + ", ".join(
            f"{r['n']}: {(r['pensieve']['median'] - r[TOOLS[0]]['median']) * 1000:.0f} ms" for r in rows
        ),
        "- same ids listed by both: " + ", ".join(f"{r['n']}: {'yes' if r['same'] else 'NO'}" for r in rows),
        "- running per podman: " + ", ".join(f"{r['n']}: {r['running']}" for r in rows),
        "- pensieve exit codes: " + ", ".join(f"{r['n']}: {r['pensieve_exit']}" for r in rows),
        "- fields/container: top-level keys per container object; scalar values: leaf values "
        "after flattening.",
        *growth(rows),
    ]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def missing_prerequisites() -> str:
    if os.geteuid() != 0:
        return "bench_podman.py: must run as root (rootful podman on private paths)"
    for tool in ("podman", "runc", "conmon"):
        if not shutil.which(tool) and not Path(f"/usr/libexec/podman/{tool}").exists():
            return f"bench_podman.py: missing {tool}"
    if not BUSYBOX.exists():
        return "bench_podman.py: missing /bin/busybox (busybox-static)"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, nargs="+", default=[300], help="containers per root (default 300)")
    ap.add_argument("-r", "--repeats", type=int, default=10, help="timed runs per tool (default 10)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "podman.md")
    args = ap.parse_args(argv)
    why = missing_prerequisites()
    if why:
        raise SystemExit(why)
    rows = [bench_one(n, args.repeats) for n in sorted(args.n)]
    print(report(rows, args.repeats, args.out))
    print(f"written to {args.out}", file=sys.stderr)
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
