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
    "container_diff",
    "diff",
    "live_cgroups",
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
    return LayeredView(host.evidence, layers, problems=host.problems)  # refused redirects land there


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


def live_cgroups(
    proc: str = "/proc",
    roots: list[str] | None = None,
    containers: list[str] | None = None,
    cgroupfs: str = "/sys/fs/cgroup",
) -> list:
    """Per running container of the host at PROC: memory, CPU, pids and IO from its cgroup (v1 or
    v2), named from the engine records of ROOTS (default ``/``), only CONTAINERS when given
    (ids, names, ``ns/pod/container``): a list of pensieve.records.live.CgroupUsage."""
    from pensieve.live.cgroups import live_cgroups as read_cgroups
    from pensieve.live.cgroups import wanted_ids
    from pensieve.live.context import LiveContext

    ctx = LiveContext(proc, roots)
    try:
        return read_cgroups(ctx, wanted_ids(ctx, containers), cgroupfs)
    finally:
        ctx.close()
