"""`pensieve recover`: deleted files of an ext4 image back from the jbd2 journal and the orphan list,
checked against what the kernel deleted and against The Sleuth Kit's view of the same image.

The image (fixtures/capture/deleted_capture.sh) is a real ext4 filesystem written by the kernel:
host files and a directory tree removed with rm, files a container of a private dockerd wrote and
deleted inside its RW layer, a container removed with `docker rm`, and a file deleted while still
open (an orphan inode).  expected/deleted.json records every deleted entry (path, inode, size,
sha256) just before its deletion, and what TSK's icat gives for its inode now.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import lzma
import os
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, load_json

from pensieve.cli import UsageError
from pensieve.commands import recover as recover_cmd
from pensieve.disk.recover import (
    COMPLETE,
    JOURNAL,
    METADATA_ONLY,
    ORPHAN,
    PARTIAL,
    Recovery,
    parse_dir_block,
    recover,
)
from pensieve.evidence import EvidenceError, open_evidence
from pensieve.formats import jbd2
from pensieve.times import iso_ns

pytest.importorskip("pytsk3")

FIX = FIXTURE_ROOT / "deleted"
EXPECTED = FIX / "expected"
SCENARIO = load_json(EXPECTED / "scenario.json")
TRUTH = load_json(EXPECTED / "deleted.json")
DATA_ROOT = SCENARIO["paths_at_capture"]["data_root"]
MOUNT = SCENARIO["paths_at_capture"]["mountpoint"]
WRITER = SCENARIO["containers"]["c-writer"]["id"]
REMOVED = SCENARIO["containers"]["c-removed"]["id"]
REMOVED_IMAGE = load_json(EXPECTED / "c-removed.inspect.json")[0]["Image"]


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def fs_path(truth_path: str) -> str:
    """The capture recorded paths relative to the mount point: they are filesystem paths."""
    return truth_path


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("deleted")
    raw = tmp / "deleted.img"
    with lzma.open(FIX / "deleted.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    assert sha256(raw) == SCENARIO["raw_sha256"]
    return raw


@pytest.fixture(scope="module")
def before(image) -> tuple:
    st = os.stat(image)
    return sha256(image), st.st_mtime_ns, st.st_size


@pytest.fixture(scope="module")
def report(image, before):
    ev = open_evidence(str(image))
    try:
        return recover(ev)
    finally:
        ev.close()


def by_inode_path(report) -> dict[tuple[int, str], object]:
    return {(f.inode, f.path): f for f in report.files}


# ---- what the kernel deleted comes back --------------------------------------------------------


#: c-writer's deleted files: their blocks went to the next container (c-removed: its directories,
#: and its exfil.bin) before that was removed in turn; the blocks are free again but hold those.
#: (test_lost_content_is_really_gone checks it without pensieve: no block of them is in the image.)
REUSED = {"/root/loot.txt", "/root/stage/one.txt", "/root/stage/two.bin", "/tmp/dropper.bin"}


def expected_confidence(row) -> str:
    return METADATA_ONLY if row["kind"] == "container" and row["container_path"] in REUSED else COMPLETE


@pytest.mark.parametrize("row", [r for r in TRUTH if r["type"] == "file"], ids=lambda r: r["path"][-40:])
def test_every_deleted_file_comes_back(report, row):
    got = by_inode_path(report).get((row["inode"], fs_path(row["path"])))
    assert got is not None, f"{row['path']} (inode {row['inode']}) not recovered"
    assert got.type == "file"
    assert got.size == row["size"]
    assert got.method == (ORPHAN if row["kind"] == "orphan" else JOURNAL)
    assert got.confidence == expected_confidence(row)
    if got.confidence == COMPLETE:
        assert got.sha256 == row["sha256"]
        assert got.bytes_recovered == row["size"]
    elif got.confidence == PARTIAL:
        assert 0 < got.bytes_recovered < row["size"] and got.reused_blocks
    else:
        assert got.sha256 is None and got.bytes_recovered == 0


def test_lost_content_is_really_gone(image):
    """What pensieve calls lost is nowhere in the image: no 4 KiB block of it, anywhere (block
    hashes recorded at capture); what it calls complete is there."""
    data = image.read_bytes()
    present = {hashlib.sha256(data[o : o + 4096]).hexdigest() for o in range(0, len(data), 4096)}
    for row in TRUTH:
        if row["type"] != "file" or not row["size"] or row["size"] % 4096:
            full = row.get("block_sha256", [])[:-1]  # the last, short block is padded on disk
        else:
            full = row["block_sha256"]
        if not full:
            continue
        found = sum(h in present for h in full)
        if expected_confidence(row) == COMPLETE:
            assert found == len(full), row["path"]
        else:
            assert found == 0, row["path"]


def test_written_blocks_are_the_files_or_zeros(image, tmp_path):
    """Every 4 KiB block --out wrote is the original block, or zeros where a block was reused."""
    ev = open_evidence(str(image))
    try:
        rep = recover(ev, out_dir=str(tmp_path / "out"))
    finally:
        ev.close()
    files = by_inode_path(rep)
    for row in TRUTH:
        f = files.get((row["inode"], row["path"]))
        if row["type"] != "file" or f.out_path is None or f.confidence == METADATA_ONLY:
            continue
        data = Path(f.out_path).read_bytes()
        assert len(data) == row["size"]
        good = 0
        for i, want in enumerate(row["block_sha256"]):
            block = data[i * 4096 : (i + 1) * 4096]
            if hashlib.sha256(block).hexdigest() == want:
                good += len(block)
            else:
                assert not block.strip(b"\0"), f"{row['path']} block {i}: neither the original nor zeros"
        assert good == f.bytes_recovered


def test_times_and_deletion_time(report):
    files = by_inode_path(report)
    for row in TRUTH:
        if row["kind"] == "orphan" or row["type"] != "file":
            continue
        f = files[(row["inode"], row["path"])]
        mtime_s = row["mtime_ns"] // 1_000_000_000
        assert iso_ns(f.mtime).startswith(_utc(mtime_s)), (row["path"], f.mtime)
        deleted = f.dtime or f.deleted_before  # no dtime when the inode was reused at once
        assert deleted is not None and iso_ns(deleted) >= _utc(mtime_s), f
        if f.dtime is None:
            assert any("reused by transaction" in n for n in f.notes)
    held = next(f for f in report.files if f.path == "/tmp/held-open.bin")
    assert held.dtime is None  # still open: on the orphan list, not yet freed
    assert any("orphan list" in n for n in held.notes)


def _utc(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_reused_inode_numbers_are_separate_incarnations(report):
    """Inode 15 was /home/alice/secret (a directory), then /tmp/held-open.bin: two results."""
    fifteen = {(f.type, f.path) for f in report.files if f.inode == 15}
    assert ("dir", "/home/alice/secret") in fifteen
    assert ("file", "/tmp/held-open.bin") in fifteen


def test_journal_summary(report):
    j = report.journal
    assert j["inode"] == 8 and j["block_size"] == 4096
    assert "csum_v3" in j["features"] and "64bit" in j["features"]
    assert j["descriptors"] > 10 and j["journalled_blocks"] > j["descriptors"]
    assert j["orphan_list"] == [15]
    assert not report.problems


# ---- attribution ----------------------------------------------------------------------------------


def test_container_deletions_name_the_container(report):
    files = by_inode_path(report)
    rows = [r for r in TRUTH if r["kind"] == "container"]
    assert rows
    for row in rows:
        f = files[(row["inode"], row["path"])]
        assert f.container == WRITER
        assert f.container_name == "c-writer"
        assert f.layer_kind == "rw"
        assert f.container_path == row["container_path"]
        assert f.data_root == "/var/lib/docker"


def test_removed_container_is_named_from_journal_remnants(report):
    """`docker rm` deleted the layer, the container directory and the layerdb mount record: the
    journal still holds all three, so the container id, name and image come back."""
    files = by_inode_path(report)
    rows = [r for r in TRUTH if r["kind"] == "removed-container"]
    assert rows
    for row in rows:
        f = files[(row["inode"], row["path"])]
        assert f.container == REMOVED, f
        assert f.container_name == "c-removed"
        assert f.container_path == row["container_path"]
        assert f.layer == SCENARIO["containers"]["c-removed"]["rw_layer"]
        assert f.layer_kind == "rw (removed container)"
        assert REMOVED_IMAGE in f.images
        assert any("layerdb/mounts" in n for n in f.notes)
    meta = [r for r in TRUTH if r["kind"] == "removed-container-metadata"]
    for row in meta:
        f = files[(row["inode"], row["path"])]
        assert f.sha256 == row["sha256"] and f.confidence == COMPLETE
        assert f.container == REMOVED


def test_host_files_are_not_attributed(report):
    for f in report.files:
        if f.path.startswith(("/home/", "/tmp/", "/var/log/")):
            assert f.container is None and f.layer is None


# ---- against The Sleuth Kit ---------------------------------------------------------------------


def test_more_than_the_sleuth_kit(report):
    """`fls -rd` shows kernel-deleted files only as nameless $OrphanFiles entries, and `icat` of
    their inodes gives nothing (size and extents are cleared): pensieve names them and reads their
    content from the journal's copies of the inode.  TSK reads only the orphan still open (and
    inodes reused since, whose content is another file's)."""
    fls = (EXPECTED / "tsk" / "fls-rd.txt").read_text()
    assert "$OrphanFiles" in fls
    files = by_inode_path(report)
    tsk_named = tsk_content = pensieve_named = pensieve_content = 0
    for row in TRUTH:
        if row["type"] != "file" or not row["size"] or expected_confidence(row) != COMPLETE:
            continue
        name = row["path"].rsplit("/", 1)[1]
        tsk_named += f":\t{row['path'].lstrip('/')}" in fls or f"/{name}\n" in fls
        tsk_content += row.get("tsk_icat_sha256") == row["sha256"]
        f = files.get((row["inode"], row["path"]))
        pensieve_named += f is not None
        pensieve_content += f is not None and f.sha256 == row["sha256"]
    n = sum(1 for r in TRUTH if r["type"] == "file" and r["size"] and expected_confidence(r) == COMPLETE)
    assert tsk_named == 0
    assert tsk_content == 1  # the file still open: its inode keeps size and extents
    assert pensieve_named == pensieve_content == n


@pytest.mark.skipif(shutil.which("fls") is None, reason="sleuthkit not installed")
def test_recorded_tsk_view_is_current(image):
    out = subprocess.run(["fls", "-rd", str(image)], capture_output=True, text=True, check=False).stdout
    assert out == (EXPECTED / "tsk" / "fls-rd.txt").read_text()


# ---- the command ----------------------------------------------------------------------------------


def run_recover(*args: str) -> tuple[list, str]:
    p = argparse.ArgumentParser()
    recover_cmd.add_parser(p.add_subparsers(dest="command"))
    opts = p.parse_args(["recover", *args])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        problems = opts.func(opts)
    return problems, out.getvalue()


def test_cli_jsonl_and_out(image, tmp_path):
    dest = tmp_path / "out"
    problems, out = run_recover(str(image), "--jsonl", "--out", str(dest))
    assert problems == []
    rows = [json.loads(line) for line in out.splitlines()]
    for key in ("path", "container", "layer", "method", "confidence", "sha256", "inode", "size", "dtime"):
        assert all(key in r for r in rows)
    for row in TRUTH:
        if row["type"] != "file" or expected_confidence(row) != COMPLETE:
            continue
        written = dest / row["path"].lstrip("/")
        if not written.exists():
            written = Path(f"{written}.ino{row['inode']}")
        assert sha256(written) == row["sha256"], row["path"]
        got = next(r for r in rows if r["path"] == row["path"] and r["inode"] == row["inode"])
        assert got["out_path"] == str(written)


def test_cli_table_and_csv(image):
    _, table = run_recover(str(image))
    assert "/tmp/payload.bin" in table and "complete" in table
    _, csv_out = run_recover(str(image), "--csv")
    assert csv_out.splitlines()[0].startswith("path,inode,type,size,bytes_recovered,confidence,sha256,method")


def test_cli_all_lists_more(image):
    _, some = run_recover(str(image), "--jsonl")
    _, every = run_recover(str(image), "--jsonl", "--all")
    assert len(every.splitlines()) >= len(some.splitlines())


def test_cli_refuses_out_over_the_image(image):
    with pytest.raises(UsageError):
        run_recover(str(image), "--out", str(image))


def test_cli_refuses_a_directory_source(tmp_path):
    (tmp_path / "etc").mkdir()
    with pytest.raises(EvidenceError):
        run_recover(str(tmp_path))


# ---- hostile and corrupt journals ---------------------------------------------------------------


def _journal_offset(image: Path) -> tuple[int, int, int]:
    """(byte offset of the journal, its block size, its length in blocks)."""
    ev = open_evidence(str(image))
    try:
        r = Recovery(ev)
        r._open_journal()
        lb, pb, n = r._jmap[0]
        assert lb == 0
        return pb * r.fs.block_size, r.fs.block_size, n
    finally:
        ev.close()


def _patched(image: Path, tmp_path: Path, patches: list[tuple[int, bytes]]) -> Path:
    bad = tmp_path / "bad.img"
    shutil.copyfile(image, bad)
    with open(bad, "r+b") as fh:
        for off, data in patches:
            fh.seek(off)
            fh.write(data)
    return bad


def _recover(path: Path):
    ev = open_evidence(str(path))
    try:
        return recover(ev)
    finally:
        ev.close()


def test_bad_journal_magic_is_a_problem_and_the_inode_table_still_answers(image, tmp_path):
    joff, _bs, _n = _journal_offset(image)
    rep = _recover(_patched(image, tmp_path, [(joff, b"\0\0\0\0")]))
    assert any("no journal superblock" in p.message for p in rep.problems)
    held = [f for f in rep.files if f.inode == 15 and f.method == ORPHAN]
    assert held and held[0].confidence == COMPLETE  # the orphan list needs no journal


def test_absurd_journal_length_is_clamped(image, tmp_path):
    joff, _bs, _n = _journal_offset(image)
    rep = _recover(_patched(image, tmp_path, [(joff + 16, struct.pack(">I", 0xFFFFFFF0))]))
    assert any("claims" in p.message for p in rep.problems)
    assert any(f.path == "/tmp/payload.bin" and f.confidence == COMPLETE for f in rep.files)


def test_absurd_journal_block_size(image, tmp_path):
    joff, _bs, _n = _journal_offset(image)
    rep = _recover(_patched(image, tmp_path, [(joff + 12, struct.pack(">I", 3000))]))
    assert any("block size" in p.message for p in rep.problems)


def test_descriptor_loop_and_garbage_tags(image, tmp_path):
    """A descriptor in the last journal block whose tags never end (no LAST_TAG: they wrap
    around the log onto itself and the superblock's neighbours), tags naming blocks beyond the
    filesystem, and a revoke block with an absurd count."""
    joff, bs, n = _journal_offset(image)
    desc = bytearray(struct.pack(">III", jbd2.MAGIC, jbd2.DESCRIPTOR, 12345))
    k = 0
    while len(desc) + 16 <= bs - 4:
        desc += struct.pack(">IIII", (k * 7919) % (1 << 32), jbd2.FLAG_SAME_UUID, k % 3, 0)
        k += 1
    desc = bytes(desc).ljust(bs, b"\0")
    revoke = struct.pack(">IIII", jbd2.MAGIC, jbd2.REVOKE, 12346, 0xFFFFFFFF).ljust(bs, b"\xff")
    rep = _recover(_patched(image, tmp_path, [(joff + (n - 1) * bs, desc), (joff + (n - 2) * bs, revoke)]))
    assert any(f.path == "/tmp/payload.bin" and f.confidence == COMPLETE for f in rep.files)


def test_orphan_list_loop_is_a_problem(image, tmp_path):
    # s_last_orphan -> 15, whose dtime (the next orphan) -> 15 again
    ev = open_evidence(str(image))
    try:
        r = Recovery(ev)
        group, index = divmod(15 - 1, r.fs.inodes_per_group)
        table = r.fs.group_desc(group).inode_table
        ioff = table * r.fs.block_size + index * r.fs.inode_size
    finally:
        ev.close()
    rep = _recover(_patched(image, tmp_path, [(ioff + 0x14, struct.pack("<I", 15))]))
    assert any("orphan list loops" in p.message for p in rep.problems)


def test_parse_descriptor_tag_formats():
    sb = bytearray(1024)
    struct.pack_into(">III", sb, 0, jbd2.MAGIC, jbd2.SB_V2, 0)
    struct.pack_into(">5I", sb, 12, 1024, 100, 1, 7, 1)
    # old tags, 64-bit: blocknr, csum16, flags16, blocknr_high; UUID after the first
    struct.pack_into(">I", sb, 0x28, jbd2.INCOMPAT_64BIT)
    jsb = jbd2.JournalSuper(bytes(sb))
    assert jsb.tag_bytes() == 12
    d = bytearray(struct.pack(">III", jbd2.MAGIC, jbd2.DESCRIPTOR, 7))
    d += struct.pack(">IHHI", 10, 0, jbd2.FLAG_ESCAPE, 1) + bytes(16)
    d += struct.pack(">IHHI", 11, 0, jbd2.FLAG_SAME_UUID | jbd2.FLAG_LAST_TAG, 0)
    tags, problems = jbd2.parse_descriptor(bytes(d).ljust(1024, b"\0"), jsb, 98)
    assert [(t.jblock, t.fsblock, t.escaped) for t in tags] == [(99, 10 | 1 << 32, True), (1, 11, False)]
    assert problems == []
    assert jbd2.unescape(b"\0\0\0\0rest", tags[0]).startswith(struct.pack(">I", jbd2.MAGIC))
    # csum v3: 16-byte tags, 4-byte tail
    struct.pack_into(">I", sb, 0x28, jbd2.INCOMPAT_CSUM_V3)
    jsb3 = jbd2.JournalSuper(bytes(sb))
    assert jsb3.tag_bytes() == 16
    d3 = bytearray(struct.pack(">III", jbd2.MAGIC, jbd2.DESCRIPTOR, 8))
    d3 += struct.pack(">IIII", 5, jbd2.FLAG_LAST_TAG | jbd2.FLAG_SAME_UUID, 9, 0)
    tags3, _ = jbd2.parse_descriptor(bytes(d3).ljust(1024, b"\0"), jsb3, 3)
    assert [(t.jblock, t.fsblock) for t in tags3] == [(4, 5)]  # blocknr_high ignored without 64BIT
    for bad in (b"", b"\0" * 1024, bytes(sb[:12]) + struct.pack(">5I", 3000, 100, 1, 1, 1)):
        with pytest.raises(jbd2.JournalError):
            jbd2.JournalSuper(bad.ljust(1024, b"\0") if bad else bad)


def test_directory_block_slack():
    """A deleted entry merged into its predecessor's rec_len is found; garbage is not a dir."""
    bs = 1024
    blk = bytearray(bs)
    struct.pack_into("<IHBB", blk, 0, 2, 12, 1, 2)
    blk[8:9] = b"."
    struct.pack_into("<IHBB", blk, 12, 2, bs - 12, 2, 2)  # '..' swallowed what followed
    blk[20:22] = b".."
    struct.pack_into("<IHBB", blk, 24, 31, 20, 8, 1)
    blk[32:40] = b"gone.txt"
    entries = parse_dir_block(bytes(blk), True, 1000)
    assert (b"gone.txt", 31, 1, True) in entries
    assert parse_dir_block(os.urandom(bs), True, 1000) is None


# ---- memory and the evidence ----------------------------------------------------------------------


def test_memory_stays_bounded(image):
    ev = open_evidence(str(image))
    tracemalloc.start()
    try:
        recover(ev)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ev.close()
    assert peak < 32 << 20, peak  # the image is 96 MiB, its largest deleted file 1.5 MiB


def test_zz_image_unchanged(image, before):
    st = os.stat(image)
    assert (sha256(image), st.st_mtime_ns, st.st_size) == before


# ---- hostile destinations for --out (issue 15) ------------------------------------------------------


def hostile_destinations(image: Path, elsewhere: Path) -> list[tuple[str, Path]]:
    """Destinations that resolve into the directory holding IMAGE (or onto the image), built from
    ELSEWHERE (a scratch directory beside it): direct, through '..', through symlinks."""
    evidence_dir = image.parent
    (elsewhere / "to-evidence").symlink_to(evidence_dir, target_is_directory=True)
    (elsewhere / "to-image").symlink_to(image)
    climb = os.path.relpath(evidence_dir, elsewhere)
    return [
        ("the image", image),
        ("the image's directory", evidence_dir),
        ("inside the image's directory", evidence_dir / "out"),
        ("deep inside it, missing parents", evidence_dir / "a" / "b" / "out"),
        ("through ..", Path(f"{elsewhere}/x/../{climb}/out")),
        ("through .. onto the directory", Path(f"{elsewhere}/{climb}")),
        ("a symlink to the directory", elsewhere / "to-evidence"),
        ("through a symlink into it", elsewhere / "to-evidence" / "out"),
        ("a symlink to the image", elsewhere / "to-image"),
        ("a directory holding the evidence", evidence_dir.parent),
    ]


def test_out_refuses_every_destination_in_or_beside_the_image(image, tmp_path_factory):
    from conftest import run_cli

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    listing = sorted(os.listdir(image.parent))
    before = sha256(image)
    for what, dest in hostile_destinations(image, elsewhere):
        code, _out, err = run_cli("recover", image, "--out", dest, "--jsonl")
        assert code == 2, (what, code, err)
        assert "refusing" in err, what
        assert sorted(os.listdir(image.parent)) == listing, what  # nothing written beside the image
    assert sha256(image) == before


def test_out_with_missing_parents_is_created_with_a_manifest(image, tmp_path):
    from pensieve.output.sink import MANIFEST

    dest = tmp_path / "new" / "deeper" / "out"
    code, out, err = run_cli_recover(image, dest)
    assert code == 0, err
    manifest = json.loads((dest / MANIFEST).read_text())
    rows = [json.loads(line) for line in out.splitlines()]
    written = {r["out_path"]: r["sha256"] for r in rows if r["out_path"]}
    listed = {str(dest / m["path"]): m["sha256"] for m in manifest["files"]}
    assert written and set(listed) == set(written)
    for path, digest in written.items():  # a metadata-only file (zeros written) has no sha256
        assert digest is None or listed[path] == digest
    for m in manifest["files"]:
        assert sha256(dest / m["path"]) == m["sha256"]


def run_cli_recover(image: Path, dest: Path) -> tuple[int, str, str]:
    from conftest import run_cli

    return run_cli("recover", image, "--out", dest, "--jsonl")
