"""Case analyses run after every triage, each alone, each replacing its own earlier rows."""

from __future__ import annotations

import pytest

from pensieve.case import analyses
from pensieve.case.analyses import analysis, run_analyses
from pensieve.case.store import CaseStore


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(analyses, "ANALYSES", {})
    monkeypatch.setattr(analyses, "_load_builtin", lambda: None)
    return analyses.ANALYSES


def test_rows_are_replaced_not_added_and_failures_kept(registry, tmp_path):
    store = CaseStore(str(tmp_path / "c.duckdb"))
    store.insert("changes", [{"source_id": 1, "path": p, "change": "added"} for p in ("/a", "/b")])

    @analysis("count-changes", ("findings",))
    def count(s):
        n = s.select("SELECT count(*) FROM changes")[1][0][0]
        yield "findings", [{"severity": "info", "title": f"{n} changes", "finding_id": "f1"}]

    @analysis("broken", ("events",))
    def broken(s):
        yield "events", [{"kind": "x"}]
        raise RuntimeError("no")

    assert run_analyses(store) == (1, 1)
    store.insert("changes", [{"source_id": 1, "path": "/c", "change": "added"}])
    assert run_analyses(store) == (1, 1)
    assert store.select("SELECT title, producer FROM findings")[1] == [("3 changes", "count-changes")]
    assert store.select("SELECT count(*) FROM events")[1] == [(0,)]
    tasks = dict(store.select("SELECT task, status FROM tasks WHERE source_id = 0")[1])
    assert tasks == {"count-changes": "done", "broken": "failed"}
    (msg,) = store.select("SELECT message FROM problems WHERE task = 'broken'")[1]  # one: the last run's
    assert "RuntimeError: no" in msg[0]
    store.close()
