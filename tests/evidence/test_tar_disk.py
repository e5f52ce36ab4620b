"""disk.raw in a tar (pensieve.evidence.tar_disk): GNU tar's sparse formats (old GNU with
extension blocks, PAX 1.0) read as the file they hold; mutated sparse maps are an ImageError or
a readable disk, never another exception."""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

from pensieve.evidence.disk_images import ImageError, open_image

pytestmark = pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")


def sparse_disk(path, runs: int = 40) -> bytes:
    """A sparse disk.raw of RUNS data runs (more than an old GNU header's 4: extension blocks)."""
    size = 8 << 20
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(runs):
            f.seek(i * (size // runs))
            f.write(bytes([i + 1]) * 4096)
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("fmt", ["oldgnu", "gnu", "posix"])
@pytest.mark.parametrize("compress", ["", "z"])
def test_sparse_formats(tmp_path, fmt, compress):
    want = sparse_disk(tmp_path / "disk.raw")
    tar = tmp_path / f"image.tar{'.gz' if compress else ''}"
    extra = ["--sparse-version=1.0"] if fmt == "posix" else []
    cmd = ["tar", f"--format={fmt}", *extra, "-C", str(tmp_path), f"-S{compress}cf", str(tar), "disk.raw"]
    subprocess.run(cmd, check=True)
    img = open_image(str(tar))
    try:
        assert img.get_size() == len(want)
        assert img.read(0, len(want)) == want
        assert img.read(len(want) - 10, 100) == want[-10:]
    finally:
        img.close()


def test_mutated_sparse_maps(tmp_path):
    want = sparse_disk(tmp_path / "disk.raw")
    tar = tmp_path / "image.tar"
    subprocess.run(["tar", "--format=oldgnu", "-C", str(tmp_path), "-Scf", str(tar), "disk.raw"], check=True)
    base = tar.read_bytes()
    rng = random.Random(7)
    bad = tmp_path / "bad.tar"
    for _ in range(150):
        buf = bytearray(base)
        for _ in range(rng.randint(1, 5)):
            pos = rng.choice([rng.randrange(345, 512), rng.randrange(512, 2048)])
            buf[pos] = rng.choice(b"0123456789\x00\x80\xff x")
        bad.write_bytes(bytes(buf))
        try:
            img = open_image(str(bad))
        except ImageError:
            continue
        try:
            data = img.read(0, min(img.get_size(), len(want)))
            assert len(data) == min(img.get_size(), len(want))
        finally:
            img.close()
    os.unlink(bad)
