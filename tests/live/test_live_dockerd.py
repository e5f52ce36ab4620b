"""pensieve against a LIVE, private dockerd, compared with the engine's own answers.

A module-scoped fixture starts dockerd 20.10 (docker.io) on private temp paths (data root, exec
root, pidfile, unix socket, daemon.json, cgroup parent): it never touches /var/lib/docker, the
system socket or any other daemon running on the machine.  The scenario imports a busybox rootfs,
builds a 3-layer image with the classic builder and runs containers with ``--network none``:

* ``c-live``    keeps running; ``docker exec`` added, modified and deleted files, and replaced a
                directory (``rm -rf d && mkdir d``: an opaque directory in the RW layer);
* ``c-exit7``   ran, wrote a file and exited with code 7;
* ``c-created`` was only created.

``test_live_host_agrees_with_engine`` reads the data root while the daemon RUNS (the live-host
case) and compares pensieve (library and CLI) with ``docker inspect/diff/history/images``; parts of
the data root the daemon leaves alone (image layers, stopped containers) must not change.
``test_stopped_host_agrees_and_is_never_written`` stops the containers and the daemon, checks the
same answers offline and that no pensieve command changes a single byte, time or xattr of the root.

Needs root, docker.io and busybox-static (skipped otherwise); about 15 s.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import tree_digest

from pensieve import api
from pensieve.times import parse_rfc3339

pytestmark = pytest.mark.live

DOCKER_CLIENT = "/usr/bin/docker"  # docker.io's 20.10 client; /usr/local/bin/docker may be newer
BASE = "plive/base:1"
APP = "plive/app:1"
APP_ALIAS = "plive/app:latest"
CONTAINERS = ("c-live", "c-exit7", "c-created")
STOPPED = ("c-exit7", "c-created")  # stable on disk while the daemon runs

DOCKERFILE = r"""FROM plive/base:1
RUN mkdir -p /opt/app/sub /opt/data && echo 'listen=8080' > /etc/app.conf && \
    echo readme > /opt/app/README.md && echo s1 > /opt/app/sub/s1.txt && echo s2 > /opt/app/sub/s2.txt && \
    printf '#!/bin/sh\necho tool\n' > /opt/app/tool && chmod 0755 /opt/app/tool && \
    echo old > /opt/data/old.txt && echo 'FAKE-BUILD-SECRET' > /opt/app/build-secret.txt
ENV APP_MODE=live
RUN echo 1.0 > /opt/app/VERSION && rm /opt/app/build-secret.txt && echo 'feature=on' >> /etc/app.conf
LABEL org.pensieve.test="live"
CMD ["sh", "-c", "exec sleep 100000"]
"""

CHANGE_SCRIPT = r"""set -e
printf '#!/bin/sh\necho implant\n' > /root/implant.sh && chmod 0755 /root/implant.sh
echo 'backdoor=1' >> /etc/app.conf
chmod 4755 /opt/app/tool
rm /opt/app/README.md
rm -rf /opt/data
rm -rf /opt/app/sub && mkdir /opt/app/sub && echo new > /opt/app/sub/new.txt
mkdir -p /tmp/drop && echo x > /tmp/drop/x.bin
ln -s /etc/shadow /root/escape
"""

APPLETS = ("sh", "ls", "cat", "echo", "sleep", "rm", "mkdir", "chmod", "ln", "printf", "touch", "true", "mv")


# ---- prerequisites -------------------------------------------------------------------------


def _is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        end = "<" if head[5] == 1 else ">"
        (phoff,) = struct.unpack_from(end + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    return all(struct.unpack_from(end + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


def _prerequisites() -> tuple[str, str]:
    if os.geteuid() != 0:
        pytest.skip("live dockerd test needs root")
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.access(dockerd, os.X_OK) or not os.access(DOCKER_CLIENT, os.X_OK):
        pytest.skip("docker.io (dockerd and its /usr/bin/docker client) is not installed")
    for cmd in ("containerd", "runc"):
        if shutil.which(cmd) is None:
            pytest.skip(f"docker.io is incomplete: {cmd} is not installed")
    candidates = ["/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""]
    busybox = next((p for p in candidates if p and os.access(p, os.X_OK) and _is_static_elf(p)), None)
    if busybox is None:
        pytest.skip("busybox-static is not installed (need a statically linked busybox for the rootfs)")
    return dockerd, busybox


# ---- the private daemon ---------------------------------------------------------------------


@dataclass
class PrivateDockerd:
    """A dockerd whose every path lives under ``tmp``; stops only what it started."""

    dockerd: str
    tmp: Path
    busybox: str
    proc: subprocess.Popen | None = None
    log_fh: io.BufferedWriter | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data_root(self) -> Path:
        return self.tmp / "data"

    @property
    def exec_root(self) -> Path:
        return self.tmp / "exec"

    @property
    def sock(self) -> Path:
        return self.tmp / "docker.sock"

    @property
    def log_path(self) -> Path:
        return self.tmp / "dockerd.log"

    @property
    def cgroup_parent(self) -> str:
        return "pensieve-live-" + self.tmp.name.replace(".", "-")

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no dockerd log)"
        return "\n".join(lines[-n:])

    # -- client ---------------------------------------------------------------------------
    def docker(self, *args: str, input: bytes | None = None, check: bool = True, timeout: float = 120):
        res = subprocess.run(
            [DOCKER_CLIENT, *args], input=input, capture_output=True, env=self.env, timeout=timeout
        )
        if check and res.returncode != 0:
            pytest.fail(
                f"docker {' '.join(args)} -> {res.returncode}\n{res.stderr.decode(errors='replace')}"
                f"\n--- dockerd log ---\n{self.log_tail()}"
            )
        return res

    def out(self, *args: str) -> str:
        return self.docker(*args).stdout.decode()

    def json(self, *args: str):
        return json.loads(self.out(*args))

    def jsonl(self, *args: str) -> list[dict]:
        return [json.loads(line) for line in self.out(*args).splitlines() if line.strip()]

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        for d in (self.data_root, self.exec_root, self.tmp / "cli"):
            d.mkdir(parents=True)
        (self.tmp / "daemon.json").write_text("{}\n")  # never read /etc/docker/daemon.json
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.tmp),
            "DOCKER_HOST": f"unix://{self.sock}",
            "DOCKER_CONFIG": str(self.tmp / "cli"),
            "DOCKER_BUILDKIT": "0",
        }
        self.log_fh = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                self.dockerd,
                "--config-file",
                str(self.tmp / "daemon.json"),
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.tmp / "dockerd.pid"),
                "-H",
                f"unix://{self.sock}",
                "--storage-driver",
                "overlay2",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--cgroup-parent",
                f"/{self.cgroup_parent}",
                "--shutdown-timeout",
                "5",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log_fh,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # a ^C to pytest must not kill it before teardown does
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dockerd exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            res = subprocess.run(
                [DOCKER_CLIENT, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                env=self.env,
                timeout=30,
            )
            if res.returncode == 0:
                return
            time.sleep(0.25)
        pytest.fail(f"dockerd did not answer on {self.sock} within {timeout:.0f}s:\n{self.log_tail()}")

    def our_pids(self) -> list[int]:
        """Processes this daemon started: dockerd, containerd and shims (their argv names our
        private paths) and container processes (in our private cgroup parent)."""
        marker = str(self.tmp).encode() + b"/"
        cg = f"/{self.cgroup_parent}/"
        me = os.getpid()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                cgroups = Path(f"/proc/{entry}/cgroup").read_text()
            except OSError:
                continue
            if marker in cmdline or cg in cgroups:
                pids.append(int(entry))
        return sorted(pids)

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM dockerd, SIGKILL after TIMEOUT; then the same for leftovers of ours.
        Returns how dockerd ended: 'not started', 'exited N', 'terminated' or 'killed'."""
        how = "not started"
        if self.proc is not None:
            if self.proc.poll() is not None:
                how = f"exited {self.proc.returncode}"
            else:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                    how = "terminated"
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
                    how = "killed"
        if self.log_fh is not None:
            self.log_fh.close()
            self.log_fh = None
        leftovers = self.our_pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in leftovers:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while leftovers and time.monotonic() < deadline:
                leftovers = self.our_pids()
                time.sleep(0.1)
            if not leftovers:
                break
        return how

    def mounts_below(self) -> list[str]:
        prefix = str(self.tmp) + "/"
        out = []
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                target = line.split()[4]
                target = target.encode().decode("unicode_escape")  # \040 and friends
                if target.startswith(prefix):
                    out.append(target)
        return sorted(set(out), key=len, reverse=True)

    def unmount_all(self) -> None:
        for _ in range(5):
            mounts = self.mounts_below()
            if not mounts:
                return
            for m in mounts:
                subprocess.run(["umount", "-l", m], capture_output=True, timeout=30)

    def remove_cgroups(self) -> None:
        for ctl in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            for dirpath, _dirs, _files in sorted(os.walk(ctl), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass

    def teardown(self) -> list[str]:
        problems = []
        self.stop()
        left = self.our_pids()
        if left:
            problems.append(f"processes of the private dockerd still alive: {left}")
        self.unmount_all()
        self.remove_cgroups()
        mounts = self.mounts_below()
        if mounts:
            problems.append(f"mounts left below {self.tmp}, not deleting it: {mounts}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.tmp.exists():
                problems.append(f"could not remove {self.tmp}")
        return problems


@pytest.fixture(scope="module")
def daemon():
    dockerd, busybox = _prerequisites()
    # short: the containerd socket under the exec root must stay below 108 bytes
    tmp = Path(tempfile.mkdtemp(prefix="plive.", dir="/tmp"))
    tmp.chmod(0o755)
    d = PrivateDockerd(dockerd, tmp, busybox)
    try:
        d.start()
        yield d
    finally:
        problems = d.teardown()
        assert not problems, problems


# ---- the scenario ---------------------------------------------------------------------------


def _rootfs_tar(busybox: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.linkname, ti.size = kind, mode, link, len(data)
            ti.mtime = 1_700_000_000
            tar.addfile(ti, io.BytesIO(data) if data else None)

        for d, mode in (
            ("bin", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("opt", 0o755),
            ("proc", 0o755),
            ("sys", 0o755),
            ("dev", 0o755),
            ("var", 0o755),
        ):
            add(d, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, Path(busybox).read_bytes())
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
        add("etc/shadow", tarfile.REGTYPE, 0o640, b"root:*:19000:0:99999:7:::\n")
    return buf.getvalue()


def _docker_diff(text: str) -> set[tuple[str, str]]:
    ops = {"A": "added", "C": "modified", "D": "deleted"}
    out = set()
    for line in text.splitlines():
        if line.strip():
            op, path = line.split(" ", 1)
            out.add((ops[op], path))
    return out


@dataclass
class Recorded:
    """The engine's answers, taken while the daemon ran."""

    inspect: dict[str, dict]
    diff: dict[str, set[tuple[str, str]]]
    images: list[dict]  # docker image inspect of `docker images -a`
    tagged: dict[str, str]  # repo:tag -> image id (docker images)
    history: dict[str, list[dict]]
    app_conf: bytes  # /etc/app.conf as the running container sees it


@pytest.fixture(scope="module")
def engine(daemon) -> Recorded:
    d = daemon
    assert d.out("info", "--format", "{{.Driver}}").strip() == "overlay2"
    d.docker(
        "import",
        "-m",
        "pensieve live busybox rootfs",
        "-c",
        'CMD ["/bin/sh"]',
        "-",
        BASE,
        input=_rootfs_tar(d.busybox),
    )
    ctx = d.tmp / "build"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    d.docker("build", "-q", "-t", APP, str(ctx))
    d.docker("tag", APP, APP_ALIAS)

    d.docker("run", "-d", "--name", "c-live", "--network", "none", "--label", "org.pensieve.case=live", APP)
    d.docker("exec", "c-live", "sh", "-c", CHANGE_SCRIPT)
    res = d.docker(
        "run",
        "--name",
        "c-exit7",
        "--network",
        "none",
        APP,
        "sh",
        "-c",
        "echo bye; echo gone > /tmp/bye.txt; rm /opt/app/VERSION; exit 7",
        check=False,
    )
    assert res.returncode == 7, res.stderr.decode(errors="replace")
    d.docker("create", "--name", "c-created", "--network", "none", APP, "sh", "-c", "echo never")

    inspect = {n: d.json("inspect", n)[0] for n in CONTAINERS}
    assert inspect["c-live"]["State"]["Status"] == "running"
    assert inspect["c-exit7"]["State"]["Status"] == "exited"
    assert inspect["c-created"]["State"]["Status"] == "created"
    diff_text = {n: d.out("diff", n) for n in CONTAINERS}
    ids = sorted(set(d.out("images", "-a", "-q", "--no-trunc").split()))
    tagged = {
        f"{i['Repository']}:{i['Tag']}": i["ID"]
        for i in d.jsonl("images", "--no-trunc", "--format", "{{json .}}")
        if i["Tag"] != "<none>"
    }
    history = {t: d.jsonl("history", "--no-trunc", "--format", "{{json .}}", t) for t in tagged}
    return Recorded(
        inspect=inspect,
        diff={n: _docker_diff(t) for n, t in diff_text.items()},
        images=d.json("image", "inspect", *ids),
        tagged=tagged,
        history=history,
        app_conf=d.docker("exec", "c-live", "cat", "/etc/app.conf").stdout,
    )


# ---- pensieve side --------------------------------------------------------------------------


def pensieve_cli(*args: str, ok: tuple[int, ...] = (0,)) -> str:
    exe = Path(sys.executable).with_name("pensieve")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pensieve.cli"]
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)
    assert res.returncode in ok, (args, res.returncode, res.stderr)
    return res.stdout


def check_containers(host, rec: Recorded, states: dict[str, dict]) -> None:
    """pensieve's containers (library) against docker inspect; STATES: name -> inspect State."""
    by_name = {c.name: c for c in host.containers()}
    assert sorted(by_name) == sorted(CONTAINERS)
    for name in CONTAINERS:
        want, st, c = rec.inspect[name], states[name], by_name[name]
        assert c.id == want["Id"], name
        assert c.name == want["Name"].lstrip("/")
        assert c.image == want["Config"]["Image"] == APP
        assert c.image_id == want["Image"] == rec.tagged[APP]
        assert c.created == parse_rfc3339(want["Created"])
        assert c.state == st["Status"], (name, c.state, st["Status"])
        assert c.exit_code == st["ExitCode"], (name, c.exit_code, st["ExitCode"])
        assert c.pid == (st["Pid"] or None), name
        assert c.oom_killed is st["OOMKilled"]
        assert c.labels == (want["Config"]["Labels"] or {})
        assert c.storage_driver == want["Driver"] == "overlay2"
        assert want["GraphDriver"]["Data"]["UpperDir"].endswith(f"/{c.rw_layer}/diff"), name
        assert c.problems == [], (name, c.problems)


def check_containers_cli(root: Path, rec: Recorded, states: dict[str, dict]) -> None:
    items = {i["name"]: i for i in json.loads(pensieve_cli("containers", str(root), "--json"))}
    assert sorted(items) == sorted(CONTAINERS)
    for name in CONTAINERS:
        want, st, i = rec.inspect[name], states[name], items[name]
        assert (i["id"], i["image"], i["image_id"]) == (want["Id"], want["Config"]["Image"], want["Image"])
        assert (i["state"], i["exit_code"]) == (st["Status"], st["ExitCode"]), name
        assert i["engine"] == "docker" and i["problems"] == []


def check_images(host, rec: Recorded) -> None:
    images = {i.id: i for i in host.images()}
    assert set(images) == {w["Id"] for w in rec.images}  # docker images -a: build parents too
    for w in rec.images:
        img = images[w["Id"]]
        assert img.diff_ids == w["RootFS"]["Layers"]
        assert sorted(img.tags) == sorted(w["RepoTags"] or [])
        assert img.cmd == w["Config"]["Cmd"]
        assert img.labels == (w["Config"]["Labels"] or {})
        assert all(img.cache_ids), "every layer resolves to an overlay2 directory"
    assert {t: host.image(t).id for t in rec.tagged} == rec.tagged
    app = host.image(APP)
    assert len(app.diff_ids) == 3 and app.tags and set(app.tags) == {APP, APP_ALIAS}
    for tag, hist in rec.history.items():
        img = host.image(tag)
        # docker history lists newest first
        assert [s.created_by or "" for s in reversed(img.history)] == [h["CreatedBy"] for h in hist], tag
        for step, h in zip(reversed(img.history), hist, strict=True):
            if h["Size"] != "0B":
                assert not step.empty_layer, (tag, h["CreatedBy"])
        assert [s.diff_id for s in img.history if not s.empty_layer] == img.diff_ids, tag
    cli = {i["id"]: i for i in json.loads(pensieve_cli("images", str(host.evidence.root), "--json"))}
    assert set(cli) == set(images)
    assert all(sorted(cli[w["Id"]]["tags"]) == sorted(w["RepoTags"] or []) for w in rec.images)


def check_diffs(host, rec: Recorded, root: Path) -> None:
    for name in CONTAINERS:
        result = api.diff(host, name)
        engine = {(c.change, c.path) for c in result.changes if c.engine_reports}
        assert engine == rec.diff[name], (
            f"{name}: pensieve-only {sorted(engine - rec.diff[name])}, "
            f"docker-only {sorted(rec.diff[name] - engine)}"
        )
        assert result.problems == [], (name, result.problems)
        cli = pensieve_cli("diff", str(root), name, "--engine-view")
        assert _docker_diff(cli) == rec.diff[name], name
    changes = {c.path: c for c in api.diff(host, "c-live").changes}
    assert changes["/root/implant.sh"].change == "added" and changes["/root/implant.sh"].mode == "0o755"
    assert "content" in changes["/etc/app.conf"].what_changed
    assert changes["/opt/app/tool"].what_changed == ["mode"] and changes["/opt/app/tool"].mode == "0o4755"
    for hidden in ("/opt/app/sub/s1.txt", "/opt/app/sub/s2.txt"):  # behind the opaque directory
        assert changes[hidden].change == "deleted", hidden
    assert changes["/root/escape"].type == "symlink"
    assert rec.diff["c-created"] == set()


def check_view(host, rec: Recorded) -> None:
    c = host.container("c-live")
    v = api.view(host, c)
    with v.open("/etc/app.conf") as fh:
        assert fh.read() == rec.app_conf
    assert v.listdir("/opt/app/sub") == ["new.txt"]
    assert "README.md" not in v.listdir("/opt/app")
    assert v.stat("/etc/app.conf").layer_role == "rw"
    assert not any(e.path.endswith("build-secret.txt") for e in api.view(host, host.image(APP)).walk("/"))


# ---- evidence integrity ---------------------------------------------------------------------


def settled_digests(paths: list[Path]) -> dict[str, str]:
    """tree_digest of each path, repeated until two passes agree (the first walk of a fresh
    directory may itself move its atime under relatime)."""
    last = None
    for _ in range(3):
        now = {str(p): tree_digest(p) for p in paths}
        if now == last:
            return now
        last = now
    raise AssertionError(f"{paths} keep changing by themselves")


def stable_paths(root: Path, rec: Recorded) -> list[Path]:
    """What the running daemon leaves alone: image metadata and layers, stopped containers."""
    paths = {root / "image/overlay2/imagedb", root / "image/overlay2/layerdb/sha256", root / "overlay2/l"}
    for w in rec.images:
        gd = w["GraphDriver"]["Data"]
        for layer_diff in [*(gd.get("LowerDir") or "").split(":"), gd["UpperDir"]]:
            if layer_diff:
                paths.add(Path(layer_diff).parent)
    for name in STOPPED:
        want = rec.inspect[name]
        paths.add(root / "containers" / want["Id"])
        paths.add(root / "image/overlay2/layerdb/mounts" / want["Id"])
        gd = want["GraphDriver"]["Data"]
        for layer_diff in [*gd["LowerDir"].split(":"), gd["UpperDir"]]:
            paths.add(Path(layer_diff).parent)
    assert all(p.is_relative_to(root) and p.exists() for p in paths), sorted(paths)
    return sorted(paths)


def run_every_command(root: Path, tmp: Path) -> None:
    src = str(root)
    for args in (
        ["roots", src],
        ["containers", src],
        ["containers", src, "--json"],
        ["images", src, "--csv"],
        ["history", src, APP],
        ["volumes", src],
        ["logs", src, "c-exit7", "--json"],
        ["diff", src, "c-live", "--jsonl"],
        ["diff", src, "c-exit7", "--recover", str(tmp / "rec")],
        ["fs", src, "c-live", "ls", "-R", "/"],
        ["fs", src, "c-live", "cat", "/etc/app.conf"],
        ["fs", src, "c-live", "find", "--layer", "rw", "--hash"],
        ["fs", src, APP, "ls", "/opt/app"],
        ["fs", src, "c-live", "export", str(tmp / "c-live.tar")],
    ):
        pensieve_cli(*args)


# ---- the tests ------------------------------------------------------------------------------


def test_live_host_agrees_with_engine(daemon, engine, tmp_path):
    assert daemon.running, "the daemon must still run for the live-host case"
    root = daemon.data_root
    # the scenario really made an opaque directory in c-live's RW layer
    upper = Path(engine.inspect["c-live"]["GraphDriver"]["Data"]["UpperDir"])
    assert os.getxattr(upper / "opt/app/sub", "trusted.overlay.opaque") == b"y"

    watched = stable_paths(root, engine)
    before = settled_digests(watched)

    host = api.open_docker(str(root))
    states = {n: engine.inspect[n]["State"] for n in CONTAINERS}
    check_containers(host, engine, states)
    check_containers_cli(root, engine, states)
    check_images(host, engine)
    check_diffs(host, engine, root)
    check_view(host, engine)
    run_every_command(root, tmp_path)

    after = {str(p): tree_digest(p) for p in watched}
    changed = sorted(p for p in before if before[p] != after[p])
    assert not changed, f"pensieve changed parts of a live data root: {changed}"
    assert daemon.running
    assert daemon.docker("inspect", "-f", "{{.State.Status}}", "c-live").stdout.decode().strip() == "running"


def test_stopped_host_agrees_and_is_never_written(daemon, engine, tmp_path):
    d = daemon
    d.docker("stop", "-t", "1", "c-live")
    stopped = d.json("inspect", "c-live")[0]
    assert stopped["State"]["Status"] == "exited"
    assert _docker_diff(d.out("diff", "c-live")) == engine.diff["c-live"], "stopping changed docker diff"
    how = d.stop()
    assert how == "terminated", f"dockerd did not stop on SIGTERM ({how}):\n{d.log_tail()}"
    assert d.our_pids() == [], "dockerd left processes behind"
    assert d.mounts_below() == [], "dockerd left mounts behind"

    root = d.data_root
    before = settled_digests([root])

    host = api.open_docker(str(root))
    states = {n: engine.inspect[n]["State"] for n in CONTAINERS}
    states["c-live"] = stopped["State"]
    check_containers(host, engine, states)
    check_containers_cli(root, engine, states)
    check_images(host, engine)
    check_diffs(host, engine, root)
    check_view(host, engine)
    run_every_command(root, tmp_path)

    assert tree_digest(root) == before[str(root)], "pensieve changed the stopped host's data root"
