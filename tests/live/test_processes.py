"""``live ps`` on real processes of this machine, no engine: namespaces, deleted and memfd
executables, a process exiting mid-read, a --proc that is no proc, and the atime of a hashed
executable left alone (live/processes.py, api.live_ps, the CLI)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pensieve import api
from pensieve.cli import main
from pensieve.errors import EvidenceError
from pensieve.live.context import LiveContext
from pensieve.live.processes import live_processes, passwd_names
from pensieve.live.procfs import ProcessGone, ProcFS

SLEEP = shutil.which("sleep") or "/bin/sleep"


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _wait_exe(pid: int, want: str, timeout: float = 10) -> None:
    """Until /proc/PID/exe names WANT (the child has exec'd)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if want in os.readlink(f"/proc/{pid}/exe"):
                return
        except OSError:
            pass
        time.sleep(0.02)
    pytest.fail(f"pid {pid} never exec'd {want}")


def _settled_atime(pid: int) -> int:
    """The atime of PID's executable once the exec is done with it (two looks 0.2 s apart agree)."""
    last = None
    for _ in range(50):
        now = os.stat(f"/proc/{pid}/exe").st_atime_ns
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    pytest.fail(f"the atime of pid {pid}'s executable keeps moving")


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)


def _by_pid(ctx: LiveContext | None = None, **kwargs) -> dict[int, object]:
    ctx = ctx or LiveContext(roots=[])
    return {p.pid: p for p in live_processes(ctx, **kwargs)}


def _reference_namespaces(ctx: LiveContext) -> None:
    """Pid 1 may be beyond reach (this sandbox): this process's namespaces stand for the host's."""
    if not ctx.host_namespaces():
        ctx._pid1_ns = ctx.procfs.namespaces(os.getpid())


def test_passwd_names() -> None:
    text = (
        "# c\nroot:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbad\n"
    )
    assert passwd_names(text) == {0: "root", 1000: "bob"}


def test_this_process_and_kernel_threads() -> None:
    procs = _by_pid()
    me = procs[os.getpid()]
    assert me.ppid == os.getppid() and me.nspids == [os.getpid()]
    assert me.exe == os.path.realpath(sys.executable) and me.exe_sha256 == _sha256(sys.executable)
    assert me.uids[0] == os.getuid() and me.ns_uids[0] == os.getuid()
    assert me.owner is not None and me.start_time is not None and not me.problems
    assert me.cmdline[1:3] == sys.argv[1:3] or me.cmdline
    kthreads = [p for p in procs.values() if p.kernel_thread]
    if os.path.exists("/proc/2"):  # kthreadd, in the initial PID namespace
        assert kthreads
    for p in kthreads:
        assert p.exe is None and not p.problems and not p.cmdline


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("setpriv") is None, reason="util-linux")
def test_new_namespaces_nspid_and_uid_map() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (setpriv to uid 1000)")
    child = subprocess.Popen(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "unshare", "--user", "--map-root-user",
         "--pid", "--fork", "--mount-proc", SLEEP, "300"]
    )  # fmt: skip
    try:
        end = time.monotonic() + 10
        sleeper = None
        while sleeper is None and time.monotonic() < end:
            out = subprocess.run(
                ["pgrep", "-P", str(child.pid)], capture_output=True, text=True
            ).stdout.split()
            sleeper = int(out[0]) if out else None
            time.sleep(0.05)
        assert sleeper is not None
        _wait_exe(sleeper, os.path.basename(SLEEP))
        ctx = LiveContext(roots=[])
        _reference_namespaces(ctx)
        p = _by_pid(ctx)[sleeper]
        assert p.nspids == [sleeper, 1]
        assert p.uids == [1000] * 4 and p.ns_uids == [0] * 4 and p.ns_gids == [0] * 4
        assert not {"user", "pid", "mnt"} & set(p.host_namespaces)
        assert {"net", "ipc", "uts"} <= set(p.host_namespaces)
        assert len(p.caps_eff) == len(p.caps_bnd) > 0  # root of its own user namespace: every cap there
        assert not p.problems
    finally:
        _kill(child)


def test_deleted_executable_hashed_and_atime_kept(tmp_path: Path) -> None:
    """The copy of sleep runs from a strictatime tmpfs (every read would move the atime) and is
    unlinked: live ps flags it, hashes it equal to the copy, and leaves its atime alone."""
    mnt = tmp_path / "strict"
    mnt.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "strictatime,size=64m", "pensieve-test", str(mnt)]
        ).returncode
        == 0
    )
    try:
        exe = mnt / "sleep-deleted"
        shutil.copy(SLEEP, exe)
        digest = _sha256(str(exe))
        child = subprocess.Popen([str(exe), "300"])
        try:
            _wait_exe(child.pid, "sleep-deleted")
            exe.unlink()
            before = _settled_atime(child.pid)
            p = _by_pid()[child.pid]
            assert p.exe == str(exe) and p.exe_deleted and not p.exe_memfd
            assert p.exe_sha256 == digest and p.exe_size == os.path.getsize(SLEEP)
            assert os.stat(f"/proc/{child.pid}/exe").st_atime_ns == before
            if mounted:  # the control: a plain read on this mount does move it
                with open(f"/proc/{child.pid}/exe", "rb") as fh:
                    fh.read(1)
                assert os.stat(f"/proc/{child.pid}/exe").st_atime_ns != before
        finally:
            _kill(child)
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=True)


def test_memfd_executable() -> None:
    code = (
        "import os,sys\n"
        f"data=open({SLEEP!r},'rb').read()\n"
        "fd=os.memfd_create('pensieve-memfd', 0)\n"
        "os.write(fd, data)\n"
        "os.execve(f'/proc/self/fd/{fd}', ['memfd-sleep', '300'], {})\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        _wait_exe(child.pid, "memfd:pensieve-memfd")
        p = _by_pid()[child.pid]
        assert p.exe_memfd and p.exe == "/memfd:pensieve-memfd"
        assert p.exe_sha256 == _sha256(SLEEP) and p.cmdline == ["memfd-sleep", "300"]
        from pensieve.output.columns import live_exe

        assert live_exe(p) == "/memfd:pensieve-memfd (memfd)"
    finally:
        _kill(child)


def test_sleepers_hash_once_and_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / "sleep-many"
    shutil.copy(SLEEP, exe)
    children = [subprocess.Popen([str(exe), "300"]) for _ in range(100)]
    try:
        for c in children:
            _wait_exe(c.pid, "sleep-many")
        calls: list[int] = []
        real = ProcFS.exe_digest
        monkeypatch.setattr(
            ProcFS, "exe_digest", lambda self, pid, **kw: calls.append(pid) or real(self, pid, **kw)
        )
        started = time.perf_counter()
        procs = live_processes(LiveContext(roots=[]))
        elapsed = time.perf_counter() - started
        ours = [p for p in procs if p.pid in {c.pid for c in children}]
        assert len(ours) == 100 and len({p.exe_sha256 for p in ours}) == 1
        assert sum(1 for pid in calls if pid in {c.pid for c in children}) == 1
        assert len(calls) <= len({p.exe_sha256 for p in procs if p.exe_sha256}) + 2  # a file changed mid-run
        print(f"live_processes: {len(procs)} processes in {elapsed:.3f} s")
        assert elapsed < 2.0, elapsed
    finally:
        for c in children:
            _kill(c)


def test_process_exits_mid_read(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    child = subprocess.Popen([SLEEP, "300"])
    gone_early = subprocess.Popen([SLEEP, "300"])
    try:
        _wait_exe(child.pid, "sleep")
        _wait_exe(gone_early.pid, "sleep")
        real_status, real_stat = ProcFS.status, ProcFS.stat

        def status(self, pid):
            if pid == child.pid:
                raise ProcessGone(self.path(pid, "status"))
            return real_status(self, pid)

        def stat(self, pid):
            if pid == gone_early.pid:
                raise ProcessGone(self.path(pid, "stat"))
            return real_stat(self, pid)

        monkeypatch.setattr(ProcFS, "status", status)
        monkeypatch.setattr(ProcFS, "stat", stat)
        procs, problems = api.live_ps(roots=[])
        by_pid = {p.pid: p for p in procs}
        assert gone_early.pid not in by_pid  # gone before its stat: not listed, no problem
        assert not [p for p in problems if f"/{gone_early.pid}/" in p.source]
        partial = by_pid[child.pid]
        assert partial.comm == "sleep" and partial.ppid == os.getpid()
        assert [p.source for p in partial.problems] == [f"/proc/{child.pid}/status"]
        assert "exited" in partial.problems[0].message
        assert os.getpid() in by_pid and not by_pid[os.getpid()].problems  # the rest reported
        assert any(p.source == f"/proc/{child.pid}/status" for p in problems)
        assert main(["live", "ps", "--json"]) == 5
        assert f"/proc/{child.pid}/status" in capsys.readouterr().err
    finally:
        _kill(child)
        _kill(gone_early)


def test_proc_that_is_not_proc(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(EvidenceError, match="not a proc filesystem"):
        api.live_ps(proc=str(tmp_path), roots=[])
    assert main(["live", "ps", "--proc", str(tmp_path)]) == 3
    assert "not a proc filesystem" in capsys.readouterr().err


def test_container_filter_names_nothing(capsys: pytest.CaptureFixture) -> None:
    assert main(["live", "ps", "--container", "no-such-container-xyz"]) == 4
    assert "no-such-container-xyz" in capsys.readouterr().err


def test_cli_table_and_formats(capsys: pytest.CaptureFixture) -> None:
    import json

    main(["live", "ps", "--jsonl"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(r["pid"] == os.getpid() for r in rows) and "caps_eff" in rows[0]
    main(["live", "ps", "--csv"])
    assert capsys.readouterr().out.startswith("pid,ppid,nspids,")
    main(["live", "ps"])
    out = capsys.readouterr().out
    assert "CONTAINER" in out and "host" in out


def test_unprivileged_says_once() -> None:
    from pensieve.live.processes import proc_problems
    from pensieve.records.core import Problem
    from pensieve.records.live import LiveProcess

    procs = [
        LiveProcess(pid=n, problems=[Problem(f"/proc/{n}/exe", "permission denied")]) for n in range(10, 15)
    ]
    procs[0].problems.append(Problem("/proc/10/status", "process exited while being read"))
    said = proc_problems(procs, privileged=False)
    assert [p.source for p in said] == ["/proc/10/status", "/proc"]
    assert "exe of 5" in said[1].message and "root" in said[1].message
    assert len(proc_problems(procs, privileged=True)) == 6
