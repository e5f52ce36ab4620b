"""Triage on a Dask LocalCluster of real worker processes gives the same case as in-process."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from pensieve.case.store import CaseStore
from pensieve.case.triage import triage

distributed = pytest.importorskip("distributed")

cloudpickle = pytest.importorskip("cloudpickle")

from pensieve.fleet.distributed import run_remote, triage_fleet  # noqa: E402

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


def diff_always_fails(path, source_id, name, subject):
    """Runs on the workers (pickled by value): every diff task raises, the others run."""
    if name == "diff":
        raise RuntimeError("injected failure")
    return run_remote(path, source_id, name, subject)


def test_a_task_that_always_fails_is_a_problem_row(overlay2_root, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    case = tmp_path / "fleet.duckdb"
    with _client() as client:
        summary = triage_fleet([str(overlay2_root)], str(case), client, remote=diff_always_fails)
    tables = _raw(case)
    diffs = [r for r in tables["tasks"] if r["task"] == "diff"]
    assert diffs and all(r["status"] == "failed" for r in diffs)
    assert summary.failed == len(diffs)
    others = [r for r in tables["tasks"] if r["task"] != "diff"]
    assert others and all(r["status"] == "done" for r in others)
    failed = [p for p in tables["problems"] if "injected failure" in (p["message"] or "")]
    assert len(failed) == len(diffs)


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
