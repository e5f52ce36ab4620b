"""Findings over a case: real fixtures for what they hold (a privileged container, a setuid bit, a
shell on a socket in a CRIU dump), rows written by hand for the rest; clean containers stay clean."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from pensieve.case.analyses import run_analyses
from pensieve.case.store import CaseStore
from pensieve.case.triage import triage

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _findings(case: Path | CaseStore, where: str = "TRUE") -> list[dict]:
    store = case if isinstance(case, CaseStore) else CaseStore(str(case), read_only=True)
    try:
        names, rows, _t = store.select(f"SELECT * FROM findings WHERE {where} ORDER BY title")
        return [dict(zip(names, r, strict=True)) for r in rows]
    finally:
        if store is not case:
            store.close()


@pytest.fixture(scope="module")
def case(overlay2_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("findings")
    with tarfile.open(FIXTURES / "criu" / "criu-dumps.tar.gz") as tf:
        tf.extractall(work / "dumps", filter="data")
    path = work / "case.duckdb"
    summary = triage([str(overlay2_root), str(work / "dumps" / "after")], str(path))
    assert summary.failed == 0
    return path


def _by_container(case: Path, name: str) -> list[dict]:
    return _findings(case, f"container_id = (SELECT container_id FROM containers WHERE name = '{name}')")


def test_privileged_container_settings(case):
    titles = {f["title"]: f for f in _by_container(case, "c-priv")}
    assert {"privileged container", "host root mounted", "container engine socket mounted"} <= set(titles)
    assert titles["privileged container"]["severity"] == "high"
    assert "T1611" in json.loads(titles["privileged container"]["techniques"])
    ev = json.loads(titles["privileged container"]["evidence"])
    assert ev[0]["table"] == "containers"


def test_setuid_and_new_script_in_the_modified_container(case):
    titles = {f["title"]: f for f in _by_container(case, "c-modified")}
    assert titles["setuid bit set on /opt/app/bin/tool"]["severity"] == "high"
    dropped = titles["new executable /root/implant.sh"]
    assert json.loads(dropped["details"])["file_kind"] == "script"
    assert json.loads(dropped["evidence"])[0] == {
        "table": "changes",
        "source_id": dropped["source_id"],
        "container_id": dropped["container_id"],
        "path": "/root/implant.sh",
        "change": "added",
    }


def test_shell_on_a_socket_in_the_checkpoint(case):
    (shell,) = _findings(case, "title LIKE 'shell on a network socket%'")
    assert shell["severity"] == "critical" and shell["subject"] == "pid 6131"
    assert json.loads(shell["techniques"]) == ["T1059.004"]


def test_clean_containers_have_no_finding(case):
    for name in ("c-created", "c-exited3", "c-oom", "c-paused", "c-restarting", "c-exited0"):
        assert _by_container(case, name) == [], name
    # a mere NET_ADMIN and ordinary changes: nothing high
    assert all(f["severity"] not in ("critical", "high") for f in _by_container(case, "c-running"))


def test_finding_ids_are_stable_across_runs(case, tmp_path):
    before = {f["finding_id"] for f in _findings(case)}
    copy = tmp_path / "c.duckdb"
    copy.write_bytes(case.read_bytes())
    store = CaseStore(str(copy))
    run_analyses(store)
    assert {f["finding_id"] for f in _findings(store)} == before
    store.close()


@pytest.fixture
def store(tmp_path):
    s = CaseStore(str(tmp_path / "c.duckdb"))
    yield s
    s.close()


def _change(path: str, **kw) -> dict:
    row = {"source_id": 1, "host": "h", "engine": "docker", "container_id": "c1", "change": "added"}
    row.update(path=path, type="file", mode="0o644", file_kind="data", engine_reports=True)
    row.update(kw)
    return row


def test_persistence_accounts_and_staged_tools(store):
    store.insert(
        "changes",
        [
            _change("/etc/crontabs/root"),
            _change("/etc/passwd", change="modified", what_changed=["content"]),
            _change("/root/.ssh/authorized_keys"),
            _change("/etc/ld.so.preload"),
            _change("/home/u/.bashrc", change="modified"),
            _change("/tmp/.x/dropper", mode="0o755", file_kind="elf", sha256="ab" * 32),
            _change(
                "/usr/bin/ls", change="modified", mode="0o755", file_kind="elf", what_changed=["content"]
            ),
            _change("/usr/bin/newtool", mode="0o755", file_kind="elf"),
            _change("/srv/empty-mountpoint", mode="0o755", file_kind="empty"),
            _change("/opt/readme.txt"),  # an ordinary new file: nothing
        ],
    )
    run_analyses(store)
    got = {f["title"]: (f["severity"], json.loads(f["techniques"])) for f in _findings(store)}
    assert got["cron job added or changed: /etc/crontabs/root"] == ("high", ["T1053.003"])
    assert got["account database changed: /etc/passwd"] == ("high", ["T1136.001"])
    assert got["SSH authorized key added or changed: /root/.ssh/authorized_keys"] == ("high", ["T1098.004"])
    assert got["ld.so.preload changed: /etc/ld.so.preload"] == ("high", ["T1574.006"])
    assert got["shell start-up file changed: /home/u/.bashrc"] == ("medium", ["T1546.004"])
    assert got["new executable /tmp/.x/dropper"] == ("high", ["T1105", "T1564.001"])
    assert got["system binary or library modified: /usr/bin/ls"] == ("high", ["T1554"])
    assert got["new executable /usr/bin/newtool"][0] == "high"  # an ELF, wherever it lands
    assert not any("empty-mountpoint" in t or "readme" in t for t in got)


def test_deleted_executable_listener_tampered_layer_and_journal(store):
    keys = {"source_id": 1, "host": "h", "engine": "docker", "container_id": "c1", "image_id": "sha256:i"}
    store.insert("containers", [{**keys, "name": "web", "exposed_ports": ["80/tcp"]}])
    store.insert(
        "processes", [{**keys, "pid": 7, "comm": "kworker", "ppid": 1, "pgid": 7, "sid": 7, "state": "alive"}]
    )
    store.insert("files", [{**keys, "pid": 7, "fd": None, "type": "exe", "target": "/memfd:x (deleted)"}])
    store.insert(
        "sockets",
        [
            {**keys, "family": "inet", "type": "stream", "state": "LISTEN", "src": "0.0.0.0", "src_port": 80},
            {
                **keys,
                "family": "inet",
                "type": "stream",
                "state": "LISTEN",
                "src": "0.0.0.0",
                "src_port": 4444,
            },
        ],
    )
    store.insert(
        "integrity", [{**keys, "chain_id": "sha256:" + "c" * 64, "status": "tampered", "problems": []}]
    )
    store.insert(
        "recovered",
        [{**keys, "path": "/var/lib/docker/overlay2/x/diff/tmp/p", "inode": 12, "type": "file",
          "layer_kind": "rw", "container_path": "/tmp/p", "bytes_recovered": 3, "confidence": "complete",
          "method": "journal"}],
    )  # fmt: skip
    run_analyses(store)
    got = {f["title"]: f for f in _findings(store)}
    assert got["in-memory executable running (pid 7)"]["severity"] == "high"
    assert "undeclared listener 0.0.0.0:4444" in got and "undeclared listener 0.0.0.0:80" not in got
    assert got["tampered layer sha256:cccccccccccc"]["severity"] == "critical"
    assert got["file deleted from a container: /tmp/p"]["severity"] == "medium"
