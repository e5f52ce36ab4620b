"""formats/ext4: the one ext2/3/4 parser, on a filesystem mkfs.ext4 makes and on mutations of it."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import time

import pytest

from pensieve.formats.ext4 import Ext4, Ext4Error, parse_dir_block

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4")


@pytest.fixture(scope="module")
def fs_bytes(tmp_path_factory) -> bytes:
    img = tmp_path_factory.mktemp("ext4") / "fs.img"
    with open(img, "wb") as fh:
        fh.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "64bit,metadata_csum", str(img)], check=True)
    return img.read_bytes()


def reader(data: bytes):
    return lambda off, n: data[off : off + n]


def test_superblock_descriptors_and_root(fs_bytes):
    fs = Ext4(reader(fs_bytes))
    assert (
        fs.block_size in (1024, 4096) and fs.sb.desc_size == 64 and fs.blocks_count * fs.block_size == 8 << 20
    )
    root = fs.inode(2)
    assert root is not None and root.fmt == 0o040000 and root.links >= 3
    names = fs.dir_names(
        2,
        root.size,
        lambda off, n: b"".join(fs.read_blocks(pb, cnt) for _lb, pb, cnt, _u in fs.mapping(root))[
            off : off + n
        ],
    )
    assert "lost+found" in names
    runs, _uninit = fs.free_runs()
    assert sum(e - s for s, e in runs) == fs.sb.free_blocks


def test_mutated_metadata_is_an_error_or_a_result_never_a_crash(fs_bytes):
    """Random bytes over the superblock, the descriptors and the inode table: Ext4Error (or a
    parsed result), never another exception, each within a time bound."""
    rnd = random.Random(15)
    fs = Ext4(reader(fs_bytes))
    itable = fs.group_desc(0).inode_table * fs.block_size
    regions = [(1024, 1024), (fs.block_size * (2 if fs.block_size == 1024 else 1), 256), (itable, 4096)]
    for _ in range(300):
        data = bytearray(fs_bytes)
        start, length = rnd.choice(regions)
        for _k in range(rnd.randint(1, 16)):
            data[start + rnd.randrange(length)] = rnd.randrange(256)
        t0 = time.perf_counter()
        try:
            m = Ext4(reader(bytes(data)))
            for ino in (2, 11, 12):
                inode = m.inode(ino)
                if inode is not None:
                    m.mapping(inode)
                    m.xattrs(ino, lambda _i, _n: b"")
            m.free_runs()
        except (Ext4Error, struct.error):
            pass
        assert time.perf_counter() - t0 < 2.0


def test_dir_block_garbage_is_none_or_entries():
    rnd = random.Random(8)
    for _ in range(2000):
        block = rnd.randbytes(1024)
        out = parse_dir_block(block, True, 1 << 20)
        assert out is None or all(isinstance(n, bytes) and i > 0 for n, i, _t, _d in out)
