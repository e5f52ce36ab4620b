"""What a bundle holds of one Docker container (overlay2 and the other layer-directory drivers),
read from the data root's files, never asked of the daemon.

Under ``root/`` of the bundle, at the same paths relative to the data root (moby ``daemon``,
``layer``, ``image`` and ``graphdriver/overlay2`` packages):

* ``containers/<id>/**``: config.v2.json, hostconfig.json, hostname, hosts, resolv.conf(.hash),
  the json-file log ``<id>-json.log`` and its rotations (or ``local-logs/``), checkpoints;
* ``image/<driver>/layerdb/mounts/<id>/*`` (mount-id, init-id, parent);
* ``image/<driver>/imagedb/content/sha256/<image>`` and ``imagedb/metadata/sha256/<image>/*``
  for the container's image and its parents; ``image/<driver>/repositories.json``;
* ``image/<driver>/layerdb/sha256/<chain>/*`` of every layer of the image (diff, size, cache-id,
  parent, tar-split.json.gz);
* ``<driver>/<cache-id>/{link,lower}`` of every layer and the ``<driver>/l/<short>`` links.

Each layer directory's contents (image layers, the init and the RW layer) are the raw tar
``layers/<cache-id>.tar`` (:func:`pensieve.collect.tarstream.layer_dir_tar`), with the index
``layers/<cache-id>.index.json``; the manifest's ``mounts`` puts each at ``/<driver>/<cache-id>/diff``
of the bundle's tree.  ``image.tar`` is the image in the ``docker save`` layout, its layer tars
rebuilt from their directories and tar-split records (:meth:`DockerHost.export_layer`).
"""

from __future__ import annotations

import posixpath
from typing import Any

from pensieve.collect.bundle import BundleWriter
from pensieve.collect.tree import ROOT, TreeAcquisition
from pensieve.engines.docker import DockerHost, DockerRoot
from pensieve.evidence import EvidenceError
from pensieve.evidence.base import relative_to
from pensieve.records import Container, Image, Layer, Problem

__all__ = ["ROOT", "collect_docker"]

#: files every Docker container (and each image layer) has: one missing is a problem
CONTAINER_FILES = ("config.v2.json", "hostconfig.json")
MOUNT_FILES = ("mount-id",)
LAYERDB_FILES = ("diff", "cache-id", "size", "tar-split.json.gz")


class DockerAcquisition(TreeAcquisition):
    """The files of container C of HOST into the bundle OUT (the data root is ``root/``)."""

    def __init__(self, host: DockerHost, c: Container, out: BundleWriter) -> None:
        self.root: DockerRoot = host._root_of(c.data_root)
        super().__init__(host, c, out, self.root.path)
        self.driver = c.storage_driver or "overlay2"

    # ---- the parts --------------------------------------------------------------------
    def metadata(self, image: Image | None) -> None:
        """The engine's own files for the container, its image and layers."""
        cid = self.c.id
        self.copy_dir(self.root.join("containers", cid))
        self.expect(self.root.join("containers", cid), CONTAINER_FILES)
        self.copy_dir(self.root.join("image", self.driver, "layerdb", "mounts", cid))
        self.expect(self.root.join("image", self.driver, "layerdb", "mounts", cid), MOUNT_FILES)
        repos = self.root.join("image", self.driver, "repositories.json")
        if self.ev.exists(repos):
            self.copy(repos)
        if self.c.log_path:
            inner = self.ev.from_host_path(self.c.log_path) or self.c.log_path
            if relative_to(self.root.join("containers", cid), inner) is None and self.ev.is_file(inner):
                self.copy(inner)  # a log kept outside the container's directory
        if image is None:
            return
        for image_id in self._image_chain(image):
            hexid = image_id.split(":", 1)[-1]
            self.copy(self.root.join("image", self.driver, "imagedb", "content", "sha256", hexid))
            self.copy_dir(
                self.root.join("image", self.driver, "imagedb", "metadata", "sha256", hexid), required=False
            )
        for chain in image.chain_ids:
            layerdb = self.root.join("image", self.driver, "layerdb", "sha256", chain.split(":", 1)[-1])
            self.copy_dir(layerdb)
            self.expect(layerdb, LAYERDB_FILES)

    def _image_chain(self, image: Image) -> list[str]:
        """IMAGE's id and its parents' (classic builds), as far as the host knows them."""
        by_id = {i.id: i for i in self.host.images()}
        out, cur = [], image
        while cur is not None and cur.id not in out:
            out.append(cur.id)
            cur = by_id.get(cur.parent or "")
        return out

    def layer_dirs(self) -> None:
        """Each layer's directory as a raw tar, its driver bookkeeping (link, lower) copied."""
        store = posixpath.join(self.root.path, self.driver)
        for layer in self.c.layers:
            if not layer.cache_id:
                continue
            self._layer(layer, store)

    def _layer(self, layer: Layer, store: str) -> None:
        base = posixpath.join(store, layer.cache_id or "")
        self.layer_links(store, layer.cache_id or "")
        self.layer_tar(layer, where=base)

    def image_config(self, image: Image) -> tuple[bytes | None, str]:
        cfg_hex = image.id.split(":", 1)[-1]
        path = self.root.join("image", self.driver, "imagedb", "content", "sha256", cfg_hex)
        try:
            return self.ev.read_bytes(path, 64 << 20), path
        except (EvidenceError, OSError) as exc:
            self.out.problems.append(Problem(path, f"image archive not written: {exc}", image.id))
            return None, path


def collect_docker(host: DockerHost, c: Container, out: BundleWriter) -> dict[str, Any]:
    """Collect container C of HOST into OUT; returns what the manifest says of it."""
    image = host._images_by_id.get(c.image_id or "")
    if image is None and c.image_id:
        out.problems.append(
            Problem(c.config_path or c.id, f"image {c.image_id} not in the image store", c.id)
        )
    acq = DockerAcquisition(host, c, out)
    acq.metadata(image)
    acq.layer_dirs()
    if image is not None:
        acq.image_archive(image)
    return acq.summary(
        "docker",
        image,
        data_root=acq.root.path,
        data_root_host_path=host.evidence.host_path(acq.root.path),
        storage_driver=acq.driver,
    )
