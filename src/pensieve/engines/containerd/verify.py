"""Integrity of a containerd root (``pensieve verify``): every image of every namespace checked
against the digests containerd recorded when it pulled or imported it, and every unpacked
snapshot against the layer it was unpacked from.

Per image (OCI image-spec descriptor.md, manifest.md, image-index.md, config.md):

* the target blob (an index or a manifest), the manifest chosen from an index (the first
  platform manifest present, as :mod:`.images` resolves it) and the config blob are hashed against
  the digests that name them; the config digest is the image id;
* each layer blob is hashed against its manifest descriptor (digest and size) and its uncompressed
  stream (gzip / zstd / plain, :mod:`pensieve.formats.compression`) against the config's diff id;
* the layer's committed snapshot (the one keyed by its chain id, rootfs/apply.go) is compared file
  by file with the layer tar: path, type, mode, owner, size, sha256 of the content, link target,
  device numbers, xattrs, whiteouts as the overlayfs snapshotter writes them (char 0/0 devices,
  ``trusted.overlay.opaque``: containerd applies a layer straight into the upper directory with
  archive.OverlayConvertWhiteout), and entries the tar does not hold ("added").

Everything is streamed in 1 MiB reads through the Evidence; a decompressor's output is bounded
whatever the ratio.  A blob absent from the content store (garbage-collected after unpacking, or
never pulled for this platform) leaves its layer ``unverifiable`` with the reason, never
``tampered``.  The verdicts are the records of Docker's verify
(:mod:`pensieve.records.integrity`), with the same vocabulary of differences.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pensieve.engines.containerd.host import ContainerdHost
from pensieve.engines.containerd.images import INDEX_TYPES, MAX_BLOB_JSON, MAX_INDEX_DEPTH
from pensieve.engines.docker.root import chain_ids
from pensieve.evidence import EvidenceError
from pensieve.formats.compression import DecompressError, decompress_stream, sniff
from pensieve.formats.tarsplit import (
    TarHeader,
    TarSplitError,
    apply_pax,
    block_header,
    checksum_ok,
    cstr,
    number,
    pax_records,
)
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.images.verify_layers import LOOKUP_ERRORS, LayerChecker, image_status
from pensieve.records.containerd import ContainerdImage, Snapshot
from pensieve.records.core import field, record
from pensieve.records.host import Image
from pensieve.records.integrity import (
    OK,
    TAMPERED,
    UNVERIFIABLE,
    ImageProblem,
    ImageVerdict,
    LayerProblem,
    LayerVerdict,
)

_CHUNK = 1 << 20
_BLOCK = 512
#: the largest PAX / GNU long-name record taken from a layer tar (real ones are a few hundred bytes)
MAX_EXTENDED = 1 << 20
#: how each snapshotter lays out a committed snapshot, in the Docker verifier's terms
_LAYOUTS = {"overlayfs": "overlay", "native": "snapshot"}
#: what receives a layer's uncompressed stream, piece by piece (export)
Sink = Callable[[bytes | memoryview], Any]
_GONE = "not in the content store (garbage-collected after unpacking, or never pulled for this platform)"


# ---- a tar stream fed in pieces ---------------------------------------------------------------


class TarMembers:
    """Parses a tar stream fed in pieces (``feed``), calling MEMBER(raw name, header, size,
    sha256 of the payload) after each member's payload (ustar, GNU and PAX; PAX global headers
    skipped).  Nothing but one header (and one extended record, at most MAX_EXTENDED) is held."""

    def __init__(self, member: Callable[[bytes, TarHeader, int, bytes], None]) -> None:
        self.member = member
        self.buf = bytearray()
        self.need = _BLOCK  # bytes wanted in buf before the next step
        self.state = "header"
        self.left = 0  # payload bytes still to come
        self.size = 0  # the current member's payload size
        self.pad = 0
        self.sha = hashlib.sha256()
        self.hdr: TarHeader | None = None
        self.pax: dict[bytes, bytes] = {}
        self.long_name: bytes | None = None
        self.long_link: bytes | None = None
        self.fmt: str | None = None
        self.ext_flag = b""
        self.end = False
        self.entries = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n and not self.end:
            if self.state == "payload":
                take = min(self.left, n - pos)
                self.sha.update(view[pos : pos + take])
                self.left -= take
                pos += take
                if not self.left:
                    self._member_done()
                continue
            if self.state == "pad":
                take = min(self.pad, n - pos)
                self.pad -= take
                pos += take
                if not self.pad:
                    self.state = "header"
                    self.need = _BLOCK
                continue
            take = min(self.need - len(self.buf), n - pos)
            self.buf += view[pos : pos + take]
            pos += take
            if len(self.buf) == self.need:
                self._step()

    def _step(self) -> None:
        data = bytes(self.buf)
        self.buf.clear()
        if self.state == "extended":
            self._extended(data)
            return
        if not data.strip(b"\0"):
            self.end = True
            return
        if not checksum_ok(data):
            raise TarSplitError(f"bad tar header checksum after {self.entries} entries")
        flag = data[156:157]
        size = number(data[124:136])
        if flag in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED:
                raise TarSplitError(f"extended tar header of {size} bytes")
            self.ext_flag = flag
            self.state, self.need = "extended", size + (-size % _BLOCK)
            if not self.need:
                self._extended(b"")
            return
        hdr = block_header(data, self.fmt, self.long_name, self.long_link)
        if self.pax:
            apply_pax(hdr, self.pax)
        self.pax, self.long_name, self.long_link, self.fmt = {}, None, None, None
        self.hdr = hdr
        self.sha = hashlib.sha256()
        self.left = hdr.size if hdr.typeflag in (b"0", b"\0", b"7", b"") else 0
        self.size = self.left
        self.pad = -self.left % _BLOCK
        if self.left:
            self.state = "payload"
        else:
            self._member_done()

    def _extended(self, data: bytes) -> None:
        flag = self.ext_flag
        if flag == b"x":
            self.pax.update(pax_records(data))
            self.fmt = "pax"
        elif flag == b"L":
            self.long_name, self.fmt = cstr(data), "gnu"
        elif flag == b"K":
            self.long_link, self.fmt = cstr(data), "gnu"
        self.state, self.need = "header", _BLOCK

    def _member_done(self) -> None:
        hdr = self.hdr
        assert hdr is not None
        self.entries += 1
        self.member(hdr.name, hdr, self.size, self.sha.digest())
        if self.pad:
            self.state = "pad"
        else:
            self.state, self.need = "header", _BLOCK


class _SnapshotChecker(LayerChecker):
    """Docker's layer checker with the tar's own payload as the reference: a file's content is
    compared by sha256 with the tar member's (CRC is what a tar-split record holds; here the
    whole member is at hand)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.payload_bytes = 0  # file bytes read from the snapshot

    def _payload(self, rel, where, name, size, crc, out):
        """Hash the snapshot's file in 1 MiB reads; CRC is the sha256 of the tar member."""
        xattrs = None
        sha = hashlib.sha256()
        got = 0
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        try:
            with where.open(name) as fh:
                while n := fh.readinto(view):
                    sha.update(view[:n])
                    got += n
                xattrs = where.file_xattrs(fh, name)
        except LOOKUP_ERRORS as exc:
            self._problem(rel, "missing", f"unreadable: {exc}", host=self._host(rel))
            return got, xattrs
        if got != size:
            self._problem(rel, "size", "size differs", size, got, self._host(rel))
        elif sha.digest() != crc:
            detail = "sha256 of the content differs"
            self._problem(rel, "content", detail, crc.hex(), sha.hexdigest(), self._host(rel))
        self.payload_bytes += got
        return got, xattrs


# ---- one layer --------------------------------------------------------------------------------


@record
class _Layer:
    """What one layer is checked against: its descriptor, diff id and snapshot."""

    namespace: str
    chain_id: str
    diff_id: str | None
    digest: str | None
    size: int | None
    snapshot: Snapshot | None
    users: list[str] = field(default_factory=list)


def _new_verdict(host: ContainerdHost, layer: _Layer) -> LayerVerdict:
    snap = layer.snapshot
    v = LayerVerdict(layer.chain_id, layer.diff_id, UNVERIFIABLE)
    v.data_root = host.root
    v.cache_id = snap.id if snap else None
    v.parent = snap.parent if snap else None
    v.driver = snap.snapshotter if snap else None
    v.layer_path = snap.path if snap else None
    v.tar_split = host.store.path(layer.digest or "")  # the record: the layer blob
    return v


def verify_layer(host: ContainerdHost, layer: _Layer, sink: Sink | None = None) -> LayerVerdict:
    """Hash LAYER's blob, its uncompressed stream, and compare its snapshot with the tar; SINK,
    when given, receives the uncompressed stream (the layer tar the diff id names) as it is read."""
    v = _new_verdict(host, layer)
    blob = v.tar_split
    if blob is None:
        v.reason = f"layer blob {layer.digest} {_GONE}"
        return v
    checker = _snapshot_checker(host, layer, v)
    try:
        outer, inner, error, blob_size = _stream(host, blob, checker, v, sink)
    except (EvidenceError, OSError) as exc:
        v.reason = f"cannot read the layer blob {blob}: {exc}"
        return v
    finally:
        if checker is not None:
            checker.close()
    file_problems = list(v.problems)
    v.problems.clear()
    name = "blobs/" + (layer.digest or "").replace(":", "/", 1)  # as an OCI layout names it
    if layer.digest and outer != layer.digest:
        detail = "the blob's sha256 differs from its manifest descriptor"
        v.problems.append(LayerProblem(name, "digest", detail, layer.digest, outer, blob))
    if layer.size is not None and blob_size != layer.size:
        detail = "blob size differs from its manifest descriptor"
        v.problems.append(LayerProblem(name, "size", detail, layer.size, blob_size, blob))
    if error is not None:
        if v.problems:
            v.problems[0].detail = (v.problems[0].detail or "") + f"; {error}"
            v.status = TAMPERED
        else:
            v.reason = f"layer blob does not unpack: {error}"
        return v
    v.computed_diff_id = inner
    if layer.diff_id and inner != layer.diff_id:
        detail = "the uncompressed layer's sha256 differs from the config's diff id"
        v.problems.append(LayerProblem(name, "digest", detail, layer.diff_id, inner, blob))
    v.problems += file_problems
    if v.problems:
        v.status = TAMPERED
    elif checker is None and layer.snapshot is not None:
        v.reason = f"snapshot {layer.snapshot.key} has no directory on the evidence: blob checked only"
    else:
        v.status = OK
    return v


def _snapshot_checker(host: ContainerdHost, layer: _Layer, v: LayerVerdict) -> _SnapshotChecker | None:
    snap = layer.snapshot
    if snap is None or snap.path is None or not host.evidence.is_dir(snap.path):
        return None
    layout = _LAYOUTS.get(snap.snapshotter, "snapshot")
    return _SnapshotChecker(host.evidence, snap.path, layout, (0, 0), v.problems)


def _stream(
    host: ContainerdHost,
    blob: str,
    checker: _SnapshotChecker | None,
    v: LayerVerdict,
    sink: Sink | None = None,
) -> tuple[str, str, str | None, int]:
    """One pass over BLOB: (its sha256, its uncompressed stream's sha256, why unpacking stopped,
    its size); SINK gets the uncompressed stream."""
    outer = hashlib.sha256()
    inner = hashlib.sha256()
    size = 0
    error = None
    members = TarMembers(lambda raw, hdr, n, sha: checker.entry(raw, hdr, n, sha, None)) if checker else None
    with host.evidence.open(blob) as fh:
        head = fh.read(_CHUNK)
        kind = sniff(head)
        pending = [head]

        def read(n: int) -> bytes:
            nonlocal size
            data = pending.pop() if pending else fh.read(n)
            outer.update(data)
            size += len(data)
            return data

        stream_size = 0
        try:
            blocks = decompress_stream(read, kind) if kind else iter(lambda: read(_CHUNK), b"")
            for block in blocks:
                inner.update(block)
                if sink is not None:
                    sink(block)
                stream_size += len(block)
                if members is not None:
                    members.feed(block)
        except DecompressError as exc:
            error = str(exc)
        except TarSplitError as exc:
            error = f"not a tar stream: {exc}"
        while read(_CHUNK):  # the rest still counts for the blob's digest
            pass
    if members is not None and error is None:
        if not members.end:
            error = "the layer tar ends before its end-of-archive blocks"
        checker.walk()
        v.entries = members.entries
    v.end_marker = members.end if members else None
    v.stream_size = stream_size
    v.payload_bytes = checker.payload_bytes if checker else 0
    return "sha256:" + outer.hexdigest(), "sha256:" + inner.hexdigest(), error, size


# ---- images -----------------------------------------------------------------------------------


@record
class _ImageRun:
    """One image being verified: its verdict and its layers."""

    verdict: ImageVerdict
    layers: list[_Layer] = field(default_factory=list)


def _hash_json(host: ContainerdHost, digest: str, what: str, iv: ImageVerdict) -> tuple[Doc, str] | None:
    """(document, path) of the JSON blob DIGEST, its sha256 checked; None + a problem when it is
    absent or unreadable."""
    path = host.store.path(digest)
    if path is None:
        iv.problems.append(ImageProblem("unreadable", f"{what} blob {digest} {_GONE}"))
        return None
    try:
        raw = host.evidence.read_bytes(path, MAX_BLOB_JSON + 1)
        doc = load(raw, path, [], subject=digest, max_bytes=MAX_BLOB_JSON)
    except (EvidenceError, OSError, UntrustedJSONError) as exc:
        iv.problems.append(ImageProblem("unreadable", f"{what} blob {digest} unreadable: {exc}"))
        return None
    actual = "sha256:" + hashlib.sha256(raw).hexdigest()
    if what == "config":
        iv.computed_id = actual
    if actual != digest:
        kind = "config-digest" if what == "config" else "manifest-digest"
        iv.problems.append(ImageProblem(kind, f"{what} blob {path} hashes to {actual}, not to {digest}"))
    return doc, path


def _manifest(host: ContainerdHost, target: str, iv: ImageVerdict) -> Doc | None:
    """The manifest TARGET stands for (itself, or an index's first platform manifest present),
    every blob on the way hashed."""
    digest = target
    for _depth in range(MAX_INDEX_DEPTH):
        got = _hash_json(host, digest, "manifest", iv)
        if got is None:
            return None
        doc = got[0]
        if doc.str("mediaType") not in INDEX_TYPES and "manifests" not in doc:
            return doc
        entries = [m for m in doc.list_of_obj("manifests") if m.str("digest")]
        entries = [m for m in entries if m.obj("platform").str("os") != "unknown"]
        present = [m for m in entries if host.store.path(m.str("digest") or "") is not None]
        if not present:
            iv.problems.append(ImageProblem("unreadable", f"index {digest}: no platform manifest {_GONE}"))
            return None
        digest = present[0].str("digest") or ""
    iv.problems.append(ImageProblem("unreadable", f"indexes nested deeper than {MAX_INDEX_DEPTH}"))
    return None


def _image_run(host: ContainerdHost, namespace: str, target: str, names: list[str]) -> _ImageRun:
    """The verdict of the image TARGET names, its blobs hashed, its layers listed."""
    iv = ImageVerdict(target, UNVERIFIABLE, [f"{namespace}/{n}" for n in names])
    iv.data_root = host.root
    run = _ImageRun(iv)
    manifest = _manifest(host, target, iv)
    if manifest is None:
        return run
    config_digest = manifest.obj("config").str("digest")
    if not config_digest:
        iv.problems.append(ImageProblem("unreadable", f"the manifest of {target} names no config"))
        return run
    iv.id = config_digest
    got = _hash_json(host, config_digest, "config", iv)
    if got is None:
        return run
    config, iv.config_path = got
    diff_ids = config.obj("rootfs").list_of_str("diff_ids") or []
    iv.chain_ids = chain_ids(diff_ids)
    descriptors = manifest.list_of_obj("layers")
    if len(descriptors) != len(diff_ids):
        iv.problems.append(
            ImageProblem(
                "layer-diff-id", f"the manifest lists {len(descriptors)} layers, the config {len(diff_ids)}"
            )
        )
    for i, (diff_id, chain) in enumerate(zip(diff_ids, iv.chain_ids, strict=True)):
        desc = descriptors[i] if i < len(descriptors) else Doc({}, "", [])
        snap = host.snapshot(namespace, chain)
        iv.driver = iv.driver or (snap.snapshotter if snap else None)
        run.layers.append(_Layer(namespace, chain, diff_id, desc.str("digest"), desc.int("size"), snap))
    return run


def _selects(image: Image | None) -> Callable[[str, ContainerdImage], bool]:
    """Whether a name (namespace, image record) is one of IMAGE's: every name when IMAGE is None;
    for Docker's view of its containerd image store (engines/docker/containerd_store.py) the
    names whose target is Docker's image id; else the names IMAGE carries as tags."""
    if image is None:
        return lambda _ns, _item: True
    if image.engine == "docker":
        return lambda ns, item: ns == image.namespace and item.target_digest == image.id
    return lambda ns, item: ns == image.namespace and item.name in image.tags


def _targets(
    host: ContainerdHost, image: Image | None, exclude: tuple[str, ...] = ()
) -> list[tuple[str, str, list[str]]]:
    """(namespace, target digest, names) of every image name (or of IMAGE's), the namespaces
    EXCLUDE names left out."""
    selects = _selects(image)
    out: dict[tuple[str, str], list[str]] = {}
    for ns in host.meta.namespaces:
        if ns.name in exclude:
            continue
        item: ContainerdImage
        for item in ns.images:
            if not item.target_digest or not selects(ns.name, item):
                continue
            out.setdefault((ns.name, item.target_digest), []).append(item.name)
    return [(ns, target, sorted(names)) for (ns, target), names in sorted(out.items())]


def _users(host: ContainerdHost) -> dict[tuple[str, str], list[str]]:
    """(namespace, image id) -> names of the containers made from it."""
    out: dict[tuple[str, str], list[str]] = {}
    for c in sorted(host.containers(), key=lambda c: (c.name or "", c.id)):
        if c.image_id:
            out.setdefault((c.namespace or "", c.image_id), []).append(f"{c.namespace}/{c.name or c.id}")
    return out


def _runs(host: ContainerdHost, image: Image | None, exclude: tuple[str, ...]) -> dict[tuple, _ImageRun]:
    """(namespace, image id) -> the image's run, each config once (an index and its manifest
    naming one config share it, their names merged)."""
    runs: dict[tuple[str, str], _ImageRun] = {}
    for namespace, target, names in _targets(host, image, exclude):
        run = _image_run(host, namespace, target, names)
        known = runs.get((namespace, run.verdict.id))
        if known is not None:  # several targets (an index and its manifest) for one config
            known.verdict.tags = sorted(set(known.verdict.tags) | set(run.verdict.tags))
            continue
        runs[(namespace, run.verdict.id)] = run
    return runs


def verify(
    host: ContainerdHost,
    image: Image | None = None,
    exclude: tuple[str, ...] = (),
    users: dict[tuple[str, str], list[str]] | None = None,
) -> tuple[list[LayerVerdict], list[ImageVerdict]]:
    """Verdicts of every layer (each namespace's chain id once) and every image of HOST (or of
    IMAGE alone, one of HOST's images), the namespaces EXCLUDE names left out; USERS ((namespace,
    image id) -> container names) replaces HOST's own containers (Docker's store names its own)."""
    containers = _users(host) if users is None else users
    runs = _runs(host, image, exclude)
    layers: dict[tuple[str, str], LayerVerdict] = {}
    for (namespace, image_id), run in runs.items():
        for layer in run.layers:
            key = (namespace, layer.chain_id)
            if key not in layers:
                layers[key] = verify_layer(host, layer)
            v = layers[key]
            v.images += [t for t in run.verdict.tags if t not in v.images]
            v.containers += [c for c in containers.get((namespace, image_id), []) if c not in v.containers]
    images = []
    for (namespace, _image_id), run in runs.items():
        iv = run.verdict
        for layer in run.layers:
            lv = layers[(namespace, layer.chain_id)]
            if lv.status != OK:
                kind = "layer-tampered" if lv.status == TAMPERED else "layer-unverifiable"
                iv.problems.append(ImageProblem(kind, lv.reason or f"layer {lv.status}", lv.chain_id))
        iv.status = image_status(iv.problems)
        images.append(iv)
    return list(layers.values()), images


def export_layer(
    host: ContainerdHost, chain_id: str, write: Sink, exclude: tuple[str, ...] = ()
) -> LayerVerdict:
    """Write the uncompressed blob of the layer CHAIN_ID (the first namespace whose images hold
    it) to WRITE while its snapshot is compared with it; LookupError when no image has it.

    containerd keeps no tar-split record, so a layer tar cannot be rebuilt from the snapshot in
    its original byte layout: what is written is the layer as pulled (its sha256 is the diff id,
    checked), and the verdict says whether the snapshot still holds what it unpacked to.  A blob
    garbage-collected after unpacking leaves nothing to write (the verdict is unverifiable)."""
    for run in _runs(host, None, exclude).values():
        for layer in run.layers:
            if layer.chain_id == chain_id:
                return verify_layer(host, layer, write)
    raise LookupError(f"no layer {chain_id} in the images of {host.root}")
