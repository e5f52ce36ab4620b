"""``verify``: every image layer against its digest (host: rebuilt from its directory and tar-split;
archive: its blob).  Exit 6 when something is tampered.
"""

from __future__ import annotations

from pensieve.commands.common import (
    SOURCE,
    Commands,
    UsageError,
    arg,
    err,
    full_ids,
    is_archive,
    open_host,
    refuse_inside_evidence,
    short,
)
from pensieve.errors import Tampered
from pensieve.output import columns
from pensieve.records import Finding

COMMANDS = Commands()
command = COMMANDS.command
add_parser = COMMANDS.add_parser


@command(
    "verify",
    "check every image layer (host: rebuilt from its directory; archive: its blob) against its digest",
    SOURCE,
    arg("image", metavar="IMAGE", nargs="?", help="only this image's layers (id, tag, digest)"),
    arg("-v", "--verbose", action="store_true", help="one row per differing path"),
    arg("--images", dest="show_images", action="store_true", help="image verdicts instead of layers"),
    arg("--findings", dest="show_findings", action="store_true", help="findings (for reports and hunting)"),
    arg("--export-layer", metavar="CHAIN_ID", help="write this layer's rebuilt tar stream to --to"),
    arg("--to", metavar="FILE", help="destination of --export-layer (outside the evidence)"),
)
def cmd_verify(o):
    """Rebuild each layer's tar stream from the layer directory and its tar-split record, hash it
    and compare with the diff id; recompute chain ids and image ids. Tampered layers name each
    differing path and how it differs (content, size, mode, owner, missing, added ...).
    On an image archive: each layer blob's sha256 against its descriptor and its uncompressed
    sha256 against the config's diff id, streamed; config digests. Exit 6 when something is
    tampered."""
    from pensieve.engines.docker import LookupFailed
    from pensieve.images import verify_layers as integrity
    from pensieve.output.render import emit

    host = open_host(o.source)
    archive = is_archive(host)
    if archive:
        from pensieve.images import verify_archive as archive_verify
    if o.export_layer:
        if not o.to:
            raise UsageError("--export-layer needs --to FILE")
        chain = o.export_layer if o.export_layer.startswith("sha256:") else "sha256:" + o.export_layer
        try:
            v = _export_layer(host, chain, o.to)
        except LookupError as exc:
            raise LookupFailed(str(exc)) from None
        err(f"layer {chain[7:19]}: {v.status}; {v.stream_size or 0} bytes written to {o.to}", "32")
        return host.problems + _tampered_exit(v.status == integrity.TAMPERED)
    if archive:
        layers = archive_verify.verify_archive(host, o.image)
        want_images = o.show_images or o.show_findings
        images = archive_verify.verify_archive_images(host, layers, o.image) if want_images else []
    elif _containerd_hosts(host):
        layers, images = _verify_engines(host, o.image)
    else:
        layers = integrity.verify_host(host, o.image)
        images = (
            integrity.verify_image_ids(host, layers, o.image) if (o.show_images or o.show_findings) else []
        )
    if o.show_findings:
        emit(
            integrity.findings(layers, images),
            o.fmt,
            columns.findings(),
            record_type=Finding,
        )
    elif o.show_images:
        emit(
            images,
            o.fmt,
            columns.image_verdicts(full_ids(o)),
            record_type=integrity.ImageVerdict,
        )
    elif o.verbose and o.fmt == "table":
        rows = [(v, p) for v in layers for p in v.problems] or []
        emit(
            rows,
            o.fmt,
            columns.layer_problems(full_ids(o)),
            title=f"{len(layers)} layers, {sum(v.status == 'ok' for v in layers)} ok",
        )
    else:
        emit(
            layers,
            o.fmt,
            columns.layer_verdicts(full_ids(o)),
            title=f"{len(layers)} layers, {sum(v.status == 'ok' for v in layers)} ok",
            record_type=integrity.LayerVerdict,
        )
    problems = list(host.problems)
    if any(v.status == integrity.UNVERIFIABLE for v in layers):
        problems += [_unverifiable(v) for v in layers if v.status == integrity.UNVERIFIABLE]
    tampered = any(v.status == integrity.TAMPERED for v in layers) or any(
        i.status == integrity.TAMPERED for i in images
    )
    return problems + _tampered_exit(tampered)


def _containerd_hosts(host) -> list:
    """The containerd roots among HOST's engines."""
    from pensieve.engines.containerd.host import ContainerdHost

    return [h for h in getattr(host, "hosts", [host]) if isinstance(h, ContainerdHost)]


def _verify_engines(host, image_ref: str | None) -> tuple[list, list]:
    """Layer and image verdicts of every engine of HOST (containerd roots among them): Docker's
    data roots rebuilt from their tar-split records, containerd's images from their blobs."""
    from pensieve.engines.containerd import verify as containerd_verify
    from pensieve.engines.docker import DockerHost
    from pensieve.images import verify_layers as integrity

    target = host.image(image_ref) if image_ref else None  # LookupFailed when absent
    layers: list = []
    images: list = []
    for h in getattr(host, "hosts", [host]):
        if isinstance(h, DockerHost) and (target is None or target.engine == "docker"):
            got = integrity.verify_host(h, image_ref)
            layers += got
            images += integrity.verify_image_ids(h, got, image_ref)
        elif h in _containerd_hosts(host) and (target is None or target.data_root == h.root):
            got, imgs = containerd_verify.verify(h, target)
            layers += got
            images += imgs
    return layers, images


def _unverifiable(v):
    from pensieve.records import Problem

    return Problem(
        v.tar_split or v.layer_path or v.chain_id, f"layer {short(v.chain_id)} unverifiable: {v.reason}"
    )


def _export_layer(host, chain: str, dest: str):
    """Write layer CHAIN's tar stream (host: rebuilt from its directory and tar-split; archive:
    its blob, uncompressed) to the new file DEST through an OutputSink (never into the evidence,
    never over a file; DEST.manifest.json holds its size and sha256); returns the layer verdict."""
    from pensieve.images import verify_layers as integrity
    from pensieve.output.sink import OutputSink

    refuse_inside_evidence(host, dest)
    if is_archive(host):
        from pensieve.images.verify_archive import export_layer as write_layer
    else:
        write_layer = integrity.rebuild_layer
    sink = OutputSink(dest, host.boundaries(), kind="file")
    verdict = None
    try:
        with sink.create() as out:
            verdict = write_layer(host, chain, out.write)
    finally:
        status = {"status": verdict.status} if verdict is not None else {"status": "not written"}
        sink.close({"chain_id": chain, **status})
    return verdict


def _tampered_exit(tampered: bool) -> list:
    """The problems a verdict adds: a Tampered marker (exit 6) when something is tampered."""
    return [Tampered()] if tampered else []
