"""LUKS1/LUKS2 headers (pensieve.formats.luks): the real cryptsetup headers of
tests/fixtures/volumes open with the passphrase and the volume key and refuse a wrong one;
mutated headers (hypothesis) are a LuksError or a header, never another exception, and never
slow (key derivation bounded)."""

from __future__ import annotations

import lzma
import time

import pytest
from conftest import FIXTURE_ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pensieve.evidence import volumes
from pensieve.evidence.disk_images import open_image
from pensieve.formats import luks

VOL = FIXTURE_ROOT / "volumes"
PASS = (VOL / "keys" / "passphrase").read_bytes()


@pytest.fixture(scope="module")
def headers(tmp_path_factory) -> dict[int, bytes]:
    """The first 2 MiB of each LUKS logical volume of the fixture (header and key slots)."""
    tmp = tmp_path_factory.mktemp("luks")
    path = tmp / "volumes.img"
    path.write_bytes(lzma.decompress((VOL / "volumes.img.xz").read_bytes()))
    img = open_image(str(path))
    try:
        tree = {v.path: v for v in volumes.volume_tree(img).walk()}
        return {
            2: tree["p2/lvm:vg0/lv_crypt"].image.read(0, 2 << 20),
            1: tree["p2/lvm:vg0/lv_luks1"].image.read(0, 3 << 20),
        }
    finally:
        img.close()


def reader(data: bytes):
    return lambda off, n: data[off : off + n]


@pytest.mark.parametrize("version", [1, 2])
def test_unlock(headers, version):
    data = headers[version]
    hdr = luks.parse_header(reader(data))
    assert hdr.version == version and hdr.cipher == "aes-xts-plain64" and hdr.slots
    key = luks.unlock(reader(data), hdr, PASS)
    name = "volume.key" if version == 2 else "volume1.key"
    assert key == (VOL / "keys" / name).read_bytes()
    assert luks.unlock(reader(data), hdr, key=key) == key
    with pytest.raises(luks.LuksError, match="wrong passphrase"):
        luks.unlock(reader(data), hdr, b"wrong")
    with pytest.raises(luks.LuksError, match="does not match"):
        luks.unlock(reader(data), hdr, key=bytes(len(key)))


def test_not_luks():
    with pytest.raises(luks.LuksError):
        luks.parse_header(reader(bytes(8192)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers(headers, data):
    version = data.draw(st.sampled_from([1, 2]))
    buf = bytearray(headers[version][: 1 << 20])
    limit = 592 if version == 1 else 4096 + 2048
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, limit - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    start = time.monotonic()
    try:
        hdr = luks.parse_header(reader(bytes(buf)))
        cheap = hdr.digest["iterations"] < 20000 and all(
            s.kdf.get("type") == "pbkdf2" and int(s.kdf.get("iterations", 0)) < 20000 and s.stripes < 8000
            for s in hdr.slots
        )
        if cheap:
            luks.unlock(reader(bytes(buf)), hdr, PASS)
    except luks.LuksError:
        pass
    assert time.monotonic() - start < 10


def test_unknown_hash_name_is_a_luks_error(headers):
    """A header naming a hash this Python lacks (hypothesis found one by mutating 'sha256') is a
    LuksError, not hashlib's UnsupportedDigestmodError escaping the volume layer."""
    hdr = luks.parse_header(reader(headers[2]))
    hdr.digest["hash"] = "sha252"
    with pytest.raises(luks.LuksError, match="unsupported hash"):
        luks.unlock(reader(headers[2]), hdr, PASS)
