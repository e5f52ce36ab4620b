"""Triage of a real Docker data root into a case: the records the engine gives, each task alone,
reused when run again, a failure kept as a record, the evidence untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tree_digest

from pensieve import api
from pensieve.case import triage as triage_mod
from pensieve.case.store import CaseStore
from pensieve.case.triage import triage


def _query(case: Path, sql: str) -> list[tuple]:
    s = CaseStore(str(case), read_only=True)
    try:
        return s.select(sql)[1]
    finally:
        s.close()


@pytest.fixture(scope="module")
def triaged(overlay2_root, tmp_path_factory):
    case = tmp_path_factory.mktemp("case") / "case.duckdb"
    tree_digest(overlay2_root)  # the first walk itself moves directory atimes (relatime)
    before = tree_digest(overlay2_root)
    events: list[dict] = []
    summary = triage([str(overlay2_root)], str(case), report=events.append)
    return case, summary, events, before


def test_the_inventory_is_the_engines(triaged, overlay2_root):
    case, summary, _events, _before = triaged
    host = api.open_host(str(overlay2_root))
    want = sorted((c.id, c.name, c.state) for c in host.containers())
    assert sorted(_query(case, "SELECT container_id, name, state FROM containers")) == want
    assert {r[0] for r in _query(case, "SELECT image_id FROM images")} == {i.id for i in host.images()}
    layers = sum(len(c.layers) for c in host.containers()) + sum(
        len(host.image_layers(i)) for i in host.images()
    )
    assert _query(case, "SELECT count(*) FROM layers") == [(layers,)]
    assert summary.failed == 0


def test_each_containers_changes_are_its_diff(triaged, overlay2_root):
    case, _s, _e, _b = triaged
    host = api.open_host(str(overlay2_root))
    c = host.container("c-modified")
    want = sorted((ch.change, ch.path, ch.sha256) for ch in api.diff(host, "c-modified").changes)
    got = _query(case, f"SELECT change, path, sha256 FROM changes WHERE container_id = '{c.id}'")
    assert sorted(got) == want and want
    assert any(sha for _c, _p, sha in got)


def test_a_task_per_container_and_progress_for_each(triaged, overlay2_root):
    case, summary, events, _b = triaged
    host = api.open_host(str(overlay2_root))
    tasks = _query(case, "SELECT task, subject, status FROM tasks WHERE source_id <> 0")  # 0: case analyses
    events = [e for e in events if e["source"] != "case"]
    assert ("inventory", None, "done") in tasks
    assert {s for t, s, _st in tasks if t == "diff"} == {c.id for c in host.containers()}
    assert len(events) == len(tasks) == summary.done
    assert all(e["status"] == "done" for e in events)


def test_the_evidence_is_untouched(triaged, overlay2_root):
    _case, _s, _e, before = triaged
    assert tree_digest(overlay2_root) == before


def test_running_again_reuses_what_is_done(overlay2_root, tmp_path):
    case = tmp_path / "c.duckdb"
    first = triage([str(overlay2_root)], str(case))
    again = triage([str(overlay2_root)], str(case))
    assert again.done == 0 and again.reused == first.done
    assert _query(case, "SELECT count(*) FROM sources") == [(1,)]
    n = _query(case, "SELECT count(*) FROM containers")[0][0]
    assert n == len(api.open_host(str(overlay2_root)).containers())


def test_a_failing_task_is_kept_and_the_others_complete(overlay2_root, tmp_path, monkeypatch):
    case = tmp_path / "c.duckdb"
    real = triage_mod.container_diff
    host = api.open_host(str(overlay2_root))
    victim = host.container("c-modified").id

    def flaky(ctx, container):
        if container.id == victim:
            yield "changes", [{"source_id": ctx.source_id, "path": "/half-written"}]
            raise RuntimeError("disk went away")
        yield from real(ctx, container)

    monkeypatch.setattr(triage_mod, "container_diff", flaky)
    summary = triage([str(overlay2_root)], str(case))
    assert summary.failed == 1 and summary.done == len(host.containers())  # inventory + the other diffs
    assert _query(case, "SELECT count(*) FROM changes WHERE path = '/half-written'") == [(0,)]
    (row,) = _query(case, "SELECT status, message FROM tasks WHERE subject = '" + victim + "'")
    assert row[0] == "failed" and "disk went away" in row[1]
    problems = _query(case, "SELECT task, severity, message FROM problems WHERE subject = '" + victim + "'")
    assert problems and problems[0][:2] == ("diff", "error")
    monkeypatch.setattr(triage_mod, "container_diff", real)
    again = triage([str(overlay2_root)], str(case))
    assert again.done == 1 and again.failed == 0  # only the failed task ran again
    assert _query(case, f"SELECT status FROM tasks WHERE subject = '{victim}'") == [("done",)]


def test_an_unusable_source_does_not_stop_the_others(overlay2_root, tmp_path):
    case = tmp_path / "c.duckdb"
    junk = tmp_path / "junk"
    junk.mkdir()
    summary = triage([str(junk), str(overlay2_root)], str(case))
    assert summary.failed == 1 and summary.done > 1
    kinds = dict(_query(case, "SELECT kind, count(*) FROM sources GROUP BY kind"))
    assert kinds == {"unusable": 1, "host": 1}
    (problem,) = _query(case, "SELECT message FROM problems WHERE task = 'open'")
    assert "source unusable" in problem[0]


def test_a_checkpoint_source(tmp_path):
    import tarfile

    from pensieve.memory import views
    from pensieve.memory.sources import open_source

    with tarfile.open(Path(__file__).parents[1] / "fixtures" / "criu" / "criu-dumps.tar.gz") as tf:
        tf.extractall(tmp_path / "dumps", filter="data")
    after = tmp_path / "dumps" / "after"
    case = tmp_path / "c.duckdb"
    summary = triage([str(after)], str(case))
    assert summary.failed == 0
    with open_source(str(after)) as src:
        procs = views.processes(src.checkpoint)
        socks = views.sockets(src.checkpoint)
    assert sorted(r[0] for r in _query(case, "SELECT pid FROM processes")) == sorted(p.pid for p in procs)
    assert _query(case, "SELECT count(*) FROM sockets") == [(len(socks),)]
    assert _query(case, "SELECT count(*) FROM checkpoints") == [(1,)]
