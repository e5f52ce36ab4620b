"""The live part of a bundle: ``live ps``, ``live net`` and ``live cgroups`` of the container, as
the JSON those commands print, read from ``/proc`` and the cgroup filesystem at collection time."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pensieve.records import Problem

__all__ = ["live_snapshot"]

#: (bundle file, module, function) of each view
VIEWS = (
    ("live/ps.json", "pensieve.live.processes", "live_processes"),
    ("live/net.json", "pensieve.live.sockets", "live_sockets"),
    ("live/cgroups.json", "pensieve.live.cgroups", "live_cgroups"),
)


def _view(module: str, name: str) -> Callable | None:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def live_snapshot(
    proc: str, roots: list[str], container_id: str, cgroupfs: str = "/sys/fs/cgroup"
) -> tuple[dict[str, bytes], list[Problem]]:
    """(bundle path -> JSON bytes, problems) of the live views of CONTAINER_ID; a view whose
    module is missing or that fails is a problem, the others are still taken."""
    from pensieve.live.context import LiveContext
    from pensieve.output.render import dumps

    problems: list[Problem] = []
    out: dict[str, bytes] = {}
    ctx = LiveContext(proc, roots)
    try:
        wanted = ctx.matches(container_id) or {container_id}
        processes: Any = None
        for rel, module, name in VIEWS:
            fn = _view(module, name)
            if fn is None:
                problems.append(Problem(rel, f"live snapshot not taken: {module} unavailable", container_id))
                continue
            try:
                if name == "live_processes":
                    records = processes = fn(ctx, wanted=wanted, hash_exe=True)
                elif name == "live_sockets":
                    records = fn(ctx, wanted=wanted, processes=processes)
                else:
                    records = fn(ctx, wanted=wanted, cgroupfs=cgroupfs)
            except Exception as exc:  # noqa: BLE001 - one view failing leaves the others and the bundle
                problems.append(
                    Problem(rel, f"live snapshot failed: {type(exc).__name__}: {exc}", container_id)
                )
                continue
            out[rel] = (dumps(list(records)) + "\n").encode("utf-8", "surrogateescape")
        problems.extend(ctx.problems)
    finally:
        ctx.close()
    return out, problems
