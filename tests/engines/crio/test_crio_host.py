"""CrioHost on the HAND-MADE CRI-O node (tests/fixtures/crio: CRI-O cannot run on this machine,
so fixtures/handmade/crio_fixture.py wrote CRI-O's parts -- containers.json metadata,
userdata/config.json, runroot state.json, crio.conf, /var/log/pods -- from CRI-O's documented
layout over the real Podman 5 capture), checked against expected.json, what the fixture is
meant to say; and the CLI's containers / pods / logs / diff / whence / roots on it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from crio_node import EXPECTED, build_node

from pensieve import api
from pensieve.engines.crio import CrioHost
from pensieve.engines.discover import engine_hosts, root_rows

CRIO_IDS = sorted(EXPECTED["containers"])


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    return build_node(tmp_path_factory.mktemp("crio"))


def crio_host(source) -> CrioHost:
    host = api.open_host(str(source))
    return next(h for h in engine_hosts(host) if h.engine == "cri-o")


def test_discovery_opens_both_engines_over_the_shared_store(node):
    host = api.open_host(str(node))
    engines = sorted(h.engine for h in engine_hosts(host))
    assert engines == ["cri-o", "podman"]
    by_engine: dict[str, set[str]] = {}
    for c in host.containers():
        by_engine.setdefault(c.engine, set()).add(c.id)
    assert by_engine["cri-o"] == set(CRIO_IDS)
    assert by_engine["podman"] == set(EXPECTED["podman_containers"])
    assert [i.engine for i in host.images()] == ["podman"]  # the shared store's image, once
    rows = {r["engine"]: r for r in root_rows(host)}
    assert rows["cri-o"]["path"] == "/var/lib/containers/storage"
    assert rows["cri-o"]["found"] == "root in /etc/crio/crio.conf"
    assert "runroot: /run/containers/storage" in rows["cri-o"]["hints"]
    assert host.problems == []


def test_every_container_as_expected(node):
    host = crio_host(node)
    by_id = {c.id: c for c in host.containers()}
    assert sorted(by_id) == CRIO_IDS
    for cid, want in EXPECTED["containers"].items():
        c = by_id[cid]
        assert c.engine == "cri-o" and c.problems == []
        for key in ("name", "is_sandbox", "pod_name", "pod_namespace", "pod_uid", "k8s_container",
                    "attempt", "sandbox_id", "state", "exit_code", "image", "rw_layer"):  # fmt: skip
            assert getattr(c, key) == want[key], (cid, key)
        assert c.image_id == "3fbfced41905b8620e8017d35b408c0dbfdec43542078726b6bc7ab875e2d3bc"
        assert [layer.role for layer in c.layers] == ["image", "rw"]
        if c.state == "running":
            assert c.pid and c.started and c.finished is None
        else:
            assert c.pid is None and c.finished and c.finished > c.started
        if not c.is_sandbox:
            assert c.log_driver == "cri" and c.log_path.startswith("/var/log/pods/")


def test_pods(node):
    pods = crio_host(node).pod_records()
    assert len(pods) == len(EXPECTED["pods"])
    wanted = sorted(EXPECTED["pods"], key=lambda p: p["name"])
    for pod, want in zip(sorted(pods, key=lambda p: p.name), wanted, strict=True):
        assert (pod.name, pod.namespace, pod.uid, pod.sandbox_id, pod.state, pod.engine) == (
            want["name"], want["namespace"], want["uid"], want["sandbox_id"], want["state"], "cri-o"
        )  # fmt: skip
        got = sorted((m.id, m.name, m.attempt, m.state, m.exit_code) for m in pod.containers)
        assert got == sorted(
            (m["id"], m["name"], m["attempt"], m["state"], m["exit_code"]) for m in want["containers"]
        )
        assert pod.log_directory == f"/var/log/pods/{want['namespace']}_{want['name']}_{want['uid']}"
        assert pod.labels["io.kubernetes.pod.name"] == want["name"]


def test_pods_cli(node):
    code, out, err = run_cli("pods", node, "--json")
    assert code == 0, err
    pods = [p for p in json.loads(out) if p["engine"] == "cri-o"]
    assert sorted(p["name"] for p in pods) == sorted(p["name"] for p in EXPECTED["pods"])
    shop = next(p for p in pods if p["name"] == "shop")
    assert sorted((m["name"], m["attempt"]) for m in shop["containers"]) == [
        ("job", 0), ("web", 0), ("worker", 0), ("worker", 1)
    ]  # fmt: skip
    code, out, _ = run_cli("pods", node)
    assert code == 0 and "default/shop" in out and "monitoring/metrics" in out


def test_containers_cli(node):
    code, out, err = run_cli("containers", node, "--json")
    assert code == 0, err
    rows = {c["id"]: c for c in json.loads(out)}
    for cid, want in EXPECTED["containers"].items():
        assert rows[cid]["engine"] == "cri-o"
        assert rows[cid]["state"] == want["state"]
        assert rows[cid]["k8s_container"] == want["k8s_container"]


def test_logs_join_partial_lines(node):
    for cid, want in EXPECTED["containers"].items():
        if want["log_lines"] is None:
            continue
        code, out, err = run_cli("logs", node, cid, "--json")
        assert code == 0, err
        assert [[line["stream"], line["message"]] for line in json.loads(out)] == want["log_lines"], cid


def test_restarted_container_has_its_own_log(node):
    everyone = EXPECTED["containers"].items()
    worker = {c["attempt"]: cid for cid, c in everyone if c["k8s_container"] == "worker"}
    assert sorted(worker) == [0, 1]
    host = crio_host(node)
    paths = {a: host.container(cid).log_path for a, cid in worker.items()}
    assert paths[0].endswith("/worker/0.log") and paths[1].endswith("/worker/1.log")


def test_diff_and_whence(node):
    ((cid, want),) = EXPECTED["diff"].items()
    code, out, err = run_cli("diff", node, cid, "--json")
    assert code == 0, err
    assert sorted([c["change"], c["path"]] for c in json.loads(out)) == sorted(want)
    result = api.diff(api.open_host(str(node)), cid)
    assert sorted([c.change, c.path] for c in result.changes) == sorted(want)
    w = EXPECTED["whence"]
    a = api.whence(api.open_host(str(node)), w["path"])
    assert a.containers == [w["container"]] and a.layer_kind == w["layer_kind"]
    assert a.container_path == w["container_path"]
    code, out, err = run_cli("whence", node, w["path"], "--json")
    assert code == 0, err


def test_podman_alone_leaves_crio_containers_out(node):
    from pensieve.engines.podman import PodmanHost
    from pensieve.evidence import DirectoryEvidence

    host = PodmanHost(DirectoryEvidence(str(node)), ["/var/lib/containers/storage"])
    assert sorted(c.id for c in host.containers()) == sorted(EXPECTED["podman_containers"])


def test_containers_named_as_kubernetes_names_them(node):
    """``web``, ``shop/web`` or ``default/shop/web`` find a CRI container; of a restarted one the
    latest attempt, as ``kubectl logs`` shows."""
    host = crio_host(node)
    everyone = EXPECTED["containers"].items()
    worker = {c["attempt"]: cid for cid, c in everyone if c["k8s_container"] == "worker"}
    assert host.container("worker").id == worker[1]
    web = next(cid for cid, c in everyone if c["k8s_container"] == "web")
    assert (
        host.container("web").id
        == host.container("shop/web").id
        == host.container("default/shop/web").id
        == web
    )
    code, out, err = run_cli("logs", node, "shop/web", "--json")  # "web" alone: also a Podman name here
    assert code == 0, err
    assert [[line["stream"], line["message"]] for line in json.loads(out)] == EXPECTED["containers"][web][
        "log_lines"
    ]
