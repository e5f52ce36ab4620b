"""The read-only evidence interface: containment, no symlink escapes, no blocking, no atime.

These are hand-made corner cases (hostile trees a real engine does not produce)."""

from __future__ import annotations

import os
import threading

import pytest

from pensieve.evidence import DirectoryEvidence, EvidenceError, NotFound, open_evidence


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "ev"
    (root / "data/dir").mkdir(parents=True)
    (root / "data/dir/file").write_text("inside")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("evidence passwd")
    # hostile links: absolute and climbing, as directory components and as last components
    os.symlink("/etc", root / "data/abs")
    os.symlink("../../../../../../etc", root / "data/climb")
    os.symlink("/etc/passwd", root / "data/passwd-link")
    os.symlink("loop", root / "data/loop")
    os.mkfifo(root / "data/fifo")
    return root


def test_directory_symlinks_resolve_inside_the_root(tree):
    ev = DirectoryEvidence(str(tree))
    assert ev.read_text("/data/abs/passwd") == "evidence passwd"
    assert ev.read_text("/data/climb/passwd") == "evidence passwd"
    assert ev.read_text("/../../etc/passwd") == "evidence passwd"
    assert ev.host_path("/data/abs/passwd") == str(tree / "etc/passwd")


def test_last_component_symlinks_are_never_followed(tree):
    ev = DirectoryEvidence(str(tree))
    with pytest.raises(EvidenceError, match="symlink"):
        ev.open("/data/passwd-link")
    assert ev.lstat("/data/passwd-link").is_symlink
    assert ev.readlink("/data/passwd-link") == "/etc/passwd"
    with pytest.raises(EvidenceError):
        ev.read_text("/data/loop/x")


def test_fifos_and_missing_paths_fail_fast(tree):
    ev = DirectoryEvidence(str(tree))
    result: list[BaseException] = []

    def attempt() -> None:
        try:
            ev.open("/data/fifo")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            result.append(exc)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "opening a FIFO in evidence must not block"
    assert isinstance(result[0], EvidenceError) and "regular" in str(result[0])
    with pytest.raises(NotFound):
        ev.lstat("/nope")
    with pytest.raises(EvidenceError):
        open_evidence(str(tree / "nope"))


@pytest.mark.skipif(os.geteuid() != 0, reason="O_NOATIME needs root or ownership")
def test_reading_does_not_move_access_times(tree):
    path = tree / "data/dir/file"
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    os.utime(tree / "data/dir", ns=(1_000_000_000, 2_000_000_000))
    ev = DirectoryEvidence(str(tree))
    assert ev.read_text("/data/dir/file") == "inside"
    assert [e.name for e in ev.scandir("/data/dir")] == ["file"]
    assert os.stat(path).st_atime_ns == 1_000_000_000
    assert os.stat(tree / "data/dir").st_atime_ns == 1_000_000_000


def test_walk_never_descends_through_links(tree):
    ev = DirectoryEvidence(str(tree))
    seen = [d for d, _ in ev.walk("/data")]
    assert "/data/abs" not in seen and "/data/climb" not in seen
    assert "/data/dir" in seen
