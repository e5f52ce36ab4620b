"""Integrity of an image archive: every layer blob hashed and checked against what the archive
itself records, streaming (one 1 MiB read buffer and a decompressor per layer; nothing of a layer
is held in memory, nothing is spooled: the decompressors' buffers are bounded whatever the
compression ratio, so a compression bomb costs time, not memory or disk).

Per layer blob:

* the blob's sha256 against its descriptor digest (OCI manifest) or its content-addressed name
  (``blobs/sha256/<hex>``), and its size against the descriptor's;
* the sha256 of the uncompressed tar stream (gzip / zstd / xz / bzip2 sniffed from the bytes)
  against the diff id the image config lists for it.

A mismatch is ``tampered`` with a problem naming the blob (kind ``digest`` or ``size``); a blob
that is absent, cut short by a truncated archive, or does not decompress (while its digest is not
known to be wrong) is ``unverifiable`` with the reason; the others go on.  Per image: the config's
sha256 against the id the archive names it by, manifest digests, layer counts.  The verdicts are
the ``LayerVerdict``/``ImageVerdict`` records of ``pensieve verify`` on a host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO

from pensieve.evidence import EvidenceError
from pensieve.formats.compression import DecompressError, decompress_stream, sniff
from pensieve.formats.tar import TarCounter
from pensieve.images.archive import ArchiveHost, Blob
from pensieve.images.verify_layers import Sink, image_status
from pensieve.records import integrity as verdicts

_CHUNK = 1 << 20

_FLAT = ("docker-export", "rootfs-tar")


def _blob_reader(host: ArchiveHost, blob: Blob) -> BinaryIO:
    """The blob's bytes as stored: the archive file itself for a flat export, else the member."""
    if host.kind in _FLAT:  # the layer is the archive file itself, compressed or not
        return host.open_flat()
    return host.open_blob(blob.path or "")


class _Hashes:
    """One pass over a blob: sha256 of its bytes as stored and of its uncompressed tar stream,
    the stream's entries, and why it stopped decompressing (the rest still counts for the blob)."""

    def __init__(self) -> None:
        self.outer = hashlib.sha256()
        self.inner = hashlib.sha256()
        self.counter = TarCounter()
        self.size = 0
        self.inner_size = 0
        self.error: str | None = None


def _hash_pass(fh: BinaryIO, sink: Sink | None) -> _Hashes:
    """Hash FH streaming (EvidenceError / OSError when it cannot be read)."""
    h = _Hashes()
    head = fh.read(_CHUNK)
    kind = sniff(head)
    pending = [head]

    def read(n: int) -> bytes:
        data = pending.pop() if pending else fh.read(n)
        h.outer.update(data)
        h.size += len(data)
        return data

    try:
        stream = decompress_stream(read, kind) if kind else iter(lambda: read(_CHUNK), b"")
        for block in stream:
            h.inner.update(block)
            h.inner_size += len(block)
            h.counter.feed(block)
            if sink is not None:
                sink(block)
    except DecompressError as exc:
        h.error = str(exc)
    while read(_CHUNK):  # the rest of the blob still counts for its digest
        pass
    return h


def verify_blob(host: ArchiveHost, blob: Blob, sink: Sink | None = None) -> verdicts.LayerVerdict:
    """Hash one layer blob (and its uncompressed stream) and check both against the archive."""
    flat = host.kind in _FLAT
    where = host.source if flat else f"{host.source}:{(blob.path or blob.name or '').lstrip('/')}"
    v = verdicts.LayerVerdict(
        blob.chain_id or blob.name or "?", None if flat else blob.diff_id, verdicts.UNVERIFIABLE
    )
    v.layer_path = where
    v.cache_id = blob.digest or ArchiveHost._blob_id(blob)
    v.driver = blob.media_type or host.kind
    v.data_root = host.source
    if blob.path is None:
        v.reason = f"layer blob {blob.name}: {blob.problem or 'not in the archive'}"
        return v
    try:
        with _blob_reader(host, blob) as fh:
            hashes = _hash_pass(fh, sink)
    except (EvidenceError, OSError) as exc:
        v.reason = f"cannot read the blob: {exc}"
        return v
    counter, size, inner_size, error = hashes.counter, hashes.size, hashes.inner_size, hashes.error
    outer, inner = hashes.outer, hashes.inner
    v.entries = counter.entries
    v.payload_bytes = size
    blob_sha = "sha256:" + outer.hexdigest()
    if blob.digest and blob.digest.startswith("sha256:") and blob_sha != blob.digest:
        v.problems.append(
            verdicts.LayerProblem(
                blob.name,
                "digest",
                "the blob's sha256 differs from its descriptor",
                blob.digest,
                blob_sha,
                where,
            )
        )
    if blob.size is not None and size != blob.size:
        v.problems.append(
            verdicts.LayerProblem(blob.name, "size", "blob size differs from its descriptor", blob.size, size)
        )
    if error is not None:
        if v.problems:
            v.problems[0].detail = (v.problems[0].detail or "") + f"; {error}"
            v.status = verdicts.TAMPERED
        else:
            v.reason = f"layer blob does not decompress: {error}"
        return v
    v.computed_diff_id = "sha256:" + inner.hexdigest()
    v.stream_size = inner_size
    v.end_marker = counter.end
    expected = None if flat else blob.diff_id  # an export's "diff id" is its own hash
    if expected and v.computed_diff_id != expected:
        v.problems.append(
            verdicts.LayerProblem(
                blob.name,
                "digest",
                "the uncompressed layer's sha256 differs from the config's diff id",
                blob.diff_id,
                v.computed_diff_id,
                where,
            )
        )
    if v.problems:
        v.status = verdicts.TAMPERED
    elif not expected:
        v.reason = (
            "no recorded digest: a docker export / root filesystem tar carries none "
            "(computed_diff_id is its sha256, record it)"
            if host.kind in _FLAT
            else "no diff id in the image config for this layer"
        )
    else:
        v.status = verdicts.OK
    return v


def verify_archive(
    host: ArchiveHost,
    image_ref: str | None = None,
    sink_for: Callable[[str], Sink | None] | None = None,
) -> list[verdicts.LayerVerdict]:
    """One verdict per layer blob of the archive (or of IMAGE_REF's layers), each blob once."""
    entries = host.entries
    if image_ref is not None:
        wanted = host.image(image_ref)
        entries = [e for e in entries if e.image.id == wanted.id]
    users: dict[str, list[str]] = {}
    blobs: dict[str, Blob] = {}
    for e in entries:
        label = e.image.tags[0] if e.image.tags else e.image.id
        for b in e.blobs:
            key = b.path or f"{b.name}#{e.image.id}"
            blobs.setdefault(key, b)
            users.setdefault(key, [])
            if label not in users[key]:
                users[key].append(label)
    out = []
    for key, b in blobs.items():
        sink = sink_for(b.chain_id or "") if sink_for else None
        v = verify_blob(host, b, sink)
        v.images = users[key]
        out.append(v)
    return out


def verify_archive_images(
    host: ArchiveHost, layers: list[verdicts.LayerVerdict], image_ref: str | None = None
) -> list[verdicts.ImageVerdict]:
    """Per image: config digest, manifest digests and layer counts, and its layers' verdicts."""
    by_blob = {v.layer_path: v for v in layers}
    entries = host.entries
    if image_ref is not None:
        wanted = host.image(image_ref)
        entries = [e for e in entries if e.image.id == wanted.id]
    out = []
    for e in entries:
        img = e.image
        iv = verdicts.ImageVerdict(
            img.id, verdicts.OK, list(img.tags), e.computed_id, config_path=e.config_path
        )
        iv.data_root = host.source
        iv.driver = host.kind
        iv.chain_ids = list(img.chain_ids)
        iv.problems += [verdicts.ImageProblem(kind, detail) for kind, detail in e.problems]
        for b in e.blobs:
            flat = host.kind in _FLAT
            v = by_blob.get(host.source if flat else f"{host.source}:{(b.path or b.name or '').lstrip('/')}")
            if v is None:
                continue
            if v.status == verdicts.TAMPERED:
                iv.problems.append(
                    verdicts.ImageProblem("layer-tampered", f"layer {b.name} tampered", v.chain_id)
                )
            elif v.status == verdicts.UNVERIFIABLE:
                iv.problems.append(verdicts.ImageProblem("layer-unverifiable", v.reason or "", v.chain_id))
        if host.kind in _FLAT:
            iv.problems.append(
                verdicts.ImageProblem("unreadable", "no image config: nothing recorded to check against")
            )
        iv.status = image_status(iv.problems)
        out.append(iv)
    return out


def export_layer(host: ArchiveHost, chain_id: str, write: Sink) -> verdicts.LayerVerdict:
    """Write one layer's uncompressed tar stream (by chain id, diff id or blob digest) and verify it."""
    want = chain_id if ":" in chain_id else "sha256:" + chain_id
    for e in host.entries:
        for b in e.blobs:
            if want in (b.chain_id, b.diff_id, b.digest):
                return verify_blob(host, b, write)
    raise LookupError(f"no layer {want} in {host.source}")
