"""Triage on a Dask LocalCluster of real worker processes gives the same case as in-process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pensieve.case.store import CaseStore
from pensieve.case.triage import triage

distributed = pytest.importorskip("distributed")

cloudpickle = pytest.importorskip("cloudpickle")

from pensieve.fleet.distributed import triage_fleet  # noqa: E402
from pensieve.fleet.units import run_unit  # noqa: E402

TIMING = {"seconds"}
RUN_TABLES = {"sources", "tasks", "analyses", "case"}


def _tables(case: Path) -> dict[str, list[tuple]]:
    s = CaseStore(str(case), read_only=True)
    try:
        names = [r[0] for r in s.select("SELECT table_name FROM information_schema.tables")[1]]
        out = {}
        for t in names:
            cols, rows, times = s.select(f'SELECT * FROM "{t}"')
            # a run's own times (when a source was added, a task ran) are the timing columns
            run_times = times if t in RUN_TABLES else set()
            keep = [i for i, c in enumerate(cols) if c not in TIMING and c not in run_times]
            out[t] = sorted(tuple(repr(r[i]) for i in keep) for r in rows)
        return out
    finally:
        s.close()


@contextlib.contextmanager
def _client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def containers_always_fail(unit):
    """Runs on the workers (pickled by value): every unit of containers raises (after its
    retries too), the others run."""
    if unit.kind == "containers":
        raise RuntimeError("injected failure")
    return run_unit(unit)


def test_a_unit_that_always_fails_is_a_failed_task_and_a_problem_row(overlay2_root, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    case = tmp_path / "fleet.duckdb"
    with _client() as client:
        summary = triage_fleet([str(overlay2_root)], str(case), client, remote=containers_always_fail)
    tables = _raw(case)
    per_container = [r for r in tables["tasks"] if r["task"] in ("diff", "logs")]
    assert per_container and all(r["status"] == "failed" for r in per_container)
    assert summary.failed == len([r for r in tables["tasks"] if r["status"] == "failed"])
    others = [r for r in tables["tasks"] if r["task"] in ("inventory", "integrity")]
    assert len(others) == 2 and all(r["status"] == "done" for r in others)
    failed = [p for p in tables["problems"] if "injected failure" in (p["message"] or "")]
    assert len(failed) == summary.failed


def _raw(case: Path) -> dict[str, list[dict]]:
    s = CaseStore(str(case), read_only=True)
    try:
        out = {}
        for t in ("tasks", "problems"):
            cols, rows, _times = s.select(f'SELECT * FROM "{t}"')
            out[t] = [dict(zip(cols, r, strict=True)) for r in rows]
        return out
    finally:
        s.close()


def test_local_cluster_case_equals_in_process(overlay2_root, tmp_path):
    local = tmp_path / "local.duckdb"
    triage([str(overlay2_root)], str(local))
    fleet = tmp_path / "fleet.duckdb"
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as client:
        summary = triage_fleet([str(overlay2_root)], str(fleet), client)
    cluster.close()
    assert summary.done > 2 and summary.failed == 0
    a, b = _tables(local), _tables(fleet)
    assert a.keys() == b.keys()
    for t in a:
        assert a[t] == b[t], t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_scheduler_and_two_workers_started_by_hand(overlay2_root, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen(
            ["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=(logs / "scheduler").open("w"),
            env=env,
        )
    ]
    try:
        for i in range(2):
            cmd = ["dask", "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"]
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=(logs / f"w{i}").open("w"), env=env)
            )
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        case = tmp_path / "case.duckdb"
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pensieve.cli import console; console()",
                "triage",
                str(overlay2_root),
                "--case",
                str(case),
            ]
            + ["--scheduler", address],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert run.returncode in (0, 5), run.stderr
        local = tmp_path / "local.duckdb"
        triage([str(overlay2_root)], str(local))
        assert _tables(case) == _tables(local)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def source_stalls_once(unit):
    """Runs on the workers (pickled by value): the first source unit writes its worker's pid and
    stalls, so that the test kills that worker; the retry runs normally."""
    mark = Path(os.environ["PENSIEVE_TEST_MARK"])
    if unit.kind == "source" and not mark.exists():
        mark.write_text(str(os.getpid()))
        time.sleep(120)
    return run_unit(unit)


def test_a_killed_worker_loses_no_result(overlay2_root, tmp_path, monkeypatch):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    mark = tmp_path / "pid"
    monkeypatch.setenv("PENSIEVE_TEST_MARK", str(mark))

    def kill() -> None:
        deadline = time.monotonic() + 60
        while not mark.exists() or not mark.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(int(mark.read_text()), signal.SIGKILL)

    case = tmp_path / "fleet.duckdb"
    killer = threading.Thread(target=kill)
    with _client() as client:
        killer.start()
        summary = triage_fleet([str(overlay2_root)], str(case), client, remote=source_stalls_once)
    killer.join()
    assert summary.failed == 0
    local = tmp_path / "local.duckdb"
    triage([str(overlay2_root)], str(local))
    assert _tables(case) == _tables(local)
