"""A private containerd for the live test and the containerd benchmark (no pytest in here).

Everything it starts lives under one temp dir: the daemon's own config (CRI plugin disabled, so
no CNI or kubelet paths are touched), ``--root`` and ``--state`` under ``TMP/ev`` (the evidence a
test reads: ``ev/root`` beside ``ev/state``, as a host's /var/lib/containerd and /run/containerd),
its gRPC/ttrpc sockets, pid file, runc root, log files and a private cgroup parent.  It never uses
/var/lib/containerd, /run/containerd or the system's socket.  Stopping signals only what it
started: the daemon by the pid in its pid file (if that process's command line still names our
config), the shims whose command line names our socket (with their process trees), and processes
in our cgroup parent; then it unmounts what is left below TMP (the tasks' rootfs mounts).
Layout facts: containerd's docs/ops.md (root, state, config version 2) and ``ctr --help``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "fixtures" / "capture"


class ContainerdError(RuntimeError):
    """The private containerd did not start or a ctr command failed (the message has its log)."""


def missing_prerequisites() -> str | None:
    """Why a private containerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private containerd needs root"
    for cmd in ("containerd", "ctr", "runc", "containerd-shim-runc-v2"):
        if shutil.which(cmd) is None:
            return f"{cmd} is not installed (Debian: containerd, runc)"
    if static_busybox() is None:
        return "busybox-static is not installed (a statically linked busybox makes the image)"
    return None


def static_busybox() -> str | None:
    """Path of a statically linked busybox (the image's only binary), or None."""
    from test_live_dockerd import _is_static_elf

    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if cand and os.access(cand, os.X_OK) and _is_static_elf(cand):
            return cand
    return None


def capture_module(name: str) -> ModuleType:
    """fixtures/capture/NAME.py as a module (the image builder and ctr's table parser)."""
    spec = importlib.util.spec_from_file_location(f"capture_{name}", CAPTURE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class PrivateContainerd:
    """containerd on private paths below TMP; stops and removes only what it started."""

    tmp: Path
    proc: subprocess.Popen | None = None
    log_fh: io.BufferedWriter | None = None

    # -- paths ----------------------------------------------------------------------------
    @property
    def evidence(self) -> Path:
        """The SOURCE pensieve reads: root/ (--root) beside state/ (--state)."""
        return self.tmp / "ev"

    @property
    def root(self) -> Path:
        return self.evidence / "root"

    @property
    def state(self) -> Path:
        return self.evidence / "state"

    @property
    def sock(self) -> Path:
        return self.tmp / "c.sock"

    @property
    def config(self) -> Path:
        return self.tmp / "containerd.toml"

    @property
    def pidfile(self) -> Path:
        return self.tmp / "containerd.pid"

    @property
    def log_path(self) -> Path:
        return self.tmp / "containerd.log"

    @property
    def cgroup_parent(self) -> str:
        return "pensieve-lctr-" + self.tmp.name.replace(".", "-")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no containerd log)"

    # -- client ---------------------------------------------------------------------------
    def ctr(self, *args: str, ns: str = "default", check: bool = True, timeout: float = 120):
        """`ctr -a SOCK -n NS ARGS...` (text output)."""
        res = subprocess.run(
            ["ctr", "-a", str(self.sock), "-n", ns, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and res.returncode != 0:
            raise ContainerdError(
                f"ctr -n {ns} {' '.join(args)} -> {res.returncode}\n{res.stderr}\n"
                f"--- containerd log ---\n{self.log_tail()}"
            )
        return res

    def out(self, *args: str, ns: str = "default") -> str:
        return self.ctr(*args, ns=ns).stdout

    def run_opts(self, ns: str, cid: str) -> list[str]:
        """`ctr run` flags keeping a task on our paths: runc root, cgroup, log file."""
        return [
            "--runc-root",
            str(self.tmp / "runc"),
            "--cgroup",
            f"/{self.cgroup_parent}/{ns}-{cid}",
            "--log-uri",
            f"file://{self.tmp}/logs/{ns}-{cid}.log",
        ]

    def tasks(self, ns: str) -> dict[str, tuple[int, str]]:
        """`ctr tasks ls`: task id -> (pid, status)."""
        rows = self.out("tasks", "ls", ns=ns).splitlines()[1:]
        return {r.split()[0]: (int(r.split()[1]), r.split()[2]) for r in rows if r.strip()}

    def wait_status(self, ns: str, cid: str, status: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tasks(ns).get(cid, (0, ""))[1] == status:
                return
            time.sleep(0.1)
        raise ContainerdError(f"task {ns}/{cid} never reached {status}: {self.tasks(ns)}")

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def config_text(self) -> str:
        """The daemon's config (version 2): our paths, the CRI plugin off."""
        return (
            "version = 2\n"
            f'root = "{self.root}"\nstate = "{self.state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n'
            f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.tmp}/opt"\n'
        )

    def start(self, timeout: float = 30) -> None:
        for d in (self.root, self.state, self.tmp / "runc", self.tmp / "logs", self.tmp / "opt"):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())
        self.log_fh = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self.log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ^C to the caller must not kill it before teardown does
        )
        self.pidfile.write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerdError(f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ctr("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise ContainerdError(
            f"containerd did not answer on {self.sock} in {timeout:.0f}s:\n{self.log_tail()}"
        )

    def _pidfile_pid(self) -> int | None:
        """The pid in our pid file if that process is still our containerd (its argv names our config)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.config).encode() in cmdline else None

    def stop(self, timeout: float = 20) -> str:
        """SIGTERM the daemon (pid file), SIGKILL after TIMEOUT: 'not running', 'terminated' or 'killed'.
        Tasks and shims outlive it, as on a real host."""
        pid = self._pidfile_pid()
        how = "not running"
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            how = "terminated"
            deadline = time.monotonic() + timeout
            while self._pidfile_pid() is not None and time.monotonic() < deadline:
                if self.proc is not None and self.proc.pid == pid:
                    self.proc.poll()  # reap our child so /proc forgets it
                time.sleep(0.05)
            if self._pidfile_pid() is not None:
                os.kill(pid, signal.SIGKILL)
                how = "killed"
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.log_fh is not None:
            self.log_fh.close()
            self.log_fh = None
        return how

    def our_pids(self) -> list[int]:
        """Processes of ours: argv names our temp dir (daemon, shims: `-address SOCK`) or they sit
        in our cgroup parent (the containers)."""
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

    def kill_leftovers(self) -> list[int]:
        """SIGKILL our shims and containers (a power cut for the tasks); returns what survived."""
        left = self.our_pids()
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
            left = self.our_pids()
        return left

    def mounts_below(self) -> list[str]:
        prefix = str(self.tmp) + "/"
        out = set()
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                target = line.split()[4].encode().decode("unicode_escape")  # \040 and friends
                if target.startswith(prefix):
                    out.add(target)
        return sorted(out, key=len, reverse=True)

    def unmount_all(self) -> None:
        for _ in range(5):
            mounts = self.mounts_below()
            if not mounts:
                return
            for m in mounts:
                subprocess.run(["umount", "-l", m], capture_output=True, timeout=30)

    def remove_cgroups(self) -> None:
        top = Path("/sys/fs/cgroup")
        for ctl in [*top.glob(f"*/{self.cgroup_parent}"), top / self.cgroup_parent]:  # v1, v2
            for dirpath, _dirs, _files in sorted(os.walk(ctl), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass

    def power_off(self) -> list[str]:
        """Stop the daemon, kill its shims and tasks, unmount below TMP; the files stay.
        Returns what could not be cleaned."""
        self.stop()
        problems = []
        left = self.kill_leftovers()
        if left:
            problems.append(f"processes of the private containerd still alive: {left}")
        self.unmount_all()
        self.remove_cgroups()
        mounts = self.mounts_below()
        if mounts:
            problems.append(f"mounts left below {self.tmp}: {mounts}")
        return problems

    def teardown(self) -> list[str]:
        """power_off, then delete TMP (kept, with a problem, while anything is mounted below it)."""
        problems = self.power_off()
        if not problems:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.tmp.exists():
                problems.append(f"could not remove {self.tmp}")
        return problems
