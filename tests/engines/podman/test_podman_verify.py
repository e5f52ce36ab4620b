"""pensieve verify on a real Podman 5.8 graphroot (tests/fixtures/podman5): each image layer
rebuilt from ``overlay/<id>/diff`` and ``overlay-layers/<id>.tar-split.gz`` hashes to its
layers.json diff-digest; a tampered copy names every changed path; images' config and manifest
against their digests; --export-layer writes the rebuilt tar (what podman save would)."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile

import pytest
from conftest import FIXTURE_ROOT, run_cli, unpack

from pensieve.engines.podman import PodmanHost
from pensieve.engines.podman.storage import big_data_file
from pensieve.engines.podman.verify import export_layer, verify
from pensieve.evidence import DirectoryEvidence

FIX = FIXTURE_ROOT / "podman5"
LAYER = "eebdddbd9c7f3702093e0f099134c9e37d4237abc149717ef20159475cf68b92"
IMAGE = "3fbfced41905b8620e8017d35b408c0dbfdec43542078726b6bc7ab875e2d3bc"


def _storage(tmp_path_factory, name: str):
    return unpack(FIX / "podman-5-storage.tar.xz", tmp_path_factory.mktemp(name)) / "storage"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return _storage(tmp_path_factory, "podman-verify")


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    """A copy with one of each difference in the image layer's diff directory."""
    storage = _storage(tmp_path_factory, "podman-tampered")
    diff = storage / "overlay" / LAYER / "diff"
    passwd = diff / "etc" / "passwd"
    data = bytearray(passwd.read_bytes())
    data[0] ^= 1  # same size: only the CRC-64 shows it
    passwd.write_bytes(bytes(data))
    os.chmod(diff / "etc" / "motd", 0o4755)
    os.chown(diff / "srv" / "app" / "version.txt", 1000, 1000)
    (diff / "etc" / "implant").write_text("x")
    os.unlink(diff / "bin" / "true")
    return storage


def cli_json(*args, code: int = 0):
    got, out, err = run_cli(*args, "--json")
    assert got == code, err
    return json.loads(out)


def test_untouched_layer_is_ok(pristine):
    host = PodmanHost(DirectoryEvidence(str(pristine)))
    layers, images = verify(host)
    assert [(v.cache_id, v.status) for v in layers] == [(LAYER, "ok")]
    v = layers[0]
    assert v.computed_diff_id == v.diff_id == "sha256:" + LAYER
    assert v.stream_size == 1996800  # layers.json diff-size
    assert v.tar_split == f"/overlay-layers/{LAYER}.tar-split.gz"
    assert v.images == ["localhost/pensieve/base:1.0"]
    assert v.containers == ["job", "shop-app", "web"]
    assert [(i.id, i.status, i.computed_id) for i in images] == [("sha256:" + IMAGE, "ok", "sha256:" + IMAGE)]
    assert host.problems == []


def test_cli_on_a_graphroot(pristine):
    layers = cli_json("verify", pristine)
    assert [(v["chain_id"], v["status"], v["driver"]) for v in layers] == [
        ("sha256:" + LAYER, "ok", "overlay")
    ]
    assert [i["status"] for i in cli_json("verify", pristine, "--images")] == ["ok"]
    only = cli_json("verify", pristine, "localhost/pensieve/base:1.0")
    assert [v["cache_id"] for v in only] == [LAYER]


def test_every_tampering_is_named(tampered):
    layers = cli_json("verify", tampered, code=6)
    assert len(layers) == 1 and layers[0]["status"] == "tampered"
    got = {(p["path"], p["kind"]) for p in layers[0]["problems"]}
    assert {
        ("etc/passwd", "content"),
        ("etc/motd", "mode"),
        ("srv/app/version.txt", "owner"),
        ("etc/implant", "added"),
        ("bin/true", "missing"),
    } <= got
    assert layers[0]["computed_diff_id"] != layers[0]["diff_id"]
    images = cli_json("verify", tampered, "--images", code=6)
    assert images[0]["status"] == "tampered"
    assert [p["kind"] for p in images[0]["problems"]] == ["layer-tampered"]
    findings = cli_json("verify", tampered, "--findings", code=6)
    assert any(f["subject"] == "sha256:" + LAYER and f["severity"] == "high" for f in findings)


def test_export_layer_is_the_diff_id_stream(pristine, tmp_path):
    dest = tmp_path / "layer.tar"
    code, _out, err = run_cli("verify", pristine, "--export-layer", LAYER, "--to", dest)
    assert code == 0, err
    assert "sha256:" + hashlib.sha256(dest.read_bytes()).hexdigest() == "sha256:" + LAYER
    with tarfile.open(dest) as tar:
        assert "./etc/passwd" in tar.getnames()
    manifest = json.loads((tmp_path / "layer.tar.manifest.json").read_text())
    assert manifest["status"] == "ok"
    code, _out, err = run_cli("verify", pristine, "--export-layer", "0" * 64, "--to", tmp_path / "none.tar")
    assert code == 4, err


def test_export_of_a_tampered_layer_says_so(tampered):
    host = PodmanHost(DirectoryEvidence(str(tampered)))
    chunks: list[bytes] = []
    v = export_layer(host, "sha256:" + LAYER, lambda b: chunks.append(bytes(b)))
    assert v.status == "tampered"
    assert "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest() == v.computed_diff_id != v.diff_id


def test_broken_records_and_big_data(tmp_path_factory):
    """A truncated tar-split record: the layer unverifiable; a diff-size, a manifest or a config
    that no longer match their records: tampered, each named."""
    storage = _storage(tmp_path_factory, "podman-broken")
    record = storage / "overlay-layers" / f"{LAYER}.tar-split.gz"
    record.write_bytes(record.read_bytes()[: len(record.read_bytes()) // 2])
    manifest = storage / "overlay-images" / IMAGE / "manifest"
    manifest.write_bytes(manifest.read_bytes() + b" ")
    host = PodmanHost(DirectoryEvidence(str(storage)))
    layers, images = verify(host)
    assert layers[0].status == "unverifiable" and "tar-split" in (layers[0].reason or "")
    kinds = {p.kind for p in images[0].problems}
    assert {"manifest-digest", "layer-unverifiable"} <= kinds and images[0].status == "tampered"

    record.write_bytes(_record_bytes())  # whole again
    layers_json = storage / "overlay-layers" / "layers.json"
    doc = json.loads(layers_json.read_text())
    doc[0]["diff-size"] = 1
    layers_json.write_text(json.dumps(doc))
    config = storage / "overlay-images" / IMAGE / big_data_file("sha256:" + IMAGE)
    config.write_bytes(config.read_bytes().replace(b"}", b" }", 1))
    layers, images = verify(PodmanHost(DirectoryEvidence(str(storage))))
    assert layers[0].status == "tampered"
    assert [(p.kind, p.expected, p.actual) for p in layers[0].problems] == [("size", 1, 1996800)]
    assert "config-digest" in {p.kind for p in images[0].problems}


_PRISTINE_RECORD: list[bytes] = []


def _record_bytes() -> bytes:
    """The fixture's tar-split record, as captured (read from the tarball once)."""
    if not _PRISTINE_RECORD:
        with tarfile.open(FIX / "podman-5-storage.tar.xz") as tar:
            member = tar.extractfile(f"storage/overlay-layers/{LAYER}.tar-split.gz")
            assert member is not None
            _PRISTINE_RECORD.append(member.read())
    return _PRISTINE_RECORD[0]
