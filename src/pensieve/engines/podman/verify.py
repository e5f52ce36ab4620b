"""Integrity of a containers/storage graphroot (``pensieve verify`` on Podman, Buildah, CRI-O):
every image layer's tar stream rebuilt from its directory and its tar-split record, and every
image's big data hashed against the digests the store recorded.

containers/storage (layers.go) keeps, for each layer it applied from a tar stream:

* ``overlay-layers/layers.json``: ``diff-digest`` (sha256 of the uncompressed tar: the image
  config's diff id), ``diff-size`` (its length), ``compressed-diff-digest`` (the blob pulled);
* ``overlay-layers/<layer-id>.tar-split.gz``: the vbatts/tar-split record of that stream (the
  same JSON lines Docker keeps in its layerdb), from which ``podman save`` / ``podman push``
  rebuild the tar out of ``overlay/<layer-id>/diff`` (layers.go ``Diff`` with no compression:
  asm.NewOutputTarStream over the driver's diff directory).

Each layer is rebuilt here the way Docker's are (:func:`pensieve.images.verify_layers.
rebuild_from_record`: every entry compared, added entries found, the stream's sha256 against the
diff digest) and its length checked against ``diff-size``.  Each image (images.go): its config
(big data ``sha256:<id>``) must hash to the image id and list, as ``rootfs.diff_ids``, the diff
digests of its layer chain; every other big-data item (manifests, signatures) must hash to its
``big-data-digests`` entry.  Container layers (no tar-split: written by the container) are not
image layers and are left out.  The layers of a rootless store are owned, on disk, by the user
and its subordinate ids: each record's owner is compared with the id the user's namespace (and
the layer's own ``uidmap``, where it has one) maps it to (idmap.py).  ``export-layer`` writes the
record's owners as recorded.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import TYPE_CHECKING

from pensieve.engines.base import StreamSink
from pensieve.engines.docker.root import chain_ids
from pensieve.engines.podman.storage import StorageImage, StorageLayer, big_data_file, layer_chain
from pensieve.evidence import EvidenceError
from pensieve.images.verify_layers import config_diff_ids, hash_config, image_status, rebuild_from_record
from pensieve.records import Image
from pensieve.records.integrity import (
    OK,
    TAMPERED,
    UNVERIFIABLE,
    ImageProblem,
    ImageVerdict,
    LayerProblem,
    LayerVerdict,
)

if TYPE_CHECKING:
    from pensieve.engines.podman.host import PodmanHost, _Graphroot

_CHUNK = 1 << 20
#: containers/storage's overlay driver keeps its layers as Docker overlay2 does
DRIVER = "overlay"


def _chain_id(root: _Graphroot, layer: StorageLayer) -> str:
    """The layer's chain id (OCI image-spec config.md) from the diff digests of its parent
    chain; the layer id, as ``sha256:<id>``, when one of them is unknown."""
    chain = layer_chain(root.layers, layer.id, "", [])
    digests = [sl.diff_digest for sl in chain]
    if not chain or chain[-1].id != layer.id or not all(digests):
        return "sha256:" + layer.id
    return chain_ids([d for d in digests if d])[-1]


def _image_layers(root: _Graphroot, si: StorageImage) -> list[StorageLayer]:
    return layer_chain(root.layers, si.top_layer, "", [])


def _wanted(root: _Graphroot, image: Image | None) -> list[StorageLayer]:
    """The image layers of ROOT to check: those of IMAGE's chain, or of every image's and every
    layer holding a tar-split record (a layer no image names any more), bottom first per image."""
    images = [si for si in root.images if image is None or si.id == image.id.removeprefix("sha256:")]
    out: dict[str, StorageLayer] = {}
    for si in images:
        for sl in _image_layers(root, si):
            out.setdefault(sl.id, sl)
    if image is None:
        for sl in root.layers.values():
            if sl.tar_split is not None:
                out.setdefault(sl.id, sl)
    return list(out.values())


def _usage(host: PodmanHost, root: _Graphroot) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """layer id -> the names of the images whose chain holds it, -> the containers' names."""
    images: dict[str, list[str]] = {}
    for si in root.images:
        for sl in _image_layers(root, si):
            images.setdefault(sl.id, []).append(si.names[0] if si.names else si.id)
    containers: dict[str, list[str]] = {}
    for c in sorted(host.containers(), key=lambda c: (c.name or "", c.id)):
        if c.data_root != root.path:
            continue
        for layer in c.layers:
            if layer.role == "image" and layer.cache_id:
                names = containers.setdefault(layer.cache_id, [])
                if (c.name or c.id) not in names:
                    names.append(c.name or c.id)
    return images, containers


def verify_layer(host: PodmanHost, root: _Graphroot, layer: StorageLayer, sink: StreamSink | None = None):
    """Rebuild and verify one layer of ROOT (SINK, when given, receives the rebuilt stream)."""
    from pensieve.engines.podman.host import PODMAN_OVERLAY

    ev = host.evidence
    v = LayerVerdict(_chain_id(root, layer), layer.diff_digest, UNVERIFIABLE)
    v.driver = DRIVER
    v.data_root = root.path
    v.cache_id = layer.id
    parent = root.layers.get(layer.parent or "")
    v.parent = _chain_id(root, parent) if parent is not None else None
    v.tar_split = layer.tar_split or posixpath.join(root.path, "overlay-layers", f"{layer.id}.tar-split.gz")
    path = PODMAN_OVERLAY.layer_path(ev, root.path, layer.id)
    v.layer_path = path
    if not layer.diff_digest:
        v.reason = "no diff-digest in layers.json: nothing to compare the rebuilt stream with"
        return v
    template = _mapped_copy_of(host, root, layer, path)
    if template is not None:
        v.reason = (
            f"a copy of image layer {template} made for another id mapping (images.json mapped-layers), "
            "kept empty: its contents are that layer's, shown through an id-mapped mount (verified as "
            "that layer); its tar-split record is the template's"
        )
        return v
    # in a rootless store (or a layer shifted for one container) the record's owners are kept on
    # disk as the namespace maps them (idmap.py)
    owners = host.layer_owners(root.path, layer.id)
    on_disk = owners.on_disk if owners is not None else (0, 0)
    rebuild_from_record(ev, v, PODMAN_OVERLAY.layer_form(path), on_disk, sink)
    if v.status != UNVERIFIABLE and layer.diff_size is not None and v.stream_size != layer.diff_size:
        source = posixpath.join(root.path, "overlay-layers", "layers.json")
        detail = "the rebuilt stream's length differs from layers.json diff-size"
        v.problems.append(LayerProblem(None, "size", detail, layer.diff_size, v.stream_size, source))
        v.status = TAMPERED
    return v


def _mapped_copy_of(host: PodmanHost, root: _Graphroot, layer: StorageLayer, path: str) -> str | None:
    """The image top layer LAYER is a mapped copy of (c/storage store.go imageTopLayerForMapping),
    when its directory at PATH is empty: the copy made from a template whose contents an
    id-mapped mount shows (Podman 4.3 and 5.8 on Linux 6.x do so); None otherwise (a copy whose
    files were shifted one by one is verified through its map)."""
    template = next((si.top_layer for si in root.images if layer.id in si.mapped_layers), None)
    if template is None:
        return None
    try:
        return template if not host.evidence.listdir(path) else None
    except (EvidenceError, OSError):
        return None


def _big_data(host: PodmanHost, root: _Graphroot, si: StorageImage, iv: ImageVerdict) -> None:
    """Every big-data item but the config hashed against its ``big-data-digests`` entry."""
    config_key = "sha256:" + si.id
    for key, digest in sorted(si.big_data_digests.items()):
        if key == config_key:
            continue
        path = posixpath.join(root.path, "overlay-images", si.id, big_data_file(key))
        sha = hashlib.sha256()
        try:
            with host.evidence.open(path) as fh:
                while block := fh.read(_CHUNK):
                    sha.update(block)
        except (EvidenceError, OSError) as exc:
            iv.problems.append(ImageProblem("unreadable", f"big data {key!r} unreadable: {exc}"))
            continue
        if "sha256:" + sha.hexdigest() != digest:
            kind = "manifest-digest" if key.startswith("manifest") else "big-data-digest"
            detail = f"big data {key!r} ({path}) hashes to sha256:{sha.hexdigest()}, not to {digest}"
            iv.problems.append(ImageProblem(kind, detail))


def verify_image(
    host: PodmanHost, root: _Graphroot, si: StorageImage, layers: dict[tuple[str, str], LayerVerdict]
) -> ImageVerdict:
    """One image's config and big data against their digests, its chain against its config."""
    iv = ImageVerdict("sha256:" + si.id, UNVERIFIABLE, list(si.names))
    iv.data_root, iv.driver = root.path, DRIVER
    path = posixpath.join(root.path, "overlay-images", si.id, big_data_file("sha256:" + si.id))
    iv.config_path = path
    _big_data(host, root, si, iv)
    try:
        iv.computed_id, data = hash_config(host.evidence, path)
        diff_ids = config_diff_ids(data, path)
    except (EvidenceError, OSError, ValueError) as exc:
        iv.problems.append(ImageProblem("unreadable", f"image config unreadable: {exc}"))
        iv.status = image_status(iv.problems)
        return iv
    if iv.computed_id != iv.id:
        iv.problems.append(ImageProblem("config-digest", f"config hashes to {iv.computed_id}, not to its id"))
    iv.chain_ids = chain_ids(diff_ids)
    chain = _image_layers(root, si)
    if len(chain) != len(diff_ids):
        detail = f"layers.json chains {len(chain)} layers below the image, its config lists {len(diff_ids)}"
        iv.problems.append(ImageProblem("layer-diff-id", detail))
    for sl, diff_id, chain_id in zip(chain, diff_ids, iv.chain_ids, strict=False):
        if sl.diff_digest != diff_id:
            detail = f"layers.json says diff digest {sl.diff_digest} for layer {sl.id}, the config {diff_id}"
            iv.problems.append(ImageProblem("layer-diff-id", detail, chain_id))
        lv = layers.get((root.path, sl.id))
        if lv is not None and lv.status != OK:
            kind = "layer-tampered" if lv.status == TAMPERED else "layer-unverifiable"
            iv.problems.append(ImageProblem(kind, lv.reason or f"layer {lv.status}", lv.chain_id))
    iv.status = image_status(iv.problems)
    return iv


def verify(
    host: PodmanHost, image: Image | None = None, images: bool = True
) -> tuple[list[LayerVerdict], list[ImageVerdict]]:
    """PodmanHost.verify_layers: verdicts of every image layer of every graphroot (or of IMAGE's,
    one of HOST's images) and, with IMAGES, of every image."""
    layers: dict[tuple[str, str], LayerVerdict] = {}
    verdicts: list[ImageVerdict] = []
    for root in host.roots:
        if image is not None and image.data_root != root.path:
            continue
        used_by, containers = _usage(host, root)
        for sl in _wanted(root, image):
            v = verify_layer(host, root, sl)
            v.images = used_by.get(sl.id, [])
            v.containers = containers.get(sl.id, [])
            layers[(root.path, sl.id)] = v
        if images:
            for si in root.images:
                if image is None or si.id == image.id.removeprefix("sha256:"):
                    verdicts.append(verify_image(host, root, si, layers))
    return list(layers.values()), verdicts


def export_layer(host: PodmanHost, chain_id: str, write: StreamSink) -> LayerVerdict:
    """The tar stream of the layer CHAIN_ID (a chain id, or a containers/storage layer id) rebuilt
    from its directory and tar-split record into WRITE, as ``podman save`` would; its verdict.
    LookupError when no graphroot holds it."""
    bare = chain_id.removeprefix("sha256:")
    for root in host.roots:
        for sl in root.layers.values():
            if sl.id == bare or (sl.diff_digest and _chain_id(root, sl) == chain_id):
                return verify_layer(host, root, sl, write)
    raise LookupError(f"no layer {chain_id} in {host.evidence.description}")
