"""The hand-made CRI-O node (tests/fixtures/crio, see its README: CRI-O cannot run here, so its
parts were written by fixtures/handmade/crio_fixture.py over the real Podman 5 capture)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import FIXTURE_ROOT, load_json, unpack

CRIO = FIXTURE_ROOT / "crio"
PODMAN5 = FIXTURE_ROOT / "podman5" / "podman-5-storage.tar.xz"
EXPECTED = load_json(CRIO / "expected.json")


def build_node(dest: Path) -> Path:
    """The node tree: the Podman 5 capture's graphroot and runroot at their default places, the
    CRI-O archive unpacked over them."""
    capture = unpack(PODMAN5, dest / "capture")
    node = dest / "node"
    (node / "var/lib/containers").mkdir(parents=True)
    (node / "run/containers").mkdir(parents=True)
    shutil.move(capture / "storage", node / "var/lib/containers/storage")
    shutil.move(capture / "run", node / "run/containers/storage")
    shutil.rmtree(capture)
    return unpack(CRIO / "crio-node.tar.xz", node)
