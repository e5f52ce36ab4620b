"""A private, rootful Podman for the live test (no pytest in here).

Podman has no daemon: every ``podman`` command is run with global flags that keep it on paths
below one temp dir TMP -- ``--root TMP/ev/storage`` (the graphroot: the evidence a test reads),
``--runroot TMP/run``, ``--tmpdir TMP/tmp``, ``--storage-driver overlay``, ``--cgroup-manager
cgroupfs``, ``--events-backend file``, ``--runtime runc`` -- and with a private containers.conf,
storage.conf and registries.conf through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF /
CONTAINERS_REGISTRIES_CONF (containers.conf(5), containers-storage.conf(5)). One path has no flag:
containers/image's blob info cache, which a rootful podman import/commit writes to
/var/lib/containers/cache/blob-info-cache-v1.boltdb whatever the graphroot. So every command runs
in a mount namespace of ours (``nsenter`` into a holder process started with ``unshare -m``) in
which a private directory is bind-mounted over /var/lib/containers (or, if the host has none, an
overlay over /var/lib whose upper dir is ours): nothing reads or writes the host's
/var/lib/containers, /run/containers or /etc/containers, and the containers' overlay mounts live in
that namespace and vanish with its last process. Containers run with
``--network none``, nofile/nproc ulimits of 1024 (raising rlimits is not permitted here) and a
private cgroup parent. Stopping kills only what it started: processes whose command line names
our temp dir (the holder, conmon) and processes in our cgroup parent (the containers); then it
unmounts anything left below TMP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


class PodmanError(RuntimeError):
    """A podman command failed (the message has its stderr)."""


def missing_prerequisites() -> str | None:
    """Why a private rootful podman cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private rootful podman needs root"
    for cmd in ("podman", "conmon", "runc", "unshare", "nsenter"):
        if shutil.which(cmd) is None:
            return f"{cmd} is not installed (Debian: podman, conmon, runc)"
    return None


# the holder: a mount namespace of ours with a private /var/lib/containers, then sleep
HOLDER = r"""
set -e
mount --make-rprivate /
if [ -d /var/lib/containers ]; then
    mount --bind "$1/varlib/containers" /var/lib/containers
else
    mount -t overlay -o "lowerdir=/var/lib,upperdir=$1/varlib/upper,workdir=$1/varlib/work" overlay /var/lib
fi
exec -a "pensieve-podman-holder $1/" sleep infinity
"""


@dataclass
class PrivatePodman:
    """podman on private paths below TMP; kills and unmounts only what it started."""

    tmp: Path
    holder: subprocess.Popen | None = None

    # -- paths ----------------------------------------------------------------------------
    @property
    def evidence(self) -> Path:
        """The SOURCE pensieve reads: the graphroot."""
        return self.tmp / "ev" / "storage"

    @property
    def runroot(self) -> Path:
        return self.tmp / "run"

    @property
    def cgroup_parent(self) -> str:
        return "pensieve-lpm-" + self.tmp.name.replace(".", "-")

    def env(self) -> dict[str, str]:
        etc = self.tmp / "etc"
        return {
            **os.environ,
            "CONTAINERS_CONF": str(etc / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(etc / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(etc / "registries.conf"),
        }

    def setup(self) -> None:
        """Write the private configuration files and make the directories."""
        etc, tmpdir = self.tmp / "etc", self.tmp / "tmp"
        for d in (self.evidence, self.runroot, tmpdir, etc):
            d.mkdir(parents=True, exist_ok=True)
        (etc / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.evidence}"\nrunroot = "{self.runroot}"\n'
        )
        (etc / "containers.conf").write_text(
            "[containers]\n"
            'netns = "none"\n'
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{tmpdir}/events.log"\n'
            'runtime = "runc"\n'
            f'tmp_dir = "{tmpdir}"\n'
            f'static_dir = "{self.evidence}/libpod"\n'
            f'volume_path = "{self.evidence}/volumes"\n'
            'database_backend = "boltdb"\n'
        )
        (etc / "registries.conf").write_text("")
        for d in ("containers", "upper", "work"):
            (self.tmp / "varlib" / d).mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "-m", "bash", "-c", HOLDER, "holder", str(self.tmp)],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.holder.poll() is not None:
                raise PodmanError(f"the namespace holder exited with {self.holder.returncode}")
            own_ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            if own_ns and b"pensieve-podman-holder" in Path(f"/proc/{self.holder.pid}/cmdline").read_bytes():
                return
            time.sleep(0.05)
        raise PodmanError("the namespace holder did not come up")

    # -- client ---------------------------------------------------------------------------
    def base(self) -> list[str]:
        assert self.holder is not None and self.holder.poll() is None, "setup() first"
        return [
            "nsenter", "-t", str(self.holder.pid), "-m", "--",
            "podman", "--root", str(self.evidence), "--runroot", str(self.runroot),
            "--tmpdir", str(self.tmp / "tmp"), "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc",
        ]  # fmt: skip

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [*self.base(), *args], capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check and res.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} -> {res.returncode}\n{res.stderr}")
        return res

    def json(self, *args: str):
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else None

    def container_flags(self) -> list[str]:
        """Flags keeping a container off the host: no network, our ulimits, our cgroup parent."""
        return [*ULIMITS, "--network", "none", "--cgroup-parent", f"/{self.cgroup_parent}"]

    # -- teardown -------------------------------------------------------------------------
    def our_pids(self) -> list[int]:
        """Processes of ours: argv names our temp dir (conmon) or they sit in our cgroup parent."""
        marker = str(self.tmp).encode() + b"/"
        cg = f"/{self.cgroup_parent}"
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
            if marker in cmdline or cg + "/" in cgroups or cgroups.rstrip().endswith(cg):
                pids.append(int(entry))
        return sorted(pids)

    def kill_ours(self) -> list[int]:
        """SIGKILL our conmons and containers (a power cut); returns what survived."""
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
        """Kill our processes, unmount below TMP; the files stay. Returns what could not be cleaned."""
        problems = []
        left = self.kill_ours()
        if self.holder is not None:
            try:
                self.holder.wait(10)  # killed above: reap it
            except subprocess.TimeoutExpired:
                pass
        if left:
            problems.append(f"processes of the private podman still alive: {left}")
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
