"""recover's attribution of files below a data root (disk/recover.py ``attribute``), with a stand-in
host and ``whence``: the live attribution taken as it is, a removed container named from its
recovered bookkeeping files, and a layer placed on the layer its recovered lower chain names.
The real journal fixture (test_recover.py) has no removed layer without a mount record: the
lower-chain step is checked here."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pensieve.disk.recover import COMPLETE, JOURNAL, attribute
from pensieve.engines.docker.drivers import DATA_ROOT_DIRS
from pensieve.evidence.base import EvidenceError
from pensieve.records import Attribution
from pensieve.records.disk import RecoveredFile

ROOT = "/var/lib/docker"
CID = "c" * 64
RW = "a" * 64
BELOW = "b" * 64
IMAGE = "sha256:" + "e" * 64
MOUNTS = f"{ROOT}/image/overlay2/layerdb/mounts/{CID}"


class FakeEvidence:
    def __init__(self, links: dict[str, bytes]) -> None:
        self.links = links
        self.listed = 0

    def listdir(self, path: str) -> list[str]:
        if path != f"{ROOT}/overlay2":
            raise EvidenceError(path)
        self.listed += 1
        return sorted(self.links)

    def read_bytes(self, path: str, limit: int) -> bytes:
        layer = path.split("/")[-2]
        if layer not in self.links:
            raise EvidenceError(path)
        return self.links[layer][:limit]


class FakeHost:
    def __init__(self, links: dict[str, bytes] | None = None) -> None:
        self.evidence = FakeEvidence(links or {})
        self.roots = [SimpleNamespace(path=ROOT)]

    def data_root_dirs(self) -> tuple[str, ...]:
        return DATA_ROOT_DIRS

    def whence(self, path: str) -> Attribution:
        from pensieve.filesystem import whence  # the stand-in the whence_calls fixture puts there

        return whence.whence(self, path)


def _rec(path: str) -> RecoveredFile:
    return RecoveredFile(
        path=path,
        inode=12,
        type="file",
        size=1,
        bytes_recovered=1,
        confidence=COMPLETE,
        sha256=None,
        method=JOURNAL,
    )


@pytest.fixture
def whence_calls(monkeypatch):
    """whence: a removed layer RW (unreferenced), the live layer BELOW of image IMAGE."""
    calls: list[str] = []

    def fake_whence(host, path):
        calls.append(path)
        if path.startswith(f"{ROOT}/overlay2/{RW}/"):
            return Attribution(host_path=path, data_root=ROOT, layer=RW, layer_kind="unreferenced")
        if path.startswith(f"{ROOT}/overlay2/{BELOW}/"):
            return Attribution(
                host_path=path, data_root=ROOT, layer=BELOW, layer_kind="image", images=[IMAGE]
            )
        if path.startswith(f"{ROOT}/bad/"):
            raise EvidenceError("unreadable")
        return Attribution(host_path=path, data_root=ROOT, layer_kind="container-metadata")

    monkeypatch.setattr("pensieve.filesystem.whence.whence", fake_whence)
    return calls


def test_no_host_no_attribution(whence_calls):
    rec = _rec(f"{ROOT}/overlay2/{RW}/diff/x")
    assert attribute([rec], None, {}) == []
    assert rec.layer is None and whence_calls == []


def test_paths_outside_a_data_root_are_not_asked(whence_calls):
    recs = [_rec("/home/u/x"), _rec("/tmp/overlay2x/y")]
    assert attribute(recs, FakeHost(), {}) == []
    assert whence_calls == []


def test_a_failing_attribution_is_a_problem(whence_calls):
    recs = [_rec(f"{ROOT}/bad/volumes/x")]
    assert attribute(recs, FakeHost(), {}) == [f"{ROOT}/bad/volumes/x: attribution failed: unreadable"]


def test_removed_container_from_mount_id_and_config(whence_calls):
    remnants = {
        f"{MOUNTS}/mount-id": RW.encode(),
        f"{ROOT}/containers/{CID}/config.v2.json": json.dumps({"Name": "/gone", "Image": IMAGE}).encode(),
    }
    rec = _rec(f"{ROOT}/overlay2/{RW}/diff/etc/x")
    attribute([rec], FakeHost(), remnants)
    assert rec.container == CID and rec.container_name == "gone"
    assert rec.layer_kind == "rw (removed container)"
    assert rec.images == [IMAGE]
    assert rec.notes == [
        f"layer of a removed container: its id is in the deleted layerdb/mounts/{CID[:12]}/mount-id "
        "recovered from the journal"
    ]


def test_mount_record_files_name_their_container(whence_calls):
    remnants = {f"{ROOT}/containers/{CID}/config.v2.json": b'{"Name": "/gone"}'}
    rec = _rec(f"{MOUNTS}/parent")
    attribute([rec], FakeHost(), remnants)
    assert rec.container == CID and rec.container_name == "gone"
    assert rec.notes == ["layerdb mount record of the container"]


def test_removed_layer_sits_on_the_layer_its_lower_chain_names(whence_calls):
    host = FakeHost({BELOW: b"BELOWSHORT\n", "other": b"OTHER"})
    remnants = {f"{ROOT}/overlay2/{RW}/lower": b"l/BELOWSHORT:l/OTHER"}
    recs = [_rec(f"{ROOT}/overlay2/{RW}/diff/a"), _rec(f"{ROOT}/overlay2/{RW}/diff/b")]
    attribute(recs, host, remnants)
    for rec in recs:
        assert rec.container is None
        assert rec.layer_kind == "unreferenced"
        assert rec.images == [IMAGE]
        assert rec.notes == [f"layer of a removed container (recovered lower chain): it sat on layer {BELOW}"]
    assert whence_calls.count(f"{ROOT}/overlay2/{BELOW}/diff") == 1  # each lower layer asked once
    assert host.evidence.listed == 1  # the link names read once


@pytest.mark.parametrize("lower", [b"", b"l/NOSUCHLINK", b"\xff\xfe"])
def test_a_lower_chain_naming_no_live_layer_adds_nothing(whence_calls, lower):
    host = FakeHost({BELOW: b"BELOWSHORT"})
    rec = _rec(f"{ROOT}/overlay2/{RW}/diff/a")
    attribute([rec], host, {f"{ROOT}/overlay2/{RW}/lower": lower})
    assert rec.images == [] and rec.notes == []
