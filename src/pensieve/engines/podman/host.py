"""One Podman host: containers/storage graphroots and libpod's state turned into records.

``PodmanHost(evidence)`` finds every graphroot in the evidence (:func:`find_podman_roots`:
rootful, storage.conf's graphroot, each user's rootless store, or the evidence itself) and
answers the Host interface of engines/base.py.  Layers are containers/storage's ``overlay``
driver, laid out like Docker's overlay2 (``overlay/<id>/diff``, ``link``, ``lower``, ``l/``);
their entries mean what overlay2's mean (driver.py); ``Layer.driver`` and
``Container.storage_driver`` both say Podman's own name, ``overlay``.
"""

from __future__ import annotations

import posixpath
from functools import cached_property
from typing import TYPE_CHECKING

from pensieve.engines.base import Host, StorageDriver, kubernetes_matches
from pensieve.engines.crio.layout import is_crio_metadata, is_crio_spec
from pensieve.engines.docker.images import history_steps, resolve_image, runtime_config
from pensieve.engines.docker.root import chain_ids
from pensieve.engines.podman.containers import parse_container
from pensieve.engines.podman.driver import PODMAN_OVERLAY, PodmanOverlay
from pensieve.engines.podman.gcpause import PausedGC
from pensieve.engines.podman.libpod import LibpodState, read_state
from pensieve.engines.podman.roots import find_podman_roots, is_graphroot, podman_roots, store_drivers
from pensieve.engines.podman.storage import (
    StorageImage,
    StorageLayer,
    layer_chain,
    read_big_data,
    read_containers,
    read_images,
    read_layers,
)
from pensieve.errors import LookupFailed
from pensieve.evidence import Evidence, EvidenceError
from pensieve.evidence.base import NotFound, relative_to
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import Attribution, Change, Container, Image, Layer, Problem, Volume
from pensieve.records.core import field, record

if TYPE_CHECKING:  # imported where used: a listing needs neither (start-up time)
    from pensieve.engines.podman.idmap import IdMap
    from pensieve.records.kubernetes import Pod

__all__ = ["PodmanHost", "PodmanPod", "PodmanOverlay", "find_podman_roots", "is_graphroot"]

#: Layer.driver of a Podman layer: containers/storage's name (driver.py: the registry finds the
#: overlay2 rules it follows by the layer's ``diff`` directory)
LAYER_DRIVER = PODMAN_OVERLAY.name
#: libpod's state backends (libpod.py LibpodState.backend) as ``roots`` names them
_BACKENDS = {"boltdb": "bolt", "sqlite": "sqlite"}


@record
class PodmanPod:
    """A libpod pod: its containers share namespaces with the infra container."""

    id: str
    name: str | None
    graphroot: str
    labels: dict[str, str] = field(default_factory=dict)
    created: int | None = None
    infra_id: str | None = None
    containers: list[str] = field(default_factory=list)


@record
class _Graphroot:
    path: str
    layers: dict[str, StorageLayer]
    images: list[StorageImage]
    state: LibpodState


class PodmanHost(Host):
    """Every Podman graphroot in one piece of evidence (the Host interface of engines/base.py)."""

    engine = "podman"

    def __init__(
        self, evidence: Evidence, roots: list[str] | None = None, how_found: dict[str, str] | None = None
    ) -> None:
        self.evidence = evidence
        self._how_given = how_found or {}  # graphroot -> how a caller found it (a structure search)
        self.problems: list[Problem] = []
        self.root_paths = roots if roots is not None else find_podman_roots(evidence)
        self._layer_cache: dict[tuple[str, str], list[Layer]] = {}
        #: (graphroot, container id) -> the container's own id map (containers.json uidmap/gidmap)
        self._own_maps: dict[tuple[str, str], IdMap] = {}
        self._store_maps: dict[str, IdMap | None] = {}

    @cached_property
    def roots(self) -> list[_Graphroot]:
        ev, out = self.evidence, []
        with PausedGC():  # gcpause.py: the decoded documents are kept, none is garbage
            for path in self.root_paths:
                layers = read_layers(ev, path, self.problems)
                images = read_images(ev, path, self.problems)
                out.append(_Graphroot(path, layers, images, read_state(ev, path, self.problems)))
        return out

    @cached_property
    def how_found(self) -> dict[str, str]:
        """graphroot -> how it was found (roots.py: ``given``, storage.conf, the default path, a
        rootless user); a root handed to the host that the search does not find is ``given``."""
        found = dict(podman_roots(self.evidence)) | self._how_given
        return {path: found.get(path, "given") for path in self.root_paths}

    def root_rows(self) -> list[dict]:
        """One ``roots`` row per graphroot: layout (the kind of libpod state database), the
        storage drivers with a store, the state's path and how the root was found."""
        rows = []
        for root in self.roots:
            backend = _BACKENDS.get(root.state.backend or "")
            rows.append(
                {
                    "engine": "podman",
                    "path": root.path,
                    "layout": f"libpod {backend}" if backend else "no libpod state",
                    "drivers": store_drivers(self.evidence, root.path),
                    "hints": [f"libpod state: {root.state.path}"] if root.state.path else [],
                    "found": self.how_found[root.path],
                }
            )
        return rows

    def _root(self, path: str | None) -> _Graphroot:
        return next((r for r in self.roots if r.path == path), self.roots[0])

    # ---- images ---------------------------------------------------------------------
    @cached_property
    def _images(self) -> list[Image]:
        out = []
        for root in self.roots:
            by_top = {i.top_layer: i.id for i in root.images if i.top_layer}
            for si in root.images:
                out.append(self._image(root, si, by_top))
        return out

    def _image(self, root: _Graphroot, si: StorageImage, by_top: dict[str, str]) -> Image:
        chain = layer_chain(
            root.layers,
            si.top_layer,
            posixpath.join(root.path, "overlay-images", "images.json"),
            self.problems,
            si.id,
        )
        image = Image(
            id=si.id, engine=self.engine, tags=list(si.names), created=si.created, data_root=root.path
        )
        repos = sorted({n.rsplit(":", 1)[0] if ":" in n.rsplit("/", 1)[-1] else n for n in si.names})
        image.digests = [f"{r}@{d}" for r in repos for d in dict.fromkeys(si.digests)]
        parent_layer = chain[-1].parent if chain else None
        image.parent = by_top.get(parent_layer) if parent_layer else None
        image.cache_ids = [layer.id for layer in chain]
        # containers/storage ImageSize (store.go): the diff sizes of the layers of the top layer's
        # chain and of each mapped copy's (each layer once), and every big-data item's size
        counted = {layer.id: layer for layer in chain}
        for top in si.mapped_layers:
            for layer in layer_chain(root.layers, top, "", [], si.id):
                counted.setdefault(layer.id, layer)
        sizes = [layer.diff_size for layer in counted.values() if layer.diff_size is not None]
        image.size = sum(sizes) + sum(si.big_data_sizes.values()) if sizes else None
        raw, path = read_big_data(self.evidence, root.path, si, "sha256:" + si.id, self.problems)
        image.config_path = path
        if raw is None:
            image.diff_ids = [layer.diff_digest or "" for layer in chain]
            return image
        try:
            config = load(raw, path, self.problems, subject=si.id)
        except UntrustedJSONError as exc:
            self.problems.append(Problem(path, f"image config: {exc}".replace(f"{path}: ", ""), si.id))
            return image
        image.os, image.architecture = config.str("os"), config.str("architecture")
        image.author = config.str("author")
        image.created = config.time("created") or image.created
        for key, value in runtime_config(config.obj("config")).items():
            setattr(image, key, value)
        image.diff_ids = config.obj("rootfs").list_of_str("diff_ids") or []
        image.chain_ids = chain_ids(image.diff_ids)
        infos = {
            c: _LayerInfo(layer.id, layer.diff_size) for c, layer in zip(image.chain_ids, chain, strict=False)
        }
        image.history = history_steps(config, image.diff_ids, image.chain_ids, infos)
        if [layer.diff_digest for layer in chain] != image.diff_ids:
            self.problems.append(
                Problem(path, "image config diff_ids do not match the layers.json chain", si.id)
            )
        return image

    def images(self) -> list[Image]:
        return self._images

    @cached_property
    def _image_index(self) -> dict[tuple[str | None, str], Image]:
        """(graphroot, image id) -> Image: each container's image found without a scan (the first
        of equal keys wins, as the scan it replaces did)."""
        index: dict[tuple[str | None, str], Image] = {}
        for image in self._images:
            index.setdefault((image.data_root, image.id), image)
        return index

    def image(self, ref: str) -> Image:
        img = resolve_image(self.images(), ref)
        if img is None:
            raise LookupFailed(f"no image {ref!r} in {self.evidence.description}")
        return img

    def image_layers(self, image: Image) -> list[Layer]:
        """The image's layers bottom to top (cached, shared between callers: read-only)."""
        key = (image.data_root or "", image.id)
        if key not in self._layer_cache:
            self._layer_cache[key] = self._image_layers(image)
        return self._layer_cache[key]

    def _image_layers(self, image: Image) -> list[Layer]:
        root = self._root(image.data_root)
        steps = [s for s in image.history if not s.empty_layer]
        out = []
        for i, cache_id in enumerate(image.cache_ids):
            sl = root.layers.get(cache_id or "")
            step = steps[i] if i < len(steps) else None
            out.append(self._layer(root, sl, cache_id, "image", image.id))
            out[-1].chain_id = image.chain_ids[i] if i < len(image.chain_ids) else None
            out[-1].created_by = step.created_by if step else None
            out[-1].history_index = image.history.index(step) if step else None
        return out

    def _layer(
        self, root: _Graphroot, sl: StorageLayer | None, cache_id: str | None, role: str, subject: str
    ) -> Layer:
        path = PODMAN_OVERLAY.layer_path(self.evidence, root.path, cache_id or "") if cache_id else None
        if path and not self.evidence.is_dir(path):
            if not self.evidence.not_collected(path):
                self.problems.append(Problem(path, f"{role} layer {cache_id} contents missing", subject))
            path = None
        return Layer(
            role=role,
            cache_id=cache_id,
            path=path,
            diff_id=sl.diff_digest if sl else None,
            size=sl.diff_size if sl else None,
            driver=LAYER_DRIVER,
            parent=sl.parent if sl else None,
        )

    # ---- containers -----------------------------------------------------------------
    @cached_property
    def _containers(self) -> list[Container]:
        with PausedGC():  # gcpause.py
            return self._read_containers()

    def _read_containers(self) -> list[Container]:
        out: list[Container] = []
        for root in self.roots:
            storage = {s.id: s for s in read_containers(self.evidence, root.path, self.problems)}
            libpod = root.state.containers
            for cid in list(libpod) + [s for s in storage if s not in libpod]:
                if cid not in libpod and is_crio_metadata(storage[cid].metadata):
                    continue  # CRI-O's (engines/crio): its CrioHost lists it
                runtime_spec = self._runtime_spec(root, cid) if cid in storage else None
                if cid not in libpod and is_crio_spec(runtime_spec):
                    continue
                c = parse_container(
                    libpod.get(cid), storage.get(cid), root.path, root.state.path, runtime_spec
                )
                sc = storage.get(cid)
                if sc is not None and (sc.uid_map or sc.gid_map):  # idmap.from_storage: a map of its own
                    from pensieve.engines.podman.idmap import from_storage

                    self._own_maps[(root.path, cid)] = from_storage(sc.uid_map, sc.gid_map)
                self._fill_layers(root, c, storage.get(cid) is not None)
                out.append(c)
        return out

    def _runtime_spec(self, root: _Graphroot, cid: str) -> Doc | None:
        """The OCI spec libpod handed the runtime at start (``userdata/config.json``: what podman
        inspect shows, with HOME and HOSTNAME added); None when never started or unreadable."""
        path = posixpath.join(root.path, "overlay-containers", cid, "userdata", "config.json")
        try:  # read first, asked about only when that fails (one lookup for each created container)
            raw = self.evidence.read_bytes(path, (16 << 20) + 1)
        except (EvidenceError, OSError) as exc:
            if isinstance(exc, NotFound) or not self.evidence.is_file(path):
                return None
            self.problems.append(
                Problem(path, f"runtime spec unreadable: {exc}".replace(f"{path}: ", ""), cid)
            )
            return None
        try:
            return load(raw, path, self.problems, subject=cid, max_bytes=16 << 20)
        except UntrustedJSONError as exc:
            self.problems.append(
                Problem(path, f"runtime spec unreadable: {exc}".replace(f"{path}: ", ""), cid)
            )
            return None

    def _fill_layers(self, root: _Graphroot, c: Container, in_storage: bool) -> None:
        src = posixpath.join(root.path, "overlay-containers", "containers.json")
        if not in_storage:
            self._add(c, src, "container not in containers.json: its layer is unknown")
            return
        image = self._image_index.get((root.path, c.image_id or ""))
        chain = list(self.image_layers(image)) if image is not None else []
        if image is None and c.image_id:
            self._add(c, src, f"image {c.image_id} not in images.json")
        mine: list[Problem] = []
        rw_chain = layer_chain(root.layers, c.rw_layer, src, mine, c.id)
        for p in mine:
            self._add(c, p.source, p.message)
        if image is None:  # rebuilt from the RW layer's parents
            chain = [self._layer(root, sl, sl.id, "image", c.id) for sl in rw_chain[:-1]]
        if rw_chain and rw_chain[-1].id == c.rw_layer:
            rw = self._layer(root, rw_chain[-1], c.rw_layer, "rw", c.id)
            where = PODMAN_OVERLAY.layer_path(self.evidence, root.path, c.rw_layer)
            if rw.path is None and not self.evidence.not_collected(where):
                self._add(c, src, f"RW layer {c.rw_layer} contents missing")
            chain.append(rw)
        c.layers = chain

    def _add(self, c: Container, source: str, message: str) -> None:
        p = Problem(source, message, c.id)
        c.problems.append(p)
        self.problems.append(p)

    def containers(self) -> list[Container]:
        return self._containers

    def container(self, ref: str) -> Container:
        ref = ref.strip().lstrip("/")
        cs = self._containers
        matches = [c for c in cs if c.id == ref or c.name == ref]
        if not matches and len(ref) >= 3:
            matches = [c for c in cs if c.id.startswith(ref)]
        if not matches:
            matches = kubernetes_matches(cs, ref)
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise LookupFailed(f"container {ref!r} is ambiguous ({len(matches)} matches)")
        raise LookupFailed(f"no container {ref!r} in {self.evidence.description}")

    # ---- pods and volumes ------------------------------------------------------------
    @cached_property
    def _pods(self) -> list[PodmanPod]:
        out = []
        for root in self.roots:
            for pod in root.state.pods.values():
                out.append(
                    PodmanPod(
                        id=pod.id,
                        name=pod.name,
                        graphroot=root.path,
                        labels=pod.config.dict_of_str("labels"),
                        created=pod.config.time("created"),
                        infra_id=pod.state.str("InfraContainerID") or None,
                        containers=sorted(pod.containers),
                    )
                )
        return out

    def pods(self) -> list[PodmanPod]:
        """Every pod libpod records."""
        return self._pods

    def pod_records(self) -> list[Pod]:
        """Every libpod pod as the ``pods`` command's Pod record (records/kubernetes.py): no
        Kubernetes namespace or uid; the sandbox is the infra container, whose state is the pod's
        (libpod pod.go: the pod's namespaces live as long as its infra container); the members,
        infra included, by name, each with its state and image."""
        by_key = {(c.data_root, c.id): c for c in self.containers()}
        return [self._pod_record(pod, by_key) for pod in self._pods]

    def _pod_record(self, pod: PodmanPod, by_key: dict[tuple, Container]) -> Pod:
        from pensieve.records.kubernetes import Pod, PodContainer

        record = Pod(
            name=pod.name,
            namespace=None,
            uid=None,
            sandbox_id=pod.infra_id or pod.id,
            engine="podman",
            created=pod.created,
            labels=dict(pod.labels),
        )
        for cid in pod.containers:
            c = by_key.get((pod.graphroot, cid))
            if c is None:
                record.problems.append(
                    Problem(pod.graphroot, f"pod {pod.id}: member container {cid} not in the libpod state")
                )
                record.containers.append(PodContainer(id=cid, name=None))
                continue
            record.containers.append(
                PodContainer(
                    id=c.id,
                    name=c.name,
                    state=c.state,
                    exit_code=c.exit_code,
                    image=c.image,
                    created=c.created,
                )
            )
            if cid == pod.infra_id:
                record.state = c.state
        record.containers.sort(key=lambda m: (m.name or "", m.id))
        return record

    def pod_of(self, container: Container) -> PodmanPod | None:
        """The pod CONTAINER belongs to (its libpod config's ``pod``), None when it has none."""
        root = self._root(container.data_root)
        lp = root.state.containers.get(container.id)
        pod_id = (lp.config.str("pod") or lp.pod_id) if lp is not None else None
        return next((p for p in self._pods if p.id == pod_id and p.graphroot == root.path), None)

    def volumes(self) -> list[Volume]:
        return self._volumes

    @cached_property
    def _volumes(self) -> list[Volume]:
        out = []
        for root in self.roots:
            for vol in root.state.volumes.values():
                cfg = vol.config
                path = (
                    posixpath.join(root.path, "volumes", vol.name, "_data") if "/" not in vol.name else None
                )
                out.append(
                    Volume(
                        name=vol.name,
                        engine="podman",
                        driver=cfg.str("volumeDriver") or None,
                        path=path if path and self.evidence.is_dir(path) else None,
                        created=cfg.time("createdAt"),
                        labels=cfg.dict_of_str("labels"),
                        options=cfg.dict_of_str("options"),
                        anonymous=cfg.bool("isAnon"),
                        used_by=sorted(vol.users),
                    )
                )
        return out

    # ---- owners (idmap.py) -----------------------------------------------------------
    def store_idmap(self, graphroot: str) -> IdMap | None:
        """The user namespace of GRAPHROOT when it is a rootless store (None: rootful)."""
        if graphroot not in self._store_maps:
            from pensieve.engines.podman.idmap import rootless_idmap

            self._store_maps[graphroot] = rootless_idmap(self.evidence, graphroot)
        return self._store_maps[graphroot]

    def layer_owners(self, graphroot: str, cache_id: str | None, container: Container | None = None):
        """The Owners (idmap.py) of one layer: the store's map, then the layer's own (layers.json
        uidmap/gidmap; for CONTAINER's RW layer recorded without one, the container's own from
        containers.json); None when the ids on disk are the ids the container sees."""
        from pensieve.engines.podman.idmap import from_storage, owners

        root = self._root(graphroot)
        sl = root.layers.get(cache_id or "")
        own = from_storage(sl.uid_map, sl.gid_map) if sl is not None else None
        if own is None and container is not None and cache_id and cache_id == container.rw_layer:
            own = self._own_maps.get((root.path, container.id))
        return owners(self.store_idmap(root.path), own)

    def owner_maps(self, target: Container | Image, layers: list[Layer]) -> list | None:
        """Per layer of TARGET's view, its Owners (None where ids read as on disk); None when no
        layer needs one (engines/base.py)."""
        container = target if isinstance(target, Container) else None
        maps = [self.layer_owners(target.data_root or "", layer.cache_id, container) for layer in layers]
        return maps if any(m is not None for m in maps) else None

    def diff_filter(self, container: Container, changes: list[Change]) -> list[Change]:
        """`podman diff`'s silences (diff.py: libpod's containerMounts) on top of Docker's rules;
        owners as the container sees them (idmap.py: a rootless store's map, a container's own)."""
        from pensieve.engines.podman.diff import mark_podman_silent
        from pensieve.engines.podman.idmap import Owners

        root = container.data_root or ""
        if self.owner_maps(container, container.layers) is not None:
            identity = Owners(())  # the ids as they are on disk (the Owners of no map)
            identity.map_changes(changes, lambda cache_id: self.layer_owners(root, cache_id, container))
        return mark_podman_silent(changes)

    # ---- verify ---------------------------------------------------------------------
    def verify_layers(self, image: Image | None = None, images: bool = True):
        """Layers rebuilt from their tar-split records, images' big data hashed (verify.py)."""
        from pensieve.engines.podman.verify import verify

        return verify(self, image, images)

    def export_layer(self, chain_id: str, write):
        from pensieve.engines.podman.verify import export_layer

        return export_layer(self, chain_id, write)

    # ---- whence ---------------------------------------------------------------------
    def holds(self, path: str) -> bool:
        """PATH (an evidence path) is below one of the graphroots."""
        return any(relative_to(root, path) is not None for root in self.root_paths)

    def whence(self, path: str) -> Attribution:
        """Which layer, images and containers PATH belongs to (whence.py)."""
        from pensieve.engines.podman.whence import whence

        return whence(self, path)

    # ---- drivers and boundaries ------------------------------------------------------
    def driver(self, layer: Layer) -> StorageDriver:
        return PODMAN_OVERLAY

    def storage_drivers(self) -> list[StorageDriver]:
        return [PODMAN_OVERLAY]

    def data_root_dirs(self) -> tuple[str, ...]:
        return ("overlay", "overlay-layers", "overlay-images", "overlay-containers", "libpod", "volumes")

    def boundaries(self) -> list[str]:
        out = list(self.evidence.boundaries())
        for root in self.root_paths:
            host = self.evidence.host_path(root)
            if host and host not in out:
                out.append(host)
        return out


@record
class _LayerInfo:
    """What docker.images.history_steps wants of a layer: its cache id and size."""

    cache_id: str
    size: int | None
