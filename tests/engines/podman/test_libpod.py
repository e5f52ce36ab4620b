"""libpod's SQLite state (Podman 5's db.sql), built by hand from the 4.3 capture's bolt records
(the JSON documents are the same in both backends; no Podman 5 capture yet), read back."""

from __future__ import annotations

import sqlite3

from conftest import FIXTURE_ROOT, unpack

from pensieve.engines.podman import PodmanHost
from pensieve.engines.podman.libpod import read_bolt, read_sqlite
from pensieve.evidence import DirectoryEvidence

SCHEMA = """
CREATE TABLE ContainerConfig (ID TEXT PRIMARY KEY, Name TEXT, PodID TEXT, JSON TEXT);
CREATE TABLE ContainerState (ID TEXT PRIMARY KEY, JSON TEXT);
CREATE TABLE PodConfig (ID TEXT PRIMARY KEY, Name TEXT, JSON TEXT);
CREATE TABLE PodState (ID TEXT PRIMARY KEY, JSON TEXT);
CREATE TABLE VolumeConfig (Name TEXT PRIMARY KEY, JSON TEXT);
CREATE TABLE VolumeState (Name TEXT PRIMARY KEY, JSON TEXT);
"""


def test_sqlite_state_reads_like_bolt(tmp_path):
    root = unpack(FIXTURE_ROOT / "podman" / "podman-4.3-root.tar.xz", tmp_path / "fx") / "storage"
    ev = DirectoryEvidence(str(root))
    problems: list = []
    bolt = read_bolt(ev, "/libpod/bolt_state.db", problems)
    db = sqlite3.connect(root / "libpod" / "db.sql")
    db.executescript(SCHEMA)
    for c in bolt.containers.values():
        db.execute(
            "INSERT INTO ContainerConfig VALUES (?,?,?,?)",
            (c.id, c.config.str("name"), c.pod_id, _text(c.config.value)),
        )
        db.execute("INSERT INTO ContainerState VALUES (?,?)", (c.id, _text(c.state.value)))
    for p in bolt.pods.values():
        db.execute("INSERT INTO PodConfig VALUES (?,?,?)", (p.id, p.name, _text(p.config.value)))
        db.execute("INSERT INTO PodState VALUES (?,?)", (p.id, _text(p.state.value)))
    for v in bolt.volumes.values():
        db.execute("INSERT INTO VolumeConfig VALUES (?,?)", (v.name, _text(v.config.value)))
        db.execute("INSERT INTO VolumeState VALUES (?,?)", (v.name, _text(v.state.value)))
    db.commit()
    db.close()
    before = sorted(p.name for p in (root / "libpod").iterdir())
    sql = read_sqlite(ev, "/libpod/db.sql", problems)
    assert problems == []
    assert sorted(sql.containers) == sorted(bolt.containers)
    assert {c: s.state.value for c, s in sql.containers.items()} == {
        c: s.state.value for c, s in bolt.containers.items()
    }
    assert sorted(sql.pods) == sorted(bolt.pods) and sorted(sql.volumes) == sorted(bolt.volumes)
    assert sorted(sql.pods[next(iter(sql.pods))].containers) == sorted(
        bolt.pods[next(iter(bolt.pods))].containers
    )
    host = PodmanHost(ev)  # db.sql preferred, as Podman 5 does
    assert host.roots[0].state.backend == "sqlite"
    assert {c.name: c.state for c in host.containers()} == {
        "idle": "created",
        "job": "exited",
        "pensieve-pod-infra": "running",
        "web": "running",
    }
    assert sorted(p.name for p in (root / "libpod").iterdir()) == before  # no -wal / -shm / journal


def test_corrupt_sqlite_is_a_problem(tmp_path):
    (tmp_path / "libpod").mkdir()
    (tmp_path / "libpod" / "db.sql").write_bytes(b"SQLite format 3\x00" + b"\xff" * 300)
    problems: list = []
    state = read_sqlite(DirectoryEvidence(str(tmp_path)), "/libpod/db.sql", problems)
    assert state.containers == {} and problems and problems[0].source == "/libpod/db.sql"


def _text(value: dict) -> str:
    import json

    return json.dumps(value)
