"""``pensieve collect`` against a container that keeps serving HTTP on loopback, on a private
dockerd (tests/live/test_live_dockerd.py's PrivateDockerd): a client polling it throughout sees
no failed request, the container's state and start time are unchanged afterwards, the bundle
verifies, agrees with the data root (containers, diff, verify image.tar), a second collect
gives the same RW-layer files, and the parts of the data root the daemon leaves alone are
unchanged.  ``--network host`` with busybox ``httpd`` on 127.0.0.1 (never a bridge network).

Needs root, docker.io and busybox-static (skipped otherwise).
"""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli
from test_live_dockerd import PrivateDockerd, _prerequisites, settled_digests

pytestmark = pytest.mark.live

IMAGE = "pcollect/web:1"
APPLETS = ("sh", "httpd", "echo", "rm", "mkdir", "cat", "sleep", "ls")


def _rootfs(busybox: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.linkname, ti.size, ti.mtime = kind, mode, link, len(data), 1_700_000_000
            tar.addfile(ti, io.BytesIO(data) if data else None)

        for d in ("bin", "etc", "tmp", "www", "proc", "sys", "dev", "opt", "opt/old"):
            add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, Path(busybox).read_bytes())
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("www/index.html", tarfile.REGTYPE, 0o644, b"pensieve collect\n")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
        add("opt/old/a.txt", tarfile.REGTYPE, 0o644, b"a\n")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def web():
    dockerd, busybox = _prerequisites()
    tmp = Path(tempfile.mkdtemp(prefix="pcol.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateDockerd(dockerd, tmp, busybox)
    try:
        d.start()
        d.docker("import", "-c", 'CMD ["/bin/sh"]', "-", IMAGE, input=_rootfs(busybox))
        port = _free_port()
        d.docker("run", "-d", "--name", "web", "--network", "host", IMAGE,
                 "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www")  # fmt: skip
        d.docker(
            "exec",
            "web",
            "sh",
            "-c",
            "echo new > /tmp/new.txt; rm /etc/group; rm -r /opt/old; mkdir /opt/old",
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        yield d, port
    finally:
        problems = d.teardown()
        assert not problems, problems


class Poller(threading.Thread):
    """GET / every 20 ms until stopped; counts the answers and the failures."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url, self.ok, self.failed = f"http://127.0.0.1:{port}/", 0, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                body = urllib.request.urlopen(self.url, timeout=5).read()
                if body == b"pensieve collect\n":
                    self.ok += 1
                else:
                    self.failed.append(f"unexpected body {body[:40]!r}")
            except OSError as exc:
                self.failed.append(str(exc))
            time.sleep(0.02)


def _state(d: PrivateDockerd) -> dict:
    s = d.json("inspect", "web")[0]["State"]
    return {k: s[k] for k in ("Status", "Running", "Paused", "Pid", "StartedAt")}


def _stable(root: Path, d: PrivateDockerd) -> list[Path]:
    gd = d.json("inspect", "web")[0]["GraphDriver"]["Data"]
    paths = [root / "image/overlay2/imagedb", root / "image/overlay2/layerdb/sha256", Path(gd["UpperDir"])]
    paths += [Path(p) for p in gd["LowerDir"].split(":")]
    return paths


def test_collect_a_serving_container(web, tmp_path):
    d, port = web
    root = d.data_root
    watched = _stable(root, d)
    before_tree = settled_digests(watched)
    before = _state(d)
    poller = Poller(port)
    poller.start()
    time.sleep(0.3)
    code, out, err = run_cli("collect", "web", "--root", root, "--out", tmp_path / "b1", "--json")
    code2, _, err2 = run_cli("collect", "web", "--root", root, "--out", tmp_path / "b2")
    time.sleep(0.3)
    poller.stop.set()
    poller.join(10)
    assert code in (0, 5) and code2 in (0, 5), (err, err2)
    assert poller.ok > 5 and not poller.failed, (poller.ok, poller.failed[:5])
    assert _state(d) == before, "collect changed the container's state"
    assert settled_digests(watched) == before_tree, "collect changed the data root"

    b1, b2 = tmp_path / "b1", tmp_path / "b2"
    doc = json.loads((b1 / "manifest.json").read_text())
    assert doc["custody"]["container_unchanged"] is True
    assert doc["custody"]["container_before"]["state"] == "running"
    assert doc["custody"]["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # this sandbox's pid 1 hides its ns and exe links even from root: those warnings are honest
    problems = [p for p in doc["problems"] if not p["source"].startswith(("live/cgroups", "/proc/1/"))]
    assert not problems, problems
    cid = doc["container"]["id"]
    ps = json.loads((b1 / "live/ps.json").read_text())
    assert ps and {p["container_id"] for p in ps} == {cid}, ps  # the container's processes, only
    assert any("httpd" in " ".join(p["cmdline"]) for p in ps)
    net = json.loads((b1 / "live/net.json").read_text())
    assert any(s["state"] == "LISTEN" and s["container_id"] == cid for s in net), net
    assert run_cli("collect", "verify", b1)[0] == 0

    rw = next(x for x in doc["layers"] if x["role"] == "rw")["cache_id"]
    index = [json.loads((b / f"layers/{rw}.index.json").read_text()) for b in (b1, b2)]
    assert [(e["path"], e.get("sha256")) for e in index[0]] == [
        (e["path"], e.get("sha256")) for e in index[1]
    ]
    assert {e["path"] for e in index[0]} >= {"./tmp/new.txt", "./etc/group", "./opt/old/"}

    for args in (["containers", "--json"], ["diff", "web", "--json"]):
        a, b = run_cli(args[0], b1, *args[1:]), run_cli(args[0], root, *args[1:])
        assert a[0] == b[0] == 0, (a[2], b[2])
        assert json.loads(a[1]) == json.loads(b[1]), args
    docker_diff = {line.split(" ", 1)[1] for line in d.out("diff", "web").splitlines() if line.strip()}
    ours = {c["path"] for c in json.loads(run_cli("diff", b1, "web", "--json")[1])}
    assert docker_diff <= ours | {"/tmp"}, docker_diff - ours
    code, out, err = run_cli("verify", b1 / "image.tar")
    assert code == 0, err
    assert os.listdir(tmp_path) and set(os.listdir(tmp_path)) == {"b1", "b2"}

    case = tmp_path / "case" / "c.duckdb"  # triage reads the bundle's live snapshot into the case
    code, _out, err = run_cli("triage", b1, "--case", case)
    assert code in (0, 5), err
    from pensieve.case.store import CaseStore

    s = CaseStore(str(case), read_only=True)
    try:
        _n, started = s.query(
            "SELECT p.pid, e.time FROM live_processes p JOIN events e ON e.kind = 'process.started'"
            " AND e.ref->>'pid' = CAST(p.pid AS VARCHAR)"
            " WHERE p.container_id = ? AND p.cmdline->>0 = 'httpd'",
            [cid],
        )
        _n, listening = s.query(
            "SELECT count(*) FROM live_sockets WHERE state = 'LISTEN' AND container_id = ?", [cid]
        )
    finally:
        s.close()
    assert started and all(t for _pid, t in started), started
    assert listening[0][0] >= 1


# ---- --checkpoint -----------------------------------------------------------------------------

CRIU_BIN = Path("/var/tmp/pensieve-criu/bin")  # fixtures/capture/criu_env.sh (sid criu 4.2)


def criu_path(monkeypatch) -> None:
    """The sid criu first on PATH (for dockerd, podman and runc), or a skip."""
    if not (CRIU_BIN / "criu").exists():
        pytest.skip(f"no criu environment at {CRIU_BIN} (fixtures/capture/criu_env.sh)")
    monkeypatch.setenv("PATH", f"{CRIU_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")


def criu_with_config(tmp: Path) -> Path:
    """TMP/bin/criu: the sid criu with a configuration file (CRIU_CONFIG_FILE, criu(8)) that
    skips connections caught half accepted: the client polling the container makes one at
    every freeze, and the engines' CLIs have no flag for it.  Returns TMP/bin."""
    bindir = tmp / "bin"
    bindir.mkdir()
    (tmp / "criu.conf").write_text("skip-in-flight\n")
    criu = bindir / "criu"
    criu.write_text(f'#!/bin/sh\nCRIU_CONFIG_FILE="{tmp}/criu.conf" exec {CRIU_BIN}/criu "$@"\n')
    criu.chmod(0o755)
    return bindir


@pytest.fixture(scope="module")
def experimental_web():
    """The web container on a private dockerd started with --experimental and criu on PATH."""
    dockerd, busybox = _prerequisites()
    if not (CRIU_BIN / "criu").exists():
        pytest.skip(f"no criu environment at {CRIU_BIN} (fixtures/capture/criu_env.sh)")
    tmp = Path(tempfile.mkdtemp(prefix="pcolx.", dir="/tmp"))
    tmp.chmod(0o755)
    bindir = criu_with_config(tmp)
    wrapper = tmp / "dockerd-experimental"
    wrapper.write_text(f'#!/bin/sh\nPATH="{bindir}:$PATH" exec {dockerd} --experimental "$@"\n')
    wrapper.chmod(0o755)
    d = PrivateDockerd(str(wrapper), tmp, busybox)
    try:
        d.start()
        d.docker("import", "-c", 'CMD ["/bin/sh"]', "-", IMAGE, input=_rootfs(busybox))
        port = _free_port()
        d.docker("run", "-d", "--name", "web", "--network", "host", "--security-opt", "seccomp=unconfined",
                 IMAGE, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www")  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        yield d, port
    finally:
        problems = d.teardown()
        assert not problems, problems


def _criu_log(error: str) -> str:
    """ERROR with the tail of the criu log it names (why a dump failed)."""
    import re

    m = re.search(r"path= (\S+\.log)", error)
    if m and os.path.isfile(m.group(1)):
        return error + "\n" + "\n".join(Path(m.group(1)).read_text(errors="replace").splitlines()[-60:])
    return error


def check_checkpoint(bundle: Path, source: Path, comm: str) -> None:
    """``mem ps`` of the bundle's checkpoint SOURCE, and of the BUNDLE itself, lists COMM."""
    rows = []
    for where in (source, bundle):
        code, out, err = run_cli("mem", "ps", where, "--json")
        assert code in (0, 5), (where, err)
        rows.append(json.loads(out))
        assert any(comm in json.dumps(row) for row in rows[-1]), out[:500]
    assert rows[0] == rows[1]
    assert run_cli("collect", "verify", bundle)[0] == 0


def test_collect_checkpoint_leaves_it_running(experimental_web, tmp_path, monkeypatch):
    d, port = experimental_web
    criu_path(monkeypatch)
    monkeypatch.setenv("DOCKER_HOST", d.env["DOCKER_HOST"])
    before = _state(d)
    poller = Poller(port)
    poller.start()
    time.sleep(0.3)
    b = tmp_path / "b"
    code, _, err = run_cli("collect", "web", "--root", d.data_root, "--out", b, "--checkpoint")
    time.sleep(0.3)
    poller.stop.set()
    poller.join(10)
    assert code in (0, 5), err
    assert poller.ok > 5 and not poller.failed, (poller.ok, poller.failed[:5])
    assert _state(d) == before, "the checkpoint changed the container's state"
    doc = json.loads((b / "manifest.json").read_text())
    cp = doc["checkpoint"]
    assert cp and cp["status"] == "ok", _criu_log(cp.get("error", "")) if cp else doc["problems"]
    assert doc["custody"]["container_unchanged"] is True
    check_checkpoint(b, b / cp["path"], "httpd")
