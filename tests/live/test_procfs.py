"""The /proc reader (live/procfs.py) on this process and on a made-up proc tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pensieve.live.procfs import ProcessGone, ProcFS, Unreadable, map_id


def test_self() -> None:
    procfs = ProcFS()
    pid = os.getpid()
    assert pid in procfs.pids()
    comm, fields = procfs.stat(pid)
    assert int(fields[1]) == os.getppid()
    assert procfs.status(pid)["Pid"] == str(pid)
    assert procfs.cmdline(pid)[0].endswith(("python", "python3")) or procfs.cmdline(pid)
    assert set(procfs.namespaces(pid)) >= {"net", "pid", "mnt", "user"}
    assert procfs.id_map(pid)  # the initial namespace's "0 0 4294967295"


def test_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    d = tmp_path / "42"
    d.mkdir()
    # comm with a space and a parenthesis: it ends at the last ')'
    (d / "stat").write_text("42 (a) b) S 1 42 42 0 -1 4194560 " + " ".join(["0"] * 12) + " 250 0 0\n")
    (d / "uid_map").write_text("         0     100000      65536\n")
    procfs = ProcFS(str(tmp_path))
    assert procfs.pids() == [42]
    comm, fields = procfs.stat(42)
    assert comm == "a) b" and fields[0] == "S" and fields[1] == "1"
    assert procfs.start_time_ns(42, fields) == 1_700_000_000 * 10**9 + 250 * 10**9 // procfs.clock_ticks
    mapping = procfs.id_map(42)
    assert map_id(mapping, 100000) == 0 and map_id(mapping, 100999) == 999 and map_id(mapping, 0) is None
    with pytest.raises(ProcessGone):
        procfs.status(42)
    with pytest.raises(ProcessGone):
        procfs.stat(43)
    (d / "status").write_text("Name:\tx\n")
    (d / "status").chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(Unreadable):
            procfs.status(42)
