"""`recover` and `carve` attribution below containerd and Podman roots, on a real ext4 image the
kernel wrote: fixtures/capture/engines_disk_capture.sh unpacks the committed containerd 2.1 root
and Podman 5 graphroot onto a loop-mounted filesystem and deletes, with rm, a file in container
web's active snapshot, one in the image's committed snapshot, and the same two in Podman's layers.
The image is made at test time (root, mkfs.ext4 and a loop device needed; skipped otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, load_json

from pensieve.disk.carve import open_for_carving
from pensieve.disk.carve.scan import Carver
from pensieve.disk.recover import COMPLETE, recover
from pensieve.engines.discover import open_engines
from pensieve.evidence import open_evidence
from pensieve.records.disk import CarvedFile

SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "capture" / "engines_disk_capture.sh"
CTR_EXPECTED = load_json(FIXTURE_ROOT / "containerd2" / "containerd-2.1-expected.json")
PODMAN_EXPECTED = load_json(FIXTURE_ROOT / "podman5" / "podman-5-expected.json")
CTR_ROOT = "/var/lib/containerd"
PODMAN_ROOT = "/var/lib/containers/storage"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> tuple[Path, list[dict]]:
    """(the image, what was deleted) made by the capture script."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("mkfs.ext4", "losetup", "tar", "xz")):
        pytest.skip("needs root, e2fsprogs, losetup, tar and xz to build the ext4 image")
    out = tmp_path_factory.mktemp("engines-disk")
    run = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        pytest.skip(f"the image could not be built here: {run.stderr[-400:]}")
    return out / "engines-disk.img", json.loads((out / "expected.json").read_text())["deleted"]


@pytest.fixture(scope="module")
def recovered(scenario) -> dict:
    image, _ = scenario
    ev = open_evidence(str(image))
    try:
        report = recover(ev)
    finally:
        ev.close()
    return {f.path: f for f in report.files}


def _ctr_snapshot(key: str) -> dict:
    return next(s for s in CTR_EXPECTED["namespaces"]["default"]["snapshots"] if s["KEY"] == key)


def _podman(name: str) -> dict:
    return next(c for c in PODMAN_EXPECTED["ps"] if name in c["Names"])


def test_every_deleted_file_comes_back_whole(scenario, recovered):
    _, truth = scenario
    for t in truth:
        rec = recovered[t["path"]]
        assert (rec.inode, rec.size, rec.sha256, rec.confidence) == (
            t["inode"],
            t["size"],
            t["sha256"],
            COMPLETE,
        )


def test_containerd_snapshot_files_name_snapshot_container_and_image(scenario, recovered):
    image, _ = scenario
    ev = open_evidence(str(image))
    try:
        app = open_engines(ev).image("default/docker.io/pensieve/busybox-app:1.0")
    finally:
        ev.close()
    web = CTR_EXPECTED["namespaces"]["default"]["containers"]["web"]
    rw = recovered[f"{CTR_ROOT}/io.containerd.snapshotter.v1.overlayfs/snapshots/3/fs/root/evidence.txt"]
    assert (rw.data_root, rw.layer, rw.layer_kind) == (CTR_ROOT, "3", "rw")
    assert (rw.container, rw.container_name, rw.container_path) == (web["ID"], "web", "/root/evidence.txt")
    assert rw.images == [app.id]
    key = web["SnapshotKey"]
    assert _ctr_snapshot(key)["KIND"] == "Active"
    assert f"containerd namespace default, snapshot {key} (active)" in rw.notes
    low = recovered[f"{CTR_ROOT}/io.containerd.snapshotter.v1.overlayfs/snapshots/2/fs/srv/app/version.txt"]
    assert (low.layer, low.layer_kind, low.container_path) == ("2", "image", "/srv/app/version.txt")
    assert low.images == [app.id] and low.container == "web"
    top = _ctr_snapshot(key)["PARENT"]  # the image's top layer: the committed snapshot web sits on
    assert f"containerd namespace default, snapshot {top} (committed)" in low.notes


def test_podman_layer_files_name_layer_container_and_image(recovered):
    web = _podman("web")
    rw_layer = "083a42ceec8e50938f9330371ece880a63dc470ce6eb05eaa94ac3e62eb0e9df"
    rw = recovered[f"{PODMAN_ROOT}/overlay/{rw_layer}/diff/root/evidence.txt"]
    assert (rw.data_root, rw.layer, rw.layer_kind) == (PODMAN_ROOT, rw_layer, "rw")
    assert (rw.container, rw.container_name, rw.container_path) == (web["Id"], "web", "/root/evidence.txt")
    assert rw.images == [web["ImageID"]]
    inspect = next(c for c in PODMAN_EXPECTED["containers"] if c["Id"] == web["Id"])
    assert inspect["GraphDriver"]["Data"]["UpperDir"].endswith(f"/overlay/{rw_layer}/diff")
    img_layer = "eebdddbd9c7f3702093e0f099134c9e37d4237abc149717ef20159475cf68b92"
    low = recovered[f"{PODMAN_ROOT}/overlay/{img_layer}/diff/srv/app/version.txt"]
    assert (low.layer, low.layer_kind, low.container_path) == (img_layer, "image", "/srv/app/version.txt")
    assert low.images == [web["ImageID"]]
    assert low.container == web["Id"]  # the first of the containers on the image's layer


def test_carved_file_owned_by_a_snapshot_or_layer_gets_it(scenario):
    """carve's attribution of a block owner's path goes through the same hosts."""
    image, truth = scenario
    img, filesystems = open_for_carving(str(image))
    try:
        carver = Carver(img, filesystems=filesystems, owners=None)  # a bare filesystem: at offset 0
        for t, (layer, container) in zip(
            truth,
            [("3", "web"), ("2", "web"), (None, _podman("web")["Id"]), (None, _podman("web")["Id"])],
            strict=True,
        ):
            rec = CarvedFile(
                path=t["path"],
                container=None,
                layer=None,
                method="carve",
                confidence=COMPLETE,
                sha256=t["sha256"],
                offset=0,
                length=t["size"],
                type="log",
                fs_offset=0,
            )
            carver._layer_of(rec)
            assert rec.layer == (layer or t["path"].split("/overlay/")[1].split("/")[0])
            assert rec.container == container
    finally:
        img.close()
