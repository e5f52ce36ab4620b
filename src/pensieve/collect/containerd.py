"""What a bundle holds of one containerd container (overlayfs or native snapshotter, any
namespace: ``default``, ``k8s.io`` ...), read from the root's and the state directory's files,
never asked of containerd.

Under ``root/`` of the bundle, at their evidence paths (containerd docs/ops.md, metadata/,
snapshots/overlay, content/local, runtime/v2/bundle.go):

* ``<root>/io.containerd.metadata.v1.bolt/meta.db`` byte for byte (bbolt: the engine's record
  of every namespace's containers, images, leases and snapshots);
* ``<root>/io.containerd.snapshotter.v1.<name>/metadata.db`` of the container's snapshotter;
* the content blobs of its image: the target (index or manifest), the manifests, the config and
  the layer blobs the store still holds (``io.containerd.content.v1.content/blobs/sha256/<hex>``);
* the task's files in the state directory (``io.containerd.runtime.v2.task/<ns>/<id>/``:
  config.json, init.pid, address ..., never the mounted ``rootfs``) when the evidence has it;
* a CRI container's ``io.containerd.grpc.v1.cri/{containers,sandboxes}/<id>/`` and its log files
  (``/var/log/pods/...``) when the root has them; ``/etc/containerd/config.toml``.

Each snapshot of the container's chain is the raw tar ``layers/<n>.tar`` of its ``fs``
directory, mounted back at ``snapshots/<n>/fs``, so ContainerdHost reads the bundle as it reads
the root.  ``image.tar`` is the image in the ``docker save`` layout
(:meth:`ContainerdHost.export_layer`).
"""

from __future__ import annotations

import posixpath
from typing import Any

from pensieve.collect.bundle import BundleWriter
from pensieve.collect.tree import TreeAcquisition
from pensieve.engines.containerd.cri import CRI_DIR, cri_log_files
from pensieve.engines.containerd.host import TASK_DIRS
from pensieve.engines.containerd.layout import META_DB
from pensieve.evidence import EvidenceError
from pensieve.formats.untrusted_json import UntrustedJSONError, load
from pensieve.records import Container, Image, Problem

__all__ = ["collect_containerd"]

CONFIG_TOML = "/etc/containerd/config.toml"
SNAPSHOTTER_DIR = "io.containerd.snapshotter.v1."
#: an index naming an index naming ...: deeper than this is not followed
MAX_DEPTH = 4
MAX_BLOB_JSON = 4 << 20


class ContainerdAcquisition(TreeAcquisition):
    """The files of containerd container C into OUT (evidence paths kept under ``root/``)."""

    def __init__(self, host, c: Container, out: BundleWriter) -> None:
        super().__init__(host, c, out, "/")
        self.root = host.root

    def metadata(self) -> None:
        self.copy_if_there(CONFIG_TOML)
        self.copy(posixpath.join(self.root, META_DB))
        for snapshotter in sorted({x.driver for x in self.c.layers if x.driver}):
            self.copy(posixpath.join(self.root, SNAPSHOTTER_DIR + snapshotter, "metadata.db"))
        for kind in ("containers", "sandboxes"):
            cri = posixpath.join(self.root, CRI_DIR, kind, self.c.id)
            self.copy_dir(cri, required=False)
        for log in cri_log_files(self.ev, self.c):
            self.copy_if_there(log)

    def task_state(self) -> None:
        """The task bundle's own files (its ``rootfs`` is the mounted container: not walked)."""
        state = self.host.state
        if state is None:
            self.out.problems.append(
                Problem(self.c.id, "no runtime state directory: task files not collected", self.c.id)
            )
            return
        # the state directory is there even when C has no task: the bundle says "created" too
        self.out.sink.mkdir(self.rel(posixpath.join(state, TASK_DIRS[0])))
        for task_dir in TASK_DIRS:
            bundle = posixpath.join(state, task_dir, self.c.namespace or "", self.c.id)
            if not self.ev.is_dir(bundle):
                continue
            for e in self.ev.scandir(bundle):
                full = posixpath.join(bundle, e.name)
                if e.stat.is_file:
                    self.copy(full)
                elif e.stat.is_symlink:
                    self.out.copy_symlink(self.ev, full, self.rel(full))
            self.out.sink.mkdir(self.rel(bundle))

    def blobs(self, image: Image | None) -> None:
        """The content blobs of the container's image: its target down to the config and layers."""
        if image is None:
            return
        ns = next((n for n in self.host.meta.namespaces if n.name == self.c.namespace), None)
        targets = [i.target_digest for i in (ns.images if ns else []) if i.name in image.tags]
        seen: set[str] = set()
        for digest in dict.fromkeys(t for t in targets if t):
            self._blob(digest, 0, seen, required=True)
        if image.config_path:
            self.copy_if_there(image.config_path)

    def _blob(self, digest: str, depth: int, seen: set[str], required: bool) -> None:
        if digest in seen:
            return
        seen.add(digest)
        path = self.host.store.path(digest)
        if path is None:
            if required:
                self.out.problems.append(
                    Problem(digest, "content blob not in the store: not collected", self.c.id)
                )
            return
        self.copy(path)
        if depth >= MAX_DEPTH or not required:
            return  # a layer blob: not JSON
        try:
            doc = load(self.ev.read_bytes(path, MAX_BLOB_JSON + 1), path, [], max_bytes=MAX_BLOB_JSON)
        except (EvidenceError, OSError, UntrustedJSONError):
            return
        for m in doc.list_of_obj("manifests") or []:
            self._blob(m.str("digest") or "", depth + 1, seen, True)
        config = doc.obj("config").str("digest")
        if config:
            self._blob(config, depth + 1, seen, True)
        for layer in doc.list_of_obj("layers") or []:
            self._blob(layer.str("digest") or "", depth + 1, seen, False)

    def layer_dirs(self) -> None:
        for layer in self.c.layers:
            if layer.path:
                self.out.sink.mkdir(posixpath.dirname(self.rel(layer.path)))
            self.layer_tar(layer, snapshotter=layer.driver)


def collect_containerd(host, c: Container, out: BundleWriter) -> dict[str, Any]:
    """Collect containerd container C of HOST (a ContainerdHost) into OUT; what the manifest
    says of it."""
    image = host._image_named(c.namespace or "", c.image)
    acq = ContainerdAcquisition(host, c, out)
    acq.metadata()
    acq.task_state()
    acq.blobs(image)
    acq.layer_dirs()
    if image is not None:
        acq.image_archive(image)
    return acq.summary(
        "containerd",
        image,
        containerd_root=host.root,
        state_dir=host.state,
        namespace=c.namespace,
        snapshotter=next((x.driver for x in c.layers if x.driver), None),
    )
