"""The one output sink: hostile destinations (climbing, symlinked into the evidence, next to an
image file, equal to a data root), missing parents, existing files, symlinks planted inside the
destination between calls, and the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from pensieve.errors import UsageError
from pensieve.output.sink import MANIFEST, OutputSink, refuse_evidence


@pytest.fixture()
def place(tmp_path):
    """An evidence directory (a data root inside a host root), a disk image file beside other
    files, and an empty place for output."""
    host = tmp_path / "host"
    (host / "var/lib/docker/containers").mkdir(parents=True)
    (host / "etc").mkdir()
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "disk.img").write_bytes(b"\0" * 4096)
    out = tmp_path / "out"
    out.mkdir()
    return tmp_path, host, cases / "disk.img", out


def _hostile_destinations(tmp_path, host, image):
    """(destination, boundaries) pairs that all resolve into, onto or around the evidence."""
    os.symlink(host / "etc", tmp_path / "out/into-evidence")
    os.symlink(host, tmp_path / "out/host-link")
    data_root = host / "var/lib/docker"
    yield str(host), [str(host)]
    yield str(host / "etc/new"), [str(host)]
    yield str(tmp_path / "out/../host/etc/x"), [str(host)]
    yield str(tmp_path / "out/into-evidence"), [str(host)]
    yield str(tmp_path / "out/into-evidence/sub/deeper"), [str(host)]
    yield str(tmp_path / "out/host-link/../host/etc"), [str(host)]
    yield str(data_root), [str(host), str(data_root)]
    yield str(data_root / "containers/../.."), [str(data_root)]
    yield str(tmp_path), [str(host)]  # holds the evidence
    yield str(image), [str(image)]  # the image file itself
    yield str(image.parent), [str(image)]  # the directory of an image file
    yield str(image.parent / "recovered"), [str(image)]
    yield str(image.parent / "x/../recovered"), [str(image)]
    yield str(image.parent.parent), [str(image)]  # holds the image


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_hostile_destinations_are_refused_and_nothing_is_made(place, kind):
    tmp_path, host, image, _out = place
    before = sorted(p for p in tmp_path.rglob("*"))
    for dest, boundaries in _hostile_destinations(tmp_path, host, image):
        with pytest.raises(UsageError, match="refusing"):
            OutputSink(dest, boundaries, kind=kind)
        for p in tmp_path.rglob("*"):
            assert p in before or p.is_symlink(), f"{dest}: {p} was created"
        before = sorted(p for p in tmp_path.rglob("*"))
    assert sorted(os.listdir(host / "etc")) == []


def test_missing_parents_are_created_and_listed(place):
    _tmp, host, image, out = place
    dest = out / "a/b/c"
    with OutputSink(str(dest), [str(host), str(image)]) as sink:
        sink.write("x/y.txt", b"hello")
    assert (dest / "x/y.txt").read_bytes() == b"hello"
    assert stat.S_IMODE(os.stat(dest / "x/y.txt").st_mode) == 0o600
    assert sink.created_parents == [str(out / "a"), str(out / "a/b"), str(out / "a/b/c")]
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["created_parents"] == sink.created_parents
    assert manifest["files"] == [
        {"path": "x/y.txt", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    ]


def test_a_destination_under_a_file_is_a_usage_error(place):
    _tmp, host, _image, out = place
    (out / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        OutputSink(str(out / "file/sub"), [str(host)])


def test_existing_files_are_never_overwritten(place):
    _tmp, host, _image, out = place
    (out / "taken.tar").write_bytes(b"old")
    with pytest.raises(UsageError, match="overwrite"):
        OutputSink(str(out / "taken.tar"), [str(host)], kind="file")
    os.symlink(out / "elsewhere", out / "dangling.tar")
    with pytest.raises(UsageError, match="overwrite"):
        OutputSink(str(out / "dangling.tar"), [str(host)], kind="file")
    assert not (out / "elsewhere").exists()
    (out / "d").mkdir()
    (out / "d/keep.txt").write_bytes(b"old")
    with OutputSink(str(out / "d"), [str(host)]) as sink:
        with pytest.raises(FileExistsError):
            sink.write("keep.txt", b"new")
        sink.write("new.txt", b"new")
    assert (out / "d/keep.txt").read_bytes() == b"old"
    with pytest.raises(UsageError, match="never overwritten"):
        OutputSink(str(out / "d"), [str(host)])  # holds an earlier run's manifest
    assert [f["path"] for f in json.loads((out / "d" / MANIFEST).read_text())["files"]] == ["new.txt"]


def test_a_symlink_planted_inside_the_destination_is_not_followed(place):
    _tmp, host, _image, out = place
    victim = host / "etc"
    sink = OutputSink(str(out / "o"), [str(host)])
    sink.write("sub/first.txt", b"1")
    # between two calls, an attacker replaces sub/ with a symlink into the evidence, and plants a
    # symlink where the next file will go
    os.rename(out / "o/sub", out / "o/sub.moved")
    os.symlink(victim, out / "o/sub")
    os.symlink(victim / "planted", out / "o/next.txt")
    with pytest.raises(OSError, match="refusing a symlink"):
        sink.write("sub/second.txt", b"2")
    with pytest.raises(FileExistsError):
        sink.write("next.txt", b"3")
    with pytest.raises(OSError):
        sink.mkdir("sub/d")
    assert os.listdir(victim) == []
    # the destination itself swapped for a symlink: the sink keeps writing where it started
    os.rename(out / "o", out / "o.moved")
    os.symlink(victim, out / "o")
    sink.write("third.txt", b"3")
    sink.close()
    assert os.listdir(victim) == []
    assert (out / "o.moved/third.txt").read_bytes() == b"3"
    assert [f["path"] for f in json.loads((out / "o.moved" / MANIFEST).read_text())["files"]] == [
        "sub/first.txt",
        "third.txt",
    ]


def test_names_inside_the_sink_cannot_climb(place):
    _tmp, host, _image, out = place
    with OutputSink(str(out / "o"), [str(host)]) as sink:
        sink.write("../../escape.txt", b"x")  # normalised below the destination
        sink.symlink("link", "/etc/passwd")
    assert (out / "o/escape.txt").exists() and not (out / "escape.txt").exists()
    assert os.readlink(out / "o/link") == "/etc/passwd"
    doc = json.loads((out / "o" / MANIFEST).read_text())
    assert doc["symlinks"] == [{"path": "link", "target": "/etc/passwd"}]


def test_single_file_sink_and_its_manifest(place):
    _tmp, host, image, out = place
    blocks = [b"a" * 1000, memoryview(b"b" * 24)]
    sink = OutputSink(str(out / "layer.tar"), [str(host), str(image)], kind="file")
    with sink.create() as fh:
        for block in blocks:
            fh.write(block)
    with pytest.raises(FileExistsError):
        sink.create()
    path = sink.close({"command": "verify --export-layer"})
    assert path == str(out / "layer.tar.manifest.json")
    doc = json.loads((out / "layer.tar.manifest.json").read_text())
    data = (out / "layer.tar").read_bytes()
    assert doc == {
        "destination": str(out / "layer.tar"),
        "files": [{"path": "layer.tar", "size": 1024, "sha256": hashlib.sha256(data).hexdigest()}],
        "command": "verify --export-layer",
    }


def test_refuse_evidence_returns_the_resolved_destination(place):
    tmp_path, host, _image, out = place
    os.symlink(out, tmp_path / "out-link")
    assert refuse_evidence(str(tmp_path / "out-link/x/.."), [str(host)]) == str(out)
