"""Hostile CRI-O files on the HAND-MADE CRI-O node (tests/fixtures/crio; CRI-O cannot run here):
a generator truncates and retypes every CRI-O container's userdata/config.json and its runroot
state.json, and makes a containers.json entry name a missing layer.  Each reading must end within
a time bound with every container still listed, the bad file named by a problem, and the CLI's
exit 5 (done with problems)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, time_bound
from crio_node import EXPECTED, build_node

from pensieve import api
from pensieve.engines.discover import engine_hosts

GRAPHROOT = "var/lib/containers/storage"
RUNROOT = "run/containers/storage"
WEB = next(cid for cid, c in EXPECTED["containers"].items() if c["k8s_container"] == "web")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return build_node(tmp_path_factory.mktemp("crio-hostile"))


@pytest.fixture
def node(pristine, tmp_path) -> Path:
    copy = tmp_path / "node"
    subprocess.run(["cp", "-a", str(pristine), str(copy)], check=True)  # whiteouts and fifos too
    return copy


def mutations(text: bytes) -> Iterator[tuple[str, bytes]]:
    """(what, bytes) of hostile variants of one JSON document."""
    for cut in (0, 1, len(text) // 3, len(text) // 2, len(text) - 1):
        yield f"truncated at {cut}", text[:cut]
    for wrong in (b"null", b"[]", b"12", b'"text"', b"[" * 5000 + b"]" * 5000):
        yield f"not an object: {wrong[:8]!r}", wrong
    doc = json.loads(text)
    for key in doc:
        for wrong in (None, 7, "x", [], {}):
            yield f"{key} = {wrong!r}", json.dumps({**doc, key: wrong}).encode()
    annotations = doc.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            if key.startswith("io.kubernetes.cri-o.") and annotations[key].startswith(("{", "[")):
                bad = {**doc, "annotations": {**annotations, key: "{"}}
                yield f"{key} truncated", json.dumps(bad).encode()


def read_all(node: Path):
    with time_bound(10, "reading the hostile node"):
        host = api.open_host(str(node))
        crio = next(h for h in engine_hosts(host) if h.engine == "cri-o")
        containers = crio.containers()
        crio.pod_records()
        for c in containers:
            assert c.engine == "cri-o"
    return host, containers


@pytest.mark.parametrize("which", ["config", "state"])
def test_hostile_spec_and_state(node, which):
    root = GRAPHROOT if which == "config" else RUNROOT
    path = node / root / "overlay-containers" / WEB / "userdata" / f"{which}.json"
    original = path.read_bytes()
    named = 0
    for what, data in mutations(original):
        path.write_bytes(data)
        if which == "config":  # the runroot copy would stand in for the graphroot's
            (node / RUNROOT / "overlay-containers" / WEB / "userdata" / "config.json").write_bytes(data)
        host, containers = read_all(node)
        assert {c.id for c in containers} >= set(EXPECTED["containers"]) - {WEB}, what
        rel = f"/{root}/overlay-containers/{WEB}/userdata/{which}.json"
        named += any(p.source == rel for p in host.problems)
    assert named >= 10  # every truncation and non-object at least


def test_missing_layer_named_and_exit_5(node):
    store = node / GRAPHROOT / "overlay-containers" / "containers.json"
    entries = json.loads(store.read_text())
    for e in entries:
        if e["id"] == WEB:
            e["layer"] = "f" * 64
    store.write_text(json.dumps(entries))
    host, containers = read_all(node)
    assert sorted(c.id for c in containers) == sorted(EXPECTED["containers"])
    web = next(c for c in containers if c.id == WEB)
    assert any("f" * 64 in p.message and p.source.endswith("containers.json") for p in web.problems)
    code, out, err = run_cli("containers", node, "--json")
    assert code == 5 and "containers.json" in err
    assert {c["id"] for c in json.loads(out)} >= set(EXPECTED["containers"])


def test_runroot_gone_means_unknown_state(node):
    shutil.rmtree(node / "run")
    host, containers = read_all(node)
    assert sorted(c.id for c in containers) == sorted(EXPECTED["containers"])
    for c in containers:
        assert c.state == "unknown"
        assert any("runtime state unknown" in p.message for p in c.problems)
    assert {p.state for p in next(h for h in engine_hosts(host) if h.engine == "cri-o").pod_records()} == {
        "unknown"
    }
    code, _, _ = run_cli("pods", node)
    assert code == 5
