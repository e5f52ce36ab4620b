"""Deleted files of a real Docker data disk on XFS (fixtures/capture/xfs_docker_deleted_capture.sh:
a private dockerd, containers that wrote files into their RW layers and rm'd them, files held
open after rm in a container and on the host), in two images of the same filesystem: `frozen`
(xfs_freeze while everything ran: the held files on the AGI unlinked lists) and `clean` (after a
clean stop and unmount).  The truth was recorded on the host before each rm.  What is checked is
what the measurement (bench/results/recover_xfs.md) found, never more: a file whose blocks the
kernel reused must not come back as complete."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zstandard
from conftest import FIXTURE_ROOT

from pensieve.disk.recover import recover
from pensieve.disk.recover_xfs import XfsLogRecovery
from pensieve.evidence import open_evidence
from pensieve.evidence.disk_images import open_image
from pensieve.formats.xfs import Superblock
from pensieve.formats.xfs_inode import read_inode, unlinked_inodes

XD = FIXTURE_ROOT / "xfs_docker_deleted"
TRUTH = json.loads((XD / "expected" / "truth.json").read_text())
DELETED = TRUTH["deleted"]
HELD = {f["inode"] for f in DELETED if f["how"].startswith("held-open")}


def _sha(p: Path) -> str:
    with open(p, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("xdd")
    out = {}
    for form in ("clean", "frozen"):
        img = d / f"{form}.img"
        with open(XD / f"{form}.img.zst", "rb") as src, open(img, "wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
        assert _sha(img) == TRUTH["raw_sha256"][form]
        out[form] = img
    return out


def _agi_unlinked(form: str) -> set[int]:
    """Inode numbers xfs_db printed on the AGI unlinked buckets ("unlinked[0-63] = 45:173")."""
    import re

    text = (XD / "expected" / f"{form}.xfs_db_agi.txt").read_text()
    out = set()
    for ag_text in text.split("magicnum")[1:]:
        seqno = int(re.search(r"^seqno = (\d+)", ag_text, re.M)[1])
        line = re.search(r"^unlinked\[0-63\] = (.*)$", ag_text, re.M)[1]
        for agino in re.findall(r"\d+:(\d+)", line):
            out.add((seqno, int(agino)))
    return out


def test_unlinked_lists_match_xfs_db(images) -> None:
    for form in ("frozen", "clean"):
        img = open_image(str(images[form]))
        sb = Superblock(img.read(0, 512))
        inos, problems = unlinked_inodes(img.read, sb)
        assert not problems
        shift = sb.agblklog + sb.inopblog
        assert {(i >> shift, i & ((1 << shift) - 1)) for i in inos} == _agi_unlinked(form)
        # held open in the frozen image, freed by the kernel at last close before the unmount
        assert set(inos) == (HELD if form == "frozen" else set())
        for ino in inos:
            di = read_inode(img.read, sb, ino)
            assert di.nlink == 0 and di.mode & 0o170000 == 0o100000 and di.extents


def test_recover_names_files_and_containers(images) -> None:
    """recover (the command's road, attribution through attribute()/whence) on both images."""
    names = {
        c: json.loads((XD / "expected" / "containers" / f"{c}.inspect.json").read_text())[0]["Id"]
        for c in ("c-dropper", "c-second", "c-holder")
    }
    for form, img in images.items():
        before = _sha(img)
        report = recover(open_evidence(str(img)))
        by = {}
        for f in report.files:
            by.setdefault(f.inode, []).append(f)
        for t in DELETED:
            rec = next(f for f in by[t["inode"]] if f.path == t["path"])
            assert rec.size == t["size"]
            if t["container"]:
                assert rec.container == t["container"] == names[t["container_name"]]
                assert rec.container_name == t["container_name"]
                assert rec.container_path == t["container_path"] and rec.layer_kind == "rw"
                assert rec.data_root == "/docker" and rec.layer and rec.layer in t["path"]
            else:
                assert rec.container is None and rec.layer is None
            exact = rec.sha256 == t["sha256"]
            # complete means exact: a file whose blocks were reused is partial, never "complete"
            assert (rec.confidence == "complete") == exact, (form, t["path"], rec.confidence)
            if rec.confidence != "complete":
                assert rec.reused_blocks > 0 and any("reallocated since" in n for n in rec.notes)
            if form == "frozen" and t["inode"] in HELD:
                assert rec.method == "xfs-unlinked" and exact
        assert _sha(img) == before


def test_held_files_come_back_whole_only_while_held(images) -> None:
    got = {}
    for form in ("frozen", "clean"):
        rec = XfsLogRecovery(open_image(str(images[form])).read)
        got[form] = {(r.ino, r.source): r for r in rec.run()}
    for t in DELETED:
        if t["inode"] not in HELD:
            continue
        held = got["frozen"][(t["inode"], "unlinked")]
        assert held.sha256 == t["sha256"] and held.status == "complete"
        assert all(st == "held" for *_x, st in held.runs)
        assert (t["inode"], "unlinked") not in got["clean"]
