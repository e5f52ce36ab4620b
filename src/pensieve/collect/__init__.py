"""``pensieve collect``: acquire running containers without stopping them, into sealed bundles.

Everything is read from the host's files (the engine's data root, ``/proc``, the cgroup
filesystem) through the read-only evidence layer; the daemon is asked nothing, except for the
optional CRIU checkpoint, which only the engine can take (``--leave-running``).  Every file is
written through :class:`pensieve.output.sink.OutputSink` below ``--out``, which is refused when
it is, holds or lies inside the evidence.

Bundle layout (one directory per container)::

    manifest.json          pensieve_bundle: 1; files (path, size, sha256, source: the evidence
                           path copied byte for byte, with its lstat then, or "generated");
                           symlinks; mounts (tree path -> layer tar); layers; container; custody
                           (who: uid, user, SUDO_USER; when: UTC ns and RFC 3339; host name, boot
                           id, kernel, tool and version, command line; the container's id, name,
                           engine, state, start time and pid before and after); problems
    manifest.json.sha256   sha256 of manifest.json (``sha256sum -c`` reads it)
    pensieve-manifest.json the output sink's own record of every file it wrote
    root/                  the engine's files for the container: a reduced Docker data root
                           (pensieve.collect.docker), or Podman's / containerd's files at their
                           evidence paths (pensieve.collect.podman, pensieve.collect.containerd)
    layers/<id>.tar        each layer directory, raw (whiteouts 0/0, opaque xattrs, PAX ns times,
                           SCHILY.xattr.*, numeric owners); layers/<id>.index.json lists its files
    image.tar              the image as ``docker save`` writes it (rebuilt from tar-split records)
    live/{ps,net,cgroups}.json   the live views of the container at collection time
    checkpoint/<name>/     the CRIU images (with --checkpoint), written by the engine (Docker,
                           containerd); checkpoint.tar.gz: Podman's checkpoint export

A bundle is a SOURCE for the offline commands: :mod:`pensieve.evidence.bundle` presents
``root/`` with each layer tar mounted at its layer directory, and the engine (DockerHost,
PodmanHost, ContainerdHost) reads it as it reads the host (``containers``, ``diff``, ``fs``,
``logs``, ``verify``; ``mem ps BUNDLE`` reads the checkpoint).
``verify_bundle`` re-hashes a bundle against its manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pensieve.collect.bundle import BundleWriter, verify_bundle
from pensieve.errors import LookupFailed, NotADataRoot
from pensieve.records import Container, Problem

__all__ = ["CollectResult", "collect", "verify_bundle"]

RUNNING = ("running", "paused", "restarting")
#: engine -> (module, function) collecting one of its containers
COLLECTORS = {
    "docker": ("pensieve.collect.docker", "collect_docker"),
    "podman": ("pensieve.collect.podman", "collect_podman"),
    "containerd": ("pensieve.collect.containerd", "collect_containerd"),
}


@dataclass
class CollectResult:
    """The bundles written (one per container: path, id, name) and the problems met."""

    bundles: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _open(root: str):
    from pensieve.engines.discover import open_engines
    from pensieve.evidence import open_evidence

    return open_engines(open_evidence(root))


def _docker_hosts(host) -> list:
    from pensieve.engines.discover import engine_hosts

    return list(engine_hosts(host))


def _find(hosts: list, ref: str | None, every: bool, problems: list[Problem]) -> list[tuple[Any, Any, str]]:
    """(engine host, container, root) of REF (or of every running container)."""
    found: list[tuple[Any, Any, str]] = []
    for root, host in hosts:
        for h in _docker_hosts(host):
            if every:
                # containerd keeps a task's running state in the shim's memory: "unknown" with a pid
                cs = [c for c in h.containers() if c.state in RUNNING or (c.state == "unknown" and c.pid)]
            else:
                try:
                    cs = [h.container(ref)]
                except LookupFailed:
                    continue
            for c in cs:
                if h.engine not in COLLECTORS:
                    msg = f"collect of {h.engine} containers is not built: not collected"
                    problems.append(Problem(c.config_path or c.id, msg, c.id))
                    continue
                found.append((h, c, root))
    return found


def _state_after(root: str, cid: str, proc: str) -> dict[str, Any]:
    from pensieve.collect.custody import container_state

    try:
        host = _open(root)
    except (NotADataRoot, OSError, ValueError) as exc:
        return {"id": cid, "error": f"data root not read again: {exc}"}
    try:
        for h in _docker_hosts(host):
            try:
                return container_state(h.container(cid), proc)
            except LookupFailed:
                continue
        return {"id": cid, "error": "container gone from the data root"}
    finally:
        host.close()


def _unchanged(before: dict, after: dict) -> bool:
    keys = ("state", "started_at", "pid", "pid_start_ticks")
    return all(before.get(k) == after.get(k) for k in keys)


def _collect_one(
    host, c: Container, root: str, dest: str, boundaries: list[str], opts: dict[str, Any]
) -> tuple[str, list[Problem]]:
    import importlib

    from pensieve.collect.custody import container_state, custody, now
    from pensieve.collect.live_snapshot import live_snapshot

    proc = opts["proc"]
    chain = custody(proc, opts.get("argv"))
    before = container_state(c, proc)
    out = BundleWriter(dest, boundaries)
    try:
        out.problems.extend(c.problems)
        module, name = COLLECTORS[c.engine]
        info = getattr(importlib.import_module(module), name)(host, c, out)
        views, live_problems = live_snapshot(
            proc, opts["roots"], c.id, opts.get("cgroupfs", "/sys/fs/cgroup")
        )
        out.problems.extend(live_problems)
        for rel, data in views.items():
            out.write(rel, data, view=rel.rsplit("/", 1)[-1].split(".")[0])
        if opts.get("checkpoint"):
            from pensieve.collect.checkpoint import checkpoint

            info["checkpoint"] = checkpoint(host, c, out, opts)
        after = _state_after(root, c.id, proc)
        chain.update(finished=now(), container_before=before, container_after=after)
        chain["container_unchanged"] = _unchanged(before, after)
        if not chain["container_unchanged"]:
            out.problems.append(Problem(c.id, "the container's state changed during the collection", c.id))
    except BaseException:
        out.sink.close({"bundle_manifest": None, "incomplete": True})
        raise
    problems = _unique(out.problems)
    doc = {
        "container": {"id": c.id, "name": c.name, "engine": c.engine, "source_root": root},
        **info,
        "custody": chain,
        "problems": [{"source": str(p.source), "message": p.message} for p in problems],
    }
    return out.close(doc), problems


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        key = (str(p.source), p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def collect(
    ref: str | None,
    out: str,
    roots: list[str] | None = None,
    proc: str = "/proc",
    every: bool = False,
    checkpoint: bool = False,
    argv: list[str] | None = None,
    **extra: Any,
) -> CollectResult:
    """Collect the container REF (id, prefix or name; EVERY: each running container, one bundle
    each below OUT) from the engine data of ROOTS (default ``/``) into the bundle OUT.
    LookupFailed when no root holds REF; UsageError when OUT is in the evidence."""
    from pensieve.output.sink import refuse_evidence

    roots = ["/"] if not roots else list(roots)
    result = CollectResult()
    hosts: list[tuple[str, Any]] = []
    try:
        for root in roots:
            try:
                hosts.append((root, _open(root)))
            except NotADataRoot as exc:
                result.problems.append(Problem(root, f"no container engine data: {exc}"))
        # a live host's root "/" holds everything: there its data roots are the evidence
        boundaries = [b for _, h in hosts for b in h.boundaries() if os.path.realpath(b) != "/"]
        boundaries += [r for r in roots if os.path.realpath(r) != "/"]
        refuse_evidence(out, boundaries)
        found = _find(hosts, ref, every, result.problems)
        if not found and not every:
            raise LookupFailed(f"no container {ref!r} in {', '.join(roots)}")
        opts = {"proc": proc, "roots": roots, "checkpoint": checkpoint, "argv": argv, **extra}
        for h, c, root in found:
            dest = out if not every else f"{out.rstrip('/')}/{(c.name or 'c').lstrip('/')}-{c.id[:12]}"
            path, problems = _collect_one(h, c, root, dest, boundaries, opts)
            result.bundles.append({"bundle": path.rsplit("/", 1)[0], "id": c.id, "name": c.name})
            result.problems.extend(problems)
    finally:
        for _, h in hosts:
            h.close()
    return result
