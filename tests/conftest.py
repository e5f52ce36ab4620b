"""Shared fixtures: the real-engine Docker data roots captured by fixtures/capture/docker_capture.sh.

The captured roots are committed as tarballs (with whiteout char devices and trusted.overlay.*
xattrs); they are unpacked once per session with GNU tar, which needs root to restore both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: triage runs in-process unless a test asks for workers (--workers N): without it the CLI would
#: start a Dask LocalCluster of one process a CPU for each triage
os.environ.setdefault("PENSIEVE_WORKERS", "1")

FIXTURE_ROOT = Path(__file__).parent / "fixtures"
FIXTURES = FIXTURE_ROOT / "docker"


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack a captured root (any compression GNU tar recognises) with its xattrs and devices."""
    if os.geteuid() != 0:
        pytest.skip("unpacking real overlay fixtures (char 0/0 whiteouts, trusted.* xattrs) needs root")
    if shutil.which("tar") is None:
        pytest.skip("GNU tar not installed")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xf", str(tarball), "-C", str(dest)],
        check=True,
    )
    return dest


@pytest.fixture(scope="session")
def overlay2_root(tmp_path_factory) -> Path:
    """A real overlay2 data root (dockerd 20.10, crashed with containers in every state)."""
    return unpack(FIXTURES / "overlay2-root.tar.gz", tmp_path_factory.mktemp("overlay2-root"))


@pytest.fixture(scope="session")
def overlay_root(tmp_path_factory) -> Path:
    """A real data root of the legacy `overlay` driver."""
    tarball = FIXTURES / "overlay-root.tar.gz"
    if not tarball.exists():
        pytest.skip("legacy overlay fixture not captured")
    return unpack(tarball, tmp_path_factory.mktemp("overlay-root"))


@pytest.fixture(scope="session")
def expected() -> Path:
    return FIXTURES / "expected"


def load_json(path: Path):
    with open(path) as fh:
        return json.load(fh)


def atime(st: os.stat_result) -> int | str:
    """A symlink's atime is left out: readlink(2), which this digest needs as much as pensieve
    does, may move it (relatime) and there is no O_NOATIME for it."""
    import stat

    return "-" if stat.S_ISLNK(st.st_mode) else st.st_atime_ns


def tree_digest(root: Path) -> str:
    """Hash of every entry's path, type, mode, owner, size, mtime, atime, xattrs and content."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(
                f"{os.path.relpath(p, root)}|{st.st_mode}|{st.st_uid}|{st.st_gid}|{st.st_size}|"
                f"{st.st_mtime_ns}|{atime(st)}|{st.st_rdev}\n".encode("utf-8", "surrogateescape")
            )
            try:
                for x in sorted(os.listxattr(p, follow_symlinks=False)):
                    h.update(x.encode("utf-8", "surrogateescape") + os.getxattr(p, x, follow_symlinks=False))
            except OSError:
                pass
            if os.path.islink(p):
                h.update(os.readlink(p).encode("utf-8", "surrogateescape"))
            elif os.path.isfile(p):
                fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
                with os.fdopen(fd, "rb") as fh:
                    while block := fh.read(1 << 20):
                        h.update(block)
    return h.hexdigest()


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the pensieve CLI in-process: (exit code, stdout, stderr)."""
    import io
    import sys

    from pensieve.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main([str(a) for a in args])
    finally:
        sys.stdout, sys.stderr = saved
    out.flush()
    return code, out.buffer.getvalue().decode("utf-8", "replace"), err.getvalue()


@contextmanager
def time_bound(seconds: float = 20, what: str = "the block") -> Iterator[None]:
    """Fail with TimeoutError, instead of hanging, when the block runs longer than SECONDS: the
    per-input bound of every fuzz and hostile-input test (SIGALRM, so pytest's main thread)."""

    def expired(signum, frame):
        raise TimeoutError(f"{what}: no answer within {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
