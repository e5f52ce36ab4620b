"""The fast paths of a Podman listing against the slow ones they replace, on both real captures
(Podman 4.3 bolt state, Podman 5.8 SQLite state):

* the ``pensieve`` console script (collector held off through the listing, the process ended
  by os._exit once stdout is flushed) writes byte for byte what the library's ``main()`` writes
  in-process (collector on, every object freed), and exits with the same code;
* ``read_layers`` finding the tar-split files from one listing of ``overlay-layers`` gives what
  a lookup per layer gives (the evidence's listdir made to fail takes that road).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli, unpack

from pensieve.engines.podman import storage
from pensieve.evidence import DirectoryEvidence, EvidenceError

SRC = Path(__file__).resolve().parents[3] / "src"
CAPTURES = {
    "podman4": (FIXTURE_ROOT / "podman/podman-4.3-root.tar.xz", "storage"),
    "podman5": (FIXTURE_ROOT / "podman5/podman-5-storage.tar.xz", "storage"),
}


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def graphroot(request, tmp_path_factory) -> Path:
    tarball, below = CAPTURES[request.param]
    return unpack(tarball, tmp_path_factory.mktemp(request.param)) / below


def console(*args: str) -> subprocess.CompletedProcess:
    """The console script's entry point (pensieve.cli:console) in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = "import sys; from pensieve.cli import console; sys.argv[0] = 'pensieve'; console()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=env, timeout=120)


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "--csv"])
@pytest.mark.parametrize("command", ["containers", "images", "volumes"])
def test_console_writes_what_main_writes(graphroot: Path, command: str, fmt: str) -> None:
    assert gc.isenabled()
    code, out, err = run_cli(command, str(graphroot), fmt)
    assert gc.isenabled()  # main() in a library: the collector is on again afterwards
    proc = console(command, str(graphroot), fmt)
    assert proc.returncode == code
    assert proc.stdout.decode() == out
    assert proc.stderr.decode() == err
    if command == "containers":
        assert out.count("podman") >= 3  # the capture's containers were listed


def test_console_on_a_missing_source(tmp_path: Path) -> None:
    """An error keeps its exit code and message."""
    missing = console("containers", str(tmp_path / "nothing"), "--json")
    code, out, err = run_cli("containers", str(tmp_path / "nothing"), "--json")
    assert missing.returncode == code == 3
    assert missing.stderr.decode() == err and missing.stdout.decode() == out == ""


def test_tar_splits_from_one_listing_equal_one_lookup_each(graphroot: Path, monkeypatch) -> None:
    ev = DirectoryEvidence(str(graphroot))
    fast_problems: list = []
    fast = storage.read_layers(ev, "/", fast_problems)
    assert any(layer.tar_split for layer in fast.values())  # image layers have one
    assert any(layer.tar_split is None for layer in fast.values())  # containers' own layers not

    def refuse(path: str) -> list[str]:
        raise EvidenceError(f"listing refused: {path}")

    asked: list[str] = []
    real_is_file = ev.is_file
    monkeypatch.setattr(ev, "listdir", refuse)
    monkeypatch.setattr(ev, "is_file", lambda p: asked.append(p) or real_is_file(p))
    slow_problems: list = []
    slow = storage.read_layers(ev, "/", slow_problems)
    assert slow == fast and slow_problems == fast_problems
    assert len(asked) == len(fast)  # the slow road: one lookup per layer


def test_containers_without_seccomp_rules_equal_with_them(graphroot: Path, monkeypatch) -> None:
    """libpod's configs are kept without their seccomp rules (libpod._drop_seccomp_rules): every
    record of the host is what it is with the rules kept."""
    from pensieve.engines.podman import PodmanHost, libpod
    from pensieve.records import to_dict

    def records(host: PodmanHost) -> list:
        return [to_dict(host.containers()), to_dict(host.images()), to_dict(host.volumes())]

    lean = PodmanHost(DirectoryEvidence(str(graphroot)))
    kept = [c.config.value for c in lean.roots[0].state.containers.values()]
    seccomp = [c["spec"]["linux"]["seccomp"] for c in kept if "seccomp" in c["spec"].get("linux", {})]
    assert seccomp and all("syscalls" not in s and s.get("defaultAction") for s in seccomp)
    monkeypatch.setattr(libpod, "_drop_seccomp_rules", lambda config: None)
    whole = PodmanHost(DirectoryEvidence(str(graphroot)))
    whole_kept = [c.config.value for c in whole.roots[0].state.containers.values()]
    assert any("syscalls" in c["spec"]["linux"].get("seccomp", {}) for c in whole_kept)
    assert records(lean) == records(whole)
    assert lean.problems == whole.problems
    assert [p.pod_of(c) for p, c in ((lean, c) for c in lean.containers())] == [
        whole.pod_of(c) for c in whole.containers()
    ]
