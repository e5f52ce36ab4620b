"""The super-timeline: events from every table with times, equal to the records they come from."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from pensieve.case.analyses import run_analyses
from pensieve.case.store import CaseStore
from pensieve.case.timeline import rfc3339_ns
from pensieve.case.triage import triage


@pytest.fixture(scope="module")
def triaged(overlay2_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("tl-case") / "case.duckdb"
    triage([str(overlay2_root)], str(path))
    return path


@pytest.fixture
def store(triaged, tmp_path):
    copy = tmp_path / "case.duckdb"
    shutil.copy(triaged, copy)
    s = CaseStore(str(copy))
    yield s
    s.close()


def test_container_lifecycle_equals_the_records(store):
    _names, containers, _t = store.select(
        "SELECT container_id, created, started, finished, oom_killed FROM containers"
    )
    assert containers
    for cid, created, started, finished, oom in containers:
        got = dict(
            store.select(
                f"SELECT kind, time FROM events WHERE container_id = '{cid}' AND kind LIKE 'container.%'"
            )[1]
        )
        want = {"container.created": created, "container.started": started, "container.finished": finished}
        want = {k: v for k, v in want.items() if v is not None}
        if oom:
            want["container.oom_killed"] = finished
        assert got == want
    assert store.select("SELECT count(*) FROM events WHERE kind = 'container.oom_killed'")[1] == [(1,)]


def test_change_times_and_build_steps(store):
    rows = store.select(
        "SELECT c.mtime, e.time, e.message FROM changes c JOIN events e ON e.ref_table = 'changes' "
        "AND e.kind = 'file.mtime' AND e.path = c.path AND e.container_id = c.container_id"
    )[1]
    (n,) = store.select("SELECT count(*) FROM changes WHERE mtime IS NOT NULL")[1][0]
    assert len(rows) == n > 0
    assert all(mtime == time for mtime, time, _m in rows)
    assert any("added /root/implant.sh" in m for _a, _b, m in rows)
    (steps,) = store.select("SELECT sum(json_array_length(history)) FROM images")[1][0]
    assert store.select("SELECT count(*) FROM events WHERE kind = 'image.build'")[1] == [(steps,)]
    # ns precision kept from the history's text
    assert store.select(
        "SELECT count(*) FROM events WHERE kind = 'image.build' AND epoch_ns(time) % 1000 <> 0"
    )[1][0][0]


def test_rows_of_other_tables_and_no_second_generation(store):
    store.insert(
        "logs",
        [
            {
                "source_id": 1,
                "host": "h",
                "container_id": "c1",
                "time": 5 * 10**18,
                "message": "hi",
                "stream": "stdout",
                "source": "/x.log",
            }
        ],
    )
    store.insert(
        "recovered",
        [
            {
                "source_id": 1,
                "host": "h",
                "path": "/tmp/gone",
                "inode": 12,
                "mtime": 10**18,
                "dtime": 2 * 10**18,
                "atime": 3,
                "crtime": 4,
            }
        ],
    )
    store.insert(
        "checkpoints", [{"source_id": 1, "host": "h", "checkpoint_name": "cp1", "checkpointed": 7 * 10**18}]
    )
    store.insert(
        "findings",
        [
            {
                "source_id": 1,
                "finding_id": "f",
                "producer": "x",
                "severity": "high",
                "title": "implant",
                "time": 9 * 10**18,
            },
            {"finding_id": "g", "title": "no time"},
        ],
    )
    for _ in range(2):
        run_analyses(store)
    # the rows written here carry host 'h' (the triaged fixture's own events carry its path)
    got = dict(store.select("SELECT kind, count(*) FROM events WHERE host = 'h' GROUP BY kind")[1])
    assert got["log"] == 1 and got["checkpoint"] == 1
    mine = "kind = 'finding' AND json_extract_string(ref, '$.finding_id') = 'f'"
    assert store.select(f"SELECT count(*) FROM events WHERE {mine}")[1] == [(1,)]
    assert got["recovered.deleted"] == 1 and got["file.crtime"] == 1 and got["file.atime"] == 1
    (msg, ref) = store.select(f"SELECT message, ref FROM events WHERE {mine}")[1][0]
    assert msg == "[high] implant" and json.loads(ref)["finding_id"] == "f"
    assert "recovered.deleted_before" not in got  # a dtime: no bound needed


def test_rfc3339_in_sql_keeps_ns_and_offsets():
    def ns(text):
        return duckdb.sql(f"SELECT epoch_ns({rfc3339_ns(repr(text))})").fetchall()[0][0]

    assert ns("2026-11-28T20:35:06.310503647Z") == 1795898106310503647
    assert ns("2026-11-28T22:35:06.310503647+02:00") == 1795898106310503647
    assert ns("2026-11-28T19:05:06.310503647-0130") == 1795898106310503647
    assert ns("not a time") is None


def test_each_checkpointed_process_is_seen_at_its_checkpoints_time(store):
    """CRIU records no process start time: a process is ``process.seen`` when its checkpoint was
    taken, and one of a checkpoint without a time has no event."""
    store.insert(
        "checkpoints",
        [
            {
                "source_id": 1,
                "host": "h",
                "checkpoint": "/ck/a",
                "container_id": "c1",
                "checkpointed": 7 * 10**18,
            },
            {"source_id": 1, "host": "h", "checkpoint": "/ck/b", "container_id": "c1"},
        ],
    )
    store.insert(
        "processes",
        [
            {"source_id": 1, "host": "h", "container_id": "c1", "checkpoint": "/ck/a", "pid": 27,
             "comm": "sh", "cmdline": ["sh", "-i"], "exe": "/bin/busybox"},
            {"source_id": 1, "host": "h", "container_id": "c1", "checkpoint": "/ck/b", "pid": 28},
        ],
    )  # fmt: skip
    run_analyses(store)
    rows = store.select(
        "SELECT time, message, path, ref_table, ref, container_id FROM events WHERE kind = 'process.seen'"
        " AND host = 'h'"
    )[1]
    assert len(rows) == 1
    time, message, path, table, ref, cid = rows[0]
    assert time == 7 * 10**18 and path == "/bin/busybox" and table == "processes" and cid == "c1"
    assert message.startswith("pid 27 sh -i seen running in checkpoint /ck/a")
    assert json.loads(ref)["pid"] == 27
