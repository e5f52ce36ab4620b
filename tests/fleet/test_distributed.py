"""Triage on a Dask LocalCluster of real worker processes gives the same case as in-process."""

from __future__ import annotations

import contextlib
import os
import re
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


IMPLANT_RULE = 'rule implant_script { strings: $nc = "4444 -e /bin/sh" condition: $nc }'
#: the sha256 of /tmp/x that c-modified added (the fixture's changes)
TMP_X_SHA256 = "73cb3858a687a8494ca3323053016282f3dad39d42cf62ca4e79dda2aac7d9ac"


def test_yara_rules_and_iocs_give_the_same_findings_on_two_workers(overlay2_root, tmp_path):
    from pensieve.hunting import load_hunting

    (tmp_path / "implant.yar").write_text(IMPLANT_RULE)
    (tmp_path / "iocs.txt").write_text(f"{TMP_X_SHA256} # staged payload\n127.0.0.1 # c2\n")

    def hunting():
        return load_hunting([str(tmp_path / "implant.yar")], [str(tmp_path / "iocs.txt")])

    local = tmp_path / "local.duckdb"
    triage([str(overlay2_root)], str(local), hunting=hunting())
    fleet = tmp_path / "fleet.duckdb"
    with _client() as client:
        summary = triage_fleet([str(overlay2_root)], str(fleet), client, hunting=hunting())
    assert summary.failed == 0
    a, b = _tables(local), _tables(fleet)
    titles = {r for r in a["findings"] if "implant_script" in "".join(r)}
    assert titles, "the rule matched nothing in-process: the comparison would prove nothing"
    assert any(TMP_X_SHA256 in "".join(r) for r in a["findings"])
    assert a == b


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from pensieve.cli import console; console()", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}


def test_progress_bars_a_phase_on_stderr(overlay2_root, tmp_path):
    case = tmp_path / "case.duckdb"
    cmd = _cli("triage", str(overlay2_root), "--case", str(case), "--workers", "2", "--progress")
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode in (0, 5), run.stderr
    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", run.stderr)  # the bars' terminal codes
    assert "dask dashboard: http" in err
    for phase in ("sources", "containers", "layers", "analyses"):
        lines = [ln for ln in err.splitlines() if phase in ln and "failed /" in ln]
        assert lines, (phase, err)
    assert "1 done, 0 failed / 1" in [ln for ln in err.splitlines() if "sources" in ln][-1]


def test_ctrl_c_leaves_a_case_that_a_rerun_completes(overlay2_root, tmp_path):
    roots = []
    for i in range(6):
        dst = tmp_path / f"root{i}"
        subprocess.run(["cp", "-a", str(overlay2_root), str(dst)], check=True)
        roots.append(str(dst))
    case = tmp_path / "case.duckdb"
    cmd = _cli("triage", *roots, "--case", str(case), "--workers", "2")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env())
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if ": done" in line:  # a task is in the case: the run is under way
            break
    proc.send_signal(signal.SIGINT)
    _rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen
    s = CaseStore(str(case), read_only=True)
    try:
        done_then = s.select("SELECT count(*) FROM tasks WHERE status = 'done'")[1][0][0]
    finally:
        s.close()
    local = tmp_path / "local.duckdb"
    triage(roots, str(local))
    s = CaseStore(str(local), read_only=True)
    try:
        total = s.select("SELECT count(*) FROM tasks")[1][0][0]
    finally:
        s.close()
    assert 0 < done_then < total  # interrupted with part of the work in the case
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode in (0, 5), again.stderr
    assert _tables(case) == _tables(local)


def test_carving_in_small_ranges_gives_the_case_of_one_scan(tmp_path):
    """The ext4 carving fixture (tests/fixtures/carve, a kernel-made filesystem with files written
    and deleted) triaged with 1 MiB carving units: several units, the same case as in-process."""
    import lzma
    import shutil

    from conftest import FIXTURE_ROOT

    from pensieve.fleet.carving import carve_ranges

    pytest.importorskip("pytsk3")
    (tmp_path / "evidence").mkdir()
    image = tmp_path / "evidence" / "carve.img"
    with lzma.open(FIXTURE_ROOT / "carve" / "carve.img.xz") as src, open(image, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(image, 0o444)
    assert len(carve_ranges(str(image), 1 << 20)) > 4
    local = tmp_path / "local.duckdb"
    triage([str(image)], str(local))
    fleet = tmp_path / "fleet.duckdb"
    with _client() as client:
        summary = triage_fleet([str(image)], str(fleet), client, carve_bytes=1 << 20)
    a, b = _tables(local), _tables(fleet)
    assert len(a["carved"]) > 10
    assert summary.failed == 0
    assert a == b
