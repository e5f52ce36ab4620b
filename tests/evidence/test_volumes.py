"""Volumes of a disk (pensieve.evidence.volumes): GPT partitions, LVM2 logical volumes (real
lvm2 metadata), LUKS1/LUKS2 (real cryptsetup headers) nested in them, from
fixtures/capture/volumes_capture.sh (tests/fixtures/volumes/README.md says what was made by the
kernel and the tools and what by the script: the LUKS payload encryption, dm-crypt being absent
on the capture machine)."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli

from pensieve.evidence import volumes
from pensieve.evidence.disk_images import ImageError, open_image
from pensieve.evidence.volumes import (
    LinearLvImage,
    find_volume,
    parse_lvm_text,
    parse_volume_path,
    volume_tree,
)

VOL = FIXTURE_ROOT / "volumes"
KEYS = VOL / "keys"
LIVE = ["c-exited0", "c-exited3", "c-modified", "c-running"]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("volumes")
    out = {}
    for name in ("volumes.img", "split-a.img"):
        with lzma.open(VOL / f"{name}.xz") as src, open(tmp / name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out[name] = tmp / name
    want = dict(line.split()[::-1] for line in (VOL / "expected" / "sha256").read_text().splitlines())
    for name, path in out.items():
        assert sha256_file(path) == want[name]
    return out


@pytest.fixture(autouse=True)
def no_keys():
    volumes.set_keys(None, None)
    yield
    volumes.set_keys(None, None)


def test_volume_paths():
    assert parse_volume_path("p2/lvm:vg0/lv_root/luks") == [
        ("part", 2),
        ("lvm", ("vg0", "lv_root")),
        ("luks", None),
    ]
    assert parse_volume_path("2") == [("part", 2)]
    assert parse_volume_path("offset=2048s/luks") == [("offset", 2048 * 512), ("luks", None)]
    for bad in ("", "lvm:vg0", "p2//luks", "luks2", "p2/lvm:/x"):
        with pytest.raises(ValueError):
            parse_volume_path(bad)


def test_tree_without_keys(disks):
    img = open_image(str(disks["volumes.img"]))
    try:
        tree = {v.path: v for v in volume_tree(img).walk()}
    finally:
        img.close()
    assert list(tree) == [
        "",
        "p1",
        "p2",
        "p2/lvm:vg0/lv_root",
        "p2/lvm:vg0/lv_crypt",
        "p2/lvm:vg0/lv_crypt/luks",
        "p2/lvm:vg0/lv_luks1",
        "p2/lvm:vg0/lv_luks1/luks",
    ]
    assert tree["p2"].content == "LVM2 physical volume"
    assert tree["p2/lvm:vg0/lv_root"].size == 12 << 20 and tree["p2/lvm:vg0/lv_root"].content == "ext2/3/4"
    assert tree["p2/lvm:vg0/lv_crypt"].content.startswith("LUKS2")
    assert tree["p2/lvm:vg0/lv_luks1"].content.startswith("LUKS1")
    assert "locked" in tree["p2/lvm:vg0/lv_crypt/luks"].problem


def test_lv_bytes_libvslvm_equal_the_metadata_reader(disks):
    """libvslvm's logical volume and pensieve's own reading of the same metadata agree."""
    img = open_image(str(disks["volumes.img"]))
    try:
        tree = {v.path: v for v in volume_tree(img).walk()}
        pv = tree["p2"].image
        meta = parse_lvm_text(volumes._lvm_metadata(pv, volumes._lvm_label(pv)[1]))["vg0"]
        extent = meta["extent_size"] * 512
        pe_start = meta["physical_volumes"]["pv0"]["pe_start"] * 512
        for name in ("lv_root", "lv_crypt", "lv_luks1"):
            seg = meta["logical_volumes"][name]["segment1"]
            lv = tree[f"p2/lvm:vg0/{name}"]
            length = seg["extent_count"] * extent
            own = LinearLvImage(pv, [(0, length, pv, pe_start + seg["stripes"][1] * extent)], length, name)
            assert lv.image.read(0, length) == own.read(0, length)
    finally:
        img.close()


@pytest.mark.parametrize("how", ["passphrase", "key"])
def test_luks2_in_lvm_in_gpt(disks, how):
    if how == "passphrase":
        volumes.set_keys(volumes.read_passphrase_file(str(KEYS / "passphrase")), None)
    else:
        volumes.set_keys(None, volumes.read_key_file(str(KEYS / "volume.key")))
    img = open_image(str(disks["volumes.img"]))
    try:
        vol = find_volume(img, "p2/lvm:vg0/lv_crypt/luks")
        clear = vol.image.read(0, 1 << 20)
        want = (VOL / "expected" / "luks2.clear.sha256").read_text().split()[0]
        assert hashlib.sha256(clear).hexdigest() == want
    finally:
        img.close()


def test_luks1_against_libluksde(disks):
    """LUKS1 payload decrypted by pensieve == by libluksde (pyluksde, the reference for LUKS1)."""
    pyluksde = pytest.importorskip("pyluksde")
    volumes.set_keys(volumes.read_passphrase_file(str(KEYS / "passphrase")), None)
    img = open_image(str(disks["volumes.img"]))
    try:
        vol = find_volume(img, "p2/lvm:vg0/lv_luks1/luks")
        ours = vol.image.read(0, 1 << 20)
        lv = find_volume(img, "p2/lvm:vg0/lv_luks1")
        ref = pyluksde.volume()
        ref.set_password((KEYS / "passphrase").read_text())
        ref.open_file_object(volumes.FileView(lv.image))
        assert not ref.is_locked()
        assert ref.read_buffer_at_offset(1 << 20, 0) == ours
        ref.close()
        want = (VOL / "expected" / "luks1.clear.sha256").read_text().split()[0]
        assert hashlib.sha256(ours).hexdigest() == want
    finally:
        img.close()


def test_cli_on_volumes(disks, tmp_path):
    img = str(disks["volumes.img"])
    before = sha256_file(disks["volumes.img"])
    code, out, err = run_cli("containers", img + "@p2/lvm:vg0/lv_root", "--json")
    assert code == 0, err
    assert sorted(c["name"] for c in json.loads(out)) == LIVE
    # the whole disk: lv_root found; the locked LUKS volumes named
    code, out, err = run_cli("containers", img, "--json")
    assert code == 5 and "locked" in err and "lv_crypt/luks" in err
    assert sorted(c["name"] for c in json.loads(out)) == LIVE
    code, out, err = run_cli(
        "containers", img + "@p2/lvm:vg0/lv_crypt/luks", "--passphrase-file", KEYS / "passphrase", "--json"
    )
    assert code == 0, err
    assert sorted(c["name"] for c in json.loads(out)) == LIVE
    code, out, err = run_cli("fs", img + "@p2/lvm:vg0/lv_luks1/luks", "--key-file", KEYS / "volume1.key")
    assert code == 2  # fs needs a target: the options were taken, argparse complains of the rest
    code, out, err = run_cli("roots", img, "--key-file", KEYS / "volume.key", "--json")
    rows = {r["volume"]: r for r in json.loads(out)}
    assert code == 5, err  # lv_luks1 has another key
    assert rows["p2/lvm:vg0/lv_crypt/luks"]["roots"] == ["docker:/var/lib/docker"]
    assert rows["p2/lvm:vg0/lv_root"]["roots"] == ["docker:/var/lib/docker"]
    assert rows["p2/lvm:vg0/lv_luks1/luks"]["problem"].startswith("the volume key given does not match")
    assert rows["p1"]["content"] == "ext4" and rows["p1"]["roots"] == []
    kinds = {"disk", "gpt partition", "LVM2 logical volume", "LUKS1", "LUKS2"}
    assert {r["type"] for r in rows.values()} == kinds
    assert sha256_file(disks["volumes.img"]) == before


def test_wrong_passphrase(disks, tmp_path):
    img = str(disks["volumes.img"])
    bad = tmp_path / "bad"
    bad.write_text("not-the-passphrase\n")
    dest = tmp_path / "out"
    for source in (img, img + "@p2/lvm:vg0/lv_crypt/luks"):
        code, out, err = run_cli("fs", source, "--passphrase-file", bad, "c-modified", "export", dest)
        assert code == 3 and "wrong passphrase" in err, err
        assert not dest.exists()
    with pytest.raises(ImageError, match="wrong passphrase"):
        volumes.set_keys(b"nope", None)
        i = open_image(img)
        try:
            find_volume(i, "p2/lvm:vg0/lv_crypt/luks")
        finally:
            i.close()


def test_lvm_missing_physical_volume(disks):
    src = str(disks["split-a.img"])
    code, out, err = run_cli("containers", src, "--json")
    assert code == 5, err
    assert "pv1" in err and "not in this evidence" in err
    assert sorted(c["name"] for c in json.loads(out)) == LIVE
    code, out, err = run_cli("roots", src, "--json")
    rows = {r["volume"]: r for r in json.loads(out)}
    assert code == 5
    assert rows["lvm:vg1/lv_a"]["roots"] == ["docker:/var/lib/docker"]
    assert "pv1" in rows["lvm:vg1/lv_b"]["problem"]
    code, _, err = run_cli("containers", src + "@lvm:vg1/lv_b")
    assert code == 3 and "pv1" in err


def test_no_such_volume(disks):
    code, _, err = run_cli("containers", str(disks["volumes.img"]) + "@p2/lvm:vg0/nope")
    assert code == 3 and "no volume p2/lvm:vg0/nope" in err and "lv_root" in err


def test_hostile_lvm_metadata(disks, tmp_path):
    """Mutations of split-a.img's LVM label and metadata text: every volume tree is built (or the
    PV named unreadable), never another exception, each in bounded time."""
    import random
    import time

    base = disks["split-a.img"].read_bytes()[: 1 << 20]
    img = open_image(str(disks["split-a.img"]))
    try:
        _uuid, mda, _size = volumes._lvm_label(img)
        mda_text_at = mda + int.from_bytes(img.read(mda + 40, 8), "little")
        text_len = len(volumes._lvm_metadata(img, mda))
        assert text_len > 500 and mda_text_at + text_len < len(base)
    finally:
        img.close()
    rng = random.Random(12)
    path = tmp_path / "m.img"
    for i in range(120):
        buf = bytearray(base)
        if i % 3 == 0:  # label and headers
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(512, 4096 + 64)] = rng.randrange(256)
        else:  # the metadata text: bytes changed, cut, or tokens swapped for junk
            for _ in range(rng.randint(1, 6)):
                pos = mda_text_at + rng.randrange(text_len)
                buf[pos] = rng.choice(b'{}[]=,"0123456789xyz \n#')
        path.write_bytes(bytes(buf))
        start = time.monotonic()
        img = open_image(str(path))
        try:
            for v in volume_tree(img).walk():
                if v.image is not None and v.size:
                    v.image.read(0, 4096)
        finally:
            img.close()
        assert time.monotonic() - start < 10
