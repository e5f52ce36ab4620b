"""Carving (`pensieve carve`): files of every type written and deleted by the kernel on a real ext4
filesystem (fixtures/capture/carve_capture.sh: loop mount, writes, sync, rm, sync, umount), found
again in its unallocated space with their exact lengths and sha256; duplicates of allocated files
skipped; truncated, fragmented and hostile input carved as partial / header-only with bounded
memory; the image never written; foremost's output on the same image as a reference.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import struct
import tracemalloc
import zipfile
import zlib
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli

from pensieve.disk import carve as carving
from pensieve.disk.carve import carve, free_ranges, owners_from_map
from pensieve.errors import UsageError
from pensieve.output.sink import MANIFEST

pytest.importorskip("pytsk3")

HERE = FIXTURE_ROOT / "carve"
EXPECTED = HERE / "expected"
SCENARIO = load_json(EXPECTED / "scenario.json")
PLANTED = load_json(EXPECTED / "planted.json")
FOREMOST = load_json(EXPECTED / "foremost.json")
TYPE_OF = {
    "tool": "elf",
    ".sh": "script",
    ".py": "script",
    ".gz": "gzip",
    ".zip": "zip",
    ".jar": "zip",
    ".tar": "tar",
    ".pdf": "pdf",
    ".jpg": "jpeg",
    ".png": "png",
    ".db": "sqlite",
    "json.log": "json",
    "syslog.log": "log",
}


def type_of(name: str) -> str | None:
    return next((t for suffix, t in TYPE_OF.items() if name.endswith(suffix)), None)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("carve") / "carve.img"
    with lzma.open(HERE / "carve.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    assert sha256_file(raw) == SCENARIO["raw_sha256"]
    os.chmod(raw, 0o444)
    return raw


@pytest.fixture(scope="module")
def carved(image):
    files, summary = carve(str(image), skip_duplicates=True)
    return files, summary


def planted(expect: str | None = None) -> list[dict]:
    return [p for p in PLANTED if expect is None or p["expect"] == expect]


# ---- recall ------------------------------------------------------------------------------------


def test_every_deleted_planted_file_is_carved_whole(carved):
    files, _ = carved
    by_offset = {f.offset: f for f in files}
    complete = planted("complete")
    assert {type_of(p["name"]) for p in complete} == set(carving.TYPES)  # every type is planted
    for p in complete:
        f = by_offset.get(p["offset"])
        assert f is not None, p["name"]
        assert p["contiguous"]
        assert (f.length, f.sha256, f.confidence) == (p["size"], p["sha256"], "complete"), p["name"]
        assert f.type == type_of(p["name"]), p["name"]
        assert f.method == "carve"
        # the real ext4 journal (recover.block_owners) names the deleted file that owned the blocks
        if p["path"]:
            assert (f.path, f.inode, f.attribution) == (p["path"], p["inode"], "block-owner"), p["name"]
        else:  # planted outside any filesystem
            assert (f.path, f.attribution) == (None, "unattributed"), p["name"]
    assert {f.type for f in files} == set(carving.TYPES)


def test_subtypes_and_validation_details(carved):
    files, _ = carved
    by_name = {p["name"]: next(f for f in files if f.offset == p["offset"]) for p in planted("complete")}
    assert by_name["app.jar"].validation["subtype"] == "jar"
    assert by_name["bundle.zip"].validation["entries"] == 6
    assert by_name["bundle.zip"].validation["crc_checked"] == 6
    assert by_name["exfil.py"].validation["subtype"] == "python"
    assert by_name["exfil.py"].validation["syntax_ok"] is True
    assert by_name["backup.sh"].validation["subtype"] == "shell"
    assert by_name["container-json.log"].validation["subtype"] == "docker-json-log"
    assert by_name["container-json.log"].validation["parsed"] == 400
    assert by_name["syslog.log"].validation["timestamped"] == 300
    assert by_name["photo.jpg"].validation["width"] == 240
    assert by_name["prog.jpg"].validation["progressive"] is True
    assert by_name["pic.png"].validation["width"] == 96
    assert by_name["app.db"].validation["page_size"] * by_name["app.db"].validation["pages"] == 73728
    assert by_name["files.tar"].validation["members"] == 3
    assert by_name["report.pdf"].validation["xref_ok"] is True
    assert by_name["tool"].validation["elf_type"] in ("shared object", "executable")
    assert by_name["notes.txt.gz"].validation["crc_ok"] is True


def test_truncated_files_are_partial_with_the_bytes_that_were_there(carved):
    files, _ = carved
    by_offset = {f.offset: f for f in files}
    for p in planted("partial"):
        f = by_offset[p["offset"]]
        assert f.confidence == "partial", p["name"]
        assert f.validation.get("failed"), p["name"]
        # a truncated file ends in the zero fill of its last block: carving stops where it did
        assert (f.length, f.sha256) == (p["size"], p["sha256"]), p["name"]


def test_a_fragmented_file_is_partial_and_not_passed_off_as_whole(carved):
    files, _ = carved
    (p,) = planted("fragmented")
    assert len(p["extents"]) > 1
    f = next(f for f in files if f.offset == p["offset"])
    assert f.confidence == "partial"
    assert f.sha256 != p["sha256"]
    assert f.length < p["size"]


def test_unpartitioned_space_is_unallocated_space(carved):
    files, _ = carved
    (p,) = [p for p in PLANTED if p.get("unpartitioned")]
    f = next(f for f in files if f.offset == p["offset"])
    assert (f.sha256, f.fs_offset, f.block) == (p["sha256"], None, None)


# ---- duplicates and precision ----------------------------------------------------------------------


def allocated_path(p: dict) -> str:
    return next(k["path"] for k in PLANTED if k["sha256"] == p["sha256"] and not k["deleted"])


def duplicates_of() -> list[dict]:
    """The planted copies of allocated files, each with the allocated path it equals."""
    return [{**p, "duplicate_of": allocated_path(p)} for p in planted("duplicate")]


def test_copies_of_allocated_files_are_reported_by_default_and_not_written(image, tmp_path):
    """Issue 15: a deleted copy equal to an allocated file (the implant's deleted copy) is
    reported with duplicate_of, never written a second time; skip_duplicates hides it."""
    out = tmp_path / "out"
    files, summary = carve(str(image), out_dir=str(out))
    by_offset = {f.offset: f for f in files}
    for p in duplicates_of():
        f = by_offset[p["offset"]]
        assert (f.duplicate_of, f.sha256, f.output) == (p["duplicate_of"], p["sha256"], None)
    written = {m["path"] for m in json.loads((out / MANIFEST).read_text())["files"]}
    assert written == {Path(f.output).name for f in files if not f.duplicate_of}
    assert len(summary.duplicates) == len(duplicates_of())
    files, _ = carve(str(image), skip_duplicates=True)
    assert not any(f.duplicate_of for f in files)


def test_copies_of_allocated_files_are_skipped_and_named(carved):
    files, summary = carved
    offsets = {f.offset for f in files}
    for p in planted("duplicate"):
        assert p["offset"] not in offsets, p["name"]
    dups = {d["offset"]: d["allocated_path"] for d in summary.duplicates}
    assert dups == {
        p["offset"]: next(k["path"] for k in PLANTED if k["sha256"] == p["sha256"] and not k["deleted"])
        for p in planted("duplicate")
    }


def test_precision_every_carved_file_is_a_planted_deleted_file(carved):
    """Nothing else is carved: not the random noise, not the prose (no timestamps), not the later
    local headers of the zip cut before its central directory, nothing allocated."""
    files, summary = carved
    want = {p["offset"] for p in PLANTED if p["expect"] in ("complete", "partial", "fragmented")}
    assert {f.offset for f in files} == want
    assert len(files) == len(want)
    noise = [p for p in PLANTED if p["expect"] == "noise"]
    for p in noise:
        lo, hi = p["offset"], p["offset"] + p["size"]
        assert not any(lo <= f.offset < hi for f in files), p["name"]
    assert summary.inside_carved > 0  # the nocd.zip members and text blocks were hits, not files
    assert not summary.problems


def test_whole_image_finds_the_allocated_ones_as_duplicates(image):
    files, summary = carve(str(image), whole=True, skip_duplicates=True)
    assert summary.scope == "whole" and summary.scanned_bytes == SCENARIO["size"]
    kept = {p["offset"]: p for p in PLANTED if p["expect"] == "allocated" and type_of(p["name"])}
    dups = {d["offset"] for d in summary.duplicates}
    assert set(kept) <= dups
    assert {f.offset for f in files} == {
        p["offset"] for p in planted() if p["expect"] in ("complete", "partial", "fragmented")
    }
    files, _ = carve(str(image), whole=True, dedupe=False)
    alloc = {f.offset: f for f in files if f.allocated}
    assert set(alloc) == set(kept)
    for off, p in kept.items():
        assert (alloc[off].sha256, alloc[off].length) == (p["sha256"], p["size"])
    assert not any(f.allocated for f in files if f.offset not in kept)


def test_type_filter(image):
    files, summary = carve(str(image), types=["jar", "jpg"])
    assert {f.type for f in files} == {"zip", "jpeg"}
    assert set(summary.hits) <= {"zip", "jpeg"}
    with pytest.raises(ValueError):
        carve(str(image), types=["nonsense"])


def test_small_chunks_give_the_same_result(image, carved):
    """Signatures straddling chunk boundaries (tar's magic 257 bytes in) are found all the same."""
    files, _ = carved
    small, _ = carve(str(image), chunk_size=64 << 10, skip_duplicates=True)
    assert [(f.offset, f.length, f.sha256) for f in small] == [(f.offset, f.length, f.sha256) for f in files]


def test_free_ranges_agree_with_the_superblock(image):
    from pensieve.evidence.disk import open_image

    img = open_image(str(image))
    try:
        runs, bs, info = free_ranges(img.read, SCENARIO["partition"]["offset"])
    finally:
        img.close()
    assert bs == 4096
    assert info["free_blocks_bitmaps"] == info["free_blocks_superblock"]
    assert all(a[1] < b[0] for a, b in zip(runs, runs[1:], strict=False))  # sorted, merged
    deleted = [p for p in PLANTED if p["deleted"] and p["offset"]]
    for p in deleted:
        for e in p["extents"]:
            start = SCENARIO["partition"]["offset"] + e["block"] * bs
            assert any(s <= start < t for s, t in runs), p["name"]
    for p in PLANTED:
        if not p["deleted"] and p["extents"]:
            start = SCENARIO["partition"]["offset"] + p["extents"][0]["block"] * bs
            assert not any(s <= start < t for s, t in runs), p["name"]


# ---- foremost as a reference ------------------------------------------------------------------------


def test_recall_at_least_foremosts(carved):
    files, _ = carved
    deleted = [p for p in PLANTED if p["expect"] == "complete"]
    ours = {f.sha256 for f in files}
    theirs = {f["sha256"] for f in FOREMOST["files"]}
    ours_recall = sum(p["sha256"] in ours for p in deleted)
    theirs_recall = sum(p["sha256"] in theirs for p in deleted)
    assert ours_recall == len(deleted)
    assert ours_recall >= theirs_recall
    # every deleted planted file foremost recovered exactly, pensieve recovered exactly too
    for p in deleted:
        if p["sha256"] in theirs:
            assert p["sha256"] in ours, p["name"]


# ---- attribution hook ---------------------------------------------------------------------------


def block_map() -> dict[int, tuple[int, str]]:
    """What the journal would say: each deleted file's blocks -> (inode, path)."""
    out = {}
    for p in PLANTED:
        if p["deleted"]:
            for e in p["extents"]:
                for b in range(e["block"], e["block"] + e["blocks"]):
                    out[b] = (p["inode"], p["path"])
    return out


def test_block_owners_attribute_carved_files(image):
    files, _ = carve(str(image), owners=block_map())
    for f in files:
        p = next((p for p in PLANTED if p["offset"] == f.offset), None)
        if p is None or not p["deleted"]:
            assert (f.path, f.inode, f.attribution) == (None, None, "unattributed")
            continue
        assert (f.path, f.inode, f.attribution) == (p["path"], p["inode"], "block-owner")
        # the fragmented JPEG's second block belongs to the kept filler: the owner does not cover it
        assert f.validation["owner_covers_last_block"] is (p["expect"] != "fragmented")
    files, _ = carve(str(image), owners=owners_from_map({}))
    assert all(f.attribution == "unattributed" for f in files)
    files, _ = carve(str(image), owners=None)
    assert all(f.path is None for f in files)


def test_journal_hook_is_optional(image, monkeypatch):
    """The default asks pensieve.disk.recover for block_owners(evidence); absent, all is
    unattributed; present, it is used."""
    from pensieve.disk import recover

    monkeypatch.delattr(recover, "block_owners", raising=False)
    files, _ = carve(str(image))
    assert all(f.attribution == "unattributed" for f in files)
    seen = []

    def block_owners(evidence):
        seen.append(evidence.offset)
        return block_map()

    monkeypatch.setattr(recover, "block_owners", block_owners, raising=False)
    files, _ = carve(str(image), skip_duplicates=True)
    assert seen == [SCENARIO["partition"]["offset"]]
    assert sum(f.attribution == "block-owner" for f in files) == len(
        [p for p in PLANTED if p["deleted"] and p["expect"] != "noise" and p["expect"] != "duplicate"]
    )


def test_owned_paths_below_a_data_root_get_layer_and_container(tmp_path):
    """On the Docker host disk: a carved busybox attributed (by a stand-in block map) to a path in
    an overlay2 layer gets that layer and a container using it, through whence()."""
    from pensieve.engines.docker import DockerHost
    from pensieve.evidence.disk import open_disk_image

    disk = FIXTURE_ROOT / "disk"
    raw = tmp_path / "disk.img"
    with lzma.open(disk / "disk.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    ev = open_disk_image(f"{raw}@2")
    host = DockerHost(ev)
    busybox = None
    for top, entries in ev.walk("/var/lib/docker/overlay2"):
        for e in entries:
            if e.name == "busybox" and e.stat.is_file and top.endswith("/diff/bin"):
                busybox = (e.stat.ino, f"{top}/{e.name}")
                break
        if busybox:
            break
    assert busybox
    with ev.open(busybox[1]) as fh:
        want = hashlib.file_digest(fh, "sha256").hexdigest()
    from pensieve.filesystem.whence import whence

    a = whence(host, busybox[1])
    ev.close()
    files, _ = carve(f"{raw}@2", whole=True, types=["elf"], dedupe=False, owners=None)
    hit = next(f for f in files if f.sha256 == want)
    files, _ = carve(f"{raw}@2", whole=True, types=["elf"], dedupe=False, owners={hit.block: busybox})
    got = next(f for f in files if f.offset == hit.offset)
    assert got.path == busybox[1] and got.inode == busybox[0]
    layer_id = busybox[1].split("/overlay2/")[1].split("/")[0]
    assert got.layer == layer_id
    assert got.container == (a.containers[0] if a.containers else None)
    assert got.container is not None


# ---- hostile input ---------------------------------------------------------------------------------


def block(data: bytes, size: int = 4096) -> bytes:
    return data + bytes(-len(data) % size)


def one(data: bytes, **kw):
    files, _ = carve(block(data) + bytes(8192), **kw)
    assert files, "nothing carved"
    return files[0]


TEXT = b"".join(b"line %d of the carved text, somewhat varied %x\n" % (i, i * 7919) for i in range(4000))


def png_bytes(w: int = 32, h: int = 32) -> bytes:
    raw = b"".join(b"\0" + bytes((x * y + y) % 256 for x in range(w * 3)) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_truncated_gzip_zip_png():
    gz = gzip.compress(TEXT)
    f = one(gz[: len(gz) // 2])
    assert (f.type, f.confidence, f.length) == ("gzip", "partial", len(gz) // 2)
    f = one(gz[:10])
    assert (f.type, f.confidence) == ("gzip", "header-only")
    f = one(gz[:-4])  # trailer cut
    assert f.confidence == "partial"
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", TEXT)
        z.writestr("b.txt", TEXT[::-1])
    z = zb.getvalue()
    f = one(z[: len(z) // 3])
    assert (f.type, f.confidence) == ("zip", "header-only")
    f = one(z[: z.find(b"PK\x01\x02")])
    assert (f.type, f.confidence, f.validation["entries"]) == ("zip", "partial", 2)
    p = png_bytes()
    f = one(p[: len(p) - 30])
    assert (f.type, f.confidence) == ("png", "partial")
    f = one(p[:33])
    assert (f.type, f.confidence) == ("png", "header-only")
    f = one(p[:-1] + b"\0")  # IEND's CRC broken: partial
    assert f.confidence == "partial"


def test_huge_declared_lengths_are_bounded():
    # PNG chunk declaring 2 GiB
    p = png_bytes()
    bad = p[:33] + struct.pack(">I", 0x7FFFFFF0) + b"IDAT" + os.urandom(64)
    f = one(bad)
    assert f.confidence == "header-only" and f.length < 4096
    # ELF whose section header table lies 2^60 bytes away
    elf = bytearray(Path("/bin/true").read_bytes())
    struct.pack_into("<Q", elf, 0x28, 1 << 60)
    f = one(bytes(elf))
    assert f.type == "elf" and f.confidence in ("partial", "header-only")
    assert f.length <= len(elf) + 4096
    # SQLite claiming 2^31 pages of 64 KiB
    db = bytearray(b"SQLite format 3\0" + bytes(84) + b"\x0d" + bytes(411))
    struct.pack_into(">HBBBBBB", db, 16, 1, 1, 1, 0, 64, 32, 32)
    struct.pack_into(">II", db, 24, 7, 0x7FFFFFFF)
    struct.pack_into(">I", db, 92, 7)
    struct.pack_into(">I", db, 44, 4)
    struct.pack_into(">I", db, 56, 1)
    f = one(bytes(db))
    assert f.type == "sqlite" and f.confidence == "partial"
    assert f.length <= 4096 + 8192
    # zip member claiming 4 GiB, tar member claiming 8 GiB
    lfh = (
        b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", 20, 0, 8, 0, 0, 0, 0xFFFFFFF0, 0xFFFFFFF0, 5, 0) + b"a.txt"
    )
    f = one(lfh + os.urandom(100))
    assert (f.type, f.confidence) == ("zip", "header-only")
    import tarfile

    tb = io.BytesIO()
    with tarfile.open(fileobj=tb, mode="w", format=tarfile.GNU_FORMAT) as t:
        ti = tarfile.TarInfo("big")
        ti.size = 0
        t.addfile(ti)
    h = bytearray(tb.getvalue()[:512])
    h[124:136] = b"77777777777\0"
    h[148:156] = b"        "
    h[148:156] = b"%06o\0 " % sum(h)
    f = one(bytes(h) + os.urandom(512))
    assert (f.type, f.confidence) == ("tar", "header-only")


def test_decompression_bomb_is_bounded(monkeypatch):
    monkeypatch.setattr(carving.base, "MAX_INFLATE", 16 << 20)
    bomb = gzip.compress(bytes(256 << 20), compresslevel=9)  # 256 MiB of zeros in ~250 KiB
    tracemalloc.start()
    try:
        f = one(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (f.type, f.confidence) == ("gzip", "partial")
    assert "bound" in f.validation["failed"]
    assert peak < 24 << 20


def test_memory_stays_bounded_on_a_large_hostile_image(tmp_path):
    """A 256 MiB raw file (no filesystem: scanned whole) strewn with hostile headers: Python's
    peak allocation stays around one chunk, whatever the declared lengths say."""
    path = tmp_path / "hostile.raw"
    p = png_bytes()
    hostile = [
        p[:33] + struct.pack(">I", 0x7FFFFFF0) + b"IDAT",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
        + bytes(9)
        + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03"
        + bytes(9)
        + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
        + os.urandom(1 << 20).replace(b"\xff", b"\xfe"),
        gzip.compress(TEXT)[:5000],
    ]
    with open(path, "wb") as fh:
        fh.truncate(256 << 20)
        for i, h in enumerate(hostile * 8):
            fh.seek(i * (10 << 20) + 4096)
            fh.write(h)
    tracemalloc.start()
    try:
        files, summary = carve(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.scanned_bytes == 256 << 20
    assert any("no filesystem" in p.message for p in summary.problems)
    assert len(files) == 24
    assert {f.confidence for f in files} <= {"partial", "header-only"}
    assert peak < 40 << 20


def test_random_data_yields_nothing():
    rnd = __import__("random").Random(7)
    files, summary = carve(rnd.randbytes(32 << 20))
    assert files == []
    assert sum(summary.rejected.values()) == sum(summary.hits.values()) > 0


# ---- the evidence stays untouched; --out -------------------------------------------------------------


def test_image_unchanged_and_out_dir(image, tmp_path):
    before = (sha256_file(image), os.stat(image).st_mtime_ns)
    out = tmp_path / "out"
    files, _ = carve(str(image), out_dir=str(out), whole=True)
    assert (sha256_file(image), os.stat(image).st_mtime_ns) == before
    assert all(f.output is None for f in files if f.duplicate_of)  # reported, not written again
    files = [f for f in files if not f.duplicate_of]
    written = sorted(p for p in out.iterdir() if p.name != MANIFEST)
    assert len(written) == len(files)
    manifest = json.loads((out / MANIFEST).read_text())
    assert {(Path(f.output).name, f.sha256) for f in files} == {
        (m["path"], m["sha256"]) for m in manifest["files"]
    }
    for f in files:
        assert f.output and sha256_file(Path(f.output)) == f.sha256
        assert Path(f.output).stat().st_size == f.length
    names = {Path(f.output).name for f in files}
    assert any(n.endswith(".partial.gz") for n in names)
    assert any(n.endswith(".py") for n in names) and any(n.endswith(".jar") for n in names)
    with pytest.raises(UsageError, match="never overwritten"):  # never over an earlier output
        carve(str(image), out_dir=str(out))
    for bad in (image, image.parent):
        with pytest.raises(UsageError):
            carve(str(image), out_dir=str(bad))


# ---- the command ---------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    from pensieve.commands.carve import add_parser

    p = argparse.ArgumentParser(prog="pensieve")
    p.add_argument("--debug", action="store_true")
    add_parser(p.add_subparsers(dest="command", required=True))
    return p


def run(*argv: str):
    opts = parser().parse_args([str(a) for a in argv])
    buf = io.StringIO()
    with redirect_stdout(buf):
        problems = opts.func(opts)
    return problems, buf.getvalue()


def test_cli_records(image):
    problems, out = run("carve", image, "--jsonl")
    assert problems == []
    rows = [json.loads(line) for line in out.splitlines()]
    dups = {r["offset"]: r["duplicate_of"] for r in rows if r["duplicate_of"]}
    assert dups == {p["offset"]: p["duplicate_of"] for p in duplicates_of()}
    rows = [r for r in rows if not r["duplicate_of"]]
    assert len(rows) == len([p for p in PLANTED if p["expect"] in ("complete", "partial", "fragmented")])
    for r in rows:
        assert {
            "path",
            "container",
            "layer",
            "method",
            "confidence",
            "sha256",
            "offset",
            "length",
            "type",
            "validation",
        } <= set(r)
        truth = next(p for p in PLANTED if p["offset"] == r["offset"])
        assert r["method"] == "carve" and r["path"] == truth["path"] and r["container"] is None
    problems, out = run("carve", image, "--json", "--types", "png", "--types", "pdf")
    assert {r["type"] for r in json.loads(out)} == {"png", "pdf"}
    problems, out = run("carve", image, "--csv", "--all")
    assert out.splitlines()[0].startswith("path,container,layer,method,confidence,sha256,offset,length,type")
    problems, out = run("carve", f"{image}@1")
    assert "20 carved" in out and "2 equal to allocated files reported" in out
    problems, out = run("carve", f"{image}@1", "--skip-duplicates")
    assert "20 carved" in out and "2 equal to allocated files skipped" in out
    _, out = run("carve", image, "--jsonl", "--skip-duplicates")
    assert not any(json.loads(line)["duplicate_of"] for line in out.splitlines())


def test_cli_exit_codes(image, tmp_path):
    code, _, err = run_cli("carve", tmp_path / "missing.img")
    assert code == 3
    code, _, err = run_cli("carve", image, "--types", "bogus")
    assert code == 2
    code, _, err = run_cli("carve", image, "--out", image)
    assert code == 2 and "refusing" in err
    code, out, _ = run_cli("carve", image, "--out", tmp_path / "o", "--jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    written = [r for r in rows if not r["duplicate_of"]]
    assert code == 0 and len(list((tmp_path / "o").iterdir())) == len(written) + 1  # + the manifest
    disk = FIXTURE_ROOT / "disk"
    raw = tmp_path / "disk.img"
    with lzma.open(disk / "disk.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    code, _, err = run_cli("carve", raw, "--types", "png")  # the vfat partition is not scanned: said
    assert code == 5 and "fat" in err


def test_every_image_format_carves_the_same(tmp_path):
    """The Docker host disk as raw, split raw, E01 and qcow2: the same carved files (its old
    config.v2.json / hostconfig.json versions and gzip'd tar-split records in free blocks), and
    the image files untouched."""
    disk = FIXTURE_ROOT / "disk"
    raw = tmp_path / "disk.img"
    with lzma.open(disk / "disk.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    split = tmp_path / "split"
    split.mkdir()
    with open(raw, "rb") as fh:
        for i, size in enumerate((50 << 20, (49 << 20) | 12345, None), start=1):
            (split / f"disk.{i:03d}").write_bytes(fh.read() if size is None else fh.read(size))
    sources = [raw, split / "disk.001", disk / "disk.E01", disk / "disk.qcow2"]
    before = {s: sha256_file(s) for s in sources}
    results = []
    for s in sources:
        seen = []
        files, summary = carve(str(s), progress=lambda done, total, seen=seen: seen.append((done, total)))
        assert seen and seen[-1][0] == seen[-1][1]
        assert [p.message for p in summary.problems] == [
            "fat at offset 1048576: allocation unknown, not scanned (--all scans it)"
        ]
        results.append([(f.offset, f.length, f.type, f.sha256, f.confidence) for f in files])
    assert results[0] and all(r == results[0] for r in results)
    assert {t for _o, _n, t, _h, _c in results[0]} >= {"json", "gzip"}
    assert {s: sha256_file(s) for s in sources} == before


def test_deeply_nested_text_is_not_a_crash():
    """Python and JSON parsers recurse: a carved script or document nested 200,000 deep is a
    partial (syntax error) or rejected, never an exception."""
    script = b"#!/usr/bin/python3\n" + b"(" * 200_000 + b"\n"
    f = one(script)
    assert (f.type, f.confidence, f.validation["syntax_ok"]) == ("script", "partial", False)
    for doc in (b"[\n" + b"[" * 200_000, b'{"a":' * 100_000 + b"\n"):
        files, summary = carve(block(doc) + bytes(4096))
        assert not summary.problems
        assert all(f.confidence != "complete" for f in files)


# ---- hostile destinations for --out (issue 15) ------------------------------------------------------


def test_out_refuses_every_destination_in_or_beside_the_image(image, tmp_path_factory):
    """--out inside, onto, or holding the directory of the image, directly, through '..' or
    through symlinks: a usage error (exit 2), nothing written beside the image."""
    from test_recover import hostile_destinations

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    listing = sorted(os.listdir(image.parent))
    before = sha256_file(image)
    for what, dest in hostile_destinations(image, elsewhere):
        code, _out, err = run_cli("carve", image, "--out", dest, "--jsonl", "--types", "png")
        assert code == 2, (what, code, err)
        assert "refusing" in err, what
        assert sorted(os.listdir(image.parent)) == listing, what
    assert sha256_file(image) == before


def test_out_with_missing_parents_is_created(image, tmp_path):
    dest = tmp_path / "new" / "deeper" / "out"
    code, out, err = run_cli("carve", image, "--out", dest, "--jsonl", "--types", "png")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    manifest = json.loads((dest / MANIFEST).read_text())
    assert {m["path"]: m["sha256"] for m in manifest["files"]} == {
        Path(r["output"]).name: r["sha256"] for r in rows if r["output"]
    }
