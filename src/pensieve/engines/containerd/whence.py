"""Attribution inside a containerd root: which snapshot, namespace, containers and images a path of
``io.containerd.snapshotter.v1.<sn>/snapshots/<id>/...`` (or of the content store) belongs to.

A snapshot id is the snapshotter's own (one directory per snapshot); the namespace's record joins
it to its key: a container's active snapshot (its RW layer) or a committed layer named by its
chain id (containerd rootfs/apply.go), which the namespace's images hold in ``chain_ids``.
"""

from __future__ import annotations

from pensieve.engines.containerd.layout import CONTENT_DIR, META_DB
from pensieve.errors import NotFound
from pensieve.evidence.base import normalize, relative_to
from pensieve.filesystem.whence import image_tags, set_place
from pensieve.records import Attribution


class NotBelowARoot(NotFound):
    """The path lies below no containerd root of the evidence (exit 4)."""


def whence(host, path: str) -> Attribution:
    """The Attribution of an evidence path below HOST's root (a ContainerdHost)."""
    rel = relative_to(host.root, path)
    if rel is None:
        raise NotBelowARoot(f"not in the evidence: {normalize(path)} is below no containerd root")
    a = Attribution(host_path=normalize(path), data_root=host.root)
    if not (_snapshot_path(host, rel, a) or _content_path(host, rel, a)):
        if rel.startswith(META_DB.split("/")[0]):
            a.layer_kind = "image-metadata"
            a.notes.append("containerd's metadata store (meta.db)")
        else:
            a.notes.append("below a containerd root but in no snapshot or content blob")
    a.image_tags = image_tags(a.images, host.images())
    return a


def _snapshot_path(host, rel: str, a: Attribution) -> bool:
    for driver in host.storage_drivers():
        place = driver.place(rel)
        if place is not None:
            break
    else:
        return False
    set_place(a, driver, place, "overlayfs work directory of the snapshot, not container contents")
    snaps = [
        s
        for ns in host.meta.namespaces
        for s in ns.snapshots
        if s.snapshotter == driver.name and s.id == a.layer
    ]
    if not snaps:
        a.layer_kind = "unreferenced"
        a.notes.append(f"no namespace's {driver.name} snapshot has id {a.layer}")
        return True
    for snap in snaps:
        _attribute_snapshot(host, snap, a)
    return True


def _attribute_snapshot(host, snap, a: Attribution) -> None:
    a.notes.append(f"containerd namespace {snap.namespace}, snapshot {snap.key} ({snap.kind or 'unknown'})")
    users = [c for c in host.containers() if c.namespace == snap.namespace]
    own = [c for c in users if c.layers and c.layers[-1].role == "rw" and c.layers[-1].cache_id == snap.id]
    if own:
        a.layer_kind = "rw"
        for c in own:
            a.containers.append(c.id)
            a.container_names.append(c.name or "")
            if c.image_id and c.image_id not in a.images:
                a.images.append(c.image_id)
        return
    a.layer_kind = a.layer_kind or ("image" if snap.kind == "committed" else "unreferenced")
    for img in host.images():
        if img.namespace == snap.namespace and snap.key in img.chain_ids:
            a.chain_id = snap.key
            i = img.chain_ids.index(snap.key)
            a.diff_id = img.diff_ids[i]
            if img.id not in a.images:
                a.images.append(img.id)
            steps = [s for s in img.history if not s.empty_layer]
            if a.created_by is None and i < len(steps):
                a.created_by = steps[i].created_by
    for c in users:
        if c.id not in a.containers and any(layer.cache_id == snap.id for layer in c.layers):
            a.containers.append(c.id)
            a.container_names.append(c.name or "")
    if a.layer_kind == "unreferenced":
        a.notes.append("no container or image of the namespace uses this snapshot")


def _content_path(host, rel: str, a: Attribution) -> bool:
    prefix = CONTENT_DIR + "/blobs/"
    if not rel.startswith(prefix):
        return False
    alg, _, hexpart = rel[len(prefix) :].partition("/")
    digest = f"{alg}:{hexpart}"
    a.layer_kind = "image-metadata"
    a.layer = digest
    holders = [b for ns in host.meta.namespaces for b in ns.content if b.digest == digest]
    for blob in holders:
        a.notes.append(f"content blob {digest} of namespace {blob.namespace}")
    for img in host.images():
        if digest == img.id:
            a.images.append(img.id)
            a.notes.append("the image's config")
    if not holders:
        a.notes.append("content blob no namespace records")
    return True
