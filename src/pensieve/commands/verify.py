"""``verify``: every image layer against its digest (host: rebuilt from its directory and tar-split;
archive: its blob).  Exit 6 when something is tampered.
"""

from __future__ import annotations

from pensieve.commands.common import (
    SOURCE,
    Spec,
    UsageError,
    add_commands,
    arg,
    err,
    is_archive,
    open_host,
    refuse_inside_evidence,
    registrar,
    short,
)
from pensieve.errors import Tampered
from pensieve.records import Finding

COMMANDS: list[Spec] = []
command = registrar(COMMANDS)


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
        refuse_inside_evidence(host, o.to)
        chain = o.export_layer if o.export_layer.startswith("sha256:") else "sha256:" + o.export_layer
        try:
            with open(o.to, "wb") as fh:
                if archive:
                    v = archive_verify.export_layer(host, chain, fh.write)
                else:
                    v = integrity.rebuild_layer(host, chain, fh.write)
        except LookupError as exc:
            raise LookupFailed(str(exc)) from None
        err(f"layer {chain[7:19]}: {v.status}; {v.stream_size or 0} bytes written to {o.to}", "32")
        return host.problems + _tampered_exit(v.status == integrity.TAMPERED)
    if archive:
        layers = archive_verify.verify_archive(host, o.image)
        want_images = o.show_images or o.show_findings
        images = archive_verify.verify_archive_images(host, layers, o.image) if want_images else []
    else:
        layers = integrity.verify_host(host, o.image)
        images = (
            integrity.verify_image_ids(host, layers, o.image) if (o.show_images or o.show_findings) else []
        )
    if o.show_findings:
        emit(
            integrity.findings(layers, images),
            o.fmt,
            [
                ("SEVERITY", lambda f: f.severity),
                ("TITLE", lambda f: f.title),
                ("SUBJECT", lambda f: f.subject),
            ],
            record_type=Finding,
        )
    elif o.show_images:
        emit(
            images,
            o.fmt,
            [
                ("STATUS", lambda i: i.status),
                ("IMAGE ID", lambda i: short(i.id)),
                ("TAGS", lambda i: i.tags),
                ("PROBLEMS", lambda i: [f"{p.kind}: {p.detail}" for p in i.problems]),
            ],
            record_type=integrity.ImageVerdict,
        )
    elif o.verbose and o.fmt == "table":
        rows = [(v, p) for v in layers for p in v.problems] or []
        emit(
            rows,
            o.fmt,
            [
                ("LAYER", lambda r: short(r[0].chain_id)),
                ("STATUS", lambda r: r[0].status),
                ("PATH", lambda r: r[1].path or "(layer)"),
                ("KIND", lambda r: r[1].kind),
                ("EXPECTED", lambda r: r[1].expected),
                ("ACTUAL", lambda r: r[1].actual),
            ],
            title=f"{len(layers)} layers, {sum(v.status == 'ok' for v in layers)} ok",
        )
    else:
        emit(
            layers,
            o.fmt,
            [
                ("STATUS", lambda v: v.status),
                ("CHAIN ID", lambda v: short(v.chain_id)),
                ("DIFF ID", lambda v: short(v.diff_id)),
                ("ENTRIES", lambda v: v.entries),
                ("MIB", lambda v: round((v.stream_size or 0) / 1048576, 1)),
                ("PROBLEMS", lambda v: _kinds(v.problems)),
                ("IMAGES", lambda v: _more(v.images)),
                ("CONTAINERS", lambda v: _more(v.containers)),
                ("REASON", lambda v: v.reason),
            ],
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


def _kinds(problems) -> str:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return ", ".join(f"{k} {n}" if n > 1 else k for k, n in counts.items())


def _more(items: list[str]) -> str:
    return "" if not items else items[0] + (f" +{len(items) - 1}" if len(items) > 1 else "")


def _unverifiable(v):
    from pensieve.records import Problem

    return Problem(
        v.tar_split or v.layer_path or v.chain_id, f"layer {short(v.chain_id)} unverifiable: {v.reason}"
    )


def _tampered_exit(tampered: bool) -> list:
    """The problems a verdict adds: a Tampered marker (exit 6) when something is tampered."""
    return [Tampered()] if tampered else []


def add_parser(subparsers) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    add_commands(subparsers, COMMANDS)
