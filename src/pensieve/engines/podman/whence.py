"""Which layer, images and containers a path below a Podman graphroot belongs to.

The graphroot's layout (containers/storage store.go, drivers/overlay; libpod):

* ``overlay/<layer id>/diff/...`` -- a layer's contents (``merged``: its mount point, ``link``,
  ``lower``, ``work``: the driver's bookkeeping); ``overlay/l/`` the short links;
* ``overlay-containers/<id>/userdata/...`` -- libpod's files about a container (``ctr.log``:
  the k8s-file log, config.json: the runtime spec, conmon.pid, hostname, hosts, resolv.conf);
  ``overlay-containers/<id>/rootfs/`` an infra container's rootfs overlay;
* ``overlay-layers/``, ``overlay-images/`` -- the layer and image stores (JSON, tar-split,
  big data); ``db.sql`` and ``libpod/`` -- libpod's state;
* ``volumes/<name>/_data/...`` -- a named volume's contents.
"""

from __future__ import annotations

import re

from pensieve.evidence.base import normalize, relative_to
from pensieve.filesystem.whence import NotBelowADataRoot, _attribute_volume, claim_container_dir, image_tags
from pensieve.records import Attribution, Container, Image

_CONTAINER_DIR = re.compile(r"^overlay-containers/(?P<id>[0-9a-f]{64})(?P<rest>/.*)?$")
#: the stores' own files and libpod's state: what each top-level name holds
_METADATA = {
    "overlay-layers": "containers/storage layer store (layers.json, tar-split)",
    "overlay-images": "containers/storage image store (images.json, manifests, configs)",
    "overlay-containers": "containers/storage container store (containers.json)",
    "libpod": "libpod's state",
    "db.sql": "libpod's SQLite state (Podman 5)",
}


def whence(host, path: str) -> Attribution:
    """The Attribution of an evidence path below one of HOST's graphroots (a PodmanHost)."""
    below = [(r, rel) for r in host.roots if (rel := relative_to(r.path, path)) is not None]
    if not below:
        raise NotBelowADataRoot(f"not in the evidence: {normalize(path)} is below no Podman graphroot")
    root, rel = max(below, key=lambda item: len(item[0].path))
    a = Attribution(host_path=normalize(path), data_root=root.path)
    containers = [c for c in host.containers() if c.data_root == root.path]
    images = [i for i in host.images() if i.data_root == root.path]
    if not (
        _attribute_volume(rel, a, containers)
        or _container_dir(rel, a, containers)
        or _layer_path(host, root, rel, a, containers, images)
        or _metadata(rel, a)
    ):
        a.notes.append("below a Podman graphroot but in no layer, volume or container directory")
    a.image_tags = image_tags(a.images, images)
    return a


def _container_dir(rel: str, a: Attribution, containers: list[Container]) -> bool:
    """``overlay-containers/<id>/...``: libpod's files about one container."""
    m = _CONTAINER_DIR.match(rel)
    if not m:
        return False
    cid, rest = m.group("id"), m.group("rest") or "/"
    claim_container_dir(a, cid, containers, "container directory of a container podman has no record of")
    if rest.startswith("/rootfs/"):
        a.notes.append("the container's own rootfs overlay (an infra container's catatonit)")
    elif rest.endswith("/ctr.log"):
        a.notes.append("container log file")
    return True


def _layer_path(
    host, root, rel: str, a: Attribution, containers: list[Container], images: list[Image]
) -> bool:
    """``overlay/<id>/...``: the layer, its diff id, the images holding it and the containers
    whose chain it is in."""
    driver = host.storage_drivers()[0]
    place = driver.place(rel)
    if place is None:
        return False
    a.driver, a.layer = driver.name, place.layer_id
    if place.bookkeeping:
        a.notes.append("storage driver bookkeeping of the layer, not container contents")
    elif place.container_path is not None:
        a.container_path = place.container_path
    stored = root.layers.get(place.layer_id)
    a.diff_id = stored.diff_digest if stored else None
    for c in containers:
        if place.layer_id == c.rw_layer:
            a.layer_kind = "rw"
            a.images += [c.image_id] if c.image_id and c.image_id not in a.images else []
        if any(layer.cache_id == place.layer_id for layer in c.layers):
            a.containers.append(c.id)
            a.container_names.append(c.name or "")
    for img in images:
        if place.layer_id in img.cache_ids:
            i = img.cache_ids.index(place.layer_id)
            a.layer_kind = a.layer_kind or "image"
            a.images += [img.id] if img.id not in a.images else []
            a.chain_id = a.chain_id or (img.chain_ids[i] if i < len(img.chain_ids) else None)
            layers = host.image_layers(img)
            a.created_by = a.created_by or (layers[i].created_by if i < len(layers) else None)
    if a.layer_kind is None:
        a.layer_kind = "unreferenced"
        a.notes.append(
            "in layers.json but no image or container uses it"
            if stored
            else "no layer of layers.json has this id"
        )
    return True


def _metadata(rel: str, a: Attribution) -> bool:
    """The stores' JSON and libpod's state."""
    top = rel.split("/", 1)[0]
    if top not in _METADATA:
        return False
    a.layer_kind = "image-metadata" if top in ("overlay-layers", "overlay-images") else "container-metadata"
    a.notes.append(_METADATA[top])
    return True
