"""Attribution: which layer, image and container a path inside a Docker data root belongs to.

Given a path inside a layer store, ``/var/lib/docker/<driver dir>/<id>/.../etc/passwd`` (found on
a disk, in a timeline, in a YARA hit), say which layer ``<id>`` is, which images hold it, which
containers use it (as an image layer, init layer or their own RW layer), and the path inside
the container (``/etc/passwd``).
A layer nothing references any more is reported as such, with what remains about it (its
driver's record of the layers below it names the image layers a removed container sat on).
Where a path falls in a layer store is the storage driver's to say (``StorageDriver.place``).
"""

from __future__ import annotations

import posixpath
import re

from pensieve.engines.base import LayerPlace, StorageDriver, storage_driver
from pensieve.engines.docker import DockerHost
from pensieve.engines.docker.root import DockerRoot
from pensieve.errors import NotFound
from pensieve.evidence import normalize
from pensieve.records import Attribution, Container, Image

_VOLUME = re.compile(r"^volumes/(?P<name>[^/]+)(?:/_data(?P<rest>/.*)?)?$")
_CONTAINER = re.compile(r"^containers/(?P<id>[0-9a-f]{64})(?P<rest>/.*)?$")


def _patterns(host: DockerHost) -> tuple[re.Pattern, re.Pattern]:
    """(a path relative to a data root, any path holding a data root) by the host's layout."""
    names = "|".join(re.escape(n) for n in host.data_root_dirs())
    return re.compile(rf"^(?:{names})(?:/|$)"), re.compile(rf"^(?P<root>.*?)/(?=(?:{names})/)")


def _place(host: DockerHost, rel: str) -> tuple[StorageDriver, LayerPlace] | None:
    for driver in host.storage_drivers():
        place = driver.place(rel)
        if place is not None:
            return driver, place
    return None


def _split(host: DockerHost, path: str) -> tuple[DockerRoot | None, str | None, str]:
    """(data root, path relative to it, the data root path as named) for an evidence path.

    A path that is not below a data root of this evidence (a path recovered from another disk,
    say) is matched by its shape: whatever precedes a layer store, ``volumes/`` etc. is taken as
    the root.
    """
    top, any_root = _patterns(host)
    path = normalize(path)
    for root in sorted(host.roots, key=lambda r: -len(r.path)):
        if root.path == "/":
            rel = path.lstrip("/")
            if top.match(rel):
                return root, rel, root.path
            continue
        prefix = root.path.rstrip("/") + "/"
        if path.startswith(prefix):
            return root, path[len(prefix) :], root.path
    m = any_root.match(path)
    if m:
        return (
            (host.roots[0] if len(host.roots) == 1 else None),
            path[len(m.group("root")) + 1 :],
            m.group("root") or "/",
        )
    return None, None, ""


class NotBelowADataRoot(NotFound):
    """The path lies below no data root of the evidence and names none by its shape (exit 4)."""


def whence(host: DockerHost, path: str) -> Attribution:
    """Attribute an evidence path (or a path seen on the original host) to layers/containers.

    Raises NotBelowADataRoot for a path outside every data root (and not shaped like one)."""
    root, rel, root_name = _split(host, path)
    if rel is None:
        dirs = ", ".join(f"{d}/" for d in host.data_root_dirs())
        raise NotBelowADataRoot(
            f"not in the evidence: {normalize(path)} is below no Docker data root of the source "
            f"(no {dirs} component)"
        )
    a = Attribution(host_path=normalize(path), data_root=root_name or None)
    if root is None and host.roots:
        root = host.roots[0]
        a.notes.append(f"path names data root {root_name}; matched against {root.path} of the evidence")
    containers = host.containers()
    images = host.images()
    if not (
        _attribute_volume(rel, a, containers)
        or _attribute_container_dir(rel, a, containers)
        or _attribute_layer_path(host, root, rel, a, containers, images)
        or _attribute_engine_metadata(rel, a)
    ):
        a.notes.append("below a data root but in no layer, volume or container directory")
    a.image_tags = image_tags(a.images, images)
    return a


def image_tags(image_ids: list[str], images: list[Image]) -> list[str]:
    """Every tag of the images IMAGE_IDS, in their order (an untagged image adds none)."""
    tags_by_id = {img.id: img.tags for img in images}
    tags: list[str] = []
    for image_id in image_ids:
        tags.extend(t for t in tags_by_id.get(image_id, []) if t not in tags)
    return tags


def _attribute_volume(rel: str, a: Attribution, containers: list[Container]) -> bool:
    """``volumes/<name>/_data/...``: the volume and the containers mounting it."""
    m = _VOLUME.match(rel)
    if not m:
        return False
    name = m.group("name")
    rest = m.group("rest") or "/"
    a.layer_kind = "volume"
    a.layer = name
    for c in containers:
        for mnt in c.mounts:
            if mnt.type == "volume" and mnt.name == name:
                a.containers.append(c.id)
                if a.container_path is None:
                    a.container_path = posixpath.normpath(mnt.destination + rest)
    if not a.containers:
        a.notes.append("volume used by no container on record")
    a.container_names = [c.name or "" for c in containers if c.id in a.containers]
    return True


def claim_container_dir(a: Attribution, cid: str, containers: list[Container], unknown_note: str) -> None:
    """A is a file of the engine's own directory for container CID (its config, logs,
    checkpoints): named when the engine has a record of it, UNKNOWN_NOTE when not."""
    a.layer_kind = "container-metadata"
    a.containers.append(cid)
    names = {c.id: c.name or "" for c in containers}
    if cid in names:
        a.container_names = [names[cid]]
    else:
        a.notes.append(unknown_note)


def set_place(a: Attribution, driver: StorageDriver, place: LayerPlace, bookkeeping_note: str) -> None:
    """A lies where PLACE says in DRIVER's store: its layer, and its path in the container
    (or BOOKKEEPING_NOTE where it is the driver's own file, not container contents)."""
    a.driver = driver.name
    a.layer = place.layer_id
    if place.bookkeeping:
        a.notes.append(bookkeeping_note)
    elif place.container_path is not None:
        a.container_path = place.container_path


def _attribute_container_dir(rel: str, a: Attribution, containers: list[Container]) -> bool:
    """``containers/<id>/...``: the engine's files about a container (config, logs, checkpoints)."""
    m = _CONTAINER.match(rel)
    if not m:
        return False
    cid, rest = m.group("id"), m.group("rest") or "/"
    claim_container_dir(a, cid, containers, "container directory of a container with no readable config")
    if rest.startswith("/checkpoints/"):
        a.notes.append("CRIU checkpoint of the container")
    elif rest.endswith("-json.log") or "/local-logs/" in rest:
        a.notes.append("container log file")
    return True


def _attribute_layer_path(
    host: DockerHost,
    root: DockerRoot | None,
    rel: str,
    a: Attribution,
    containers: list[Container],
    images: list[Image],
) -> bool:
    """A path in a storage driver's layer store: the layer, and who uses it."""
    found = _place(host, rel)
    if found is None:
        return False
    driver, place = found
    set_place(a, driver, place, "storage driver bookkeeping of the layer, not container contents")
    _attribute_layer(root, driver.name, place.layer_id, a, containers, images)
    return True


def _attribute_engine_metadata(rel: str, a: Attribution) -> bool:
    """``image/...``: the engine's image and layer database."""
    if not rel.startswith("image/"):
        return False
    a.layer_kind = "image-metadata"
    a.notes.append("image/layer metadata of the engine")
    return True


def _attribute_layer(
    root: DockerRoot | None,
    driver: str,
    layer_id: str,
    a: Attribution,
    containers: list[Container],
    images: list[Image],
) -> None:
    """Who references layer LAYER_ID of ROOT: image layers, containers, images, layerdb mounts;
    a layer nobody references is described by what its driver still records below it."""
    if root is None:
        return
    _as_image_layer(root, driver, layer_id, a)
    _containers_using(root, layer_id, a, containers)
    if a.chain_id:
        _images_holding(root, a, images)
    names = {c.id: c.name for c in containers}
    a.container_names = [names.get(cid) or "" for cid in a.containers]
    _layerdb_mounts(root, driver, layer_id, a)
    if a.layer_kind is None:
        _unreferenced(root, driver, layer_id, a, images)


def _as_image_layer(root: DockerRoot, driver: str, layer_id: str, a: Attribution) -> None:
    """The image layer (layerdb entry) whose cache id is LAYER_ID, if any."""
    for info in root.layers(driver).values():
        if info.cache_id == layer_id:
            a.layer_kind = "image"
            a.chain_id = info.chain_id
            a.diff_id = info.diff_id
            return


def _containers_using(root: DockerRoot, layer_id: str, a: Attribution, containers: list[Container]) -> None:
    """Containers of ROOT whose RW or init layer is LAYER_ID, or whose image holds the layer."""
    for c in containers:
        if c.data_root != root.path:
            continue
        if layer_id in (c.rw_layer, c.init_layer):
            a.layer_kind = "rw" if layer_id == c.rw_layer else "init"
            a.containers.append(c.id)
            if c.image_id and c.image_id not in a.images:
                a.images.append(c.image_id)
        elif a.chain_id and any(layer.chain_id == a.chain_id for layer in c.layers):
            a.containers.append(c.id)


def _images_holding(root: DockerRoot, a: Attribution, images: list[Image]) -> None:
    """Images of ROOT whose layer chain holds A's chain id; the first one's history step."""
    for img in images:
        if img.data_root == root.path and a.chain_id in img.chain_ids:
            a.images.append(img.id)
            i = img.chain_ids.index(a.chain_id)
            steps = [s for s in img.history if not s.empty_layer]
            if a.created_by is None and i < len(steps):
                a.created_by = steps[i].created_by


def _layerdb_mounts(root: DockerRoot, driver: str, layer_id: str, a: Attribution) -> None:
    """Containers layerdb/mounts still names for the layer (their config may be gone)."""
    for cid, mount in root.mounts(driver).items():
        if layer_id in (mount.mount_id, mount.init_id):
            if cid not in a.containers:
                a.containers.append(cid)
                a.notes.append(f"layerdb/mounts still names container {cid} (no config on record)")
            a.layer_kind = a.layer_kind or ("rw" if mount.mount_id == layer_id else "init")


def _unreferenced(root: DockerRoot, driver: str, layer_id: str, a: Attribution, images: list[Image]) -> None:
    """A layer nothing references: what its driver's record of its lowers says it sat on."""
    a.layer_kind = "unreferenced"
    a.notes.append("no image layer, container or layerdb mount references this layer")
    if not storage_driver(driver).records_lowers:
        return
    lowers = root.lowers(driver, layer_id)
    if lowers is None:
        a.notes.append("layer directory itself is gone from the evidence")
        return
    if not lowers:
        return
    by_cache = {i.cache_id: i for i in root.layers(driver).values()}
    top = by_cache.get(lowers[0]) or by_cache.get(lowers[0].removesuffix("-init"))
    if lowers[0].endswith("-init") and len(lowers) > 1:
        top = by_cache.get(lowers[1]) or top
        a.notes.append(f"sat on init layer {lowers[0]}: a removed container's RW layer")
    if top is None:
        return
    imgs = [img.id for img in images if top.chain_id in img.chain_ids]
    a.notes.append(
        f"its lower chain tops out at image layer {top.chain_id}"
        + (f" (images {', '.join(i[7:19] for i in imgs)})" if imgs else "")
    )
    a.images.extend(i for i in imgs if i not in a.images)
