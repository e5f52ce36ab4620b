"""``pensieve collect`` of a running Podman container (tests/live/private_podman.py) and of a
running containerd task (tests/live/private_containerd.py): the bundle verifies, ``containers``
and ``diff`` on the bundle equal the same commands on the live root, ``verify image.tar`` says
intact (Podman), the container keeps running (state and start unchanged) and the engine's
files are left as they were.  Podman's container serves HTTP on 127.0.0.1 (``--network host``,
never a bridge) and a client polls it throughout.

Needs root, podman/conmon/runc or containerd/ctr, and busybox-static (skipped otherwise).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli
from private_containerd import PrivateContainerd, capture_module, static_busybox
from private_containerd import missing_prerequisites as containerd_missing
from private_podman import PrivatePodman
from private_podman import missing_prerequisites as podman_missing
from test_live_collect import CRIU_BIN, Poller, _free_port, _rootfs, check_checkpoint, criu_with_config
from test_live_dockerd import settled_digests

pytestmark = pytest.mark.live

IMAGE = "localhost/pcollect/web:1"


def _same(bundle: Path, root: Path, ref: str) -> None:
    """containers and diff REF agree between the bundle and the live root."""
    for args in (["containers", "--json"], ["diff", ref, "--json"]):
        a, b = run_cli(args[0], bundle, *args[1:]), run_cli(args[0], root, *args[1:])
        assert a[0] == b[0] == 0, (args, a[2], b[2])
        assert json.loads(a[1]) == json.loads(b[1]), args


def _problems(doc: dict) -> list[dict]:
    # this sandbox's pid 1 hides its ns and exe links even from root: those warnings are honest
    return [p for p in doc["problems"] if not p["source"].startswith(("live/cgroups", "/proc/1/"))]


# ---- Podman -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman_web():
    why = podman_missing() or (None if static_busybox() else "busybox-static is not installed")
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="pcolp.", dir="/tmp"))
    tmp.chmod(0o755)
    p = PrivatePodman(tmp)
    try:
        p.setup()
        tar = tmp / "rootfs.tar"
        tar.write_bytes(_rootfs(static_busybox()))
        p.run("import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE)
        port = _free_port()
        flags = p.container_flags()
        flags[flags.index("--network") + 1] = "host"
        p.run("run", "-d", "--name", "web", *flags, IMAGE,
              "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www")  # fmt: skip
        p.run(
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
        yield p, port
    finally:
        problems = p.teardown()
        assert not problems, problems


def _podman_state(p: PrivatePodman) -> dict:
    s = p.json("container", "inspect", "web")[0]["State"]
    return {k: s[k] for k in ("Status", "Running", "Pid", "StartedAt")}


def test_collect_a_serving_podman_container(podman_web, tmp_path):
    p, port = podman_web
    root = p.evidence
    watched = [root / "overlay-images", root / "overlay-layers", root / "libpod"]
    before = _podman_state(p)  # podman itself writes libpod's state: read the files after it
    before_tree = settled_digests(watched)
    poller = Poller(port)
    poller.start()
    time.sleep(0.3)
    code, _, err = run_cli("collect", "web", "--root", root, "--out", tmp_path / "b", "--json")
    time.sleep(0.3)
    poller.stop.set()
    poller.join(10)
    assert code in (0, 5), err
    assert poller.ok > 5 and not poller.failed, (poller.ok, poller.failed[:5])
    assert settled_digests(watched) == before_tree, "collect changed the graphroot"
    assert _podman_state(p) == before, "collect changed the container's state"
    b = tmp_path / "b"
    doc = json.loads((b / "manifest.json").read_text())
    assert doc["engine"] == "podman" and doc["custody"]["container_unchanged"] is True
    assert not _problems(doc), _problems(doc)
    paths = {f["path"] for f in doc["files"]}
    cid = doc["container"]["id"]
    assert "root/overlay-containers/containers.json" in paths
    assert "root/libpod/bolt_state.db" in paths
    assert f"root/overlay-containers/{cid}/userdata/config.json" in paths
    assert any(x.endswith(".tar-split.gz") for x in paths)
    assert run_cli("collect", "verify", b)[0] == 0
    _same(b, root, "web")
    rw = next(x for x in doc["layers"] if x["role"] == "rw")["cache_id"]
    index = json.loads((b / f"layers/{rw}.index.json").read_text())
    assert {e["path"] for e in index} >= {"./tmp/new.txt", "./etc/group", "./opt/old/"}
    code, _, err = run_cli("verify", b / "image.tar")
    assert code == 0, err


# ---- containerd -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd_task():
    why = containerd_missing()
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="pcolc.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateContainerd(tmp)
    try:
        d.start()
        image = "docker.io/pcollect/task:1"
        tar = tmp / "image.tar"
        capture_module("containerd_image").main(static_busybox(), str(tar), image)
        ns, cid = "default", "c" * 64
        d.out("images", "import", str(tar), ns=ns)
        opts = d.run_opts(ns, cid)
        opts[opts.index("--cgroup") + 1] = f"/{d.cgroup_parent}/{cid}"
        script = "echo new > /tmp/new.txt; rm -f /etc/motd; exec sleep 100000"
        d.out("run", "-d", *opts, image, cid, "sh", "-c", script, ns=ns)
        d.wait_status(ns, cid, "RUNNING")
        time.sleep(0.5)
        yield d, ns, cid
    finally:
        problems = d.teardown()
        assert not problems, problems


def test_collect_a_running_containerd_task(containerd_task, tmp_path):
    d, ns, cid = containerd_task
    ev = d.evidence
    watched = [d.root / "io.containerd.content.v1.content", d.root / "io.containerd.metadata.v1.bolt"]
    before_tree = settled_digests(watched)
    before = d.tasks(ns)[cid]
    code, _, err = run_cli("collect", cid, "--root", ev, "--out", tmp_path / "b", "--json")
    assert code in (0, 5), err
    assert d.tasks(ns)[cid] == before, "collect changed the task"
    assert settled_digests(watched) == before_tree, "collect changed the root"
    b = tmp_path / "b"
    doc = json.loads((b / "manifest.json").read_text())
    assert doc["engine"] == "containerd" and doc["custody"]["container_unchanged"] is True
    assert not _problems(doc), _problems(doc)
    paths = {f["path"] for f in doc["files"]}
    assert "root/root/io.containerd.metadata.v1.bolt/meta.db" in paths
    assert "root/root/io.containerd.snapshotter.v1.overlayfs/metadata.db" in paths
    assert any("/state/io.containerd.runtime.v2.task/" in x for x in paths)
    assert run_cli("collect", "verify", b)[0] == 0
    _same(b, ev, cid)
    code, _, err = run_cli("verify", b / "image.tar")
    assert code == 0, err


# ---- --checkpoint -----------------------------------------------------------------------------


def _criu_on_path(monkeypatch, tmp: Path) -> None:
    if not (CRIU_BIN / "criu").exists():
        pytest.skip(f"no criu environment at {CRIU_BIN} (fixtures/capture/criu_env.sh)")
    bindir = criu_with_config(tmp)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")


def test_podman_checkpoint_leaves_it_running(podman_web, tmp_path, monkeypatch):
    p, port = podman_web
    _criu_on_path(monkeypatch, tmp_path)
    for key, value in p.env().items():
        if key.startswith("CONTAINERS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("PENSIEVE_PODMAN", shlex.join(p.base()))
    before = _podman_state(p)
    poller = Poller(port)
    poller.start()
    time.sleep(0.3)
    b = tmp_path / "b"
    code, _, err = run_cli("collect", "web", "--root", p.evidence, "--out", b, "--checkpoint")
    time.sleep(0.3)
    poller.stop.set()
    poller.join(10)
    assert code in (0, 5), err
    assert poller.ok > 5 and not poller.failed, (poller.ok, poller.failed[:5])
    doc = json.loads((b / "manifest.json").read_text())
    cp = doc["checkpoint"]
    assert cp and cp["status"] == "ok", cp.get("error") if cp else doc["problems"]
    assert _podman_state(p) == before, "the checkpoint changed the container's state"
    assert doc["custody"]["container_unchanged"] is True
    check_checkpoint(b, b / cp["path"], "httpd")


def test_podman_checkpoint_through_the_client_pensieve_builds(podman_web, tmp_path, monkeypatch):
    """Without PENSIEVE_PODMAN, collect runs the ``podman`` on PATH with ``--root`` and
    ``--runroot`` read from the evidence (the graphroot given, the run root from libpod's
    database): no storage.conf points podman at the private store here, so only those flags can
    find the container.  The ``podman`` on PATH is a wrapper that enters the test's private mount
    namespace (tests/live/private_podman.py) and passes its arguments through unchanged."""
    p, port = podman_web
    _criu_on_path(monkeypatch, tmp_path)
    real = shutil.which("podman")
    assert real
    wrapper = tmp_path / "bin" / "podman"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter -t {p.holder.pid} -m -- {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv("PENSIEVE_PODMAN", raising=False)
    monkeypatch.delenv("CONTAINERS_STORAGE_CONF", raising=False)
    monkeypatch.setenv("CONTAINERS_CONF", p.env()["CONTAINERS_CONF"])  # cgroupfs, runc, tmp dir
    before = _podman_state(p)
    poller = Poller(port)
    poller.start()
    time.sleep(0.3)
    b = tmp_path / "b"
    code, _, err = run_cli("collect", "web", "--root", p.evidence, "--out", b, "--checkpoint")
    time.sleep(0.3)
    poller.stop.set()
    poller.join(10)
    assert code in (0, 5), err
    assert poller.ok > 5 and not poller.failed, (poller.ok, poller.failed[:5])
    doc = json.loads((b / "manifest.json").read_text())
    cp = doc["checkpoint"]
    assert cp and cp["status"] == "ok", cp.get("error") if cp else doc["problems"]
    argv = cp["command"] if isinstance(cp["command"], list) else shlex.split(cp["command"])
    assert argv[0] == str(wrapper), argv
    assert argv[argv.index("--root") + 1] == str(p.evidence), argv
    assert argv[argv.index("--runroot") + 1] == str(p.runroot), argv
    assert _podman_state(p) == before, "the checkpoint changed the container's state"
    assert doc["custody"]["container_unchanged"] is True
    check_checkpoint(b, b / cp["path"], "httpd")


def test_containerd_checkpoint_leaves_it_running(containerd_task, tmp_path, monkeypatch):
    d, ns, cid = containerd_task
    _criu_on_path(monkeypatch, tmp_path)
    # the runc root (ctr run --runc-root) is read from the task's options.json in the state dir
    before = d.tasks(ns)[cid]
    b = tmp_path / "b"
    code, _, err = run_cli("collect", cid, "--root", d.evidence, "--out", b, "--checkpoint")
    assert code in (0, 5), err
    doc = json.loads((b / "manifest.json").read_text())
    cp = doc["checkpoint"]
    assert cp and cp["status"] == "ok", cp.get("error") if cp else doc["problems"]
    assert d.tasks(ns)[cid] == before, "the checkpoint changed the task"
    assert doc["custody"]["container_unchanged"] is True
    check_checkpoint(b, b / cp["path"], "sleep")
