"""``verify``: every image layer against its digest (host: rebuilt from its directory and tar-split;
archive: its blob).  Exit 6 when something is tampered.
"""

from __future__ import annotations

import functools

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
    arg(
        "--export-layer",
        metavar="CHAIN_ID",
        help="write this layer's tar stream to --to (Docker, Podman: rebuilt from the layer directory "
        "and its tar-split record, as docker/podman save would; containerd and Docker's containerd "
        "store, which keep no tar-split: the layer blob uncompressed, the tar the diff id names, "
        "while its snapshot is compared with it; archive: its blob uncompressed)",
    ),
    arg("--to", metavar="FILE", help="destination of --export-layer (outside the evidence)"),
)
def cmd_verify(o):
    """Rebuild each layer's tar stream from the layer directory and its tar-split record (Docker,
    Podman), hash it and compare with the diff id; recompute chain ids and image ids. containerd
    (and Docker's containerd image store): each blob against its digest, the uncompressed layer
    against the diff id, the snapshot against the layer tar. Tampered layers name each differing
    path and how it differs (content, size, mode, owner, missing, added ...).
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
    want_images = o.show_images or o.show_findings
    if archive:
        layers = archive_verify.verify_archive(host, o.image)
        images = archive_verify.verify_archive_images(host, layers, o.image) if want_images else []
    else:
        target = host.image(o.image) if o.image else None  # LookupFailed when absent
        layers, images = host.verify_layers(target, want_images)
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


def _unverifiable(v):
    from pensieve.records import Problem

    return Problem(
        v.tar_split or v.layer_path or v.chain_id, f"layer {short(v.chain_id)} unverifiable: {v.reason}"
    )


def _export_layer(host, chain: str, dest: str):
    """Write layer CHAIN's tar stream (host: rebuilt from its directory and tar-split; archive:
    its blob, uncompressed) to the new file DEST through an OutputSink (never into the evidence,
    never over a file; DEST.manifest.json holds its size and sha256); returns the layer verdict."""
    from pensieve.output.sink import OutputSink

    refuse_inside_evidence(host, dest)
    if is_archive(host):
        from pensieve.images.verify_archive import export_layer

        write_layer = functools.partial(export_layer, host)
    else:
        write_layer = host.export_layer
    sink = OutputSink(dest, host.boundaries(), kind="file")
    verdict = None
    try:
        with sink.create() as out:
            verdict = write_layer(chain, out.write)
    finally:
        status = {"status": verdict.status} if verdict is not None else {"status": "not written"}
        sink.close({"chain_id": chain, **status})
    return verdict


def _tampered_exit(tampered: bool) -> list:
    """The problems a verdict adds: a Tampered marker (exit 6) when something is tampered."""
    return [Tampered()] if tampered else []
