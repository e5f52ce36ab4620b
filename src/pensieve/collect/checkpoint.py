"""``collect --checkpoint``: a CRIU checkpoint of the running container, taken by the engine with
``--leave-running`` (only the engine can freeze and dump its tasks; criu must be on PATH):

* Docker: ``docker checkpoint create --leave-running --checkpoint-dir DIR CONTAINER NAME``
  (moby api/server/router/checkpoint; a daemon started with ``--experimental``): the CRIU
  images in ``checkpoint/<name>/``;
* Podman: ``podman container checkpoint --leave-running --tcp-established --export FILE``
  (podman-container-checkpoint(1)): the archive ``checkpoint.tar.gz`` (config.dump, spec.dump,
  checkpoint/ with the CRIU images, rootfs-diff.tar ...), the layout Kubernetes forensic
  checkpoints use.  The client is ``$PENSIEVE_PODMAN`` (a command line) or ``podman --root
  <graphroot> [--runroot <libpod's run root>]``;
* containerd: ``runc --root <runc root> checkpoint --leave-running --tcp-established
  --image-path DIR <id>`` (runc checkpoint(8)): the CRIU images in ``checkpoint/<name>/``.  The
  runc root is ``$PENSIEVE_RUNC_ROOT``, else the task's ``options.json`` ``root``, else
  containerd's default ``/run/containerd/runc/<namespace>``.

The engine writes into the bundle directory the sink made; pensieve then hashes each file it
wrote into the manifest (``source``: the engine command), so ``collect verify`` and ``mem``
read them like every other file.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shlex
import shutil
import subprocess
import time
from typing import Any

from pensieve.collect.bundle import BundleWriter
from pensieve.evidence import EvidenceError
from pensieve.records import Container, Problem

__all__ = ["checkpoint", "checkpoint_docker"]

TIMEOUT = 600
#: dumps tried before giving up, and the pause between two
ATTEMPTS = 4
RETRY_PAUSE = 0.3
PODMAN_ARCHIVE = "checkpoint.tar.gz"
RUNC_DEFAULT_ROOT = "/run/containerd/runc"


def _hash(path: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _record_file(out: BundleWriter, full: str, rel: str, command: str) -> None:
    size, sha = _hash(full)
    out.files.append({"path": rel, "size": size, "sha256": sha, "source": command})


def _record(out: BundleWriter, top: str, rel_top: str, command: str) -> int:
    """Every file the engine wrote below TOP into the manifest; returns how many."""
    n = 0
    for dirpath, _dirs, files in os.walk(top, followlinks=False):
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            _record_file(out, full, os.path.join(rel_top, os.path.relpath(full, top)), command)
            n += 1
    return n


def _name() -> str:
    return f"pensieve-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def _run(c: Container, out: BundleWriter, argv: list[str], who: str) -> tuple[str, str | None]:
    """(the command line, why it failed or None) of ARGV run to its end; a failed dump is tried
    again (ATTEMPTS in all): CRIU refuses a connection caught half accepted ("in-flight"), a
    race with the container's clients that the engines' CLIs give no flag to skip."""
    command = shlex.join(argv)
    why = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_PAUSE)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.problems.append(Problem(c.id, f"checkpoint not taken: {exc}", c.id))
            return command, str(exc)
        if done.returncode == 0:
            return command, None
        why = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-500:]
        why = f"{who} exited {done.returncode} ({attempt + 1} attempts): {why}"
    out.problems.append(Problem(c.id, f"checkpoint not taken: {why}", c.id))
    return command, why


def _client(env: str, name: str) -> list[str] | None:
    given = os.environ.get(env)
    if given:
        return shlex.split(given)
    found = shutil.which(name)
    return [found] if found else None


def checkpoint_docker(c: Container, out: BundleWriter, opts: dict[str, Any]) -> dict[str, Any] | None:
    """Checkpoint C with ``docker checkpoint create --leave-running`` into ``checkpoint/`` of OUT;
    what the manifest says of it (None, and a problem, when there is no client)."""
    docker = _client("PENSIEVE_DOCKER", "docker")
    if docker is None:
        out.problems.append(Problem(c.id, "checkpoint not taken: no docker client on PATH", c.id))
        return None
    name = _name()
    out.sink.mkdir("checkpoint")
    top = os.path.join(out.path, "checkpoint")
    argv = [*docker, "checkpoint", "create", "--leave-running", "--checkpoint-dir", top, c.id, name]
    command, why = _run(c, out, argv, "docker")
    if why is not None:
        return {"command": command, "status": "failed", "error": why}
    n = _record(out, top, "checkpoint", command)
    return {"command": command, "status": "ok", "name": name, "path": f"checkpoint/{name}", "files": n}


def _podman_client(host, c: Container) -> list[str] | None:
    given = _client("PENSIEVE_PODMAN", "podman")
    if given is None or os.environ.get("PENSIEVE_PODMAN"):
        return given
    graphroot = host.evidence.host_path(c.data_root or "/") or c.data_root
    argv = [*given, "--root", graphroot]
    runroot = host._root(c.data_root).state.runtime.get("run-root")  # libpod's runtime-config key
    return [*argv, "--runroot", runroot] if runroot else argv


def checkpoint_podman(host, c: Container, out: BundleWriter) -> dict[str, Any] | None:
    """Checkpoint C with ``podman container checkpoint --leave-running --export`` into
    ``checkpoint.tar.gz`` of OUT."""
    podman = _podman_client(host, c)
    if podman is None:
        out.problems.append(Problem(c.id, "checkpoint not taken: no podman on PATH", c.id))
        return None
    target = os.path.join(out.path, PODMAN_ARCHIVE)
    argv = [*podman, "container", "checkpoint", "--leave-running", "--tcp-established",
            "--export", target, c.id]  # fmt: skip
    command, why = _run(c, out, argv, "podman")
    if why is not None or not os.path.isfile(target):
        return {"command": command, "status": "failed", "error": why or "no archive written"}
    _record_file(out, target, PODMAN_ARCHIVE, command)
    return {"command": command, "status": "ok", "path": PODMAN_ARCHIVE, "files": 1}


def _runc_root(host, c: Container) -> str:
    given = os.environ.get("PENSIEVE_RUNC_ROOT")
    if given:
        return given
    if host.state is not None:
        from pensieve.engines.containerd.host import TASK_DIRS

        for task_dir in TASK_DIRS:
            options = posixpath.join(host.state, task_dir, c.namespace or "", c.id, "options.json")
            try:
                doc = json.loads(host.evidence.read_bytes(options, 1 << 16))
            except (EvidenceError, OSError, ValueError):  # absent or not JSON: the next guess
                continue
            root = doc.get("root") if isinstance(doc, dict) else None
            if isinstance(root, str) and root.startswith("/"):
                return posixpath.join(root, c.namespace or "")
    return posixpath.join(RUNC_DEFAULT_ROOT, c.namespace or "")


def checkpoint_containerd(host, c: Container, out: BundleWriter) -> dict[str, Any] | None:
    """Checkpoint C's task with ``runc checkpoint --leave-running`` into ``checkpoint/<name>/``."""
    runc = _client("PENSIEVE_RUNC", "runc")
    if runc is None:
        out.problems.append(Problem(c.id, "checkpoint not taken: no runc on PATH", c.id))
        return None
    name = _name()
    out.sink.mkdir(f"checkpoint/{name}")
    out.sink.mkdir(f"checkpoint/{name}.work")
    top = os.path.join(out.path, "checkpoint", name)
    work = os.path.join(out.path, "checkpoint", f"{name}.work")
    argv = [*runc, "--root", _runc_root(host, c), "checkpoint", "--leave-running", "--tcp-established",
            "--image-path", top, "--work-path", work, c.id]  # fmt: skip
    command, why = _run(c, out, argv, "runc")
    if why is not None:
        return {"command": command, "status": "failed", "error": why}
    n = _record(out, top, f"checkpoint/{name}", command)
    if os.path.isdir(work):
        _record(out, work, f"checkpoint/{name}.work", command)
    return {"command": command, "status": "ok", "name": name, "path": f"checkpoint/{name}", "files": n}


def checkpoint(host, c: Container, out: BundleWriter, opts: dict[str, Any]) -> dict[str, Any] | None:
    """C's checkpoint taken by its engine into OUT; what the manifest says of it."""
    if c.engine == "podman":
        return checkpoint_podman(host, c, out)
    if c.engine == "containerd":
        return checkpoint_containerd(host, c, out)
    return checkpoint_docker(c, out, opts)
