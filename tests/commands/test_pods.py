"""``pensieve pods`` and ``pensieve logs`` on CRI containers of the real containerd 2.1 capture:
pods against the CRI's ListPodSandbox/ListContainers, logs against the raw CRI log files, and
kubelet-style rotation (rename to ``0.log.<stamp>``, gzip) generated from the real file."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli, unpack

from pensieve.times import parse_rfc3339

FIX = FIXTURE_ROOT / "containerd2"
CRI = load_json(FIX / "containerd-2.1-cri.json")
POD_DIR = "logs/pods/shop_web_6b1f4c0e-8d2a-4f57-9a31-2c9e5d7b0a11"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return unpack(FIX / "containerd-2.1-root.tar.xz", tmp_path_factory.mktemp("ctr2-pods"))


def run(*args):
    code, out, err = run_cli(*args)
    assert code == 0, err
    return out


def test_pods_json_matches_the_cri(source):
    pods = json.loads(run("pods", str(source), "--json"))
    [sandbox] = CRI["pod_sandboxes"]["items"]
    assert len(pods) == 1
    pod = pods[0]
    meta = sandbox["metadata"]
    assert (pod["name"], pod["namespace"], pod["uid"]) == (meta["name"], meta["namespace"], meta["uid"])
    assert pod["sandbox_id"] == sandbox["id"] and pod["state"] == "ready"  # SANDBOX_READY, task on disk
    assert pod["labels"] == sandbox["labels"] and pod["annotations"] == sandbox["annotations"]
    assert abs(parse_rfc3339(pod["created"]) - int(sandbox["created_at"])) < 10**9
    want = sorted(
        (
            c["metadata"]["name"],
            c["metadata"]["attempt"],
            c["id"],
            c["state"].removeprefix("CONTAINER_").lower(),
        )
        for c in CRI["containers"]["containers"]
        if c["pod_sandbox_id"] == sandbox["id"]
    )
    assert [(c["name"], c["attempt"], c["id"], c["state"]) for c in pod["containers"]] == want
    for c in pod["containers"]:
        status = CRI["container_status"][c["id"]]["status"]
        assert c["image"] == status["image"]["image"] and c["log_path"] == status["log_path"]
        assert c["exit_code"] == (status["exit_code"] if c["state"] == "exited" else None)


def test_pods_other_formats(source):
    jsonl = [json.loads(line) for line in run("pods", str(source), "--jsonl").splitlines()]
    assert [p["uid"] for p in jsonl] == ["6b1f4c0e-8d2a-4f57-9a31-2c9e5d7b0a11"]
    rows = list(csv.DictReader(io.StringIO(run("pods", str(source), "--csv"))))
    assert rows[0]["name"] == "web" and rows[0]["namespace"] == "shop"
    table = run("pods", str(source))
    assert "shop/web" in table and "6b1f4c0e-8d2a-4f57-9a31-2c9e5d7b0a11" in table and "migrate#1" in table


def raw_lines(path):
    """(time, stream, message) of the F records of a CRI log file, read independently."""
    out = []
    for line in path.read_bytes().decode().splitlines():
        stamp, stream, tag, message = line.split(" ", 3)
        assert tag == "F"
        out.append((parse_rfc3339(stamp), stream, message))
    return out


@pytest.mark.parametrize(("ref", "file"), [("app", "app/0.log"), ("2f5e66f25d77", "migrate/0.log"),
                                           ("c229b9bf0a4c", "migrate/1.log")])  # fmt: skip
def test_logs_of_a_cri_container(source, ref, file):
    got = [json.loads(line) for line in run("logs", str(source), ref, "--jsonl").splitlines()]
    assert [(parse_rfc3339(g["time"]), g["stream"], g["message"]) for g in got] == raw_lines(
        source / POD_DIR / file
    )
    assert all(g["source"] == f"/{POD_DIR}/{file}" and not g["partial"] for g in got)
    table = run("logs", str(source), ref)
    assert [line.split()[-1] for line in table.splitlines()] == [
        m.split()[-1] for _t, _s, m in raw_lines(source / POD_DIR / file)
    ]
    stderr = [
        json.loads(line)
        for line in run("logs", str(source), ref, "--jsonl", "--stream", "stderr").splitlines()
    ]
    assert all(g["stream"] == "stderr" for g in stderr)


def test_rotated_and_gzipped_cri_logs(source, tmp_path):
    """Rotate app/0.log as the kubelet does (rename to 0.log.<stamp>, gzip all but the newest
    rotation, start a new 0.log) and read them back in order, a P line joined across files."""
    copy = unpack(FIX / "containerd-2.1-root.tar.xz", tmp_path)  # a copy of our own to rotate in
    app = copy / POD_DIR / "app"
    real = (app / "0.log").read_bytes().splitlines(keepends=True)
    first, second = real
    (app / "0.log").unlink()
    with gzip.open(app / "0.log.20261203-120000.gz", "wb") as gz:
        gz.write(first)
    (app / "0.log.20261203-120000").write_bytes(first)  # an interrupted compression: plain one wins
    with gzip.open(app / "0.log.20261203-121000.gz", "wb") as gz:
        gz.write(second + b"2026-12-03T12:36:00.000000001Z stdout P split across ")
    (app / "0.log.20261203-122000.gz.tmp").write_bytes(b"half-written")
    (app / "0.log").write_bytes(b"2026-12-03T12:36:00.000000002Z stdout F rotation\n")
    got = [json.loads(line) for line in run("logs", str(copy), "app", "--jsonl").splitlines()]
    want = raw_lines(source / POD_DIR / "app" / "0.log") + [
        (parse_rfc3339("2026-12-03T12:36:00.000000001Z"), "stdout", "split across rotation")
    ]
    assert [(parse_rfc3339(g["time"]), g["stream"], g["message"]) for g in got] == want
    assert [g["source"].rsplit("/", 1)[-1] for g in got] == [
        "0.log.20261203-120000", "0.log.20261203-121000.gz", "0.log.20261203-121000.gz",
    ]  # fmt: skip


def test_ambiguous_attempts_need_an_id(source):
    code, _out, err = run_cli("logs", str(source), "migrate")
    assert code == 4 and "ambiguous" in err


def test_logs_of_a_container_outside_cri(source):
    """A ctr container (default namespace): containerd keeps no log of it; no lines, and the note
    says where its output went (exit 5), instead of a search of containerd's root."""
    code, out, err = run_cli("logs", str(source), "default/web", "--json")
    assert code == 5 and json.loads(out) == []
    assert "containerd keeps none for a container started outside CRI" in err
