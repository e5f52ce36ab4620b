"""Inventory commands: data roots, containers, images, an image's history, volumes, a container's log."""

from __future__ import annotations

import sys

from pensieve.commands.common import SOURCE, Commands, arg, err, full_ids, is_archive, open_host, short
from pensieve.output import columns
from pensieve.output.text import printable
from pensieve.records import Container, HistoryStep, Image, LogLine, Problem, Volume
from pensieve.times import iso_ns

COMMANDS = Commands()
command = COMMANDS.command
add_parser = COMMANDS.add_parser


def _listing(o, host, records, spec, record_type: type | None, title: str | None = None) -> list:
    """RECORDS in the format asked (a table of SPEC; RECORD_TYPE gives an empty CSV its header);
    HOST's problems."""
    from pensieve.output.render import emit

    emit(records, o.fmt, spec, title=title, record_type=record_type)
    return host.problems


@command("roots", "engine roots (Docker, containerd, Podman) found in SOURCE and how they were found", SOURCE)
def cmd_roots(o):
    """Every engine root found in SOURCE: Docker data roots (layout, storage drivers), containerd
    roots (meta.db schema version, snapshotters, namespaces), Podman graphroots (libpod state kind,
    storage drivers), and how each was found."""
    from pensieve.engines.discover import engine_hosts, root_rows

    host = open_host(o.source)
    if is_archive(host):
        rows = [{"path": host.source, "layout": host.layout, "drivers": [], "found": "image archive"}]
    elif any(h.engine in ("containerd", "podman") for h in engine_hosts(host)):
        return _listing(o, host, root_rows(host), columns.roots(engines=True), None)
    else:
        rows = [
            {"path": r.path, "layout": r.layout, "drivers": r.drivers(), "found": r.how_found}
            for r in host.roots
        ]
    return _listing(o, host, rows, columns.roots(), None)


@command("containers", "every container: identity, image, state, settings, mounts, layers", SOURCE)
def cmd_containers(o):
    """Every container: id, name, image, state (with exit code, OOM), times, command, env, labels,
    ports, mounts, networks, risky settings, log driver and path, storage driver and layer chain."""
    host = open_host(o.source)
    cs = host.containers()
    return _listing(o, host, cs, columns.containers(full_ids(o)), Container, title=f"{len(cs)} containers")


@command("images", "every image: tags, digests, created, config, layers", SOURCE)
def cmd_images(o):
    """Every image (build-step images included): tags, digests, created, config, diff ids, chain
    ids, cache ids, sizes."""
    host = open_host(o.source)
    imgs = host.images()
    parents = {i.parent for i in imgs if i.parent}
    return _listing(o, host, imgs, columns.images(full_ids(o), parents), Image, title=f"{len(imgs)} images")


@command("history", "an image's build history aligned to its layers", SOURCE, arg("image", metavar="IMAGE"))
def cmd_history(o):
    """An image's build history, each step aligned to the layer it produced."""
    host = open_host(o.source)
    img = host.image(o.image)
    return _listing(
        o,
        host,
        img.history,
        columns.history(full_ids(o)),
        HistoryStep,
        title=f"history of {short(img.id)} {' '.join(img.tags)}",
    )


@command("volumes", "volumes, their data and the containers mounting them", SOURCE)
def cmd_volumes(o):
    """Named and anonymous volumes, their data and the containers that mount them."""
    host = open_host(o.source)
    vols = host.volumes()
    return _listing(o, host, vols, columns.volumes(full_ids(o)), Volume)


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
    import posixpath

    from pensieve.engines.docker.logs import log_files, read_logs
    from pensieve.output.render import emit

    host = open_host(o.source)
    c = host.container(o.container)
    problems = list(host.problems)
    if c.engine in ("containerd", "cri-o") and (c.log_driver == "cri" or c.pod_name):
        from pensieve.engines.containerd.cri import cri_log_files, read_cri_logs

        files = cri_log_files(host.evidence, c)
        if not files:
            err(f"no CRI log files for {short(c.id)} (recorded {c.log_path or 'nowhere'})", "33")
        lines = read_cri_logs(host.evidence, c.id, files, problems)
    elif c.engine == "containerd":
        # outside CRI containerd writes no log: the task's stdio is the client's (ctr's terminal,
        # its fifos, or the --log-uri binary or file it named), none of it in containerd's root
        where = c.config_path or c.id
        note = f"the logs of {c.id} are not in files: containerd keeps none for a container started "
        note += "outside CRI (its output went to the client that started it: ctr's terminal or --log-uri)"
        problems.append(Problem(where, note, c.id))
        lines = iter(())
    elif c.engine == "podman":
        from pensieve.engines.podman.logs import podman_log_files, read_podman_logs

        before = len(problems)
        files = podman_log_files(host.evidence, c, problems)
        if not files and len(problems) == before:
            err(f"no k8s-file log for {short(c.id)} (recorded {c.log_path or 'nowhere'})", "33")
        lines = read_podman_logs(host.evidence, c, files, problems)
    else:
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
