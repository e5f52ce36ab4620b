"""Chain of custody of a bundle: who collected it, when, on which host and boot, with which tool
and command line, and the container's state before and after."""

from __future__ import annotations

import os
import pwd
import socket
import sys
import time
from typing import Any

from pensieve import __version__
from pensieve.records import Container
from pensieve.times import iso_ns

__all__ = ["custody", "container_state", "now"]


def now() -> dict[str, Any]:
    """The current UTC time, as nanoseconds and RFC 3339."""
    ns = time.time_ns()
    return {"ns": ns, "utc": iso_ns(ns)}


def _read(path: str, limit: int = 4096) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace").strip()
    except OSError:
        return None


def _user() -> dict[str, Any]:
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    return {"uid": uid, "euid": os.geteuid(), "user": name, "sudo_user": os.environ.get("SUDO_USER")}


def custody(proc: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Who, where and with what (the start of a collection); PROC is the proc filesystem read."""
    u = os.uname()
    return {
        "collector": _user(),
        "started": now(),
        "hostname": socket.gethostname(),
        "boot_id": _read(os.path.join(proc, "sys/kernel/random/boot_id")),
        "kernel": {"release": u.release, "version": u.version, "machine": u.machine},
        "tool": {"name": "pensieve", "version": __version__, "python": sys.version.split()[0]},
        "command_line": list(sys.argv if argv is None else argv),
        "proc": proc,
    }


def _proc_start(proc: str, pid: int | None) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot): the same value before
    and after means the same process kept running."""
    if not pid:
        return None
    text = _read(os.path.join(proc, str(pid), "stat"))
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def container_state(c: Container, proc: str) -> dict[str, Any]:
    """The container's state as the engine's files say it (and whether its process is there)."""
    return {
        "id": c.id,
        "name": c.name,
        "engine": c.engine,
        "state": c.state,
        "started_at": iso_ns(c.started) if isinstance(c.started, int) else c.started,
        "pid": c.pid,
        "pid_start_ticks": _proc_start(proc, c.pid),
        "read_at": now(),
    }
