"""`pensieve logs` on Podman containers (engines/podman/logs.py): both real captures (Podman 4.3
bolt state, Podman 5.8 SQLite state), as the graphroot itself and as a host root holding it at
/var/lib/containers/storage; what pensieve prints equals each container's raw ``ctr.log``
parsed here on its own.  A container whose log driver writes no file is a problem saying so."""

from __future__ import annotations

import json
import posixpath
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli, unpack

from pensieve.engines.podman.logs import log_candidates, podman_log_files, read_podman_logs
from pensieve.evidence import DirectoryEvidence
from pensieve.records import Container
from pensieve.times import iso_ns, parse_rfc3339

GRAPHROOT = "/var/lib/containers/storage"
CAPTURES = {
    "podman4": FIXTURE_ROOT / "podman/podman-4.3-root.tar.xz",
    "podman5": FIXTURE_ROOT / "podman5/podman-5-storage.tar.xz",
}
CID = "ab" * 32


def raw_ctr_log(path: Path) -> list[tuple[str, str, str]]:
    """(time, stream, text) of a ctr.log read on its own: one ``<time> <stream> <P|F> <msg>``
    per line, P records of a stream joined with the record that ends them."""
    out, open_runs = [], {}
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        stamp, stream, tag, msg = line.decode().split(" ", 3)
        run = open_runs.setdefault(stream, [stamp, ""])
        run[1] += msg
        if tag == "F":
            out.append((iso_ns(parse_rfc3339(run[0])), stream, run[1]))
            del open_runs[stream]
    return out


def cli_lines(source: Path, cid: str) -> list[tuple[str, str, str]]:
    code, out, err = run_cli("logs", source, cid, "--json")
    assert code == 0, err
    return [(line["time"], line["stream"], line["message"]) for line in json.loads(out)]


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def capture(request, tmp_path_factory) -> tuple[Path, Path]:
    """(the graphroot, a host root holding it at /var/lib/containers/storage)."""
    tarball = CAPTURES[request.param]
    top = unpack(tarball, tmp_path_factory.mktemp(request.param))
    host = tmp_path_factory.mktemp(request.param + "-host")
    unpack(tarball, host / posixpath.dirname(GRAPHROOT).lstrip("/"))
    return top / "storage", host


def containers(graphroot: Path) -> list[dict]:
    code, out, err = run_cli("containers", graphroot, "--json")
    assert code == 0, err
    return json.loads(out)


def test_every_ctr_log_as_recorded(capture):
    graphroot, host = capture
    seen = 0
    for c in containers(graphroot):
        assert c["log_driver"] == "k8s-file"
        assert c["log_path"].endswith(f"/overlay-containers/{c['id']}/userdata/ctr.log")
        ctr_log = graphroot / "overlay-containers" / c["id"] / "userdata" / "ctr.log"
        if not ctr_log.is_file():  # never started: conmon never ran
            assert c["state"] == "created"
            continue
        want = raw_ctr_log(ctr_log)
        seen += bool(want)
        assert cli_lines(graphroot, c["id"]) == want
        assert cli_lines(host, c["id"]) == want
        code, out, _ = run_cli("logs", graphroot, c["id"], "--json")
        sources = {line["source"] for line in json.loads(out)}
        assert sources <= {f"/overlay-containers/{c['id']}/userdata/ctr.log"}
    if graphroot.parent.name.startswith("podman5"):
        assert seen == 2  # web and shop-app wrote lines; the 4.3 capture's logs are empty


def test_stream_filter_and_table(capture):
    graphroot, _host = capture
    for c in containers(graphroot):
        ctr_log = graphroot / "overlay-containers" / c["id"] / "userdata" / "ctr.log"
        if not ctr_log.is_file():
            continue
        want = raw_ctr_log(ctr_log)
        code, out, _ = run_cli("logs", graphroot, c["id"], "--stream", "stderr", "--json")
        assert code == 0
        assert [(x["time"], x["stream"], x["message"]) for x in json.loads(out)] == [
            w for w in want if w[1] == "stderr"
        ]
        code, out, _ = run_cli("logs", graphroot, c["id"])
        assert code == 0
        assert [line.split(None, 2) for line in out.splitlines()] == [list(w) for w in want]


def test_never_started_has_no_file(capture):
    graphroot, _host = capture
    for c in containers(graphroot):
        if (
            c["state"] == "created"
            and not (graphroot / "overlay-containers" / c["id"]).joinpath("userdata", "ctr.log").exists()
        ):
            code, out, err = run_cli("logs", graphroot, c["id"])
            assert (code, out) == (0, "")
            assert "no k8s-file log" in err


def test_journald_is_not_in_files(tmp_path_factory):
    """The 5.8 capture with the job container's logDriver set to journald in its libpod state."""
    top = unpack(CAPTURES["podman5"], tmp_path_factory.mktemp("journald"))
    graphroot = top / "storage"
    job = next(c for c in containers(graphroot) if c["name"] == "job")
    db = sqlite3.connect(graphroot / "db.sql")
    (raw,) = db.execute("SELECT JSON FROM ContainerConfig WHERE ID = ?", (job["id"],)).fetchone()
    config = json.loads(raw)
    config["logDriver"] = "journald"
    db.execute("UPDATE ContainerConfig SET JSON = ? WHERE ID = ?", (json.dumps(config), job["id"]))
    db.commit()
    db.close()
    code, out, err = run_cli("logs", graphroot, "job")
    assert code == 5 and out == ""
    assert "not in files" in err and "journald" in err and "systemd journal" in err


# ---- the path translation, on a tree made here ------------------------------------------------
def podman_container(**kw) -> Container:
    return Container(id=CID, engine="podman", data_root="/var/lib/containers/storage", **kw)


def test_candidates_translate_the_recorded_graphroot():
    c = podman_container(log_path=f"/mnt/old/storage/overlay-containers/{CID}/userdata/ctr.log")
    assert log_candidates(c) == [
        f"/var/lib/containers/storage/overlay-containers/{CID}/userdata/ctr.log",
        f"/mnt/old/storage/overlay-containers/{CID}/userdata/ctr.log",
    ]
    assert log_candidates(podman_container()) == [
        f"/var/lib/containers/storage/overlay-containers/{CID}/userdata/ctr.log"
    ]
    hostile = podman_container(log_path=f"/../../overlay-containers/{CID}/../../etc/shadow")
    assert all(".." not in p.split("/") for p in log_candidates(hostile))
    other = podman_container(log_path="/var/log/app/web.log")
    assert log_candidates(other) == ["/var/log/app/web.log"]


@pytest.mark.parametrize("driver", ["journald", "none", "passthrough", "passthrough-tty", "syslog"])
def test_drivers_without_files(tmp_path, driver):
    problems = []
    c = podman_container(log_driver=driver, log_path="/x/ctr.log")
    assert podman_log_files(DirectoryEvidence(str(tmp_path)), c, problems) == []
    assert len(problems) == 1 and "not in files" in problems[0].message and driver in problems[0].message


def test_custom_path_and_partial_lines(tmp_path):
    root = tmp_path / "var/lib/containers/storage"
    (root / "overlay-containers" / CID / "userdata").mkdir(parents=True)
    (root / "overlay-layers").mkdir()
    (root / "overlay-layers" / "layers.json").write_text("[]")
    app = tmp_path / "var/log/app"
    app.mkdir(parents=True)
    (app / "web.log").write_bytes(
        b"2024-01-02T03:04:05.000000001Z stdout P hel\n"
        b"2024-01-02T03:04:05.000000002Z stderr F oops\n"
        b"2024-01-02T03:04:05.000000003Z stdout F lo\n"
    )
    ev = DirectoryEvidence(str(tmp_path))
    c = podman_container(log_driver="k8s-file", log_path="/var/log/app/web.log")
    problems = []
    files = podman_log_files(ev, c, problems)
    assert files == ["/var/log/app/web.log"] and problems == []
    lines = [(x.time, x.stream, x.message) for x in read_podman_logs(ev, c, files, problems)]
    assert lines == [
        (parse_rfc3339("2024-01-02T03:04:05.000000002Z"), "stderr", "oops"),
        (parse_rfc3339("2024-01-02T03:04:05.000000001Z"), "stdout", "hello"),
    ]
    assert problems == []
    shutil.rmtree(app)
    assert podman_log_files(ev, c, problems) == [] and problems == []
