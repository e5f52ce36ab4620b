"""The library behind every CLI command, for scripts and notebooks.

>>> from pensieve import api
>>> host = api.open_docker("/mnt/evidence")        # a host root or a data root
>>> for c in host.containers(): print(c.name, c.state)
>>> changes = api.diff(host, "web").changes
>>> api.whence(host, "/var/lib/docker/overlay2/<id>/diff/tmp/x")
"""

from __future__ import annotations

from pensieve.engines.base import Host
from pensieve.engines.docker import DockerHost, LookupFailed
from pensieve.evidence import open_evidence
from pensieve.filesystem.diff import DiffResult, container_diff, recover
from pensieve.filesystem.layered import LayeredView
from pensieve.filesystem.whence import whence as docker_whence
from pensieve.records import Attribution, Container, Image

__all__ = [
    "DockerHost",
    "LookupFailed",
    "collect",
    "collect_verify",
    "container_diff",
    "diff",
    "live_cgroups",
    "live_net",
    "live_ps",
    "live_watch",
    "open_docker",
    "open_host",
    "recover",
    "target_view",
    "view",
    "whence",
]


def open_host(source: str) -> Host:
    """Every engine root in SOURCE (Docker data roots, containerd roots), as one Host."""
    from pensieve.engines.discover import open_engines

    return open_engines(open_evidence(source))


def whence(host: Host, path: str) -> Attribution:
    """Which layer, images and containers an evidence path belongs to (the engine's own
    attribution where it has one, as containerd does; Docker's otherwise)."""
    own = getattr(host, "whence", None)
    if own is not None:
        return own(path)
    return docker_whence(host, path)


def open_docker(source: str) -> DockerHost:
    """Every Docker data root in SOURCE (a directory: live /, mounted image, copied data root)."""
    return DockerHost(open_evidence(source))


def resolve_target(host: Host, ref: str) -> Container | Image:
    """A container (by id, prefix or name) or, failing that, an image (id, tag, digest)."""
    try:
        return host.container(ref)
    except LookupFailed as first:
        try:
            return host.image(ref)
        except LookupFailed:
            raise first from None


def view(host: Host, target: Container | Image) -> LayeredView:
    """The merged filesystem of a container (image + init + RW layers) or of an image."""
    if isinstance(target, Container):
        layers = target.layers
    else:
        layers = host.image_layers(target)
    if not layers:
        raise LookupFailed(f"no layers known for {target.id}")
    owners = host.owner_maps(target, layers)  # a user namespace's ids (rootless Podman)
    # refused redirects land in problems
    return LayeredView(host.evidence, layers, problems=host.problems, owners=owners)


def target_view(host: Host, ref: str) -> tuple[Container | Image, LayeredView]:
    target = resolve_target(host, ref)
    return target, view(host, target)


def diff(host: Host, ref: str, hash_files: bool = True) -> DiffResult:
    """Changes of a container's RW layer against its image."""
    c = host.container(ref)
    if not c.layers or c.layers[-1].role != "rw" or c.layers[-1].path is None:
        raise LookupFailed(
            f"container {c.id[:12]} has no readable RW layer: {'; '.join(p.message for p in c.problems)}"
        )
    result = container_diff(host.evidence, c.layers, hash_files)
    result.changes = host.diff_filter(c, result.changes)
    return result


def live_watch(
    proc: str = "/proc",
    roots: list[str] | None = None,
    containers: list[str] | None = None,
    interval: float = 1.0,
    duration: float | None = None,
    out: str | None = None,
    refresh: float = 10.0,
    unix: bool = False,
) -> list:
    """``live watch``: poll PROC every INTERVAL seconds for DURATION (None: until ^C), writing one
    JSON event a line to OUT (through the output sink) or standard output; UNIX follows unix
    sockets too; the problems."""
    import sys

    from pensieve.live.context import LiveContext
    from pensieve.live.watch import watch
    from pensieve.output.render import dumps
    from pensieve.output.sink import OutputSink
    from pensieve.records import to_dict

    ctx = LiveContext(proc, roots)
    wanted = ctx.wanted(containers)
    sink = written = None
    if out is not None:
        sink = OutputSink(out, [*ctx.roots, proc] if ctx.roots != ["/"] else [proc], kind="file")
        written = sink.create()

    def emit(events) -> None:
        text = "".join(dumps(to_dict(e), indent=None) + "\n" for e in events)
        if not text:
            return
        if written is not None:
            written.write(text.encode())
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    try:
        watch(ctx, emit, wanted, interval=interval, duration=duration, refresh=refresh, unix=unix)
    except KeyboardInterrupt:
        pass  # ^C ends a watch: what was seen is written
    finally:
        if written is not None:
            written.close()
        if sink is not None:
            sink.close()
        ctx.close()
    return ctx.problems


def live_net(proc: str = "/proc", roots: list[str] | None = None, containers: list[str] | None = None):
    """``live net``: (every socket of the live host at PROC, joined to its processes and to the
    containers the engine records of ROOTS name, the problems met); CONTAINERS (ids, prefixes,
    names, Kubernetes names) keeps those containers' sockets only."""
    from pensieve.live.context import LiveContext
    from pensieve.live.sockets import live_sockets

    ctx = LiveContext(proc, roots)
    try:
        sockets = live_sockets(ctx, ctx.wanted(containers))
        return sockets, list(ctx.problems)
    finally:
        ctx.close()


def live_ps(
    proc: str = "/proc",
    roots: list[str] | None = None,
    containers: list[str] | None = None,
    hash_exe: bool = True,
) -> tuple[list, list]:
    """``pensieve live ps``: (every process of the live host at PROC, grouped by container -- containers
    by name, then the host's -- and the problems met).  ROOTS are the host roots or data roots whose
    engine records name the containers (default ``/``; [] reads none); CONTAINERS keeps only those
    (ids or prefixes, names, Kubernetes ns/pod/container; LookupFailed when one names nothing)."""
    from pensieve.errors import EvidenceError
    from pensieve.live.context import LiveContext, is_root
    from pensieve.live.processes import live_processes, proc_problems
    from pensieve.live.procfs import ProcessGone, Unreadable

    ctx = LiveContext(proc, roots)
    try:
        ctx.procfs.boot_time_ns()
    except (ProcessGone, Unreadable) as exc:
        raise EvidenceError(
            f"{proc} is not a proc filesystem ({exc}: no readable stat with a btime line)"
        ) from None
    try:
        wanted = None
        if containers:
            wanted = set()
            for ref in containers:
                ids = ctx.matches(ref)
                if not ids:
                    raise LookupFailed(f"no container matches {ref!r}")
                wanted |= ids
        processes = live_processes(ctx, wanted, hash_exe)
    finally:
        ctx.close()
    processes.sort(key=_live_group)
    return processes, [*ctx.problems, *proc_problems(processes, privileged=is_root())]


def _live_group(p) -> tuple:
    """Containers (by name, else id; a monitor beside its container) before the host, by pid within."""
    if p.container_id is None:
        return (1, "", p.pid)
    return (0, p.pod or "", p.container_name or "", p.container_id, p.pid)


def collect(ref: str | None, out: str, roots: list[str] | None = None, proc: str = "/proc", **options):
    """Acquire the running container REF (None with ``every=True``: each running one) from the
    host's files of ROOTS into the bundle OUT (:func:`pensieve.collect.collect`; options:
    ``every``, ``checkpoint``); returns the bundles written and the problems met."""
    from pensieve.collect import collect as collect_bundle

    return collect_bundle(ref, out, roots=roots, proc=proc, **options)


def collect_verify(bundle: str) -> list[dict[str, str]]:
    """Every file of the bundle directory BUNDLE checked against its manifest, and the manifest
    against its hash: ``[{"path", "status", "detail"}]``, status ok | changed | missing | extra."""
    from pensieve.collect import verify_bundle

    return verify_bundle(bundle)


def live_cgroups(
    proc: str = "/proc",
    roots: list[str] | None = None,
    containers: list[str] | None = None,
    cgroupfs: str = "/sys/fs/cgroup",
) -> tuple[list, list]:
    """``live cgroups``: (per running container of the host at PROC, its memory, CPU, pids and IO
    from its cgroup (v1 or v2) as pensieve.records.live.CgroupUsage, named from the engine records
    of ROOTS (default ``/``); the problems met); CONTAINERS (ids, names, ``ns/pod/container``)
    keeps those containers only."""
    from pensieve.live.cgroups import live_cgroups as read_cgroups
    from pensieve.live.context import LiveContext

    ctx = LiveContext(proc, roots)
    try:
        usages = read_cgroups(ctx, ctx.wanted(containers), cgroupfs)
        return usages, ctx.problems + [p for u in usages for p in u.problems]
    finally:
        ctx.close()
