"""Triage of a ``pensieve collect`` bundle reads its live snapshot (live/ps.json, live/net.json)
into ``live_processes`` and ``live_sockets``, finds what they show and puts process start times
on the timeline.

The bundle is collected from the overlay2 fixture as tests/collect/test_collect.py collects it;
its live part is hand-made here, because the fixture's container is not running (a crashed
host's data root: collect reads no /proc for it).  The real-engine path, a running container's
/proc read by ``collect``, is covered by tests/live/test_live_collect.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from pensieve.case import triage as triage_mod
from pensieve.case.schema import SCHEMA_VERSION
from pensieve.case.store import CaseStore
from pensieve.case.triage import triage
from pensieve.collect import collect
from pensieve.output.render import dumps
from pensieve.records import record_fields
from pensieve.records.live import LiveProcess, LiveSocket, Owner

NAME = "c-modified"
T0 = 1_764_000_000_123_456_789  # nanoseconds: the start times below are this plus a few seconds


@pytest.fixture(scope="module")
def collected(overlay2_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "bundle"
    collect(NAME, str(out), roots=[str(overlay2_root)], proc="/nonexistent-proc", argv=["pensieve"])
    assert not (out / "live").exists()  # nothing running: the live part is ours to write
    return out


def _container_id(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["container"]["id"]


def _processes(cid: str) -> list[LiveProcess]:
    owner = Owner("container", "docker", cid)
    common = {"container_id": cid, "container_name": NAME, "engine": "docker", "owner": owner, "known": True}
    return [
        LiveProcess(100, 1, [100, 1], "nginx", "S", cmdline=["nginx"], exe="/usr/sbin/nginx",
                    start_time=T0, **common),
        LiveProcess(200, 100, [200, 7], "sh", "S", cmdline=["sh", "-i"], exe="/bin/dash",
                    start_time=T0 + 5_000_000_000, **common),
        LiveProcess(300, 100, [300, 8], "kthreadd2", "S", cmdline=["x"], exe="/memfd:x", exe_deleted=True,
                    exe_memfd=True, exe_sha256="ab" * 32, start_time=T0 + 9_000_000_000, **common),
        LiveProcess(400, 100, [400, 9], "bash", "S", cmdline=["bash"], exe="/bin/bash",
                    start_time=T0 + 12_000_000_000, **common),
    ]  # fmt: skip


def _sockets(cid: str) -> list[LiveSocket]:
    common = {"netns": 4026532000, "container_id": cid, "container_name": NAME, "engine": "docker"}
    return [
        LiveSocket(protocol="tcp", state="LISTEN", local="0.0.0.0", local_port=80, inode=1,
                   pids=[100], fds=["100:6"], **common),
        LiveSocket(protocol="tcp", state="ESTABLISHED", local="172.17.0.2", local_port=40000,
                   remote="203.0.113.9", remote_port=4444, inode=2, pids=[200],
                   fds=["200:0", "200:1", "200:2"], marks=["external-peer"], **common),
        LiveSocket(protocol="tcp", state="LISTEN", local="0.0.0.0", local_port=31337, inode=3,
                   pids=[300], fds=["300:3"], marks=["undeclared-listener"], **common),
        LiveSocket(protocol="unix", state="ESTAB", local="/run/x.sock", inode=4, pids=[400],
                   fds=["400:0", "400:1"], **common),  # a shell on a unix socket: no network
    ]  # fmt: skip


def _bundle(collected: Path, tmp_path: Path, ps: bytes | None = None) -> Path:
    """A copy of the collected bundle with the hand-made live snapshot (PS in place of ps.json)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(collected, bundle, symlinks=True)
    cid = _container_id(bundle)
    (bundle / "live").mkdir()
    (bundle / "live" / "ps.json").write_bytes(ps if ps is not None else dumps(_processes(cid)).encode())
    (bundle / "live" / "net.json").write_text(dumps(_sockets(cid)))
    return bundle


def _rows(case: Path, sql: str) -> list[tuple]:
    s = CaseStore(str(case), read_only=True)
    try:
        return s.select(sql)[1]
    finally:
        s.close()


def _live_findings(case: Path) -> list[tuple]:
    rows = _rows(case, "SELECT severity, title, techniques, evidence, container_id, time FROM findings")
    return sorted(
        (sev, title, json.loads(tech), ev, cid, t)
        for sev, title, tech, ev, cid, t in rows
        if json.loads(ev)[0]["table"].startswith("live_")
    )


def test_the_live_snapshot_is_in_the_case_with_its_findings_and_times(collected, tmp_path):
    bundle = _bundle(collected, tmp_path)
    cid = _container_id(bundle)
    case = tmp_path / "case.duckdb"
    events: list[dict] = []
    summary = triage([str(bundle)], str(case), report=events.append)
    assert summary.failed == 0 and summary.problems == [], summary.problems
    assert {e["task"]: e["status"] for e in events}["live snapshot"] == "done"
    procs = _rows(case, "SELECT pid, comm, container_id, engine, exe_memfd, start_time FROM live_processes")
    assert sorted(procs) == [
        (100, "nginx", cid, "docker", False, T0),
        (200, "sh", cid, "docker", False, T0 + 5_000_000_000),
        (300, "kthreadd2", cid, "docker", True, T0 + 9_000_000_000),
        (400, "bash", cid, "docker", False, T0 + 12_000_000_000),
    ]
    socks = _rows(case, "SELECT local_port, fds FROM live_sockets WHERE protocol = 'tcp' ORDER BY inode")
    assert [(p, json.loads(f)) for p, f in socks][1] == (40000, ["200:0", "200:1", "200:2"])

    found = _live_findings(case)
    assert [(sev, title, tech) for sev, title, tech, *_ in found] == [
        ("critical", "shell on a network socket (pid 200, to 203.0.113.9:4444)", ["T1059.004"]),
        ("high", "in-memory executable running (pid 300)", ["T1620"]),
        ("medium", "undeclared listener 0.0.0.0:31337 (tcp)", ["T1571"]),
    ]
    assert all(row[4] == cid for row in found)
    assert found[0][5] == T0 + 5_000_000_000  # the shell's finding is when it started

    started = _rows(
        case,
        "SELECT time, container_id, message, ref_table FROM events WHERE kind = 'process.started' "
        "ORDER BY time",
    )
    assert [t for t, *_ in started] == [T0, T0 + 5_000_000_000, T0 + 9_000_000_000, T0 + 12_000_000_000]
    assert all(c == cid and ref == "live_processes" for _t, c, _m, ref in started)
    assert started[1][2] == f"pid 200 sh -i started in {NAME}"

    again: list[dict] = []
    second = triage([str(bundle)], str(case), report=again.append)
    assert second.done == 0 and second.reused >= 1
    assert {e["task"]: e["status"] for e in again}["live snapshot"] == "reused"
    assert len(_rows(case, "SELECT * FROM live_processes")) == 4
    assert _live_findings(case) == found


def test_a_malformed_ps_json_is_a_problem_and_the_rest_is_done(collected, tmp_path):
    bundle = _bundle(collected, tmp_path, ps=b'[{"pid": 1, "comm": ')
    case = tmp_path / "case.duckdb"
    summary = triage([str(bundle)], str(case))
    assert summary.failed == 0
    problems = _rows(case, "SELECT task, source, message FROM problems")
    assert [(t, s.rsplit("/", 2)[-2:]) for t, s, _m in problems] == [("live-snapshot", ["live", "ps.json"])]
    assert "not valid JSON" in problems[0][2]
    assert _rows(case, "SELECT count(*) FROM live_processes") == [(0,)]
    assert _rows(case, "SELECT count(*) FROM live_sockets") == [(4,)]
    statuses = {r[0] for r in _rows(case, "SELECT status FROM tasks WHERE source_id > 0")}
    assert statuses == {"done"}
    assert _rows(case, "SELECT count(*) FROM containers")[0][0] > 0
    titles = [f[1] for f in _live_findings(case)]
    assert titles == ["undeclared listener 0.0.0.0:31337 (tcp)"]


def test_an_oversized_or_wrongly_shaped_view_is_a_problem(collected, tmp_path, monkeypatch):
    bundle = _bundle(collected, tmp_path, ps=b'{"pid": 1}')
    monkeypatch.setattr(triage_mod, "MAX_LIVE_BYTES", 100)
    case = tmp_path / "case.duckdb"
    triage([str(bundle)], str(case))
    messages = sorted(m for (m,) in _rows(case, "SELECT message FROM problems WHERE task = 'live-snapshot'"))
    assert len(messages) == 2
    assert any("a JSON dict, not a list" in m for m in messages)
    assert any(m.endswith("bytes, over 100") for m in messages)


WRONG = ([], {}, "text", 1.5, True, -(1 << 70), None, "2026-99-99T00:00:00Z")


def _mutations():
    """Every field of each hand-made record set to each wrongly typed value (and the records
    without a field at all, and items that are no object)."""
    cid = "a" * 64
    for records, table in ((_processes(cid), "live_processes"), (_sockets(cid), "live_sockets")):
        base = json.loads(dumps(records[1]))
        for name in record_fields(type(records[1])) or ():
            for wrong in WRONG:
                yield table, {**base, name: wrong}
            yield table, {k: v for k, v in base.items() if k != name}
        yield table, []
        yield table, "pid"


def test_wrongly_typed_items_are_problems_and_the_rows_load(tmp_path):
    store = CaseStore(str(tmp_path / "c.duckdb"))
    ctx = SimpleNamespace(problems=[], source=SimpleNamespace(path="/bundle"))
    try:
        n = 0
        for i, (table, item) in enumerate(_mutations()):
            record = triage_mod._live_record(ctx, table, "live/x.json", i, item)
            if record is not None:
                row = triage_mod.record_row(triage_mod.BY_NAME[table], record, {"source_id": 1, "host": "h"})
                n += store.insert(table, [row])
        assert n > 100 and ctx.problems
        assert all(p.source.startswith("/bundle/live/x.json[") for p in ctx.problems)
    finally:
        store.close()


def test_a_schema_2_case_gets_the_live_tables(tmp_path):
    """Schema 3 added live_processes and live_sockets: a schema 2 case is migrated (the tables
    created) and takes their rows."""
    path = str(tmp_path / "v2.duckdb")
    s = CaseStore(path)
    s.db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    s.db.execute("DROP TABLE live_processes")
    s.db.execute("DROP TABLE live_sockets")
    s.close()
    s = CaseStore(path)
    try:
        assert s.version() == SCHEMA_VERSION == 4
        s.insert("live_processes", [{"source_id": 1, "pid": 7, "comm": "sh", "start_time": T0}])
        s.insert("live_sockets", [{"source_id": 1, "protocol": "tcp", "fds": ["7:0"]}])
        assert s.select("SELECT pid, start_time FROM live_processes")[1] == [(7, T0)]
        assert s.counts()["live_sockets"] == 1
    finally:
        s.close()
