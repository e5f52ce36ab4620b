"""Every process of a live host, read once through ``/proc`` and attributed to its container.

For each pid: ``stat`` (ppid, state, comm, start time, the PF_KTHREAD flag), ``status`` (NSpid,
Uid/Gid, CapEff/CapPrm/CapBnd, Seccomp, NoNewPrivs), ``cmdline``, the ``exe`` link and the hash of
the bytes behind it, the ``ns/*`` inodes, ``uid_map``/``gid_map`` and ``cgroup``.  A process that
exits before its ``stat`` was read is not listed; one that exits later keeps what was read and says
so.  Threads are not listed (only /proc's top-level entries are read).

Executables are hashed once per file: the key is (device, inode, mtime, size) of what
``/proc/PID/exe`` points at (a ``stat`` through the magic link, which does not touch the atime),
so a hundred sleepers of one busybox cost one read.

References: proc(5) (``stat`` field 9 flags, PF_KTHREAD 0x00200000 from include/linux/sched.h;
``status`` ``Seccomp`` 0 disabled, 1 strict, 2 filter), user_namespaces(7), capabilities(7).
"""

from __future__ import annotations

import os

from pensieve.live import capabilities
from pensieve.live.context import LiveContext
from pensieve.live.procfs import ProcessGone, ProcFS, Unreadable, map_id
from pensieve.records.core import Problem, Timestamp
from pensieve.records.live import LiveProcess

__all__ = ["live_processes", "passwd_names", "proc_problems"]

PF_KTHREAD = 0x00200000
SECCOMP = {"0": "disabled", "1": "strict", "2": "filter"}
DELETED = " (deleted)"
MEMFD = "/memfd:"
MAX_PASSWD = 4 << 20


def _ints(value: str | None) -> list[int]:
    return [int(v) for v in (value or "").split() if v.lstrip("-").isdigit()]


def passwd_names(text: str) -> dict[int, str]:
    """uid -> user name from the text of an /etc/passwd (passwd(5): name:x:uid:gid:...); the first
    line of a uid wins."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit() and not line.startswith("#"):
            out.setdefault(int(fields[2]), fields[0])
    return out


def _read_passwd(roots: list[str]) -> dict[int, str]:
    """The users of the host root ROOTS[0] (a root holding /etc/passwd), else of the live /etc/passwd;
    both read read-only through the evidence layer; {} when neither is readable."""
    from pensieve.errors import EvidenceError
    from pensieve.evidence.directory import DirectoryEvidence

    for root in [*roots[:1], "/"]:
        if not os.path.isdir(root):
            continue
        try:
            ev = DirectoryEvidence(root)
            try:
                if ev.is_file("/etc/passwd"):
                    return passwd_names(ev.read_bytes("/etc/passwd", MAX_PASSWD).decode("utf-8", "replace"))
            finally:
                ev.close()
        except (EvidenceError, OSError):
            continue
    return {}


class _Reader:
    """The per-run state of :func:`live_processes`: the exe hash cache, the users, the engine join."""

    def __init__(self, ctx: LiveContext, hash_exe: bool) -> None:
        self.ctx = ctx
        self.procfs: ProcFS = ctx.procfs
        self.hash_exe = hash_exe
        self.digests: dict[tuple[int, int, int, int], tuple[str, int]] = {}
        self.users = _read_passwd(ctx.roots)
        self.host_ns = ctx.host_namespaces()
        self._engine_data: bool | None = None

    @property
    def engine_data(self) -> bool:
        """Whether engine records were read: the roots are opened at the first process in a
        container (a host without containers costs no engine read)."""
        if self._engine_data is None:
            self._engine_data = bool(self.ctx.roots) and bool(self.ctx.engine_hosts())
        return self._engine_data

    def problem(self, proc: LiveProcess, what: str, exc: Exception) -> None:
        source = self.procfs.path(proc.pid, what)
        message = (str(exc) or type(exc).__name__).removeprefix(source + ": ")
        proc.problems.append(Problem(source, message))

    # ---- the parts of one process ------------------------------------------------------------

    def stat(self, proc: LiveProcess) -> None:
        comm, fields = self.procfs.stat(proc.pid)
        proc.comm, proc.state = comm, fields[0]
        proc.ppid = int(fields[1])
        proc.kernel_thread = bool(int(fields[6]) & PF_KTHREAD)
        try:
            proc.start_time = Timestamp(self.procfs.start_time_ns(proc.pid, fields))
        except Unreadable as exc:
            self.problem(proc, "stat", exc)

    def status(self, proc: LiveProcess) -> None:
        st = self.procfs.status(proc.pid)
        proc.nspids = _ints(st.get("NSpid")) or [proc.pid]
        proc.uids, proc.gids = _ints(st.get("Uid")), _ints(st.get("Gid"))
        proc.cap_eff, proc.cap_prm, proc.cap_bnd = st.get("CapEff"), st.get("CapPrm"), st.get("CapBnd")
        proc.caps_eff = capabilities.decode(proc.cap_eff)
        proc.caps_prm = capabilities.decode(proc.cap_prm)
        proc.caps_bnd = capabilities.decode(proc.cap_bnd)
        seccomp = st.get("Seccomp")
        proc.seccomp = SECCOMP.get(seccomp, seccomp) if seccomp is not None else None
        nnp = st.get("NoNewPrivs")
        proc.no_new_privs = None if nnp is None else nnp == "1"
        if proc.uids:
            proc.user = self.users.get(proc.uids[0])

    def idmaps(self, proc: LiveProcess) -> None:
        uid_map = self.procfs.id_map(proc.pid, "uid")
        proc.ns_uids = [map_id(uid_map, u) for u in proc.uids]
        gid_map = self.procfs.id_map(proc.pid, "gid")
        proc.ns_gids = [map_id(gid_map, g) for g in proc.gids]

    def exe(self, proc: LiveProcess) -> None:
        target = self.procfs.readlink(proc.pid, "exe")
        if target.endswith(DELETED):
            target, proc.exe_deleted = target[: -len(DELETED)], True
        proc.exe_memfd = target.startswith(MEMFD)
        proc.exe = target
        if not self.hash_exe:
            return
        try:
            st = os.stat(self.procfs.path(proc.pid, "exe"))
        except OSError as exc:
            raise (
                ProcessGone(str(exc))
                if not os.path.lexists(self.procfs.path(proc.pid))
                else Unreadable(f"stat: {exc.strerror or exc}")
            ) from exc
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if key not in self.digests:
            self.digests[key] = self.procfs.exe_digest(proc.pid)
        proc.exe_sha256, proc.exe_size = self.digests[key]

    def namespaces(self, proc: LiveProcess) -> None:
        proc.namespaces = self.procfs.namespaces(proc.pid)
        proc.host_namespaces = [n for n, ino in proc.namespaces.items() if self.host_ns.get(n) == ino]

    def cmdline(self, proc: LiveProcess) -> None:
        proc.cmdline = self.procfs.cmdline(proc.pid)

    def container(self, proc: LiveProcess) -> None:
        owner = proc.owner
        if owner is None or owner.container_id is None:
            return
        proc.container_id, proc.engine = owner.container_id, owner.engine
        if not self.engine_data:
            return
        c = self.ctx.container_for(owner)
        proc.known = c is not None
        if c is None:
            return
        proc.container_name = (c.name or "").lstrip("/") or None
        proc.image, proc.engine = c.image, c.engine or proc.engine
        ns, pod = c.labels.get("io.kubernetes.pod.namespace"), c.labels.get("io.kubernetes.pod.name")
        if pod:
            proc.pod = f"{ns}/{pod}" if ns else pod

    # ---- one process -------------------------------------------------------------------------

    def read(self, pid: int, wanted: set[str] | None) -> LiveProcess | None:
        """PID's record; None when it exited before its stat was read, or is not WANTED."""
        proc = LiveProcess(pid=pid)
        try:
            self.stat(proc)
        except ProcessGone:
            return None
        except (Unreadable, ValueError, IndexError) as exc:
            self.problem(proc, "stat", exc)
        try:
            proc.owner, proc.cgroup, proc.cgroups = self.ctx.owner(pid)
        except ProcessGone as exc:
            return None if wanted is not None else self._gone(proc, "cgroup", exc)
        except Unreadable as exc:
            self.problem(proc, "cgroup", exc)
        if not self.ctx.selected(proc.owner.container_id if proc.owner else None, wanted):
            return None
        self.container(proc)
        steps = [("status", self.status), ("cmdline", self.cmdline), ("ns", self.namespaces)]
        steps.append(("uid_map", self.idmaps))
        if not proc.kernel_thread:
            steps.append(("exe", self.exe))
        for what, step in steps:
            try:
                step(proc)
            except ProcessGone as exc:
                return self._gone(proc, what, exc)
            except (Unreadable, ValueError) as exc:
                self.problem(proc, what, exc)
        return proc

    def _gone(self, proc: LiveProcess, what: str, exc: Exception) -> LiveProcess:
        proc.problems.append(
            Problem(
                self.procfs.path(proc.pid, what), f"process exited while being read ({exc}); partial record"
            )
        )
        return proc


def live_processes(
    ctx: LiveContext, wanted: set[str] | None = None, hash_exe: bool = True
) -> list[LiveProcess]:
    """Every process of CTX's /proc (only those of the containers WANTED, a set of ids as
    ``ctx.matches`` gives, when not None), with its executable hashed unless HASH_EXE is false."""
    reader = _Reader(ctx, hash_exe)
    out = []
    for pid in ctx.procfs.pids():
        proc = reader.read(pid, wanted)
        if proc is not None:
            out.append(proc)
    return out


def proc_problems(processes: list[LiveProcess], privileged: bool = True) -> list[Problem]:
    """The problems of PROCESSES for the run's list: each one, except that without PRIVILEGED
    (root) the files denied to an unprivileged reader are said once, with how many processes and
    which files, instead of once a process (each record keeps its own)."""
    out: list[Problem] = []
    denied: dict[str, int] = {}
    for proc in processes:
        for p in proc.problems:
            if not privileged and p.message.endswith("permission denied"):
                what = os.path.basename(p.source)
                denied[what] = denied.get(what, 0) + 1
            else:
                out.append(p)
    if denied:
        files = ", ".join(f"{what} of {n}" for what, n in sorted(denied.items()))
        out.append(
            Problem("/proc", f"not root: unreadable without privilege: {files} processes (run as root)")
        )
    return out
