"""``collect --checkpoint``: a CRIU checkpoint of the running container, taken by the engine with
``--leave-running`` (only the engine can freeze and dump its tasks): ``docker checkpoint create
--leave-running --checkpoint-dir DIR CONTAINER NAME`` (moby api/server/router/checkpoint; needs
a daemon started with ``--experimental`` and criu on its PATH).

The engine writes the CRIU images into ``checkpoint/`` of the bundle (a directory the sink made);
pensieve then hashes each of them into the manifest (``source``: the engine command), so
``collect verify`` and ``mem`` read them like every other file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from typing import Any

from pensieve.collect.bundle import BundleWriter
from pensieve.records import Container, Problem

__all__ = ["checkpoint_docker"]

TIMEOUT = 600


def _docker() -> str | None:
    return os.environ.get("PENSIEVE_DOCKER") or shutil.which("docker")


def _hash(path: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _record(out: BundleWriter, top: str, rel_top: str, command: str) -> int:
    """Every file the engine wrote below TOP into the manifest; returns how many."""
    n = 0
    for dirpath, _dirs, files in os.walk(top, followlinks=False):
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            size, sha = _hash(full)
            rel = os.path.join(rel_top, os.path.relpath(full, top))
            out.files.append({"path": rel, "size": size, "sha256": sha, "source": command})
            n += 1
    return n


def checkpoint_docker(c: Container, out: BundleWriter, opts: dict[str, Any]) -> dict[str, Any] | None:
    """Checkpoint C with ``docker checkpoint create --leave-running`` into ``checkpoint/`` of OUT;
    what the manifest says of it (None, and a problem, when the engine could not)."""
    docker = _docker()
    if docker is None:
        out.problems.append(Problem(c.id, "checkpoint not taken: no docker client on PATH", c.id))
        return None
    name = f"pensieve-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    out.sink.mkdir("checkpoint")
    top = os.path.join(out.path, "checkpoint")
    argv = [docker, "checkpoint", "create", "--leave-running", "--checkpoint-dir", top, c.id, name]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        out.problems.append(Problem(c.id, f"checkpoint not taken: {exc}", c.id))
        return None
    command = " ".join(argv)
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip()[-500:]
        msg = f"checkpoint not taken: docker exited {done.returncode}: {why}"
        out.problems.append(Problem(c.id, msg, c.id))
        return {"command": command, "status": "failed", "error": why}
    n = _record(out, top, "checkpoint", command)
    return {"command": command, "status": "ok", "name": name, "path": f"checkpoint/{name}", "files": n}
