"""A live Kubernetes node in miniature (tests/live/private_cri.py): Debian's containerd with its CRI
plugin, driven over the CRI socket by fixtures/capture/cri_client.py playing the kubelet: pod
shop/web with host networking, container ``app`` running, ``migrate`` exited, restarted and exited
again, the CRI logs containerd writes below the node's ``/var/log/pods``.  With the pod running:

* ``live ps`` puts the app's processes in its container, names it as the CRI does and groups it
  under its pod, and the sandbox's pause process under the same pod; the pids agree with the CRI's
  ContainerStatus (verbose info's pid);
* ``collect app`` (the container is still running) takes its CRI log with it: ``logs BUNDLE app``
  gives the lines ``logs NODE app`` gives, which are the lines the container printed; the bundle
  verifies, and the container's task is untouched;
* a bundle of the restarted ``migrate`` holds the log of the attempt it names.

Needs root, containerd/ctr, runc, busybox-static, and the CRI client's compiled api and grpc Python
(fixtures/capture/sid_tree.sh); skipped otherwise.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from conftest import run_cli
from private_containerd import missing_prerequisites, static_busybox
from private_cri import PrivateCri, missing_cri

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def node():
    why = missing_prerequisites() or missing_cri() or (None if static_busybox() else "no busybox-static")
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="pcri.", dir="/tmp"))
    tmp.chmod(0o755)
    n = PrivateCri(tmp)
    try:
        n.start()
        n.import_images(static_busybox())
        sandbox = n.pods()
        n.record(tmp / "cri.json")
        cri = json.loads((tmp / "cri.json").read_text())
        yield n, sandbox, cri
    finally:
        problems = n.teardown()
        assert not problems, problems


def _cri_containers(cri: dict) -> dict[str, dict]:
    rows = cri["containers"]["containers"]
    return {f"{c['metadata']['name']}/{c['metadata']['attempt']}": c for c in rows}


def _cli_json(*args):
    code, out, err = run_cli(*args, "--json")
    assert code in (0, 5), err
    return json.loads(out), code, err


def test_live_ps_groups_the_pod(node):
    n, sandbox, cri = node
    app = _cri_containers(cri)["app/0"]
    pid = cri["container_status"][app["id"]]["info_json"]["info"]["pid"]
    rows, _code, err = _cli_json("live", "ps", "--root", n.evidence)
    ours = [r for r in rows if r["container_id"] in (app["id"], sandbox)]
    by_pid = {r["pid"]: r for r in ours}
    assert pid in by_pid, (pid, err)
    row = by_pid[pid]
    assert row["container_id"] == app["id"] and row["container_name"] == "app"
    assert row["pod"] == "shop/web" and row["known"] is True
    assert "sleep" in " ".join(row["cmdline"])
    pause = [r for r in ours if r["container_id"] == sandbox]
    assert pause and all(r["pod"] == "shop/web" for r in pause), pause


def test_collect_takes_the_cri_log(node, tmp_path):
    n, _sandbox, cri = node
    app = _cri_containers(cri)["app/0"]
    before = n.tasks("k8s.io")[app["id"]]
    b = tmp_path / "b"
    code, _out, err = run_cli("collect", app["id"], "--root", n.evidence, "--out", b)
    assert code in (0, 5), err
    assert n.tasks("k8s.io")[app["id"]] == before, "collect changed the task"
    assert run_cli("collect", "verify", b)[0] == 0
    doc = json.loads((b / "manifest.json").read_text())
    logs = [f for f in doc["files"] if f["path"].endswith("/app/0.log")]
    assert len(logs) == 1 and "/var/log/pods/shop_web_" in logs[0]["path"], doc["files"]
    ours, _, _ = _cli_json("logs", b, app["id"])
    theirs, _, _ = _cli_json("logs", n.evidence, app["id"])
    assert ours == theirs
    # the two lines are written by one shell to two pipes: containerd may log either first
    got = sorted((x["stream"], x["message"]) for x in ours)
    assert got == [("stderr", "app warning"), ("stdout", "app started")]


def test_collect_of_a_restarted_container_takes_its_attempt(node, tmp_path):
    n, _sandbox, cri = node
    migrate = _cri_containers(cri)["migrate/1"]
    b = tmp_path / "m"
    code, _out, err = run_cli("collect", migrate["id"], "--root", n.evidence, "--out", b)
    assert code in (0, 5), err
    doc = json.loads((b / "manifest.json").read_text())
    logs = sorted(f["path"].rsplit("/", 2)[-2] + "/" + f["path"].rsplit("/", 1)[-1]
                  for f in doc["files"] if "/var/log/pods/" in f["path"])  # fmt: skip
    assert logs == ["migrate/1.log"], logs
    ours, _, _ = _cli_json("logs", b, migrate["id"])
    assert [x["message"] for x in ours] == ["migrate attempt 1"]
