"""Disk images as evidence: raw, split raw, E01 and qcow2 of one Docker host disk, read through The
Sleuth Kit without mounting, compared with what the kernel showed of the same filesystem and with
the engine's own answers.

The image was written by a real dockerd (fixtures/capture/disk_capture.sh): a GPT disk with a vfat
partition and an ext4 partition holding /var/lib/docker; the kernel's view of every entry (lstat,
xattrs, link targets, sha256; mounted ro,noload) is expected/manifest.json.gz.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli

from pensieve import api
from pensieve.engines.docker import DockerHost, NotADataRoot
from pensieve.evidence import DirectoryEvidence, EvidenceError, NotFound, open_evidence
from pensieve.evidence.disk import (
    DiskImageEvidence,
    ImageError,
    is_disk_image,
    open_disk_image,
    open_image,
    raw_segments,
    split_spec,
)
from pensieve.filesystem.diff import container_diff
from pensieve.times import parse_rfc3339

pytest.importorskip("pytsk3")

DISK = FIXTURE_ROOT / "disk"
EXPECTED = DISK / "expected"
SCENARIO = load_json(EXPECTED / "scenario.json")
P2 = next(p for p in SCENARIO["partitions"] if p["number"] == 2)
LIVE = sorted(n for n, c in SCENARIO["containers"].items() if not c["removed"])


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    with gzip.open(EXPECTED / "manifest.json.gz") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Every form of the same disk: raw, split raw (3 uneven segments), E01, qcow2."""
    tmp = tmp_path_factory.mktemp("disk")
    raw = tmp / "disk.img"
    with lzma.open(DISK / "disk.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    assert sha256(raw) == SCENARIO["raw_sha256"]
    split = tmp / "split"
    split.mkdir()
    with open(raw, "rb") as fh:
        for i, size in enumerate((50 << 20, 49 << 20 | 12345, None), start=1):
            (split / f"disk.{i:03d}").write_bytes(fh.read() if size is None else fh.read(size))
    for name in ("disk.E01", "disk.qcow2"):
        assert sha256(DISK / name) == SCENARIO["files"][name]
    return {"raw": raw, "split": split / "disk.001", "e01": DISK / "disk.E01", "qcow2": DISK / "disk.qcow2"}


@pytest.fixture(scope="module")
def fingerprints(images) -> dict[str, tuple]:
    """sha256 and mtime of every image file, taken before any test reads them."""
    out = {}
    for img in images.values():
        for f in raw_segments(str(img)):
            st = os.stat(f)
            out[f] = (sha256(Path(f)), st.st_mtime_ns, st.st_size)
    return out


FORMATS = ["raw", "split", "e01", "qcow2"]


# ---- the filesystem, as the kernel showed it -------------------------------------------------


def entry_view(ev, path: str) -> dict:
    st = ev.lstat(path)
    got = {
        "mode": st.mode,
        "ino": st.ino,
        "nlink": st.nlink,
        "uid": st.uid,
        "gid": st.gid,
        "size": st.size,
        "atime_ns": st.atime_ns,
        "mtime_ns": st.mtime_ns,
        "ctime_ns": st.ctime_ns,
        "rdev": st.rdev,
        "xattrs": {k: v.hex() for k, v in sorted(ev.xattrs(path).items())},
    }
    if st.is_symlink:
        got["link"] = ev.readlink(path)
    elif st.is_file:
        with ev.open(path) as fh:
            got["sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
    return got


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_entry_matches_the_kernel_view(images, fingerprints, manifest, fmt):
    ev = open_evidence(str(images[fmt]))
    assert isinstance(ev, DiskImageEvidence)
    assert ev.fs_type == "ext4" and ev.offset == P2["offset"]
    assert "partition 2 (rootfs)" in ev.description
    listed = {"/"}
    for d, entries in ev.walk("/"):
        listed.update(d.rstrip("/") + "/" + e.name for e in entries)
        for e in entries:  # scandir's stats are lstat's
            assert e.stat == ev.lstat(d.rstrip("/") + "/" + e.name)
    assert listed == {e["path"] for e in manifest}
    for want in manifest:
        got = entry_view(ev, want["path"])
        assert got == {k: want[k] for k in got}, want["path"]


def test_overlay_whiteouts_opaque_dirs_and_hardlinks_come_through(images, manifest):
    ev = open_evidence(str(images["raw"]))
    whiteouts = [e for e in manifest if e["mode"] == 0o20000]
    assert whiteouts
    for e in whiteouts:
        st = ev.lstat(e["path"])
        assert st.is_char and st.rdev == 0 and st.kind == "char"
    opaque = [e["path"] for e in manifest if e["xattrs"].get("trusted.overlay.opaque") == b"y".hex()]
    assert any(p.endswith("/diff/opt/app/sub") for p in opaque)
    assert all(ev.getxattr(p, "trusted.overlay.opaque") == b"y" for p in opaque)
    # overlayfs links whiteouts to one inode: the link count and inode agree with the kernel
    by_ino: dict[int, list[str]] = {}
    for e in whiteouts:
        by_ino.setdefault(e["ino"], []).append(e["path"])
    for ino, paths in by_ino.items():
        assert {ev.lstat(p).ino for p in paths} == {ino}


# ---- Docker on the image ---------------------------------------------------------------------


def docker_diff(name: str) -> set[tuple[str, str]]:
    ops = {"A": "added", "C": "modified", "D": "deleted"}
    lines = (EXPECTED / "containers" / f"{name}.diff.txt").read_text().splitlines()
    return {(ops[line[0]], line[2:]) for line in lines if line.strip()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_docker_host_on_the_image_agrees_with_the_engine(images, fmt):
    host = api.open_docker(str(images[fmt]))
    by_name = {c.name: c for c in host.containers()}
    assert sorted(by_name) == LIVE  # c-removed was docker rm'd
    for name in LIVE:
        want = load_json(EXPECTED / "containers" / f"{name}.inspect.json")[0]
        c = by_name[name]
        assert c.id == want["Id"] and c.image_id == want["Image"] and c.image == want["Config"]["Image"]
        assert c.created == parse_rfc3339(want["Created"]) and c.env == want["Config"]["Env"]
        assert c.problems == []
        if want["State"]["Status"] == "exited":
            assert c.state == "exited" and c.exit_code == want["State"]["ExitCode"]
        else:
            assert c.state == "running"  # kill -9 of the host: the configs still say so
        changes = api.diff(host, name).changes
        assert {(x.change, x.path) for x in changes if x.engine_reports} == docker_diff(name)
    inspected = load_json(EXPECTED / "images" / "inspect.json")
    assert {i.id for i in host.images()} == {i["Id"] for i in inspected}
    assert {t for i in host.images() for t in i.tags} == {t for i in inspected for t in i["RepoTags"]}
    assert host.problems == []


def test_layered_view_on_the_image(images):
    from pensieve.filesystem.layered import PathNotInView

    host = api.open_docker(str(images["raw"]))
    view = api.view(host, host.container("c-modified"))

    def read(path: str) -> bytes:
        with view.open(path) as fh:
            return fh.read()

    assert view.listdir("/opt/app/sub") == ["new.txt"]  # opaque: s1.txt hidden
    for gone in ("/opt/app/README.md", "/opt/data"):
        with pytest.raises(PathNotInView):
            view.lookup(gone)
    assert read("/root/implant.sh") == b"#!/bin/sh\necho implant\n"
    assert read("/etc/app.conf") == b"listen=8080\nbackdoor=1\n"
    assert view.stat("/root/implant.sh").layer == view.stat("/etc/app.conf").layer  # the RW layer
    # chroot-style: the container's /etc/shadow, never the analyst's
    assert read("/root/escape").startswith(b"root:$6$pensieve$FAKEHASH")
    image_view = api.view(host, host.image("pensieve/disk-app:1"))
    assert image_view.listdir("/opt/app/cache") == ["fresh.bin"]
    with pytest.raises(PathNotInView):
        image_view.lookup("/opt/app/tmp.txt")


def mount_ro(img: Path, offset: int, where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "ext4", "-o", f"ro,noload,loop,offset={offset}", str(img), str(where)],
        capture_output=True,
    )
    return r.returncode == 0


def test_same_answers_as_the_mounted_filesystem(images, tmp_path):
    """The image read through TSK and the same partition mounted read-only by the kernel give
    identical containers, images and diffs (hashes, metadata, what changed)."""
    mnt = tmp_path / "mnt"
    if not mount_ro(images["raw"], P2["offset"], mnt):
        pytest.skip("cannot loop-mount ext4 read-only here (needs root and loop devices)")
    try:
        on_disk = DockerHost(open_evidence(str(images["raw"])))
        mounted = DockerHost(DirectoryEvidence(str(mnt)))
        assert on_disk.containers() == mounted.containers()
        assert on_disk.images() == mounted.images()
        for c in mounted.containers():
            a = container_diff(on_disk.evidence, on_disk.container(c.id).layers)
            b = container_diff(mounted.evidence, c.layers)
            assert a.changes == b.changes and a.problems == b.problems
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ---- choosing the partition ------------------------------------------------------------------


def test_partition_and_offset_selection(images):
    raw = str(images["raw"])
    assert split_spec(raw + "@2") == (raw, 2, None)
    assert split_spec(raw + "@offset=18432s") == (raw, None, 18432 * 512)
    for spec in (raw + "@2", raw + f"@offset={P2['offset']}", raw + f"@offset={P2['offset'] // 512}s"):
        ev = open_evidence(spec)
        assert ev.fs_type == "ext4" and ev.offset == P2["offset"]
        assert ev.is_dir("/var/lib/docker")
    fat = open_evidence(raw + "@1")
    assert fat.fs_type.startswith("fat") and "partition 1 (data)" in fat.description
    with pytest.raises(NotADataRoot):
        DockerHost(fat)
    with pytest.raises(ImageError, match=r"no partition 3 \(gpt: 1 \(data\), 2 \(rootfs\)\)"):
        open_evidence(raw + "@3")
    with pytest.raises(ImageError, match="offset 4096: no filesystem"):
        open_evidence(raw + "@offset=4096")
    # every partition, with what is on it
    ev = open_evidence(raw)
    found = [(p.number, p.fs_type, p.readable) for p in ev.partitions]
    assert found == [(1, "fat12", True), (2, "ext4", True)]


def write_mbr(path: Path, parts: list[tuple[int, int, int]], size: int) -> None:
    """A DOS partition table with (type, start sector, sectors) primaries."""
    mbr = bytearray(512)
    for i, (ptype, start, count) in enumerate(parts):
        struct.pack_into("<B3sB3sII", mbr, 446 + 16 * i, 0, b"\0\0\0", ptype, b"\0\0\0", start, count)
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.write(mbr)


def test_unreadable_filesystems_are_named(images, tmp_path):
    img = tmp_path / "odd.img"
    write_mbr(img, [(0x83, 2048, 4096), (0x83, 6144, 4096), (0x8E, 10240, 2048)], 8 << 20)
    with open(img, "r+b") as fh:
        fh.seek(2048 * 512)
        fh.write(b"XFSB" + bytes(60))
        fh.seek(10240 * 512 + 512)
        fh.write(b"LABELONE")
    with pytest.raises(ImageError) as err:
        open_evidence(str(img))
    msg = str(err.value)
    assert "no partition holds a filesystem pensieve can read" in msg
    assert "partition 1 (Linux (0x83)), offset 1048576: xfs" in msg
    assert "partition 2 (Linux (0x83)), offset 3145728: no filesystem (zero-filled)" in msg
    assert "partition 3 (Linux Logical Volume Manager (0x8e)), offset 5242880: LVM2 physical volume" in msg
    with pytest.raises(ImageError, match=r"odd.img partition 1 .*: corrupt XFS superblock: "):
        open_evidence(f"{img}@1")

    # an unreadable partition next to a readable one: the readable one, and a problem naming the other
    mixed = tmp_path / "mixed.img"
    sectors = P2["size"] // 512
    write_mbr(mixed, [(0x83, 2048, 2048), (0x83, 4096, sectors)], (4096 + sectors) * 512)
    with open(mixed, "r+b") as out, open(images["raw"], "rb") as src:
        out.seek(2048 * 512)
        out.write(b"LUKS\xba\xbe" + bytes(100))
        src.seek(P2["offset"])
        out.seek(4096 * 512)
        shutil.copyfileobj(src, out, 1 << 20)
    ev = open_evidence(str(mixed))
    assert ev.offset == 4096 * 512 and ev.fs_type == "ext4"
    assert [p.message for p in ev.problems] == [
        "partition 1 (Linux (0x83)), offset 1048576 not read: LUKS encrypted volume: "
        "not readable by The Sleuth Kit"
    ]
    assert sorted(c.name for c in DockerHost(ev).containers()) == LIVE


def test_bare_filesystem_and_refused_formats(images, tmp_path):
    bare = tmp_path / "ext4.img"
    with open(images["raw"], "rb") as src, open(bare, "wb") as out:
        src.seek(P2["offset"])
        shutil.copyfileobj(src, out, 1 << 20)
    ev = open_evidence(str(bare))
    assert ev.offset == 0 and "(no partition table)" in ev.description
    assert sorted(c.name for c in DockerHost(ev).containers()) == LIVE
    vmdk = tmp_path / "disk.vmdk"
    vmdk.write_bytes(b"KDMV" + bytes(4092))
    with pytest.raises(ImageError, match="cannot open VMDK image"):  # read now (issue 12): a bad one
        open_disk_image(str(vmdk))
    text = tmp_path / "notes.txt"
    text.write_text("not a disk\n" * 100)
    assert not is_disk_image(str(text))
    with pytest.raises(EvidenceError, match="neither a directory nor a disk image"):
        open_evidence(str(text))
    with pytest.raises(EvidenceError, match="does not exist"):
        open_evidence(str(tmp_path / "missing.img"))


def test_split_raw_segments(images):
    first = images["split"]
    segs = raw_segments(str(first))
    assert [os.path.basename(s) for s in segs] == ["disk.001", "disk.002", "disk.003"]
    assert raw_segments(segs[1]) == segs  # any segment names the set
    img = open_image(segs[1])
    assert img.format == "split raw" and img.get_size() == SCENARIO["raw_size"]
    with open(images["raw"], "rb") as fh:
        for off in (0, (50 << 20) - 100, (99 << 20) + 12345 - 7, SCENARIO["raw_size"] - 10):
            fh.seek(off)
            assert img.read(off, 300) == fh.read(300)
    img.close()


def test_qcow2_reader_agrees_with_qemu(images, tmp_path):
    """Compressed (zlib, zstd) and plain qcow2 read byte for byte as the raw image."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img (qemu-utils) not installed")
    forms = {
        "plain": ["-O", "qcow2"],
        "zstd": ["-c", "-o", "compression_type=zstd", "-O", "qcow2"],
        "v2": ["-c", "-o", "compat=0.10", "-O", "qcow2"],
    }
    with open(images["raw"], "rb") as fh:
        raw = fh.read()
    for name, args in forms.items():
        out = tmp_path / f"{name}.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", *args, str(images["raw"]), str(out)], check=True)
        img = open_image(str(out))
        for off in range(0, len(raw), 1 << 20):
            assert img.read(off, 1 << 20) == raw[off : off + (1 << 20)], (name, off)
        img.close()
    backed = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(tmp_path / "plain.qcow2")]
        + [str(backed)],
        check=True,
    )
    with pytest.raises(ImageError, match="backing file"):
        open_image(str(backed))


# ---- ext4 details on images built with mke2fs -d ---------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """ext4 images made from a directory by mke2fs -d: 4 KiB blocks with 256-byte inodes
    (in-inode xattrs) and 1 KiB blocks with 128-byte inodes (xattrs in a block)."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) not installed")
    tmp = tmp_path_factory.mktemp("built")
    src = tmp / "src"
    (src / "dir/sub").mkdir(parents=True)
    (src / "etc").mkdir()
    (src / "etc/passwd").write_text("evidence passwd\n")
    (src / "dir/sub/file").write_bytes(b"inside\n")
    os.link(src / "dir/sub/file", src / "dir/hardlink")
    os.symlink("/etc", src / "dir/abs")
    os.symlink("../../../../../../etc", src / "dir/climb")
    os.symlink("/etc/passwd", src / "dir/passwd-link")
    os.symlink("loop", src / "dir/loop")
    os.symlink("x" * 300, src / "dir/long-link")
    os.mkfifo(src / "dir/fifo")
    (src / "dir/old").write_text("before the epoch\n")
    os.utime(src / "dir/old", ns=(-315619200 * 10**9, -315619200 * 10**9))  # 1960
    (src / "dir" / os.fsdecode(b"bad-\xff-name")).write_text("latin1\n")
    big = src / "big.bin"
    with open(big, "wb") as fh:
        for i in range(24):
            fh.seek(i << 20)
            fh.write(hashlib.sha256(str(i).encode()).digest() * 1024)
        fh.truncate(40 << 20)
    many = src / "many"
    many.mkdir()
    for i in range(3000):
        (many / f"entry-{i:05d}").write_text(str(i))
    os.setxattr(src / "dir/sub/file", "user.note", b"hello")
    os.setxattr(src / "dir/sub/file", "user.big", b"v" * 600)
    devices = os.geteuid() == 0
    if devices:
        os.mknod(src / "dir/whiteout", 0o20000 | 0o644, os.makedev(0, 0))
        os.mknod(src / "dir/tty", 0o20000 | 0o620, os.makedev(4, 5))
        os.mknod(src / "dir/nvme", 0o60000 | 0o660, os.makedev(259, 70000))
        os.setxattr(src / "dir/sub", "trusted.overlay.opaque", b"y")
        if shutil.which("setfacl"):
            subprocess.run(["setfacl", "-m", "u:1234:rwx,g:55:r", str(src / "etc/passwd")], check=True)
        os.chown(src / "dir/sub/file", 100000, 200000)
    out = {}
    for name, opts in {"4k": ["-b", "4096", "-I", "256"], "1k": ["-b", "1024", "-I", "128"]}.items():
        img = tmp / f"{name}.img"
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", *opts, "-d", str(src), str(img), "64M"],
            check=True,
            capture_output=True,
        )
        out[name] = img
    return src, out, devices


@pytest.mark.parametrize("layout", ["4k", "1k"])
def test_ext4_metadata_xattrs_devices_names(built, layout):
    src, imgs, devices = built
    ev = open_evidence(str(imgs[layout]))
    ref = DirectoryEvidence(str(src))
    paths = (
        "/dir/sub/file",
        "/dir/hardlink",
        "/etc/passwd",
        "/dir/sub",
        "/dir/long-link",
        "/dir/fifo",
        "/dir/old",
    )
    for path in paths:
        a, b = ev.lstat(path), ref.lstat(path)
        assert (a.mode, a.uid, a.gid, a.nlink) == (b.mode, b.uid, b.gid, b.nlink), path
        assert a.is_dir or a.size == b.size, path  # a directory's size is its block count's
        assert a.mtime_ns // 10**9 == b.mtime_ns // 10**9, path  # mke2fs -d copies whole seconds
        assert ev.xattrs(path) == ref.xattrs(path), path
    assert ev.lstat("/dir/hardlink").ino == ev.lstat("/dir/sub/file").ino
    assert ev.getxattr("/dir/sub/file", "user.big") == b"v" * 600
    assert ev.readlink("/dir/long-link") == "x" * 300
    bad = os.fsdecode(b"bad-\xff-name")
    assert bad in ev.listdir("/dir") and ev.read_text(f"/dir/{bad}") == "latin1\n"
    assert sorted(ev.listdir("/many")) == [f"entry-{i:05d}" for i in range(3000)]  # htree directory
    assert ev.read_text("/many/entry-02999") == "2999"
    if devices:
        for name in ("whiteout", "tty", "nvme"):
            a, b = ev.lstat(f"/dir/{name}"), ref.lstat(f"/dir/{name}")
            assert (a.mode, a.rdev, a.size) == (b.mode, b.rdev, 0), name
        assert ev.lstat("/dir/whiteout").is_char and ev.lstat("/dir/whiteout").rdev == 0
        assert ev.getxattr("/dir/sub", "trusted.overlay.opaque") == b"y"
        assert ev.lstat("/dir/sub/file").uid == 100000


def test_ext4_times_decode_like_the_kernel():
    """Seconds are signed 32-bit; 256-byte inodes add two epoch bits and nanoseconds (ext4 docs,
    'Inode Timestamps'); TSK alone reads the seconds as unsigned."""
    from pensieve.formats.ext4 import inode_times_ns

    raw = bytearray(256)
    y2045 = 2379931200
    struct.pack_into("<iii", raw, 0x08, -315619200, 1, y2045 - (1 << 32))  # atime, ctime, mtime
    struct.pack_into("<H", raw, 0x80, 32)  # i_extra_isize
    struct.pack_into("<III", raw, 0x84, 5 << 2, 0, (1 | 999 << 2))  # ctime, mtime, atime extra
    struct.pack_into("<I", raw, 0x88, 1 | (123456789 << 2))
    assert inode_times_ns(bytes(raw), 256) == (
        (-315619200 + (1 << 32)) * 10**9 + 999,
        y2045 * 10**9 + 123456789,
        1 * 10**9 + 5,
    )
    # no extra fields (128-byte inodes): signed seconds only
    assert inode_times_ns(bytes(raw[:128]), 128) == (-315619200 * 10**9, (y2045 - (1 << 32)) * 10**9, 10**9)


@pytest.mark.parametrize("layout", ["4k", "1k"])
def test_name_only_listdir_agrees_with_scandir(built, images, layout):
    """listdir parses ext4 directory blocks itself (no inode reads): the same names as the
    listing through The Sleuth Kit, on linear and htree directories, on odd names too."""
    for img in (built[1][layout], images["raw"]):
        walked = open_evidence(str(img))
        for d, entries in walked.walk("/"):
            fresh = open_evidence(str(img))  # nothing cached: the fast path answers
            assert sorted(fresh.listdir(d)) == sorted(e.name for e in entries), d
    assert len(open_evidence(str(built[1][layout])).listdir("/many")) == 3000


def test_symlinks_resolve_inside_the_image(built):
    _src, imgs, _ = built
    ev = open_evidence(str(imgs["4k"]))
    assert ev.read_text("/dir/abs/passwd") == "evidence passwd\n"
    assert ev.read_text("/dir/climb/passwd") == "evidence passwd\n"
    assert ev.read_text("/../../etc/passwd") == "evidence passwd\n"
    assert sorted(ev.listdir("/dir/abs")) == ["passwd"]
    with pytest.raises(EvidenceError, match="symlink"):
        ev.open("/dir/passwd-link")
    with pytest.raises(EvidenceError, match="symlink"):
        ev.read_bytes("/dir/passwd-link")
    assert ev.readlink("/dir/passwd-link") == "/etc/passwd"
    with pytest.raises(EvidenceError, match="too many levels"):
        ev.read_text("/dir/loop/x")
    with pytest.raises(EvidenceError, match="not a regular file"):
        ev.open("/dir/fifo")
    with pytest.raises(NotFound):
        ev.lstat("/dir/nope")
    with pytest.raises(NotFound):
        ev.lstat("/etc/passwd/below")
    with pytest.raises(EvidenceError):
        ev.listdir("/etc/passwd")
    assert not ev.exists("/dir/sub/file/x")


def test_streaming_reads_are_seekable_and_bounded(built):
    src, imgs, _ = built
    ev = open_evidence(str(imgs["4k"]))
    want = hashlib.sha256((src / "big.bin").read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        h = hashlib.sha256()
        with ev.open("/big.bin") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert h.hexdigest() == want
    assert peak < 8 << 20  # a 40 MiB file through a few MiB
    with ev.open("/big.bin") as fh, open(src / "big.bin", "rb") as ref:
        for off in (0, 5 << 20, (24 << 20) + 3, (40 << 20) - 5, 40 << 20):
            assert fh.seek(off) == off and ref.seek(off) == off
            assert fh.read(4096) == ref.read(4096)
        fh.seek(-10, os.SEEK_END)
        assert fh.tell() == (40 << 20) - 10
        assert not fh.writable()
    assert ev.read_bytes("/big.bin", 100) == (src / "big.bin").read_bytes()[:100]


# ---- the CLI, and the image afterwards -------------------------------------------------------


def test_cli_on_an_image(images, tmp_path):
    raw = str(images["raw"])
    code, out, err = run_cli("containers", raw, "--json")
    assert code == 0, err
    assert sorted(c["name"] for c in json.loads(out)) == LIVE
    code, out, err = run_cli("diff", raw, "c-modified", "--json")
    assert code == 0, err
    got = {(c["change"], c["path"]) for c in json.loads(out) if c["engine_reports"]}
    assert got == docker_diff("c-modified")
    # partition syntax, every format, and no writing over the image
    code, out, err = run_cli("roots", raw + "@2", "--json")
    assert code == 0 and [r["path"] for r in json.loads(out)] == ["/var/lib/docker"], err
    code, _, err = run_cli("roots", raw + "@1")
    assert code == 3 and "partition 1" in err
    for fmt in ("e01", "qcow2"):
        if fmt in images:
            code, out, err = run_cli("containers", str(images[fmt]), "--json")
            assert code == 0 and sorted(c["name"] for c in json.loads(out)) == LIVE, err
    code, _, err = run_cli("fs", raw, "c-modified", "export", raw)
    assert code == 2 and "evidence" in err
    code, _, _ = run_cli("fs", raw, "c-modified", "export", tmp_path / "c.tar")
    assert code == 0 and (tmp_path / "c.tar").stat().st_size > 0


def test_images_are_never_written(images, fingerprints):
    """Last: after every test above read them, each image file is byte-for-byte the same."""
    for f, (digest, mtime, size) in fingerprints.items():
        st = os.stat(f)
        assert (sha256(Path(f)), st.st_mtime_ns, st.st_size) == (digest, mtime, size), f
