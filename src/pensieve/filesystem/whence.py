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
from pensieve.evidence import normalize
from pensieve.records import Attribution

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


def whence(host: DockerHost, path: str) -> Attribution:
    """Attribute an evidence path (or a path seen on the original host) to layers/containers."""
    root, rel, root_name = _split(host, path)
    a = Attribution(host_path=normalize(path), data_root=root_name or None)
    if rel is None:
        dirs = ", ".join(f"{d}/" for d in host.data_root_dirs())
        a.notes.append(f"not below a Docker data root (no {dirs} component)")
        return a
    if root is None and host.roots:
        root = host.roots[0]
        a.notes.append(f"path names data root {root_name}; matched against {root.path} of the evidence")
    containers = host.containers()
    images = host.images()

    m = _VOLUME.match(rel)
    if m:
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
        return a

    m = _CONTAINER.match(rel)
    if m:
        a.layer_kind = "container-metadata"
        cid = m.group("id")
        a.containers.append(cid)
        rest = m.group("rest") or "/"
        known = {c.id for c in containers}
        if cid not in known:
            a.notes.append("container directory of a container with no readable config")
        if rest.startswith("/checkpoints/"):
            a.notes.append("CRIU checkpoint of the container")
        elif rest.endswith("-json.log") or "/local-logs/" in rest:
            a.notes.append("container log file")
        return a

    found = _place(host, rel)
    if found is not None:
        driver, place = found
        a.driver = driver.name
        a.layer = place.layer_id
        if place.bookkeeping:
            a.notes.append("storage driver bookkeeping of the layer, not container contents")
        elif place.container_path is not None:
            a.container_path = place.container_path
        _attribute_layer(root, driver.name, place.layer_id, a, containers, images)
        return a

    if rel.startswith("image/"):
        a.layer_kind = "image-metadata"
        a.notes.append("image/layer metadata of the engine")
        return a
    a.notes.append("below a data root but in no layer, volume or container directory")
    return a


def _attribute_layer(root, driver, layer_id, a: Attribution, containers, images) -> None:
    if root is None:
        return
    for info in root.layers(driver).values():
        if info.cache_id == layer_id:
            a.layer_kind = "image"
            a.chain_id = info.chain_id
            a.diff_id = info.diff_id
            break
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
    if a.chain_id:
        for img in images:
            if img.data_root == root.path and a.chain_id in img.chain_ids:
                a.images.append(img.id)
                i = img.chain_ids.index(a.chain_id)
                steps = [s for s in img.history if not s.empty_layer]
                if a.created_by is None and i < len(steps):
                    a.created_by = steps[i].created_by
    names = {c.id: c.name for c in containers}
    a.container_names = [names.get(cid) or "" for cid in a.containers]
    for cid, mount in root.mounts(driver).items():
        if layer_id in (mount.mount_id, mount.init_id):
            if cid not in a.containers:
                a.containers.append(cid)
                a.notes.append(f"layerdb/mounts still names container {cid} (no config on record)")
            a.layer_kind = a.layer_kind or ("rw" if mount.mount_id == layer_id else "init")
    if a.layer_kind is None:
        a.layer_kind = "unreferenced"
        a.notes.append("no image layer, container or layerdb mount references this layer")
        if storage_driver(driver).records_lowers:
            lowers = root.lowers(driver, layer_id)
            if lowers is None:
                a.notes.append("layer directory itself is gone from the evidence")
            elif lowers:
                by_cache = {i.cache_id: i for i in root.layers(driver).values()}
                top = by_cache.get(lowers[0]) or by_cache.get(lowers[0].removesuffix("-init"))
                if lowers[0].endswith("-init") and len(lowers) > 1:
                    top = by_cache.get(lowers[1]) or top
                    a.notes.append(f"sat on init layer {lowers[0]}: a removed container's RW layer")
                if top is not None:
                    imgs = [img.id for img in images if top.chain_id in img.chain_ids]
                    a.notes.append(
                        f"its lower chain tops out at image layer {top.chain_id}"
                        + (f" (images {', '.join(i[7:19] for i in imgs)})" if imgs else "")
                    )
                    a.images.extend(i for i in imgs if i not in a.images)
