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


def test_dir_handles_read_through_fds_like_the_path_primitives(tree):
    os.setxattr(tree / "data/dir/file", "user.k", b"v")
    ev = DirectoryEvidence(str(tree))
    with ev.opendir("/data") as data:
        assert dict(data.names())["dir"] is True and dict(data.names())["abs"] is False
        with data.opendir("dir") as sub:
            assert sub.lstat("file") == ev.lstat("/data/dir/file")
            assert sub.open("file").read() == b"inside"
            assert sub.xattrs("file") == ev.xattrs("/data/dir/file") == {"user.k": b"v"}
            assert [e.name for e in sub.scandir()] == ["file"]
        assert data.readlink("abs") == "/etc"
        with pytest.raises(EvidenceError, match="symlink"):
            data.open("passwd-link")
        with pytest.raises(EvidenceError):
            data.opendir("abs")  # a symlink where a directory is asked for: never followed
        with pytest.raises(EvidenceError, match="regular"):
            data.open("fifo")
        with pytest.raises(ValueError):
            data.opendir("..")


def _special_sources(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    yield str(fifo)
    yield "/dev/zero"
    yield "/dev/null"


def test_a_fifo_or_char_device_as_source_is_refused_without_blocking(tmp_path):
    for source in _special_sources(tmp_path):
        result: list[BaseException] = []

        def attempt(path: str = source, result: list[BaseException] = result) -> None:
            try:
                open_evidence(path)
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
                result.append(exc)

        t = threading.Thread(target=attempt, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), f"open_evidence({source}) blocked"
        assert isinstance(result[0], EvidenceError) and "refusing" in str(result[0]), result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_one_warning_when_the_kernel_refuses_noatime(tmp_path):
    """As a user who owns neither the files nor is root, O_NOATIME is refused (EPERM): the reads
    still work, and one Problem says that atimes may move on this writable mount."""
    top = tmp_path / "pub"
    (top / "a/b").mkdir(parents=True)
    for i in range(3):
        (top / f"a/b/f{i}").write_text("x")
    for p in (tmp_path, *tmp_path.parents):
        os.chmod(p, os.stat(p).st_mode | 0o005)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, read, report (modules are imported already)
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            ev = DirectoryEvidence(str(top))
            texts = [ev.read_text(f"/a/b/f{i}") for i in range(3)] + ev.listdir("/a")
            report = f"{texts}|{len(ev.problems)}|{ev.problems[0].message if ev.problems else ''}"
            os.write(write_end, report.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        report = fh.read().decode()
    os.waitpid(pid, 0)
    texts, count, message = report.split("|")
    assert texts == "['x', 'x', 'x', 'b']"
    assert count == "1" and "O_NOATIME" in message
