"""The case store: typed rows in, the same values out; transactions; versions; never in evidence."""

from __future__ import annotations

import json
import os

import duckdb
import pytest

from pensieve.case import store as store_mod
from pensieve.case.schema import SCHEMA_VERSION
from pensieve.case.store import CaseError, CaseStore
from pensieve.errors import UsageError


@pytest.fixture
def case(tmp_path):
    s = CaseStore(str(tmp_path / "c.duckdb"))
    yield s
    s.close()


def test_nanosecond_times_json_and_odd_values_round_trip(case):
    t = 1_764_000_000_123_456_789
    case.insert(
        "changes",
        [
            {
                "source_id": 1,
                "path": "/bad-\udcff-name",  # a name that was not UTF-8
                "change": "added",
                "mtime": t,
                "size": 1 << 70,  # beyond BIGINT: null rather than a wrong number
                "what_changed": ["content", "mode"],
                "lower": {"mode": 0o644, "raw": b"\x00\xff"},
            }
        ],
    )
    names, rows, times = case.select("SELECT path, mtime, size, what_changed, lower FROM changes")
    (row,) = rows
    assert times == {"mtime"}
    assert row[0] == "/bad-\\xff-name"
    assert row[1] == t
    assert row[2] is None
    assert '"content"' in row[3]
    assert json.loads(row[4])["raw"] == {"base64": "AP8="}


def test_batches_larger_than_one_load(case, monkeypatch):
    monkeypatch.setattr(store_mod, "BATCH", 7)
    n = case.insert("logs", ({"source_id": 1, "message": f"line {i}", "time": i} for i in range(50)))
    assert n == 50
    _n, rows, _t = case.select("SELECT count(*), sum(epoch_ns(time)) FROM logs")
    assert rows == [(50, sum(range(50)))]


def test_unknown_column_is_refused(case):
    with pytest.raises(ValueError, match="no column"):
        case.insert("logs", [{"nonsense": 1}])


def test_a_failed_transaction_leaves_nothing(case):
    with pytest.raises(RuntimeError), case.transaction():
        case.insert("logs", [{"source_id": 1, "message": "half"}])
        raise RuntimeError("task died")
    assert case.query("SELECT count(*) FROM logs")[1] == [(0,)]


def test_sources_and_tasks(case):
    a = case.source_id("/ev/a", "host", "a", None, "dir:1:2")
    assert case.source_id("/ev/a", "host", "a", None, "dir:1:2") == a
    b = case.source_id("/ev/a", "host", "a", None, "dir:1:3")  # the same path, changed: a new source
    assert b != a
    assert not case.task_done(a, "diff", "c1")
    case.record_task(a, "diff", "c1", "failed", message="x")
    assert not case.task_done(a, "diff", "c1")
    case.record_task(a, "diff", "c1", "done", rows=3)
    assert case.task_done(a, "diff", "c1")
    assert case.query("SELECT count(*) FROM tasks")[1] == [(1,)]


def test_reopening_keeps_the_rows(tmp_path):
    path = str(tmp_path / "c.duckdb")
    s = CaseStore(path)
    s.insert("logs", [{"source_id": 1, "message": "kept"}])
    s.close()
    s = CaseStore(path, read_only=True)
    assert s.query("SELECT message FROM logs")[1] == [("kept",)]
    with pytest.raises(duckdb.Error):
        s.query("INSERT INTO logs (message) VALUES ('no')")
    s.close()


def _with_version(path: str, version: str | None) -> None:
    db = duckdb.connect(path)
    db.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    if version is not None:
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", [version])
    db.close()


def test_a_newer_case_is_refused(tmp_path):
    path = str(tmp_path / "new.duckdb")
    _with_version(path, str(SCHEMA_VERSION + 1))
    with pytest.raises(CaseError, match="newer pensieve"):
        CaseStore(path)


def test_an_older_case_without_migration_is_refused(tmp_path):
    path = str(tmp_path / "old.duckdb")
    _with_version(path, "0")
    with pytest.raises(CaseError, match="no migration"):
        CaseStore(path)


def test_an_older_case_is_migrated(tmp_path, monkeypatch):
    path = str(tmp_path / "old.duckdb")
    s = CaseStore(path)
    s.db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    s.db.execute("ALTER TABLE logs DROP COLUMN partial")
    s.db.execute("ALTER TABLE tasks DROP COLUMN params")  # as a schema 1 case has it
    s.close()
    monkeypatch.setitem(store_mod.MIGRATIONS, 0, ["ALTER TABLE logs ADD COLUMN partial BOOLEAN"])
    s = CaseStore(path)
    assert s.version() == SCHEMA_VERSION
    s.insert("logs", [{"message": "m", "partial": True}])
    s.close()


def test_a_schema_1_case_gets_task_params(tmp_path):
    """Schema 2 added tasks.params (the rules digest a task ran with): a schema 1 case is migrated
    and written by column name, the new column last in the migrated table."""
    path = str(tmp_path / "v1.duckdb")
    s = CaseStore(path)
    s.db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    s.db.execute("ALTER TABLE tasks DROP COLUMN params")
    s.close()
    s = CaseStore(path)
    assert s.version() == SCHEMA_VERSION == 4
    s.record_task(1, "diff", "c1", "done", rows=3, params="abc")
    assert s.task_params(1, "diff", "c1") == (True, "abc")
    assert s.task_done(1, "diff", "c1") and s.task_done(1, "diff", "c1", "abc")
    assert not s.task_done(1, "diff", "c1", "other")
    assert s.query("SELECT task, rows FROM tasks")[1] == [("diff", 3)]
    s.close()


def test_a_schema_3_case_gets_the_unix_peer_columns(tmp_path):
    """Schema 4 added the UNIX peer of a live socket: a schema 3 case (live_sockets without
    them) is migrated, keeps its rows, and takes a socket with a peer."""
    path = str(tmp_path / "v3.duckdb")
    s = CaseStore(path)
    s.db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    for name in ("peer_inode", "peer_pids", "peer_fds", "peer_container_id", "peer_container_name"):
        s.db.execute(f'ALTER TABLE live_sockets DROP COLUMN "{name}"')
    s.db.execute("INSERT INTO live_sockets (protocol, inode) VALUES ('unix', 7)")
    s.close()
    s = CaseStore(path)
    assert s.version() == SCHEMA_VERSION == 4
    s.insert("live_sockets", [{"protocol": "unix", "inode": 8, "peer_inode": 9, "peer_pids": [42],
                               "peer_container_id": "c" * 64}])  # fmt: skip
    rows = s.query("SELECT inode, peer_inode, peer_container_id FROM live_sockets ORDER BY inode")[1]
    assert rows == [(7, None, None), (8, 9, "c" * 64)]
    s.close()


def test_a_duckdb_file_that_is_not_a_case(tmp_path):
    path = str(tmp_path / "other.duckdb")
    duckdb.connect(path).close()
    with pytest.raises(CaseError, match="not a pensieve case"):
        CaseStore(path)


def test_a_file_that_is_not_duckdb(tmp_path):
    path = tmp_path / "text.duckdb"
    path.write_text("hello\n" * 100)
    with pytest.raises(CaseError, match="not a case"):
        CaseStore(str(path))


def test_never_inside_the_evidence_nor_through_a_symlink(tmp_path):
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    with pytest.raises(UsageError, match="inside the evidence"):
        CaseStore(str(evidence / "c.duckdb"), boundaries=[str(evidence)])
    assert os.listdir(evidence) == []
    link = tmp_path / "link.duckdb"
    link.symlink_to(tmp_path / "target.duckdb")
    with pytest.raises(UsageError, match="symlink"):
        CaseStore(str(link))
    assert not (tmp_path / "target.duckdb").exists()


def test_missing_parents_are_made(tmp_path):
    s = CaseStore(str(tmp_path / "a" / "b" / "c.duckdb"))
    s.close()
    assert (tmp_path / "a" / "b" / "c.duckdb").is_file()
    assert oct((tmp_path / "a").stat().st_mode & 0o777) == "0o700"
