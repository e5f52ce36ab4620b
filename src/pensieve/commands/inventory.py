"""Inventory commands: data roots, containers, images, an image's history, volumes, a container's log."""

from __future__ import annotations

import sys

from pensieve.commands.common import (
    SOURCE,
    Spec,
    add_commands,
    arg,
    err,
    is_archive,
    open_host,
    registrar,
    short,
    when,
)
from pensieve.output.text import printable
from pensieve.records import Container, HistoryStep, Image, LogLine, Volume
from pensieve.times import iso_ns

COMMANDS: list[Spec] = []
command = registrar(COMMANDS)


def _state(c) -> str:
    s = c.state
    if s == "exited" and c.exit_code is not None:
        s = f"exited ({c.exit_code})"
    if c.oom_killed:
        s += " OOM-killed"
    return s


@command("roots", "Docker data roots found in SOURCE and how they were found", SOURCE)
def cmd_roots(o):
    """Docker data roots found in SOURCE, their layout and storage drivers, and how they were found."""
    from pensieve.output.render import emit

    host = open_host(o.source)
    if is_archive(host):
        rows = [{"path": host.source, "layout": host.layout, "drivers": [], "found": "image archive"}]
    else:
        rows = [
            {"path": r.path, "layout": r.layout, "drivers": r.drivers(), "found": r.how_found}
            for r in host.roots
        ]
    emit(
        rows,
        o.fmt,
        [
            ("DATA ROOT", lambda r: r["path"]),
            ("LAYOUT", lambda r: r["layout"]),
            ("DRIVERS", lambda r: r["drivers"]),
            ("FOUND BY", lambda r: r["found"]),
        ],
    )
    return host.problems


@command("containers", "every container: identity, image, state, settings, mounts, layers", SOURCE)
def cmd_containers(o):
    """Every container: id, name, image, state (with exit code, OOM), times, command, env, labels,
    ports, mounts, networks, risky settings, log driver and path, storage driver and layer chain."""
    from pensieve.output.render import emit

    host = open_host(o.source)
    cs = host.containers()
    emit(
        cs,
        o.fmt,
        [
            ("CONTAINER", lambda c: short(c.id)),
            ("NAME", lambda c: c.name),
            ("IMAGE", lambda c: c.image or short(c.image_id)),
            ("STATE", _state),
            ("CREATED", lambda c: when(c.created)),
            ("COMMAND", lambda c: " ".join(c.command)[:40]),
            ("RISKS", lambda c: c.risks),
            ("PROBLEMS", lambda c: [p.message for p in c.problems]),
        ],
        title=f"{len(cs)} containers",
        record_type=Container,
    )
    return host.problems


@command("images", "every image: tags, digests, created, config, layers", SOURCE)
def cmd_images(o):
    """Every image (build-step images included): tags, digests, created, config, diff ids, chain
    ids, cache ids, sizes."""
    from pensieve.output.render import emit

    host = open_host(o.source)
    imgs = host.images()
    parents = {i.parent for i in imgs if i.parent}
    emit(
        imgs,
        o.fmt,
        [
            ("IMAGE ID", lambda i: short(i.id)),
            ("TAGS", lambda i: i.tags or ("<none> (build step)" if i.id in parents else "<none>")),
            ("CREATED", lambda i: when(i.created)),
            ("LAYERS", lambda i: len(i.diff_ids)),
            ("SIZE", lambda i: i.size),
            ("CMD", lambda i: " ".join((i.entrypoint or []) + (i.cmd or []))[:40]),
        ],
        title=f"{len(imgs)} images",
        record_type=Image,
    )
    return host.problems


@command("history", "an image's build history aligned to its layers", SOURCE, arg("image", metavar="IMAGE"))
def cmd_history(o):
    """An image's build history, each step aligned to the layer it produced."""
    from pensieve.output.render import emit

    host = open_host(o.source)
    img = host.image(o.image)
    emit(
        img.history,
        o.fmt,
        [
            ("CREATED", lambda s: when(s.created)),
            ("CREATED BY", lambda s: (s.created_by or (f"({s.comment})" if s.comment else ""))[:70]),
            ("LAYER", lambda s: "(empty)" if s.empty_layer else short(s.cache_id)),
            ("DIFF ID", lambda s: short(s.diff_id)),
            ("SIZE", lambda s: s.size),
        ],
        title=f"history of {short(img.id)} {' '.join(img.tags)}",
        record_type=HistoryStep,
    )
    return host.problems


@command("volumes", "volumes, their data and the containers mounting them", SOURCE)
def cmd_volumes(o):
    """Named and anonymous volumes, their data and the containers that mount them."""
    from pensieve.output.render import emit

    host = open_host(o.source)
    vols = host.volumes()
    emit(
        vols,
        o.fmt,
        [
            ("VOLUME", lambda v: v.name if not v.anonymous else short(v.name)),
            ("DRIVER", lambda v: v.driver),
            ("CREATED", lambda v: when(v.created)),
            ("FILES", lambda v: v.file_count),
            ("BYTES", lambda v: v.size),
            ("USED BY", lambda v: [short(c) for c in v.used_by]),
            ("LABELS", lambda v: [f"{k}={x}" for k, x in v.labels.items()]),
        ],
        record_type=Volume,
    )
    return host.problems


@command(
    "logs",
    "a container's log (json-file and local drivers, rotated and compressed files included)",
    SOURCE,
    arg("container", metavar="CONTAINER"),
    arg("--stream", choices=["stdout", "stderr"], help="only this stream"),
)
def cmd_logs(o):
    """A container's log: json-file and local drivers, rotated and compressed files, oldest first."""
    import posixpath

    from pensieve.engines.docker.logs import log_files, read_logs
    from pensieve.output.render import emit

    host = open_host(o.source)
    c = host.container(o.container)
    problems = list(host.problems)
    cdir = posixpath.dirname(c.config_path or "")
    files = log_files(host.evidence, cdir, c.log_path, c.log_driver)
    if not files:
        err(f"no log files for {short(c.id)} (driver {c.log_driver or 'unknown'})", "33")
    lines = read_logs(host.evidence, c.id, files, problems)
    if o.stream:
        lines = (line for line in lines if line.stream == o.stream)
    if o.fmt == "table":
        out = sys.stdout
        for line in lines:
            out.write(f"{iso_ns(line.time) or '':<31} {line.stream or '':<6} {printable(line.message)}\n")
    else:
        emit(lines, o.fmt, record_type=LogLine)
    return problems


def add_parser(subparsers) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    add_commands(subparsers, COMMANDS)
