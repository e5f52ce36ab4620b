"""``pensieve live ps`` against real engines' own process lists: a private dockerd (``docker top``),
a private Podman (``podman top``), a private containerd (``ctr task ps``), each on private paths
(tests/live/test_live_dockerd.py, private_podman.py, private_containerd.py).  Same host pids, same
commands, the container's name and image joined from the engine's records read offline, and the
engine's data root byte-, time- and xattr-identical before and after.

This machine mounts cgroup v1 controllers beside a v2 'unified' hierarchy: the containers show in
the v1 hierarchies, which LiveContext.owner reads when v2 says '/'.

Needs root and each engine (each part skipped otherwise); about 30 s.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
from private_containerd import PrivateContainerd, capture_module, static_busybox
from private_containerd import missing_prerequisites as containerd_missing
from private_podman import PrivatePodman
from private_podman import missing_prerequisites as podman_missing
from test_live_dockerd import PrivateDockerd, _prerequisites, _rootfs_tar, pensieve_cli, settled_digests

pytestmark = pytest.mark.live

SHELL = "sleep 100000 & exec sh -c 'while :; do sleep 1000; done'"  # a shell with a sleeping child


def _live_ps(*args: str) -> list[dict]:
    return json.loads(pensieve_cli("live", "ps", *args, "--json", ok=(0, 5)))


def _settle(pids_of, want: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while len(pids_of()) < want and time.monotonic() < end:
        time.sleep(0.1)


def _check(rows: list[dict], expected: dict[int, str], name: str | None, image: str | None) -> None:
    """ROWS (live ps records of one container) have EXPECTED's pids, each with its command line,
    and the container's NAME and IMAGE joined."""
    inside = {r["pid"]: r for r in rows if r["owner"]["kind"] == "container"}
    assert sorted(inside) == sorted(expected), (sorted(inside), expected)
    for pid, args in expected.items():
        assert " ".join(inside[pid]["cmdline"]) == args
        assert inside[pid]["known"] is True
        assert inside[pid]["container_name"] == name and inside[pid]["image"] == image
        assert len(inside[pid]["nspids"]) == 2 and "pid" not in inside[pid]["host_namespaces"]
        assert inside[pid]["exe_sha256"] and not inside[pid]["problems"]


# ---- Docker -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerd():
    dockerd_bin, busybox = _prerequisites()
    tmp = Path(tempfile.mkdtemp(prefix="plps.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateDockerd(dockerd_bin, tmp, busybox)
    try:
        d.start()
        yield d
    finally:
        problems = d.teardown()
        assert not problems, problems


def _docker_top(d: PrivateDockerd, name: str) -> dict[int, str]:
    lines = d.out("top", name, "-eo", "pid,args").splitlines()[1:]
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in lines if line.strip()}


def test_docker(dockerd: PrivateDockerd) -> None:
    d = dockerd
    d.docker("import", "-c", 'CMD ["/bin/sh"]', "-", "plps/busybox:1", input=_rootfs_tar(d.busybox))
    d.docker("run", "-d", "--name", "ps-web", "--network", "none", "plps/busybox:1", "sh", "-c", SHELL)
    _settle(lambda: _docker_top(d, "ps-web"), 3)
    top = _docker_top(d, "ps-web")
    assert len(top) == 3, top
    # what the running daemon leaves alone (it rewrites its own state files now and then)
    still = [d.data_root / "image", d.data_root / "containers"]
    before = settled_digests(still)
    rows = _live_ps("--root", str(d.data_root), "--container", "ps-web")
    assert settled_digests(still) == before  # the evidence untouched
    _check(rows, top, "ps-web", "plps/busybox:1")
    cid = d.out("inspect", "-f", "{{.Id}}", "ps-web").strip()
    assert {r["container_id"] for r in rows} == {cid}
    assert {r["engine"] for r in rows} == {"docker"}
    sha = {r["exe_sha256"] for r in rows if r["owner"]["kind"] == "container"}
    assert len(sha) == 1  # one busybox
    # every process, the table: the container's rows carry its name
    table = pensieve_cli("live", "ps", "--root", str(d.data_root), ok=(0, 5))
    assert "ps-web" in table and "host" in table


# ---- Podman -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman():
    why = podman_missing() or (None if static_busybox() else "busybox-static is not installed")
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="plpsp.", dir="/tmp"))
    tmp.chmod(0o755)
    p = PrivatePodman(tmp)
    try:
        p.setup()
        yield p
    finally:
        problems = p.teardown()
        assert not problems, problems


def _podman_top(p: PrivatePodman, name: str) -> dict[int, str]:
    lines = p.run("top", name, "hpid", "args").stdout.splitlines()[1:]
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1].strip() for line in lines if line.strip()}


def test_podman(podman: PrivatePodman) -> None:
    from test_live_podman import IMAGE, _image

    p = podman
    _image(p)
    p.run("run", "-d", "--name", "ps-pod", *p.container_flags(), IMAGE, "sh", "-c", SHELL)
    _settle(lambda: _podman_top(p, "ps-pod"), 3)
    top = _podman_top(p, "ps-pod")
    assert len(top) == 3, top
    before = settled_digests([p.evidence])
    rows = _live_ps("--root", str(p.evidence), "--container", "ps-pod")
    assert settled_digests([p.evidence]) == before
    _check(rows, top, "ps-pod", IMAGE)
    assert {r["engine"] for r in rows} == {"podman"}
    conmon = [r for r in rows if r["owner"]["kind"] == "conmon"]
    for r in conmon:  # the monitor is listed beside its container, not in it
        assert r["comm"] == "conmon" and r["pid"] not in top


# ---- containerd -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd():
    why = containerd_missing()
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="plpsc.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateContainerd(tmp)
    try:
        d.start()
        yield d
    finally:
        problems = d.teardown()
        assert not problems, problems


def test_containerd(containerd: PrivateContainerd) -> None:
    d = containerd
    image = "docker.io/pensieve/live-ps:1.0"
    tar = d.tmp / "image.tar"
    capture_module("containerd_image").main(static_busybox(), str(tar), image)
    ns, cid = "default", "c" * 64  # an id of the shape attribution knows
    d.out("images", "import", str(tar), ns=ns)
    opts = d.run_opts(ns, cid)
    opts[opts.index("--cgroup") + 1] = f"/{d.cgroup_parent}/{cid}"
    d.out("run", "-d", *opts, image, cid, "sh", "-c", SHELL, ns=ns)
    d.wait_status(ns, cid, "RUNNING")

    def task_pids() -> set[int]:
        rows = d.out("task", "ps", cid, ns=ns).splitlines()[1:]
        return {int(r.split()[0]) for r in rows if r.strip()}

    _settle(task_pids, 3)
    pids = task_pids()
    assert len(pids) == 3, pids
    cmdlines = {pid: " ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0")).strip() for pid in pids}
    before = settled_digests([d.root])
    rows = _live_ps("--root", str(d.evidence), "--container", cid[:12])
    assert settled_digests([d.root]) == before
    _check(rows, cmdlines, cid, image)
    assert {r["engine"] for r in rows} == {"containerd"}
