"""Inventory commands: data roots, containers, images, an image's history, volumes, a container's log."""

from __future__ import annotations

import sys

from pensieve.commands.common import SOURCE, Commands, arg, err, full_ids, is_archive, open_host, short
from pensieve.records import Container, HistoryStep, Image, LogLine, Volume
from pensieve.times import iso_ns

COMMANDS = Commands()
command = COMMANDS.command
add_parser = COMMANDS.add_parser


def listing(fn):
    """Mark FN a listing: cli.run holds the cycle collector off while it runs (its records are
    kept to the end and hold no cycles)."""
    fn.holds_gc = True
    return fn


def _listing(o, host, records, spec, record_type: type | None, title: str | None = None) -> list:
    """RECORDS in the format asked (a table of the columns SPEC(pensieve.output.columns) gives,
    asked only for a table; RECORD_TYPE gives an empty CSV its header); HOST's problems."""
    from pensieve.output.render import emit

    columns = None
    if o.fmt == "table":
        from pensieve.output import columns as column_specs

        columns = spec(column_specs)
    emit(records, o.fmt, columns, title=title, record_type=record_type)
    return host.problems


def _whole_disk_image(source: str) -> bool:
    """Whether SOURCE is a disk image named without a volume (``disk.img``, not ``disk.img@2``)."""
    import os

    from pensieve.evidence.disk_images import is_disk_image, split_spec, volume_path
    from pensieve.evidence.sniff import source_kind

    if os.path.isdir(source) or source_kind(source) != "disk" or not os.path.exists(source):
        return False
    base, part, off = split_spec(source)
    return part is None and off is None and volume_path(source) is None and is_disk_image(source)


@command("roots", "engine roots (Docker, containerd, Podman) found in SOURCE and how they were found", SOURCE)
def cmd_roots(o):
    """Every engine root found in SOURCE: Docker data roots (layout, storage drivers), containerd
    roots (meta.db schema version, snapshotters, namespaces), Podman graphroots (libpod state kind,
    storage drivers), and how each was found."""
    from pensieve.engines.discover import engine_hosts, root_rows, volume_columns, volume_rows

    if _whole_disk_image(o.source):  # every volume of the disk, and what is on each
        rows, problems = volume_rows(o.source)
        from pensieve.output.render import emit

        emit(rows, o.fmt, volume_columns(), title=None, record_type=None)
        return problems
    host = open_host(o.source)
    if is_archive(host):
        rows = [{"path": host.source, "layout": host.layout, "drivers": [], "found": "image archive"}]
    elif any(h.engine in ("containerd", "podman") for h in engine_hosts(host)):
        return _listing(o, host, root_rows(host), lambda c: c.roots(engines=True), None)
    else:
        rows = [
            {"path": r.path, "layout": r.layout, "drivers": r.drivers(), "found": r.how_found}
            for r in host.roots
        ]
    return _listing(o, host, rows, lambda c: c.roots(), None)


@command("containers", "every container: identity, image, state, settings, mounts, layers", SOURCE)
@listing
def cmd_containers(o):
    """Every container: id, name, image, state (with exit code, OOM), times, command, env, labels,
    ports, mounts, networks, risky settings, log driver and path, storage driver and layer chain."""
    host = open_host(o.source)
    cs = host.containers()
    return _listing(
        o, host, cs, lambda c: c.containers(full_ids(o)), Container, title=f"{len(cs)} containers"
    )


@command("images", "every image: tags, digests, created, config, layers", SOURCE)
@listing
def cmd_images(o):
    """Every image (build-step images included): tags, digests, created, config, diff ids, chain
    ids, cache ids, sizes."""
    host = open_host(o.source)
    imgs = host.images()
    parents = {i.parent for i in imgs if i.parent}
    return _listing(
        o, host, imgs, lambda c: c.images(full_ids(o), parents), Image, title=f"{len(imgs)} images"
    )


@command("history", "an image's build history aligned to its layers", SOURCE, arg("image", metavar="IMAGE"))
def cmd_history(o):
    """An image's build history, each step aligned to the layer it produced."""
    host = open_host(o.source)
    img = host.image(o.image)
    return _listing(
        o,
        host,
        img.history,
        lambda c: c.history(full_ids(o)),
        HistoryStep,
        title=f"history of {short(img.id)} {' '.join(img.tags)}",
    )


@command("volumes", "volumes, their data and the containers mounting them", SOURCE)
@listing
def cmd_volumes(o):
    """Named and anonymous volumes, their data and the containers that mount them."""
    host = open_host(o.source)
    vols = host.volumes()
    return _listing(o, host, vols, lambda c: c.volumes(full_ids(o)), Volume)


@command(
    "logs",
    "a container's log (json-file, local, CRI, Podman k8s-file; rotated and compressed files included)",
    SOURCE,
    arg("container", metavar="CONTAINER"),
    arg("--stream", choices=["stdout", "stderr"], help="only this stream"),
)
def cmd_logs(o):
    """A container's log: Docker's json-file and local drivers, a CRI container's log
    (/var/log/pods, partial lines joined), a Podman container's k8s-file log; rotated and
    compressed files, oldest first."""
    from pensieve.engines.logfiles import container_logs
    from pensieve.output.render import emit

    host = open_host(o.source)
    c = host.container(o.container)
    problems = list(host.problems)
    lines, missing = container_logs(host, c, problems)
    if missing:
        err(f"{missing} for {short(c.id)}", "33")
    if o.stream:
        lines = (line for line in lines if line.stream == o.stream)
    if o.fmt == "table":
        from pensieve.output.text import printable

        out = sys.stdout
        for line in lines:
            out.write(f"{iso_ns(line.time) or '':<31} {line.stream or '':<6} {printable(line.message)}\n")
    else:
        emit(lines, o.fmt, record_type=LogLine)
    return problems
