"""Podman pods as the ``pods`` command's Pod records (PodmanHost.pod_records), on both real
captures (tests/fixtures/podman: Podman 4.3, pod ``pensieve-pod``; tests/fixtures/podman5: Podman
5.8, pod ``shop``), compared with the ``podman pod inspect`` recorded at capture time."""

from __future__ import annotations

import pytest
from conftest import FIXTURE_ROOT, load_json, unpack

from pensieve.commands.pods import host_pods
from pensieve.engines.podman import PodmanHost
from pensieve.evidence import DirectoryEvidence
from pensieve.records.kubernetes import Pod
from pensieve.times import parse_rfc3339

CAPTURES = {
    "podman4.3": ("podman", "podman-4.3-expected.json", "podman-4.3-root.tar.xz"),
    "podman5": ("podman5", "podman-5-expected.json", "podman-5-storage.tar.xz"),
}


def _inspected_pods(expected: dict) -> list[dict]:
    """The recorded ``podman pod inspect`` answers (4.3: by name in ``pods``; 5: ``pod_inspect``)."""
    answers = expected["pod_inspect"] if "pod_inspect" in expected else list(expected["pods"].values())
    return [a[0] if isinstance(a, list) else a for a in answers]


def _infra_id(inspect: dict) -> str:
    return inspect.get("InfraContainerID") or inspect["InfraId"]


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def capture(request, tmp_path_factory) -> tuple[PodmanHost, dict]:
    folder, expected, tarball = CAPTURES[request.param]
    unpacked = unpack(FIXTURE_ROOT / folder / tarball, tmp_path_factory.mktemp(request.param))
    return PodmanHost(DirectoryEvidence(str(unpacked / "storage"))), load_json(
        FIXTURE_ROOT / folder / expected
    )


def test_every_pod_as_a_pod_record(capture):
    host, expected = capture
    records = host.pod_records()
    inspected = _inspected_pods(expected)
    assert inspected and sorted(p.sandbox_id for p in records) == sorted(map(_infra_id, inspected))
    for want in inspected:
        pod = next(p for p in records if p.name == want["Name"])
        assert isinstance(pod, Pod) and pod.engine == "podman" and pod.problems == []
        assert (pod.namespace, pod.uid, pod.attempt, pod.runtime_namespace) == (None, None, None, None)
        assert pod.sandbox_id == _infra_id(want)
        assert pod.labels == (want.get("Labels") or {})
        assert pod.created == parse_rfc3339(want["Created"])
        assert sorted(c.id for c in pod.containers) == sorted(c["Id"] for c in want["Containers"])
        assert [c.name for c in pod.containers] == sorted(c.name for c in pod.containers)


def test_members_and_state_from_the_containers(capture):
    host, expected = capture
    for want in _inspected_pods(expected):
        pod = next(p for p in host.pod_records() if p.name == want["Name"])
        infra = host.container(_infra_id(want))
        assert pod.state == infra.state
        for member in pod.containers:
            c = host.container(member.id)
            assert (member.name, member.state, member.image) == (c.name, c.state, c.image)
            assert member.created == c.created and member.exit_code == c.exit_code
        recorded = {c["Id"]: (c.get("State") or c.get("Status") or "").lower() for c in want["Containers"]}
        assert {m.id: m.state for m in pod.containers} == recorded
        assert pod.state == recorded[_infra_id(want)]


def test_the_shop_pod_of_podman5(capture):
    host, expected = capture
    if "pod_inspect" not in expected:
        pytest.skip("the pod shop is in the Podman 5 capture")
    want = next(p for p in _inspected_pods(expected) if p["Name"] == "shop")
    pod = next(p for p in host.pod_records() if p.name == "shop")
    assert host.pods()[0].id == want["Id"]
    assert pod.sandbox_id == _infra_id(want)
    assert {c.name for c in pod.containers} == {c["Name"] for c in want["Containers"]}
    listed = next(p for p in expected["pods"] if p["Name"] == "shop")  # `podman pod ps`
    assert {(c.id, c.name) for c in pod.containers} == {(c["Id"], c["Names"]) for c in listed["Containers"]}


def test_host_pods_gathers_every_engine(capture):
    host, _ = capture

    class Multi:
        hosts = [host]

    assert [p.sandbox_id for p in host_pods(Multi())] == [p.sandbox_id for p in host.pod_records()]
    assert [p.name for p in host_pods(host)] == [p.name for p in host.pod_records()]
