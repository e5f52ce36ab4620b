"""``live net`` and ``live cgroups`` on real containerd and Podman containers, against the engines'
own answers and the kernel's.

* containerd standalone on private --root/--state/--address (tests/live/private_containerd.py),
  namespace ``k8s.io`` (as a Kubernetes node), ``ctr run`` with a 64 MiB memory limit and
  CAP_NET_ADMIN (to bring its namespace's loopback up);
* Podman rootful on its own --root/--runroot (tests/live/private_podman.py), ``--network none``
  (a namespace of its own with loopback), ``--memory 64m --pids-limit 50``, an image that
  declares 8081/tcp.

Each container runs busybox httpd on 8081, an ``nc`` listener on 8082 and a client connected to it
over loopback.  Checked: the container's pids (``ctr tasks ps``; ``podman top`` and ``podman
inspect``) are those live ps and live cgroups give it; its TCP listeners and connections are what
``nsenter -t PID -n ss -tanpH`` says, with the same holder pids; the listener the image does not
declare is marked; memory (current, limit), CPU usage and pids (current, limit) agree with the
container's cgroup files read just before and after pensieve (v1 or v2, whichever holds the
controller), and with ``podman stats --no-stream --format json``.

Needs root, the engines, busybox-static, nsenter and ss (each part skipped otherwise); about 30 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from private_containerd import PrivateContainerd, capture_module, static_busybox
from private_containerd import missing_prerequisites as containerd_missing
from private_podman import PrivatePodman
from private_podman import missing_prerequisites as podman_missing
from test_live_dockerd import pensieve_cli
from test_sockets import _split_endpoint

pytestmark = pytest.mark.live

CGROUPFS = Path("/sys/fs/cgroup")
SERVICES = (
    "busybox httpd -f -p 8081 -h /tmp & busybox nc -ll -p 8082 -e /bin/cat & sleep 1; "
    "sleep 100000 | busybox nc 127.0.0.1 8082"
)
MEMORY = 64 << 20


def _tools() -> str | None:
    for cmd in ("nsenter", "ss"):
        if shutil.which(cmd) is None:
            return f"{cmd} is not installed"
    return None


def _wait(predicate, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def ss_tcp(pid: int) -> set[tuple]:
    """(state, local address, local port, remote address, remote port, holder pid) of each TCP
    socket ``ss -tanpH`` shows in PID's network namespace (one row per holder)."""
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ss", "-tanpH"], capture_output=True, text=True, check=True
    ).stdout
    rows = set()
    for line in out.splitlines():
        fields = line.split()
        state, local, remote = fields[0], fields[3], fields[4]
        la, lp = _split_endpoint(local)
        ra, rp = _split_endpoint(remote)
        for holder in set(re.findall(r"pid=(\d+),", line)) or {"0"}:
            rows.add((state, la, int(lp), ra, int(rp.replace("*", "0")), int(holder)))
    return rows


SS_STATE = {"ESTABLISHED": "ESTAB"}


def ours_tcp(rows: list[dict]) -> set[tuple]:
    out = set()
    for r in rows:
        if r["protocol"] not in ("tcp", "tcp6"):
            continue
        for holder in r["pids"] or [0]:
            state = SS_STATE.get(r["state"], r["state"])
            out.add((state, r["local"], r["local_port"], r["remote"], r["remote_port"], holder))
    return out


def cgroup_files(pid: int) -> dict[str, Path]:
    """controller -> the directory holding PID's cgroup files for it (v1 hierarchy when the
    controller is mounted there, else the unified one)."""
    dirs: dict[str, Path] = {}
    v2 = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        for c in controllers.split(","):
            if c and (CGROUPFS / c).is_dir():
                dirs[c] = CGROUPFS / c / path.lstrip("/")
    for c in ("memory", "pids", "cpu"):
        if c not in dirs and v2 is not None:
            dirs[c] = CGROUPFS / v2.lstrip("/")
    if "cpuacct" not in dirs and "cpu" in dirs:
        dirs["cpuacct"] = dirs["cpu"]
    return dirs


def kernel_usage(pid: int) -> dict[str, int | None]:
    """memory current/limit, cpu usage (usec), pids current/limit from PID's cgroup files."""
    d = cgroup_files(pid)

    def read(controller: str, *names: str) -> str | None:
        for name in names:
            f = d[controller] / name
            if f.exists():
                return f.read_text()
        return None

    mem = read("memory", "memory.usage_in_bytes", "memory.current")
    limit = read("memory", "memory.limit_in_bytes", "memory.max")
    pids_max = read("pids", "pids.max")
    cpuacct = read("cpuacct", "cpuacct.usage")
    if cpuacct is not None:
        cpu = int(cpuacct) // 1000
    else:
        stat = dict(line.split() for line in (read("cpu", "cpu.stat") or "").splitlines())
        cpu = int(stat["usage_usec"])
    return {
        "memory_current": int(mem) if mem else None,
        "memory_limit": None
        if limit is None or limit.strip() == "max" or int(limit) >= 1 << 62
        else int(limit),
        "cpu_usage_usec": cpu,
        "pids_current": int(read("pids", "pids.current") or 0),
        "pids_limit": None if pids_max is None or pids_max.strip() == "max" else int(pids_max),
    }


def check_against_kernel(pid: int, usage_of) -> dict:
    """live cgroups (USAGE_OF() runs it) between two readings of the cgroup files."""
    before = kernel_usage(pid)
    usage = usage_of()
    after = kernel_usage(pid)
    assert usage["memory_limit"] == before["memory_limit"] == after["memory_limit"]
    assert usage["pids_limit"] == before["pids_limit"]
    assert before["pids_current"] == usage["pids_current"] == after["pids_current"]
    low, high = sorted((before["memory_current"], after["memory_current"]))
    assert low * 0.8 - (256 << 10) <= usage["memory_current"] <= high * 1.2 + (256 << 10), (
        usage,
        before,
        after,
    )
    assert before["cpu_usage_usec"] <= usage["cpu_usage_usec"] <= after["cpu_usage_usec"]
    return usage


def check_sockets(rows: list[dict], pid: int, declared: set[int]) -> None:
    """The container's TCP sockets (ROWS of live net) against ss in PID's namespace: the same
    tuples and holders; listeners marked undeclared unless their port is in DECLARED."""
    assert ours_tcp(rows) == ss_tcp(pid)
    listeners = {
        r["local_port"]: r for r in rows if r["state"] == "LISTEN" and r["protocol"] in ("tcp", "tcp6")
    }
    assert set(listeners) == {8081, 8082}
    for port, r in listeners.items():
        assert ("undeclared-listener" in r["marks"]) == (port not in declared), r
    established = [r for r in rows if r["state"] == "ESTABLISHED"]
    assert len(established) == 2 and not any("external-peer" in r["marks"] for r in established)
    assert not any("host-network" in r["marks"] for r in rows)


# ---- containerd -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd_task():
    why = containerd_missing() or _tools()
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="plvc.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateContainerd(tmp)
    try:
        d.start()
        ns, image = "k8s.io", "docker.io/pensieve/live-views:1.0"
        cid = hashlib.sha256(tmp.name.encode()).hexdigest()
        tar = tmp / "image.tar"
        capture_module("containerd_image").main(static_busybox(), str(tar), image)
        d.out("images", "import", str(tar), ns=ns)
        opts = d.run_opts(ns, cid)
        opts[opts.index("--cgroup") + 1] = f"/{d.cgroup_parent}/{cid}"
        script = f"busybox ip link set lo up; {SERVICES}"
        d.out("run", "-d", *opts, "--memory-limit", str(MEMORY), "--cap-add", "CAP_NET_ADMIN",
              image, cid, "sh", "-c", script, ns=ns)  # fmt: skip
        d.wait_status(ns, cid, "RUNNING")
        pid = d.tasks(ns)[cid][0]
        _wait(lambda: sum(r[0] == "ESTAB" for r in ss_tcp(pid)) >= 2, what="the loopback connection")
        yield d, ns, cid, pid
    finally:
        problems = d.teardown()
        assert not problems, problems


def _ctr_pids(d: PrivateContainerd, ns: str, cid: str) -> set[int]:
    rows = d.out("tasks", "ps", cid, ns=ns).splitlines()[1:]
    return {int(r.split()[0]) for r in rows if r.strip()}


def test_containerd_net_agrees_with_ss_and_ctr(containerd_task):
    d, ns, cid, pid = containerd_task
    pids = _ctr_pids(d, ns, cid)
    assert pid in pids and len(pids) == 6, pids
    rows = json.loads(pensieve_cli("live", "net", "--root", str(d.evidence), "-c", cid, "--json", ok=(0, 5)))
    assert rows and {r["container_id"] for r in rows} == {cid}
    assert {r["engine"] for r in rows} == {"containerd"} and {r["container_name"] for r in rows} == {cid}
    assert {p for r in rows for p in r["pids"]} <= pids
    check_sockets(rows, pid, declared=set())  # the image declares no port
    ps = json.loads(pensieve_cli("live", "ps", "--root", str(d.evidence), "-c", cid, "--json", ok=(0, 5)))
    assert {r["pid"] for r in ps if r["owner"]["kind"] == "container"} == pids


def test_containerd_cgroups_agree_with_the_cgroup_files(containerd_task):
    d, ns, cid, pid = containerd_task

    def usage() -> dict:
        out = pensieve_cli("live", "cgroups", "--root", str(d.evidence), "-c", cid, "--json", ok=(0, 5))
        (row,) = json.loads(out)
        return row

    row = check_against_kernel(pid, usage)
    assert row["memory_limit"] == MEMORY and row["pids_limit"] is None
    assert (row["container_id"], row["engine"]) == (cid, "containerd")
    assert set(row["processes"]) == _ctr_pids(d, ns, cid)


# ---- Podman -------------------------------------------------------------------------------------

PODMAN_IMAGE = "localhost/pensieve/live-views:1.0"


@pytest.fixture(scope="module")
def podman_container():
    why = podman_missing() or _tools() or (None if static_busybox() else "busybox-static is not installed")
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="plvp.", dir="/tmp"))
    tmp.chmod(0o755)
    p = PrivatePodman(tmp)
    try:
        p.setup()
        root = tmp / "rootfs"
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "busybox").write_bytes(Path(static_busybox()).read_bytes())
        (root / "bin" / "busybox").chmod(0o755)
        for applet in ("sh", "sleep", "cat"):
            (root / "bin" / applet).symlink_to("busybox")
        (root / "tmp").mkdir()
        tar = tmp / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tar), "."], check=True)
        p.run("import", "--change", 'CMD ["/bin/sh"]', "--change", "EXPOSE 8081/tcp", str(tar), PODMAN_IMAGE)
        p.run("run", "-d", "--name", "views", *p.container_flags(), "--memory", "64m", "--pids-limit", "50",
              PODMAN_IMAGE, "sh", "-c", SERVICES)  # fmt: skip
        pid = p.json("container", "inspect", "views")[0]["State"]["Pid"]
        _wait(lambda: sum(r[0] == "ESTAB" for r in ss_tcp(pid)) >= 2, what="the loopback connection")
        yield p, pid
    finally:
        problems = p.teardown()
        assert not problems, problems


def _podman_top(p: PrivatePodman) -> set[int]:
    lines = p.run("top", "views", "hpid").stdout.splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.strip()}


def test_podman_net_agrees_with_ss_and_podman(podman_container):
    p, pid = podman_container
    inspect = p.json("container", "inspect", "views")[0]
    pids = _podman_top(p)
    assert pid in pids and len(pids) == 6, pids
    rows = json.loads(
        pensieve_cli("live", "net", "--root", str(p.evidence), "-c", "views", "--json", ok=(0, 5))
    )
    assert {r["container_id"] for r in rows} == {inspect["Id"]}
    assert {r["engine"] for r in rows} == {"podman"} and {r["container_name"] for r in rows} == {"views"}
    assert {q for r in rows for q in r["pids"]} <= pids
    assert {r["netns"] for r in rows} == {os.stat(f"/proc/{pid}/ns/net").st_ino}
    check_sockets(rows, pid, declared={8081})


def _decimal(text: str) -> float:
    """A go-units HumanSize ("1.012MB", "67.11MB", "512kB", "0B"): powers of 1000."""
    m = re.fullmatch(r"([\d.]+)\s*([kMGT]?)B", text.strip())
    assert m, text
    return float(m.group(1)) * 1000 ** " kMGT".index(m.group(2) or " ")


def test_podman_cgroups_agree_with_files_and_podman_stats(podman_container):
    p, pid = podman_container

    def usage() -> dict:
        out = pensieve_cli("live", "cgroups", "--root", str(p.evidence), "-c", "views", "--json", ok=(0, 5))
        (row,) = json.loads(out)
        return row

    row = check_against_kernel(pid, usage)
    assert row["memory_limit"] == MEMORY and row["pids_limit"] == 50
    assert row["container_name"] == "views" and row["engine"] == "podman"
    assert set(row["processes"]) == _podman_top(p)
    res = p.run("stats", "--no-stream", "--format", "json", "views", check=False)
    if res.returncode != 0 or not res.stdout.strip():
        pytest.skip(f"podman stats does not work here: {res.stderr.strip()[:200]}")
    (stats,) = json.loads(res.stdout)
    used, limit = (_decimal(x) for x in stats["mem_usage"].split("/"))
    assert abs(limit - MEMORY) <= 0.005 * MEMORY  # printed to 4 significant digits
    assert abs(used - row["memory_current"]) <= max(0.2 * row["memory_current"], 256 << 10), (stats, row)
    assert int(stats["pids"]) == row["pids_current"]
