"""pensieve.live.cgroups: the parsers on this machine's own cgroup files, a real cgroup made for the
test (v1 controllers, and the unified hierarchy where it is mounted), a hand-made hostile cgroup
tree, and containers of a private dockerd checked against ``docker stats`` and ``docker inspect``.

The real-cgroup test needs root and a writable v1 memory/pids/cpu hierarchy or a v2 one with those
controllers (skipped otherwise); it removes what it made.  The dockerd test (``live`` marker)
reuses PrivateDockerd of test_live_dockerd.py and runs its containers with ``--network none``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pensieve import api
from pensieve.cli import main
from pensieve.live.cgroups import (
    Hierarchies,
    live_cgroups,
    parse_blkio,
    parse_io_stat,
    parse_keyed,
    parse_limit,
    parse_number,
)
from pensieve.live.context import LiveContext
from pensieve.output.columns import human_size

FAKE_ID = "ab" * 32
MOUNTINFO = Path("/proc/self/mountinfo")


# ---- parsers ----------------------------------------------------------------------------------


def test_parsers_on_spec_examples():
    """The shapes of Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/ files."""
    assert parse_number("4096\n") == 4096
    assert parse_limit("max\n") is None
    assert parse_limit("67108864\n") == 67108864
    assert parse_limit("9223372036854771712\n", 1 << 62) is None  # v1 "no limit"
    assert parse_keyed("low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n")["oom_kill"] == 1
    io = "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n8:0 rbytes=100 wbytes=1\n"
    assert parse_io_stat(io) == (1459300, 314773505)
    blkio = (
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\n8:0 Async 2\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n"
    )
    assert parse_blkio(blkio) == (4097, 8192)
    for bad in ("", "abc", "-1", "1 2", "0x10"):
        with pytest.raises(ValueError):
            parse_number(bad)
    for parser, bad in ((parse_keyed, "oom"), (parse_io_stat, "rbytes=1"), (parse_blkio, "8:0 Read x")):
        with pytest.raises(ValueError):
            parser(bad)


def _cgroup_files() -> list[Path]:
    hierarchies = Hierarchies.from_mountinfo(MOUNTINFO.read_text())
    roots = [m for m, _ in hierarchies.v1.values()] + ([hierarchies.v2[0]] if hierarchies.v2 else [])
    return [Path(r) for r in roots]


def test_parsers_on_this_machines_cgroup_files():
    """Every file of the root cgroups of this machine that a reader parses, parsed."""
    roots = _cgroup_files()
    if not roots:
        pytest.skip("no cgroup hierarchy mounted")
    parsers = {
        "memory.current": parse_number,
        "memory.usage_in_bytes": parse_number,
        "memory.max_usage_in_bytes": parse_number,
        "memory.failcnt": parse_number,
        "memory.limit_in_bytes": lambda t: parse_limit(t, 1 << 62),
        "memory.oom_control": parse_keyed,
        "memory.events": parse_keyed,
        "cpu.stat": parse_keyed,
        "cpuacct.usage": parse_number,
        "cpu.cfs_period_us": parse_number,
        "pids.current": parse_number,
        "io.stat": parse_io_stat,
        "blkio.throttle.io_service_bytes": parse_blkio,
        "blkio.throttle.io_service_bytes_recursive": parse_blkio,
    }
    parsed = 0
    for root in roots:
        for name, parser in parsers.items():
            if (root / name).is_file():
                parser((root / name).read_text())
                parsed += 1
        for child in sorted(p for p in root.iterdir() if p.is_dir())[:5]:  # a few real child cgroups
            for name, parser in parsers.items():
                if (child / name).is_file():
                    parser((child / name).read_text())
                    parsed += 1
    assert parsed > 0


def test_hierarchies_of_this_machine():
    """mountinfo's cgroup mounts, as /proc/self/cgroup names the hierarchies."""
    h = Hierarchies.from_mountinfo(MOUNTINFO.read_text())
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, _ = line.split(":", 2)
        if controllers == "":
            assert h.v2_mount() is not None and os.path.isdir(h.v2_mount()[0])
        for name in controllers.split(","):
            if name in ("memory", "cpu", "cpuacct", "pids", "blkio"):
                mount = h.v1_mount(controllers)
                assert mount is not None and os.path.isfile(os.path.join(mount[0], "cgroup.procs"))


def test_mountinfo_escapes_and_rebase():
    text = (
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 /docker/x /sys/fs/cgroup/my\\040unified rw - cgroup2 cgroup2 rw\n"
        "garbage line without separator\n"
        "1 2 3 - cgroup\n"
    )
    h = Hierarchies.from_mountinfo(text, "/copy")
    assert h.v1["cpu"] == ("/copy/cpu,cpuacct", "/") and h.v1["cpuacct"] == h.v1["cpu"]
    assert h.v2 == ("/copy/my unified", "/docker/x")


# ---- a real cgroup made for the test --------------------------------------------------------------


def _v2_controllers(v2: str) -> set[str]:
    try:
        return set(Path(v2, "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


@pytest.fixture()
def real_cgroup():
    """A private cgroup (``pensieve-test-<pid>/<64 hex>``) in every hierarchy that has memory,
    pids, cpu, cpuacct or blkio (and the unified one), limits set where the controller lives, a
    ``sleep`` moved into it.  Yields (pid, {controller: mount dir}); removes it all after."""
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    h = Hierarchies.from_mountinfo(MOUNTINFO.read_text())
    parent = f"pensieve-test-{os.getpid()}"
    made: list[Path] = []
    dirs: dict[str, Path] = {}
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        mounts = {name: m for name, (m, root) in h.v1.items() if root == "/"}
        if h.v2 is not None and h.v2[1] == "/":
            mounts["unified"] = h.v2[0]
        for name, mount in sorted(mounts.items(), key=lambda kv: kv[1]):
            if any(Path(mount) == d.parent.parent for d in made):
                dirs[name] = next(d for d in made if d.parent.parent == Path(mount))
                continue
            target = Path(mount, parent, FAKE_ID)
            try:
                target.mkdir(parents=True)
            except OSError:
                continue
            made.append(target)
            dirs[name] = target
            (target / "cgroup.procs").write_text(str(sleeper.pid))
        if not ({"memory", "pids", "cpu"} <= dirs.keys()) and "unified" not in dirs:
            pytest.skip("no writable memory/pids/cpu hierarchy")
        yield sleeper.pid, dirs
    finally:
        sleeper.kill()
        sleeper.wait()
        time.sleep(0.1)
        for d in made:
            for victim in (d, d.parent):
                try:
                    victim.rmdir()
                except OSError:
                    pass
        left = [str(d) for d in made if d.exists() or d.parent.exists()]
        assert not left, f"test cgroups left behind: {left}"


def _set_limits(dirs: dict[str, Path]) -> set[str]:
    """64 MiB, 50 pids, half a CPU, wherever each controller takes it; the v2 controllers used."""
    v2_used = set()
    unified = dirs.get("unified")
    enabled = set(Path(unified, "cgroup.controllers").read_text().split()) if unified else set()
    if "memory" in enabled:
        (unified / "memory.max").write_text("67108864")
        v2_used.add("memory")
    elif "memory" in dirs:
        (dirs["memory"] / "memory.limit_in_bytes").write_text("67108864")
    if "pids" in enabled:
        (unified / "pids.max").write_text("50")
        v2_used.add("pids")
    elif "pids" in dirs:
        (dirs["pids"] / "pids.max").write_text("50")
    if "cpu" in enabled:
        (unified / "cpu.max").write_text("50000 100000")
        v2_used.add("cpu")
    elif "cpu" in dirs:
        (dirs["cpu"] / "cpu.cfs_quota_us").write_text("50000")
        (dirs["cpu"] / "cpu.cfs_period_us").write_text("100000")
    return v2_used


def test_a_real_cgroup_reads_back_its_limits(real_cgroup, capsys, tmp_path):
    pid, dirs = real_cgroup
    v2_used = _set_limits(dirs)
    ctx = LiveContext("/proc", [])
    usages = [u for u in live_cgroups(ctx) if u.container_id == FAKE_ID]
    assert len(usages) == 1, usages
    u = usages[0]
    assert pid in u.processes
    assert u.cgroup == f"/pensieve-test-{os.getpid()}/{FAKE_ID}"
    assert u.version == (2 if "memory" in v2_used else 1)
    assert u.memory_limit == 64 << 20
    assert u.pids_limit == 50 and u.pids_current is not None and u.pids_current >= 1
    assert u.cpu_quota == "50000 100000"
    assert u.cpu_usage_usec is not None and u.memory_current is not None
    assert u.problems == []
    # only this container; the CLI gives raw numbers in JSON and human sizes in the table
    assert [x.container_id for x in api.live_cgroups(roots=[], containers=[FAKE_ID[:12]])[0]] == [FAKE_ID]
    assert main(["live", "cgroups", "--root", str(tmp_path), "-c", FAKE_ID, "--json"]) in (0, 5)
    rows = json.loads(capsys.readouterr().out)
    assert [r["memory_limit"] for r in rows] == [67108864] and rows[0]["pids_limit"] == 50
    assert main(["live", "cgroups", "--root", str(tmp_path), "-c", FAKE_ID]) in (0, 5)
    table = capsys.readouterr().out
    assert "/ 64MiB" in table and "/ 50" in table and FAKE_ID[:12] in table
    assert main(["live", "cgroups", "--root", str(tmp_path), "-c", FAKE_ID, "--csv"]) in (0, 5)
    assert "67108864" in capsys.readouterr().out


def test_human_size():
    assert [human_size(n) for n in (None, 0, 1023, 1024, 1536, 64 << 20, 3 << 40)] == [
        "",
        "0B",
        "1023B",
        "1KiB",
        "1.5KiB",
        "64MiB",
        "3TiB",
    ]


# ---- hostile: a hand-made cgroup tree -------------------------------------------------------------

#: a hand-made fixture (not a capture): a fake /proc with one process and a cgroup tree with
#: a hybrid layout (v1 memory, "cpu,cpuacct", pids, blkio; unified with memory and pids enabled)
GOOD = {
    "memory/memory.usage_in_bytes": "1048576\n",
    "memory/memory.max_usage_in_bytes": "2097152\n",
    "memory/memory.limit_in_bytes": "9223372036854771712\n",
    "memory/memory.failcnt": "0\n",
    "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    "cpu,cpuacct/cpuacct.usage": "5000000\n",
    "cpu,cpuacct/cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 3000000\n",
    "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
    "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    "pids/pids.current": "3\n",
    "pids/pids.max": "max\n",
    "blkio/blkio.throttle.io_service_bytes_recursive": "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
    "unified/cgroup.controllers": "pids\n",
    "unified/pids.current": "4\n",
    "unified/pids.max": "40\n",
    "unified/cpu.stat": "usage_usec 7\n",
}
#: files of GOOD a hybrid reader does not open: pids are read from v2 where enabled, and v2's
#: cpu.stat only when no v1 cpuacct gives the usage
NOT_READ = {"pids/pids.current", "pids/pids.max", "unified/cpu.stat"}
GARBAGE = ["", "abc\n", "-5\n", "1 2 3\n", "\x00\xff\xfe", "9" * 400, "oom_kill x\n", "8:0 Read\n", None]


def _fake_host(base: Path, files: dict[str, str | None]) -> tuple[str, str]:
    proc, cgfs = base / "proc", base / "cgroup"
    path = f"/pensieve-test/{FAKE_ID}"
    (proc / "4242").mkdir(parents=True)
    lines = ["5:blkio", "4:pids", "3:cpu,cpuacct", "2:memory", "1:name=systemd", "0:"]
    (proc / "4242" / "cgroup").write_text(
        "".join(f"{h}:{path if h != '1:name=systemd' else '/'}\n" for h in lines)
    )
    for rel, text in files.items():
        hierarchy, name = rel.split("/")
        d = cgfs / hierarchy / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        if text is None:
            (d / name).mkdir()  # a directory where a file should be: exists, cannot be read
        else:
            (d / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    for h in ("memory", "cpu,cpuacct", "pids", "blkio", "unified"):
        (cgfs / h).mkdir(parents=True, exist_ok=True)
    (cgfs / "unified" / "cgroup.controllers").write_text("pids\n")
    return str(proc), str(cgfs)


def test_hand_made_tree_reads_hybrid(tmp_path):
    proc, cgfs = _fake_host(tmp_path, GOOD)
    [u] = live_cgroups(LiveContext(proc, []), cgroupfs=cgfs)
    assert u.problems == [] and u.processes == [4242] and u.version == 1
    assert (u.memory_current, u.memory_peak, u.memory_limit) == (1048576, 2097152, None)
    assert (u.cpu_usage_usec, u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_usec) == (
        5000,
        10,
        2,
        3000,
    )
    assert u.cpu_quota == "max 100000"
    assert (u.pids_current, u.pids_limit) == (4, 40)  # pids enabled in v2: read there
    assert (u.io_read_bytes, u.io_write_bytes) == (10, 20)


def test_hostile_tree_gives_problems_not_exceptions(tmp_path):
    """Every readable file replaced, in turn, by each garbage value (a generator over the files
    and the values): a problem naming that file, the other values still read, never an exception."""
    for n, (name, garbage) in enumerate(itertools.product(sorted(GOOD), GARBAGE)):
        if name == "unified/cgroup.controllers":
            continue
        files = dict(GOOD)
        files[name] = garbage
        base = tmp_path / str(n)
        proc, cgfs = _fake_host(base, files)
        started = time.monotonic()
        usages = live_cgroups(LiveContext(proc, []), cgroupfs=cgfs)
        assert time.monotonic() - started < 5
        assert len(usages) == 1
        u = usages[0]
        leaf = name.split("/")[1]
        bad = [p for p in u.problems if p.source.endswith("/" + leaf)]
        try:
            valid = name in NOT_READ or (garbage is not None and _parses(leaf, garbage))
        except ValueError:
            valid = False
        assert bool(bad) != valid, (name, garbage, u.problems)
        assert u.processes == [4242]


def _parses(leaf: str, text: str) -> bool:
    """Whether TEXT is (by chance) a valid value for the file LEAF."""
    if leaf in ("memory.oom_control", "cpu.stat"):
        parse_keyed(text)
    elif leaf.startswith("blkio"):
        parse_blkio(text)
    elif leaf in ("pids.max", "memory.limit_in_bytes"):
        parse_limit(text)
    elif leaf == "cpu.cfs_quota_us":
        if not text.strip().lstrip("-").isdigit():
            raise ValueError(text)
    else:
        parse_number(text)
    return True


def test_unreadable_proc_entry_and_missing_files(tmp_path):
    proc, cgfs = _fake_host(tmp_path, {"pids/pids.current": "1\n"})
    (Path(proc) / "4243").mkdir()
    (Path(proc) / "4243" / "cgroup").mkdir()  # exists, cannot be read as a file
    ctx = LiveContext(proc, [])
    [u] = live_cgroups(ctx, cgroupfs=cgfs)
    assert u.pids_current == 1 and u.memory_limit is None and u.problems == []
    assert any("4243" in p.source for p in ctx.problems)


# ---- a real engine ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerd():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_live_dockerd import PrivateDockerd, _prerequisites, _rootfs_tar

    binary, busybox = _prerequisites()
    tmp = Path(tempfile.mkdtemp(prefix="pcg.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateDockerd(binary, tmp, busybox)
    try:
        d.start()
        d.docker("import", "-c", 'CMD ["/bin/sh"]', "-", "pcg/base:1", input=_rootfs_tar(busybox))
        yield d
    finally:
        problems = d.teardown()
        assert not problems, problems


def _wait_pids(d, name: str, at_least: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(d.out("top", name).splitlines()) - 1 >= at_least:
            return
        time.sleep(0.2)


@pytest.mark.live
def test_docker_containers_limits_agree_with_the_engine(dockerd, capsys):
    d = dockerd
    limited = ["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"]
    d.docker(
        "run", "-d", "--network", "none", "--name", "cg-limited", *limited, "pcg/base:1", "sleep", "100000"
    )
    bomb = "i=0; while [ $i -lt 40 ]; do sleep 100000 & i=$((i+1)); done; exec sleep 100000"
    d.docker("run", "-d", "--network", "none", "--name", "cg-bomb", "pcg/base:1", "sh", "-c", bomb)
    _wait_pids(d, "cg-bomb", 41)
    stats = {s["Name"]: s for s in d.jsonl("stats", "--no-stream", "--format", "{{json .}}")}
    inspect = {c["Name"].lstrip("/"): c for c in d.json("inspect", "cg-limited", "cg-bomb")}
    usages = {u.container_name: u for u in api.live_cgroups(roots=[str(d.data_root)])[0]}
    assert {"cg-limited", "cg-bomb"} <= usages.keys(), usages
    lim, bomb_u = usages["cg-limited"], usages["cg-bomb"]
    host_config = inspect["cg-limited"]["HostConfig"]
    assert lim.container_id == inspect["cg-limited"]["Id"] and lim.engine == "docker"
    assert lim.memory_limit == host_config["Memory"] == 64 << 20
    assert lim.pids_limit == host_config["PidsLimit"] == 50
    quota, period = host_config["NanoCpus"] * 100000 // 10**9, 100000
    assert lim.cpu_quota == f"{quota} {period}"
    assert stats["cg-limited"]["MemUsage"].endswith("/ 64MiB")
    assert lim.pids_current == int(stats["cg-limited"]["PIDs"]) == 1
    assert sorted(lim.processes) == sorted(
        int(x.split()[1]) for x in d.out("top", "cg-limited").splitlines()[1:]
    )
    assert bomb_u.pids_current >= 40 and int(stats["cg-bomb"]["PIDs"]) >= 40
    assert len(bomb_u.processes) == bomb_u.pids_current
    assert bomb_u.memory_limit is None and bomb_u.pids_limit is None
    assert main(["live", "cgroups", "--root", str(d.data_root), "-c", "cg-bomb", "--json"]) in (0, 5)
    [row] = json.loads(capsys.readouterr().out)
    assert row["container_name"] == "cg-bomb" and row["pids_current"] >= 40


def test_hand_made_v2_only_tree(tmp_path):
    """A unified-only host (hand-made): every controller read from the v2 directory."""
    proc, cgfs = tmp_path / "proc", tmp_path / "cgroup"
    path = f"/system.slice/docker-{FAKE_ID}.scope"
    (proc / "77").mkdir(parents=True)
    (proc / "77" / "cgroup").write_text(f"0::{path}/init.scope\n")  # a nested cgroup: the container counts
    d = cgfs / path.lstrip("/")
    (d / "init.scope").mkdir(parents=True)
    (cgfs / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    files = {
        "cgroup.controllers": "cpu io memory pids\n",
        "memory.current": "8192\n",
        "memory.peak": "16384\n",
        "memory.max": "67108864\n",
        "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 9\nnr_throttled 4\n"
        "throttled_usec 321\n",
        "cpu.max": "50000 100000\n",
        "pids.current": "41\n",
        "pids.max": "max\n",
        "io.stat": "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    [u] = live_cgroups(LiveContext(str(proc), []), cgroupfs=str(cgfs))
    assert u.problems == [] and u.version == 2 and u.cgroup == path and u.engine == "docker"
    assert (u.memory_current, u.memory_peak, u.memory_limit, u.oom_events, u.oom_kills) == (
        8192,
        16384,
        64 << 20,
        2,
        1,
    )
    assert (u.cpu_usage_usec, u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_usec) == (
        1500,
        9,
        4,
        321,
    )
    assert (u.cpu_quota, u.pids_current, u.pids_limit) == ("50000 100000", 41, None)
    assert (u.io_read_bytes, u.io_write_bytes, u.processes) == (4096, 8192, [77])
