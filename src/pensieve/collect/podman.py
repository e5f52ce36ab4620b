"""What a bundle holds of one Podman container (containers/storage ``overlay``, rootful or
rootless), read from the graphroot's files, never asked of podman.

Under ``root/`` of the bundle, at their evidence paths (containers-storage.conf(5), libpod's
state, containers/storage ``store.go``/``layers.go``/``images.go``/``containers.go``):

* ``<graphroot>/overlay-containers/containers.json`` as it is (the store's parsers need the
  whole file) and ``overlay-containers/<id>/**`` (``userdata/``: config.json, artifacts,
  ``ctr.log`` or the k8s-file log);
* libpod's state database (``libpod/bolt_state.db``, or ``db.sql`` with its ``-wal``/``-shm``),
  byte for byte: the engine's own record of the container;
* ``overlay-layers/layers.json`` and each image layer's ``<id>.tar-split.gz``;
* ``overlay-images/images.json`` and every image's ``overlay-images/<image id>/**`` (the
  big-data items: configs, manifests; small, and the store reads them all);
* ``overlay/<id>/{link,lower}`` of every layer and the ``overlay/l/<short>`` links;
* ``/etc/containers/storage.conf`` when the evidence has one (where the graphroot is), and
  ``/etc/passwd``, ``/etc/subuid``, ``/etc/subgid`` (a rootless store's id shift) when the
  graphroot lies below a host tree.

Each layer's ``overlay/<id>/diff`` is the raw tar ``layers/<id>.tar``, mounted back there, so
PodmanHost reads the bundle as it reads the graphroot.  ``image.tar`` is the image in the
``docker save`` layout, rebuilt from tar-split (:meth:`PodmanHost.export_layer`).
"""

from __future__ import annotations

import posixpath
from typing import Any

from pensieve.collect.bundle import BundleWriter
from pensieve.collect.tree import TreeAcquisition
from pensieve.engines.podman.roots import STORAGE_CONFS
from pensieve.records import Container, Image, Problem

__all__ = ["collect_podman"]

DRIVER = "overlay"
#: a rootless store's owners are shifted by the user's subordinate ids (subuid(5)): the host's
#: files that say which (idmap.py reads them)
ID_FILES = ("/etc/passwd", "/etc/subuid", "/etc/subgid")
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class PodmanAcquisition(TreeAcquisition):
    """The files of Podman container C into OUT (evidence paths kept under ``root/``)."""

    def __init__(self, host, c: Container, out: BundleWriter) -> None:
        super().__init__(host, c, out, "/")
        self.graphroot = c.data_root or "/"
        self.groot = host._root(c.data_root)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.graphroot, *parts)

    def metadata(self, image: Image | None) -> None:
        """The store's and libpod's records of the container, its image and its layers."""
        for conf in STORAGE_CONFS:
            self.copy_if_there(conf)
        if self.graphroot != "/":  # below a host tree: maybe rootless, whose owners need these
            for path in ID_FILES:
                self.copy_if_there(path)
        containers = self.join(f"{DRIVER}-containers")
        self.copy(posixpath.join(containers, "containers.json"))
        self.copy_dir(posixpath.join(containers, self.c.id), required=False)
        self.state_db()
        if self.c.log_path:
            log = self.ev.from_host_path(self.c.log_path) or self.c.log_path
            self.copy_if_there(log)
        layers_json = self.join(f"{DRIVER}-layers", "layers.json")
        self.copy(layers_json)
        self.copy_if_there(self.join(f"{DRIVER}-layers", "volatile-layers.json"))
        for layer in self.c.layers:
            sl = self.groot.layers.get(layer.cache_id or "")
            if sl is not None and sl.tar_split:
                self.copy_if_there(sl.tar_split)
            elif layer.role == "image":
                path = self.join(f"{DRIVER}-layers", f"{layer.cache_id}.tar-split.gz")
                self.out.problems.append(Problem(path, "no tar-split record: not collected", self.c.id))
        self.copy(self.join(f"{DRIVER}-images", "images.json"))
        if image is None:
            self.out.problems.append(
                Problem(self.c.id, "the container's image is not in images.json", self.c.id)
            )
        # every image's big-data items (configs, manifests: small), which the store reads for
        # every image whatever container is asked about
        for si in self.groot.images:
            self.copy_dir(
                self.join(f"{DRIVER}-images", si.id), required=image is not None and si.id == image.id
            )

    def state_db(self) -> None:
        """libpod's database, as it is (with SQLite's side files when there are some)."""
        path = self.groot.state.path
        if not path:
            self.out.problems.append(
                Problem(self.graphroot, "no libpod state database: not collected", self.c.id)
            )
            return
        self.copy(path)
        if self.groot.state.backend == "sqlite":
            for side in SQLITE_SIDE_FILES:
                self.copy_if_there(path + side)

    def layer_dirs(self) -> None:
        """Each layer's ``diff`` as a raw tar, its link, lower and ``l/`` link copied."""
        store = self.join(DRIVER)
        for layer in self.c.layers:
            if not layer.cache_id:
                continue
            self.layer_links(store, layer.cache_id)
            self.layer_tar(layer)


def collect_podman(host, c: Container, out: BundleWriter) -> dict[str, Any]:
    """Collect Podman container C of HOST (a PodmanHost) into OUT; what the manifest says of it."""
    image = host._image_index.get((c.data_root, c.image_id or "")) if c.image_id else None
    acq = PodmanAcquisition(host, c, out)
    acq.metadata(image)
    acq.layer_dirs()
    if image is not None:
        acq.image_archive(image)
    return acq.summary(
        "podman",
        image,
        graphroot=acq.graphroot,
        graphroot_host_path=host.evidence.host_path(acq.graphroot),
        state_db=acq.groot.state.path,
        storage_driver=DRIVER,
    )
