"""XFS inside a disk image as evidence (pensieve.evidence.xfs), compared with the kernel's xfs.

The fixture is a real Docker data disk made by the kernel (fixtures/capture/xfs_capture.sh):
every entry read from the image must equal what the kernel shows through a read-only loop mount
(``-o ro,norecovery``, and the manifest recorded at capture time), every offline command must
print the same JSON on the image as on the mounted filesystem, and the image is never altered.
Hostile input: mutated metadata blocks open and walk within a time bound with no exception but
the documented EvidenceError/OSError; a corrupt superblock on one partition of a two-partition
disk is a named problem while the other partition is analysed (exit 5).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard
from conftest import FIXTURE_ROOT, load_json, run_cli, time_bound

from pensieve.evidence import EvidenceError, open_evidence
from pensieve.evidence.disk import DiskImage, ImageError
from pensieve.evidence.xfs import XfsEvidence

pytest.importorskip("pyfsxfs")

XFS = FIXTURE_ROOT / "xfs"
EXPECTED = XFS / "expected"
SCENARIO = load_json(EXPECTED / "scenario.json")
_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def unpack(dst: Path, offset: int = 0) -> None:
    """The fixture's raw bytes into DST at OFFSET, sparse (zero chunks skipped)."""
    with open(XFS / "xfs.img.zst", "rb") as src, open(dst, "r+b" if dst.exists() else "wb") as out:
        reader = zstandard.ZstdDecompressor().stream_reader(src)
        pos = offset
        while chunk := reader.read(_CHUNK):
            if chunk.count(0) != len(chunk):
                out.seek(pos)
                out.write(chunk)
            pos += len(chunk)
        if out.seek(0, os.SEEK_END) < pos:
            out.truncate(pos)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    img = tmp_path_factory.mktemp("xfs") / "xfs.img"
    unpack(img)
    assert sha256(img) == SCENARIO["raw_sha256"]
    return img


@pytest.fixture(scope="module")
def mounted(image, tmp_path_factory):
    """The fixture through the kernel: a read-only loop device mounted ro,norecovery."""
    if os.geteuid() != 0 or "xfs" not in Path("/proc/filesystems").read_text():
        pytest.skip("needs root and the kernel's xfs")
    mnt = tmp_path_factory.mktemp("xfs-mnt")
    loop = subprocess.run(["losetup", "-r", "-f", "--show", str(image)], capture_output=True, text=True)
    if loop.returncode:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    try:
        subprocess.run(["mount", "-t", "xfs", "-o", "ro,norecovery", dev, str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture(scope="module")
def evidence(image):
    ev = open_evidence(str(image))
    yield ev
    ev.close()


def _kernel_entry(host: str) -> dict:
    st = os.lstat(host)
    out = {
        "mode": st.st_mode,
        "ino": st.st_ino,
        "nlink": st.st_nlink,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": 0 if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else st.st_size,
        "atime_ns": st.st_atime_ns,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "rdev": st.st_rdev,
        "xattrs": {
            x: os.getxattr(host, x, follow_symlinks=False) for x in os.listxattr(host, follow_symlinks=False)
        },
    }
    if stat.S_ISLNK(st.st_mode):
        out["link"] = os.readlink(host)
    elif stat.S_ISREG(st.st_mode):
        with open(host, "rb") as fh:
            out["sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def _evidence_entry(ev, path: str) -> dict:
    s = ev.lstat(path)
    out = {k: getattr(s, k) for k in ("mode", "ino", "nlink", "uid", "gid", "size", "atime_ns", "mtime_ns")}
    out.update(ctime_ns=s.ctime_ns, rdev=s.rdev, xattrs=ev.xattrs(path))
    if s.is_symlink:
        out["link"] = ev.readlink(path)
    elif s.is_file:
        with ev.open(path) as fh:
            out["sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def _evidence_tree(ev) -> dict[str, dict]:
    tree = {"/": _evidence_entry(ev, "/")}
    for d, entries in ev.walk("/"):
        for e in entries:
            p = d.rstrip("/") + "/" + e.name
            tree[p] = _evidence_entry(ev, p)
    return tree


def test_opened_as_xfs(evidence) -> None:
    assert isinstance(evidence, XfsEvidence)
    assert evidence.fs_type == "xfs" and evidence.description.startswith("xfs in xfs.img")
    assert evidence.problems == []
    assert evidence.summary()["xfs"].startswith("XFS v5 label 'pensieve-xfs'")


def test_tree_equals_manifest(evidence) -> None:
    """Every entry, as the kernel showed it at capture time (no mount needed)."""
    with gzip.open(EXPECTED / "manifest.json.gz") as fh:
        manifest = {e.pop("path"): e for e in json.load(fh)}
    tree = _evidence_tree(evidence)
    assert sorted(tree) == sorted(manifest)
    for path, want in manifest.items():
        got = dict(tree[path], xattrs={k: v.hex() for k, v in tree[path]["xattrs"].items()})
        if stat.S_ISCHR(want["mode"]) or stat.S_ISBLK(want["mode"]):
            want = dict(want, size=0)
        assert got == want, path


def test_tree_equals_kernel(evidence, mounted) -> None:
    """Names, types, modes, owners, sizes, ns times, rdev, link targets, xattrs, sha256: identical."""
    kernel = {"/": _kernel_entry(str(mounted))}
    for dirpath, dirnames, filenames in os.walk(mounted):
        for name in dirnames + filenames:
            host = os.path.join(dirpath, name)
            kernel["/" + os.path.relpath(host, mounted)] = _kernel_entry(host)
    tree = _evidence_tree(evidence)
    assert sorted(tree) == sorted(kernel)
    assert tree == kernel
    whiteouts = [p for p, e in tree.items() if stat.S_ISCHR(e["mode"]) and e["rdev"] == 0]
    opaque = [p for p, e in tree.items() if e["xattrs"].get("trusted.overlay.opaque") == b"y"]
    assert whiteouts and opaque
    assert any("user.pensieve.note" in e["xattrs"] for e in tree.values())


def _upper(name: str) -> str:
    c = load_json(EXPECTED / "containers" / f"{name}.inspect.json")[0]
    return "/docker/" + c["GraphDriver"]["Data"]["UpperDir"].split("/docker/", 1)[1]


COMMANDS = [
    ("roots", "{src}{at}"),  # IMAGE@offset=0: the filesystem's roots (a bare IMAGE lists its volumes)
    ("containers",),
    ("images",),
    ("diff", "{src}", "c-modified"),
    ("diff", "{src}", "c-bulk"),
    ("whence", "{src}", "{upper}/root/implant.sh"),
    ("verify",),
    ("logs", "{src}", "c-exited0"),
    ("history", "{src}", "pensieve/xfs-app:1"),
    ("fs", "{src}", "c-modified", "ls", "/opt/app"),
    ("fs", "{src}", "c-modified", "find", "/"),
    ("fs", "{src}", "c-modified", "stat", "/etc/app.conf"),
]


def _argv(cmd: tuple[str, ...], src: Path, at: str = "") -> list[str]:
    if len(cmd) == 1:
        cmd = (cmd[0], "{src}")
    upper = _upper("c-modified")
    return [a.format(src=src, upper=upper, at=at) for a in cmd] + ["--json"]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(x for x in c if "{" not in x) or c[0])
def test_command_same_on_image_and_mount(cmd, image, mounted) -> None:
    on_image = run_cli(*_argv(cmd, image, "@offset=0"))
    on_mount = run_cli(*_argv(cmd, mounted))
    assert on_image[0] == on_mount[0] == 0, (on_image[2], on_mount[2])
    assert json.loads(on_image[1]) == json.loads(on_mount[1])
    assert on_image[1].strip() not in ("", "[]")


#: what pensieve reports beyond `docker diff` (the same on the mounted filesystem, so not a reading
#: difference): /tmp of c-modified, where a file was created and removed (the upper /tmp differs
#: from the image's only in mtime), which Docker 20.10's overlay2 diff left out
BEYOND_DOCKER = {"c-modified": {("modified", "/tmp")}}


@pytest.mark.parametrize("name", ["c-modified", "c-bulk", "c-exited0"])
def test_diff_agrees_with_docker(image, name) -> None:
    code, out, err = run_cli("diff", image, name, "--json")
    assert code == 0, err
    kinds = {"A": "added", "C": "modified", "D": "deleted"}
    docker = set()
    for line in (EXPECTED / "containers" / f"{name}.diff.txt").read_text().splitlines():
        kind, path = line.split(" ", 1)
        docker.add((kinds[kind], path))
    assert {(c["change"], c["path"]) for c in json.loads(out)} == docker | BEYOND_DOCKER.get(name, set())


def test_containers_match_engine(image) -> None:
    code, out, err = run_cli("containers", image, "--json")
    assert code == 0, err
    got = {c["name"].lstrip("/"): c for c in json.loads(out)}
    for name, want in SCENARIO["containers"].items():
        if want["removed"]:
            assert name not in got
            continue
        assert got[name]["id"] == want["id"]


# ---- hostile input ------------------------------------------------------------------------


class PatchedImage(DiskImage):
    """The fixture's bytes with some bytes replaced (an image pensieve must survive)."""

    def __init__(self, path: Path, patches: dict[int, int]) -> None:
        self.files = [str(path)]
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._size = os.path.getsize(path)
        self._patches = patches

    def read(self, offset: int, size: int) -> bytes:
        self._fh.seek(offset)
        data = bytearray(self._fh.read(max(0, min(size, self._size - offset))))
        for at, byte in self._patches.items():
            if offset <= at < offset + len(data):
                data[at - offset] = byte
        return bytes(data)

    def close(self) -> None:
        self._fh.close()


_MAGICS = {b"XFSB", b"XAGF", b"XAGI", b"XAFL", b"IAB3", b"FIB3", b"AB3B", b"AB3C", b"XDB3", b"XDD3", b"BMA3"}
_DA_MAGICS = {0x3DF1, 0x3DFF, 0x3EBE, 0x3BEE, 0xFEBE}


@pytest.fixture(scope="module")
def metadata_blocks(image) -> list[int]:
    """Offsets of the fixture's metadata blocks: AG headers, btree blocks, inode chunks, directory
    and attribute blocks (by their magic numbers, xfs_format.h / xfs_da_format.h)."""
    out = []
    with open(image, "rb") as fh:
        pos = 0
        while block := fh.read(4096):
            if (
                block[:4] in _MAGICS
                or block[:2] == b"IN"
                or struct.unpack_from(">H", block, 8)[0] in _DA_MAGICS
            ):
                out.append(pos)
            pos += 4096
    assert len(out) > 20
    return out


def _walk_everything(ev, limit: int = 3000) -> int:
    seen = 0
    for d, entries in ev.walk("/"):
        for e in entries:
            seen += 1
            p = d.rstrip("/") + "/" + e.name
            for action in (
                ev.xattrs,
                ev.readlink if e.stat.is_symlink else None,
                ev.read_bytes if e.stat.is_file else None,
            ):
                if action is None:
                    continue
                try:
                    action(p)
                except (EvidenceError, OSError):
                    pass
        if seen > limit:
            break
    return seen


@pytest.mark.parametrize("seed", range(60))
def test_fuzz_metadata(image, metadata_blocks, seed) -> None:
    rnd = random.Random(seed)
    patches = {}
    for _ in range(rnd.randint(1, 24)):
        block = rnd.choice(metadata_blocks)
        patches[block + rnd.randrange(512 if rnd.random() < 0.6 else 4096)] = rnd.randrange(256)
    img = PatchedImage(image, patches)
    with time_bound(20, f"fuzz seed {seed}"):
        try:
            ev = XfsEvidence(img)
        except ImageError:
            img.close()
            return
        try:
            _walk_everything(ev)
        finally:
            ev.close()


def test_two_partitions_one_corrupt(image, tmp_path) -> None:
    """GPT with the fixture twice: partition 1's superblock corrupt (agcount 0), partition 2 fine."""
    if shutil.which("sfdisk") is None:
        pytest.skip("needs sfdisk (util-linux/fdisk)")
    disk = tmp_path / "two.img"
    fs_sectors = SCENARIO["raw_size"] // 512
    with open(disk, "wb") as fh:
        fh.truncate((2048 + 2 * fs_sectors + 2048) * 512)
    table = f"label: gpt\nstart=2048, size={fs_sectors}\nstart={2048 + fs_sectors}, size={fs_sectors}\n"
    subprocess.run(["sfdisk", "--quiet", str(disk)], input=table, text=True, check=True)
    unpack(disk, 2048 * 512)
    unpack(disk, (2048 + fs_sectors) * 512)
    with open(disk, "r+b") as fh:
        fh.seek(2048 * 512 + 88)
        fh.write(struct.pack(">I", 0))
    before = sha256(disk)
    code, out, err = run_cli("containers", disk, "--json")
    assert code == 5, err
    assert "partition 1" in err and "corrupt XFS superblock" in err and "allocation groups" in err
    assert {c["name"].lstrip("/") for c in json.loads(out)} == {
        n for n, c in SCENARIO["containers"].items() if not c["removed"]
    }
    with pytest.raises(ImageError, match="corrupt XFS superblock"):
        open_evidence(f"{disk}@1")
    assert sha256(disk) == before


def test_image_unchanged(image) -> None:
    """After every test above: the image's bytes are what the capture wrote."""
    assert sha256(image) == SCENARIO["raw_sha256"]
