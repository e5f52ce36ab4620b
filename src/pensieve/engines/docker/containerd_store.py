"""Docker's containerd image store: a data root whose images and layers live in the containerd
dockerd runs (``DATA_ROOT/containerd/daemon``, namespace ``moby``), not in ``image/``.

With ``"features": {"containerd-snapshotter": true}`` (moby daemon/containerd):

* an image is a name of the ``moby`` namespace; Docker's image id is the name's *target* digest
  (the index or manifest, ``docker inspect`` ``Id`` and ``Descriptor``), not the config digest;
  its tags are the familiar names (``docker.io/`` and ``library/`` dropped: distribution/reference
  ``FamiliarName``), and dangling images are named ``moby-dangling@<digest>``;
* an image's layers are the committed snapshots keyed by its chain ids (containerd rootfs/apply.go);
* a container (``containers/<id>/config.v2.json`` as with graph drivers, ``Driver`` the snapshotter
  name) has a committed ``<id>-init`` snapshot on the image's top layer and its active snapshot,
  keyed by the container id, on that: the RW layer (daemon/containerd/image_snapshot.go).

The snapshots' directories are the snapshotters' (:mod:`pensieve.engines.containerd.snapshotters`):
``overlayfs`` upper directories read with the kernel's overlay whiteouts, ``native`` full copies.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property

from pensieve.engines.containerd.host import ContainerdHost
from pensieve.engines.containerd.images import build_images
from pensieve.engines.containerd.snapshotters import PREFERRED, SNAPSHOTTERS
from pensieve.engines.docker.root import CONTAINERD_STORE, DockerRoot
from pensieve.records import Attribution, Container, Image, Layer, Problem
from pensieve.records.containerd import ContainerdImage, Snapshot

#: the containerd namespace dockerd keeps its images, snapshots and tasks in
MOBY = "moby"
#: the namespaces dockerd itself writes (``moby_history``: BuildKit's build history)
#: the name prefix of an image whose last tag was removed (moby daemon/containerd/image_delete.go)
DANGLING = "moby-dangling@"


def familiar(name: str) -> str:
    """A reference as Docker shows it: ``docker.io/library/busybox:1`` -> ``busybox:1``,
    ``docker.io/pensieve/app:1.0`` -> ``pensieve/app:1.0``; other registries' names unchanged."""
    if not name.startswith("docker.io/"):
        return name
    rest = name[len("docker.io/") :]
    repository = rest.split("@", 1)[0].split(":", 1)[0]
    if repository.startswith("library/") and "/" not in repository[len("library/") :]:
        return rest[len("library/") :]
    return rest


def _repository(name: str) -> str:
    """The repository of a reference (its tag or digest dropped)."""
    base = name.split("@", 1)[0]
    head, _, tail = base.rpartition(":")
    return head if head and "/" not in tail else base


class ContainerdStore:
    """The ``moby`` namespace of one data root's containerd, as Docker's images and layers."""

    def __init__(self, root: DockerRoot, problems: list[Problem]) -> None:
        self.root = root
        self.path = root.join(CONTAINERD_STORE)
        self.problems = problems
        how = f"Docker's containerd ({root.path})"
        self.ctr = ContainerdHost(root.evidence, self.path, None, how, problems)

    @property
    def db_path(self) -> str:
        return self.ctr.meta.db_path

    @cached_property
    def _snapshots(self) -> dict[str, list[Snapshot]]:
        """key -> the moby namespace's snapshots of that key (one per snapshotter)."""
        ns = self.ctr.meta.namespace(MOBY)
        out: dict[str, list[Snapshot]] = defaultdict(list)
        for snap in ns.snapshots if ns is not None else []:
            out[snap.key].append(snap)
        return out

    # ---- images -----------------------------------------------------------------------------
    @cached_property
    def _images(self) -> list[Image]:
        ns = self.ctr.meta.namespace(MOBY)
        if ns is None:
            return []
        by_target: dict[str, list[ContainerdImage]] = defaultdict(list)
        for item in ns.images:
            by_target[item.target_digest or ""].append(item)
        out: list[Image] = []
        for target, items in by_target.items():
            # every name of a target shares its config: one Image, Docker's id the target digest
            for image in build_images(self.ctr.store, items, self._snapshots, self.root.path, PREFERRED):
                out.append(self._as_docker(image, target, items))
        return sorted(out, key=lambda i: i.id)

    @staticmethod
    def _as_docker(image: Image, target: str, items: list[ContainerdImage]) -> Image:
        image.id = target
        image.engine = "docker"
        image.namespace = MOBY
        names = sorted(i.name for i in items)
        image.tags = [familiar(n) for n in names if not n.startswith(DANGLING) and "@" not in n]
        named = [n for n in names if not n.startswith(DANGLING)]
        image.digests = sorted({f"{familiar(_repository(n))}@{target}" for n in named})
        return image

    def images(self) -> list[Image]:
        return self._images

    def image_layers(self, image: Image) -> list[Layer]:
        """The image's committed snapshots, bottom to top (a problem for each one not unpacked)."""
        return self.ctr.chain_layers(image)

    # ---- integrity --------------------------------------------------------------------------
    def _other_namespaces(self) -> tuple[str, ...]:
        return tuple(ns.name for ns in self.ctr.meta.namespaces if ns.name != MOBY)

    def verify(self, image: Image | None = None):
        """(layer verdicts, image verdicts) of the ``moby`` namespace's images (or of IMAGE, one of
        this root's Docker images), as engines/containerd/verify.py checks them: every blob against
        its digest, each layer's uncompressed stream against the config's diff id, each snapshot
        against its layer tar.  The verdicts name the Docker data root."""
        from pensieve.engines.containerd import verify as ctr_verify

        layers, images = ctr_verify.verify(self.ctr, image, self._other_namespaces(), users={})
        for v in [*layers, *images]:
            v.data_root = self.root.path
        return layers, images

    def export_layer(self, chain_id: str, write):
        """The uncompressed blob of the layer CHAIN_ID into WRITE, its snapshot checked
        (engines/containerd/verify.export_layer); LookupError when no moby image has it."""
        from pensieve.engines.containerd import verify as ctr_verify

        v = ctr_verify.export_layer(self.ctr, chain_id, write, self._other_namespaces())
        v.data_root = self.root.path
        return v

    # ---- containers -------------------------------------------------------------------------
    def container_layers(self, c: Container, image: Image | None) -> None:
        """Fill C's layers from its snapshot chain: the image's layers, ``<id>-init`` (init) and the
        active snapshot keyed by the container id (RW); what is missing is a problem on C."""
        c.namespace = MOBY
        if self.ctr.meta.namespace(MOBY) is None:
            self._problem(c, self.db_path, f"layers unknown: no {MOBY} namespace readable in {self.db_path}")
            return
        snapshotter = c.storage_driver if c.storage_driver in SNAPSHOTTERS else None
        chain, broken = self.ctr.snapshot_chain(MOBY, c.id, snapshotter)
        for message in broken:
            self._problem(c, self.db_path, f"{message}: layers below unknown")
        known = {layer.chain_id: layer for layer in self.image_layers(image)} if image is not None else {}
        init_key = c.id + "-init"
        layers: list[Layer] = []
        for snap in chain:
            role = {c.id: "rw", init_key: "init"}.get(snap.key, "image")
            layers.append(self.ctr.snapshot_layer(snap, role, known.get(snap.key)))
            if role == "rw":
                c.rw_layer = snap.id
            elif role == "init":
                c.init_layer = snap.id
            if snap.path is None and snap.key not in self.ctr.meta.not_collected:
                message = f"{role} snapshot {snap.key!r} has no directory on the evidence"
                self._problem(c, self.db_path, message)
        if chain and chain[-1].key != c.id:
            self._problem(c, self.db_path, f"no active snapshot {c.id!r}: RW layer unknown")
        c.layers = layers

    def _problem(self, c: Container, source: str, message: str) -> None:
        p = Problem(source, message, c.id)
        c.problems.append(p)
        self.problems.append(p)

    # ---- attribution ------------------------------------------------------------------------
    def whence(self, path: str, containers: list[Container], images: list[Image]) -> Attribution:
        """containerd's attribution of a path below the store, over Docker's records."""
        from pensieve.engines.containerd.whence import whence

        a = whence(_StoreView(self, containers, images), path)
        own = [c for c in containers if c.data_root == self.root.path and c.storage_driver == a.driver]
        for c in own:
            if a.layer and a.layer == c.init_layer:
                a.layer_kind = "init"  # the <id>-init snapshot: committed, but the container's own
                if c.image_id and c.image_id not in a.images:
                    a.images.append(c.image_id)
        tags = {i.id: i.tags for i in images}
        a.image_tags = list(dict.fromkeys(t for i in a.images for t in tags.get(i, [])))
        return a


class _StoreView:
    """What containerd's attribution reads of a host (root, snapshotters, metadata, records),
    with Docker's containers and images of the data root as the records."""

    def __init__(self, store: ContainerdStore, containers: list[Container], images: list[Image]) -> None:
        self.root = store.path
        self.meta = store.ctr.meta
        self._store = store
        self._containers = [c for c in containers if c.data_root == store.root.path]
        self._images = [i for i in images if i.data_root == store.root.path]

    def storage_drivers(self):
        return self._store.ctr.storage_drivers()

    def containers(self) -> list[Container]:
        return self._containers

    def images(self) -> list[Image]:
        return self._images
