"""The union drivers' one read_dir (UnionDiff): each entry read by the driver's own rule (overlayfs
whiteouts and opaque xattrs, kernel Documentation/filesystems/overlayfs.rst; aufs ``.wh.`` names,
moby daemon/graphdriver/aufs and the OCI image spec's layer changesets), a snapshot layer read
as a whole tree."""

from __future__ import annotations

import stat

import pytest

from pensieve.engines.docker.drivers import driver_named
from pensieve.engines.docker.drivers.union import UnionDiff
from pensieve.evidence.base import DirEntry, FileStat


def _stat(mode: int, size: int = 0, rdev: int = 0) -> FileStat:
    return FileStat(
        mode=mode, ino=1, nlink=1, uid=0, gid=0, size=size, atime_ns=0, mtime_ns=0, ctime_ns=0, rdev=rdev
    )


FILE = _stat(stat.S_IFREG | 0o644, 5)
EMPTY = _stat(stat.S_IFREG | 0o644, 0)
DIR = _stat(stat.S_IFDIR | 0o755)
WHITEOUT_DEV = _stat(stat.S_IFCHR, rdev=0)
OTHER_DEV = _stat(stat.S_IFCHR, rdev=0x0103)


class FakeEvidence:
    """Only what read_dir asks: the xattrs of a path."""

    def __init__(self, xattrs: dict[str, dict[str, bytes]] | None = None) -> None:
        self._xattrs = xattrs or {}
        self.asked: list[str] = []

    def xattrs(self, path: str) -> dict[str, bytes]:
        self.asked.append(path)
        return self._xattrs.get(path, {})


@pytest.mark.parametrize("name", ["overlay2", "overlay", "aufs", "oci-layer"])
def test_the_union_drivers_share_one_read_dir(name):
    driver = driver_named(name)
    assert isinstance(driver, UnionDiff)
    assert type(driver).read_dir is UnionDiff.read_dir


def test_overlay_whiteouts_char_device_and_xattr():
    ev = FakeEvidence(
        {"/l/d/gone2": {"user.overlay.whiteout": b""}, "/l/d/kept": {"user.overlay.whiteout": b""}}
    )
    listing = [
        DirEntry("file", FILE),
        DirEntry("gone", WHITEOUT_DEV),
        DirEntry("gone2", EMPTY),
        DirEntry("kept", FILE),  # the whiteout xattr counts on an empty file only
        DirEntry("tty", OTHER_DEV),
    ]
    d = driver_named("overlay2").read_dir(ev, "/l/d", "/d", listing)
    assert d.whiteouts == {"gone", "gone2"}
    assert set(d.entries) == {"file", "kept", "tty"}
    assert d.opaque is False


@pytest.mark.parametrize("xattr", ["trusted.overlay.opaque", "user.overlay.opaque"])
@pytest.mark.parametrize(("value", "opaque"), [(b"y", True), (b"n", False), (b"", False)])
def test_overlay_opaque_directory(xattr, value, opaque):
    ev = FakeEvidence({"/l/d": {xattr: value}})
    assert driver_named("overlay2").read_dir(ev, "/l/d", "/d", []).opaque is opaque


@pytest.mark.parametrize("rel", ["", "/"])
def test_overlay_layer_root_is_never_opaque(rel):
    ev = FakeEvidence({"/l": {"trusted.overlay.opaque": b"y"}})
    assert driver_named("overlay2").read_dir(ev, "/l", rel, []).opaque is False
    assert "/l" not in ev.asked


def test_aufs_whiteouts_opaque_marker_and_housekeeping():
    listing = [
        DirEntry("file", FILE),
        DirEntry(".wh.gone", EMPTY),
        DirEntry(".wh..wh..opq", EMPTY),
        DirEntry(".wh..wh.plnk", DIR),
        DirEntry(".wh..wh.aufs", EMPTY),
        DirEntry(".whx", FILE),
    ]
    for name in ("aufs", "oci-layer"):
        d = driver_named(name).read_dir(FakeEvidence(), "/l/d", "/d", listing)
        assert d.whiteouts == {"gone"}
        assert set(d.entries) == {"file", ".whx"}
        assert d.opaque is True


def test_aufs_directory_without_marker_is_not_opaque():
    d = driver_named("aufs").read_dir(FakeEvidence(), "/l/d", "/d", [DirEntry(".wh.x", EMPTY)])
    assert d.opaque is False and d.whiteouts == {"x"} and d.entries == {}


@pytest.mark.parametrize("name", ["overlay2", "overlay", "aufs", "oci-layer"])
def test_a_snapshot_layer_reads_as_a_whole_tree(name):
    listing = [DirEntry("file", FILE), DirEntry(".wh.x", EMPTY), DirEntry("gone", WHITEOUT_DEV)]
    ev = FakeEvidence({"/l/d": {"trusted.overlay.opaque": b"n"}})
    d = driver_named(name).read_dir(ev, "/l/d", "/d", listing, snapshot=True)
    assert d.opaque is True
    assert d.whiteouts == {"gone"}
    assert set(d.entries) == {"file", ".wh.x"}
    assert ev.asked == []
