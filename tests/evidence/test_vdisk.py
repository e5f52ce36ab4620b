"""VMDK, VHD, VHDX (pensieve.evidence.vdisk) and disk.raw in a tar (pensieve.evidence.tar_disk),
every form made by the reference tools from the disk fixture written by a real dockerd
(tests/fixtures/disk, fixtures/capture/disk_capture.sh): ``qemu-img convert`` for VMDK (every
subformat), VHD (dynamic, fixed) and VHDX; GNU tar (``--format=oldgnu -S``, as Google Cloud
exports images) for the tar forms; tests/evidence/vhd_child.py for a differencing VHD (qemu-img
cannot write one).  Each form must read as the same bytes as ``qemu-img convert -O raw`` gives
(sha256 of the whole virtual disk), and the CLI must give the same answers as on the raw image;
the image files are unchanged after."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli
from vhd_child import write_child

from pensieve.evidence.disk_images import ImageError, image_format, is_disk_image, open_image
from pensieve.evidence.sniff import source_kind

DISK = FIXTURE_ROOT / "disk"
QEMU = shutil.which("qemu-img")
pytestmark = pytest.mark.skipif(QEMU is None, reason="needs qemu-img (qemu-utils)")

VMDK_SUBFORMATS = (
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_image(path: Path, size: int | None = None) -> tuple[str, int]:
    img = open_image(str(path))
    try:
        n = img.get_size() if size is None else size
        h = hashlib.sha256()
        off = 0
        while off < n:
            block = img.read(off, min(1 << 20, n - off))
            assert block, f"short read at {off}"
            h.update(block)
            off += len(block)
        return h.hexdigest(), img.get_size()
    finally:
        img.close()


def qemu_raw_sha(path: Path, fmt: str, tmp: Path, size: int | None = None) -> str:
    out = tmp / f"{path.name}.qemu.raw"
    subprocess.run([QEMU, "convert", "-f", fmt, "-O", "raw", str(path), str(out)], check=True)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        left = size if size is not None else os.path.getsize(out)
        while left > 0:
            block = f.read(min(1 << 20, left))
            h.update(block)
            left -= len(block)
    out.unlink()
    return h.hexdigest()


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Path]:
    """The disk fixture in every form, each in a directory of its own (extents beside it)."""
    tmp = tmp_path_factory.mktemp("vdisk")
    raw = tmp / "disk.img"
    with lzma.open(DISK / "disk.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    out: dict[str, Path] = {"raw": raw}

    def convert(name: str, fmt: str, *opts: str) -> None:
        d = tmp / name
        d.mkdir()
        target = d / f"disk.{fmt if fmt != 'vpc' else 'vhd'}"
        subprocess.run([QEMU, "convert", "-f", "raw", "-O", fmt, *opts, str(raw), str(target)], check=True)
        out[name] = target

    for sub in VMDK_SUBFORMATS:
        convert(f"vmdk-{sub}", "vmdk", "-o", f"subformat={sub}")
    convert("vhd-dynamic", "vpc")
    convert("vhd-fixed", "vpc", "-o", "subformat=fixed")
    convert("vhdx", "vhdx")
    gce = tmp / "gce"
    gce.mkdir()
    sparse = gce / "disk.raw"
    subprocess.run(["cp", "--sparse=always", str(raw), str(sparse)], check=True)
    for name, flags in (("tar", "-Scf"), ("tar.gz", "-Sczf")):
        tar = ["tar", "--format=oldgnu", "-C", str(gce), flags, str(gce / f"image.{name}"), "disk.raw"]
        subprocess.run(tar, check=True)
        out[name] = gce / f"image.{name}"
    sparse.unlink()
    return out


@pytest.fixture(scope="module")
def fingerprints(forms) -> dict[str, str]:
    """sha256 of every file of every form before any test reads them."""
    return {str(f): sha256_file(f) for p in forms.values() for f in p.parent.iterdir() if f.is_file()}


QEMU_FMT = {"vmdk": "vmdk", "vhd-dynamic": "vpc", "vhd-fixed": "vpc", "vhdx": "vhdx"}


@pytest.mark.parametrize(
    "name", [f"vmdk-{s}" for s in VMDK_SUBFORMATS] + ["vhd-dynamic", "vhd-fixed", "vhdx", "tar", "tar.gz"]
)
def test_every_form_reads_the_bytes_qemu_reads(forms, fingerprints, name, tmp_path):
    path = forms[name]
    raw_sha = sha256_file(forms["raw"])
    raw_size = forms["raw"].stat().st_size
    assert is_disk_image(str(path)) and source_kind(str(path)) == "disk"
    got, size = sha256_image(path)
    if name.startswith("vhd-"):
        # VHD sizes are rounded up to a CHS geometry: the disk, then zeros
        assert size >= raw_size
        assert sha256_image(path, raw_size)[0] == raw_sha
        img = open_image(str(path))
        assert not img.read(raw_size, size - raw_size).strip(b"\0")
        img.close()
        # qemu reads a fixed VHD as the whole file (its footer appended): compare SIZE bytes
        assert qemu_raw_sha(path, "vpc", tmp_path, size) == got
    elif name in ("tar", "tar.gz"):
        assert (got, size) == (raw_sha, raw_size)
    else:
        fmt = QEMU_FMT.get(name.split("-")[0], QEMU_FMT.get(name))
        assert got == raw_sha and size == raw_size
        assert qemu_raw_sha(path, fmt, tmp_path) == got
    for f in path.parent.iterdir():
        if f.is_file() and str(f) in fingerprints:
            assert sha256_file(f) == fingerprints[str(f)], f"{f} changed"


def test_formats_and_files(forms):
    assert image_format(str(forms["vmdk-monolithicSparse"])) == "VMDK"
    assert image_format(str(forms["vhd-fixed"])) == "VHD"
    assert image_format(str(forms["vhdx"])) == "VHDX"
    assert image_format(str(forms["tar.gz"])) == "disk.raw in tar"
    img = open_image(str(forms["vmdk-twoGbMaxExtentFlat"]))
    try:
        assert len(img.files) == 2 and img.boundaries() == img.files
        assert all(os.path.dirname(f) == str(forms["vmdk-twoGbMaxExtentFlat"].parent) for f in img.files[1:])
    finally:
        img.close()


def _cli_json(*args: str):
    code, out, err = run_cli(*args, "--json")
    return code, (json.loads(out) if out.strip() else None), err


@pytest.mark.parametrize(
    "name", ["vmdk-monolithicSparse", "vmdk-twoGbMaxExtentFlat", "vhd-dynamic", "vhdx", "tar.gz"]
)
def test_cli_on_every_form_equals_the_raw(forms, fingerprints, name):
    raw, form = str(forms["raw"]), str(forms[name])
    for args in (("containers",), ("roots",), ("images",)):
        want = _cli_json(args[0], raw)
        got = _cli_json(args[0], form)
        assert got[0] == want[0] == 0, got[2]
        if args[0] == "roots":  # the VHD's size is its geometry's
            for row in want[1] + got[1]:
                row.pop("size")
                if row["volume"] == "(disk)":
                    row.pop("content")
        assert got[1] == want[1]
    want = _cli_json("fs", raw, "c-modified", "ls", "/etc")
    got = _cli_json("fs", form, "c-modified", "ls", "/etc")
    assert got[0] == want[0] == 0 and got[1] == want[1]
    for f in forms[name].parent.iterdir():
        if str(f) in fingerprints:
            assert sha256_file(f) == fingerprints[str(f)]


def test_differencing_vhd_with_its_parent_beside_it(forms, tmp_path):
    parent = tmp_path / "base.vhd"
    shutil.copy(forms["vhd-dynamic"], parent)
    child = tmp_path / "child.vhd"
    writes = {1 << 20: b"\xab" * 65536, 70 << 20: b"\xcd" * 512}
    write_child(str(parent), str(child), writes, "base.vhd")
    img = open_image(str(child))
    try:
        assert img.format == "VHD" and str(parent) in img.boundaries()
        raw = bytearray(forms["raw"].read_bytes())
        for off, data in writes.items():
            raw[off : off + len(data)] = data
        assert img.read(0, len(raw)) == bytes(raw)
    finally:
        img.close()


def test_differencing_vhd_without_its_parent(forms, tmp_path):
    child = tmp_path / "child.vhd"
    write_child(str(forms["vhd-dynamic"]), str(child), {0: bytes(512)}, "gone.vhd")
    with pytest.raises(ImageError, match="parent gone.vhd is missing"):
        open_image(str(child))
    code, _, err = run_cli("containers", str(child))
    assert code == 3 and "gone.vhd" in err


def test_truncated_flat_vmdk_extent(forms, tmp_path):
    src = forms["vmdk-monolithicFlat"].parent
    d = tmp_path / "trunc"
    shutil.copytree(src, d)
    flat = next(f for f in d.iterdir() if f.name.endswith("-flat.vmdk"))
    with open(flat, "r+b") as f:
        f.truncate(flat.stat().st_size - (1 << 20))  # the last MiB: the GPT's backup copy
    code, out, err = run_cli("containers", str(d / "disk.vmdk"), "--json")
    assert code == 5, err
    assert "truncated" in err and flat.name in err
    assert len(json.loads(out)) == len(_cli_json("containers", str(forms["raw"]))[1])


def test_missing_vmdk_extent(forms, tmp_path):
    d = tmp_path / "gone"
    shutil.copytree(forms["vmdk-twoGbMaxExtentSparse"].parent, d)
    for f in d.iterdir():
        if f.name != "disk.vmdk":
            f.unlink()
    code, _, err = run_cli("containers", str(d / "disk.vmdk"))
    assert code == 3 and "extent" in err and "not found" in err


def test_tar_without_disk_raw_is_an_archive(tmp_path):
    (tmp_path / "x").write_text("hello")
    subprocess.run(["tar", "-C", str(tmp_path), "-czf", str(tmp_path / "a.tar.gz"), "x"], check=True)
    assert source_kind(str(tmp_path / "a.tar.gz")) == "archive"
    assert not is_disk_image(str(tmp_path / "a.tar.gz"))
