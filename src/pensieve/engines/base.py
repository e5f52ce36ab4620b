"""The Host interface: what every engine (Docker, containerd, Podman) answers.

A host is one piece of evidence seen through one engine's storage. Analyses -- layered views,
diff, whence, verify, compare, memory-source lookup, recovery attribution -- call only this
interface and the Evidence interface: no engine internals, no storage-driver names.

Implementers provide the abstract methods of :class:`Host` (``containers``, ``container``,
``images``, ``image``, ``image_layers``) and the attributes ``evidence``, ``engine`` and
``problems``; the other methods have defaults an engine overrides where it has the thing.
They read only through ``evidence`` (so read-only, ``O_NOATIME`` and no symlink followed out
of the evidence root hold for them too) and turn every bad item into a problem.

Callers may rely on:

* ``evidence`` -- the :class:`~pensieve.evidence.base.Evidence` the host reads (nothing else:
  the host never writes to it);
* ``engine`` -- the engine's name (``"docker"``, ``"containerd"``, ``"podman"``, ``"archive"``);
* ``problems`` -- the one channel for what could not be read, as :class:`~pensieve.records.Problem`
  records naming the evidence path; a problem never stops the rest of the inventory;
* ``containers()`` / ``container(ref)`` -- every container, or one by id, unique prefix or name
  (``LookupFailed`` when absent or ambiguous); each carries its ordered layer chain;
* ``images()`` / ``image(ref)`` / ``image_layers(image)`` -- images, and an image's layers bottom
  to top (each :class:`~pensieve.records.Layer` with its contents' evidence path, or None;
  shared between callers: read-only);
* ``volumes()`` -- volumes and who mounts them;
* ``layers(container)`` -- a container's layers bottom (image base) to top (RW);
* ``layer_dir(layer)`` -- the evidence path of a layer's contents (None when missing);
* ``storage_drivers()`` / ``data_root_dirs()`` -- the drivers a data root may hold and the
  directory names a data root is made of (to place a bare host path);
* ``driver(layer)`` -- the :class:`StorageDriver` that gives a layer's directory its meaning
  (whiteouts, opaque directories, redirects, copy-up and native-diff rules): the only place
  driver rules live (:func:`storage_driver` finds one by the name a layer records);
* ``checkpoints(container)`` -- the container's checkpoints, name -> evidence path;
* ``diff_filter(container, changes)`` -- the changes marked as the engine's own diff lists them;
* ``owner_maps(target, layers)`` -- per layer of a view, the map (``uid(id)``, ``gid(id)``) from
  the ids on disk to the ids the container sees (a user namespace's), None: ids as on disk;
* ``verify_layers(image, images)`` -- (layer verdicts, image verdicts) of every image layer (or
  IMAGE's), each rebuilt or re-read from what the engine keeps and checked against the digests
  it recorded (:mod:`pensieve.records.integrity`); IMAGES False lets an engine skip the image
  verdicts it only computes for them;
* ``export_layer(chain_id, write)`` -- the layer's tar stream handed to WRITE piece by piece, and
  its verdict (LookupError when the host has no such layer);
* ``close()`` (and ``with host:``) -- gives back descriptors and spool files;
* ``boundaries()`` -- the host paths that are evidence (the evidence's own, and each data root
  where the evidence is a directory here), which no output may touch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pensieve.evidence.base import DirEntry, Evidence
from pensieve.records import Change, Container, Image, Layer, Problem, Volume
from pensieve.records.integrity import ImageVerdict, LayerVerdict

#: what receives a layer's tar stream piece by piece (a memoryview valid only during the call)
StreamSink = Callable[[bytes | memoryview], Any]


class LayerDir:
    """One layer's copy of one directory, the driver's whiteouts already interpreted."""

    __slots__ = ("entries", "whiteouts", "opaque")

    def __init__(self, entries: dict, whiteouts: set[str] | None = None, opaque: bool = False) -> None:
        self.entries = entries  # name -> FileStat of what the layer provides
        self.whiteouts = whiteouts if whiteouts is not None else set()  # names it deletes below
        self.opaque = opaque  # hides every lower copy of the directory


class LayerPlace:
    """Where an evidence path below a data root falls in a driver's layer store."""

    __slots__ = ("layer_id", "container_path", "bookkeeping")

    def __init__(self, layer_id: str, container_path: str | None, bookkeeping: bool = False) -> None:
        self.layer_id = layer_id
        self.container_path = container_path  # the path inside the layer's tree, if contents
        self.bookkeeping = bookkeeping  # the driver's own files about the layer (link, lower, work)


class StorageDriver(ABC):
    """How one storage driver lays a layer out and what its entries mean.

    Contract:

    * ``name`` -- the driver's name as the engine records it (``Layer.driver``);
    * ``store_dirs`` -- the directories below a data root the driver owns;
    * ``layer_path(evidence, data_root, cache_id, role)`` -- where a layer's contents live;
    * ``layer_store(data_root)`` -- the directory whose entries name its layers (None: ask
      ``layer_path`` per layer);
    * ``is_snapshot(layer)`` -- the layer holds the whole tree, not a diff (``layer_form(path)``:
      ``overlay`` | ``overlay-upper`` | ``aufs`` | ``snapshot``, for the layer verifier);
    * ``read_dir(evidence, host_dir, rel, listing, snapshot)`` -- one layer directory with its whiteouts
      and opaqueness interpreted;
    * ``redirect(evidence, host_dir, parent_rel)`` -- (lower path, problem) of a renamed
      directory: a path inside the lower layers or None, never anything climbing out;
    * ``native_diff`` -- ``docker diff`` uses the driver's own differ (every non-directory in the
      RW layer present below was copied up: modified); False: the naive stat comparison;
    * ``subsumes_init(layers)`` -- the RW layer already holds the init layer's copy (legacy
      overlay), which must not merge in again;
    * ``place(rel)`` -- where a path relative to a data root falls in the driver's store;
    * ``lowers(evidence, data_root, cache_id)`` -- the layer ids below a layer as the driver
      itself records them (None where it records none);
    * ``private_xattrs`` -- xattr name prefixes that are the driver's, not the image's.
    """

    name: str = ""
    #: how a layer's directory reads: "overlay" | "overlay-upper" | "aufs" | "snapshot"
    form: str = "overlay"
    store_dirs: tuple[str, ...] = ()
    native_diff: bool = True
    #: the driver records each layer's lowers (``lowers`` answers from them)
    records_lowers: bool = False
    private_xattrs: tuple[str, ...] = ()

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        raise NotImplementedError(f"storage driver {self.name!r} keeps no layer store")

    def layer_store(self, data_root: str) -> str | None:
        return None

    def layer_form(self, path: str) -> str:
        """The form of the layer directory at PATH (``form`` unless it varies per layer)."""
        return self.form

    def is_snapshot(self, layer: Layer) -> bool:
        return False

    @abstractmethod
    def read_dir(
        self, evidence: Evidence, host_dir: str, rel: str, listing: list[DirEntry], snapshot: bool = False
    ) -> LayerDir:
        """The layer's copy of the directory REL (at HOST_DIR), whiteouts interpreted; SNAPSHOT
        when ``is_snapshot`` said so for the layer."""

    def redirect(self, evidence: Evidence, host_dir: str, parent_rel: str) -> tuple[str | None, str | None]:
        return None, None

    def subsumes_init(self, layers: list[Layer]) -> bool:
        return False

    def place(self, rel: str) -> LayerPlace | None:
        return None

    def lowers(self, evidence: Evidence, data_root: str, cache_id: str) -> list[str] | None:
        return None


#: the modules that declare storage drivers (a plugin registry: each module's ``DRIVERS`` lists
#: its drivers; the first module's ``FALLBACK`` reads a layer whose driver name is unknown).
#: A new engine adds its module here; this module imports none of them until a name is looked up.
#: A module may also list ``CLAIMS``, (name, claims(layer), driver): for a layer of that name the
#: claiming driver wins (two engines' drivers of one name: Docker's legacy ``overlay`` and
#: containers/storage's, told apart by the layer's directory).
DRIVER_MODULES = (
    "pensieve.engines.docker.drivers",
    "pensieve.engines.containerd.snapshotters",
    "pensieve.engines.podman.driver",
)

_registry: dict[str, StorageDriver] = {}
_fallback: list[StorageDriver] = []
_claims: list[tuple[str, Callable[[Layer], bool], StorageDriver]] = []


def _drivers() -> dict[str, StorageDriver]:
    """Every registered StorageDriver by name, the DRIVER_MODULES read on first use."""
    if not _registry:
        import importlib

        for module_name in DRIVER_MODULES:
            module = importlib.import_module(module_name)
            for driver in module.DRIVERS:
                _registry.setdefault(driver.name, driver)
            _claims.extend(getattr(module, "CLAIMS", ()))
            if not _fallback and getattr(module, "FALLBACK", None) is not None:
                _fallback.append(module.FALLBACK)
    return _registry


def storage_driver(name: str | None, layer: Layer | None = None) -> StorageDriver:
    """The StorageDriver for the name a layer records (unknown names read as overlay diffs);
    with the LAYER, a driver that claims it (``CLAIMS``) wins over the name's."""
    drivers = _drivers()
    if layer is not None:
        claimed = next((d for n, claims, d in _claims if n == name and claims(layer)), None)
        if claimed is not None:
            return claimed
    return drivers.get(name or "") or _fallback[0]


def private_xattr_prefixes() -> tuple[str, ...]:
    """The xattr name prefixes any storage driver keeps for itself (never image content)."""
    return tuple(dict.fromkeys(p for d in _drivers().values() for p in d.private_xattrs))


class Host(ABC):
    """One engine's view of one piece of evidence (the contract: this module's docstring)."""

    evidence: Evidence
    engine: str = ""
    problems: list[Problem]

    @abstractmethod
    def containers(self) -> list[Container]:
        """Every container, each with its layer chain resolved."""

    @abstractmethod
    def container(self, ref: str) -> Container:
        """One container by full id, unique id prefix or name; LookupFailed otherwise."""

    @abstractmethod
    def images(self) -> list[Image]:
        """Every image."""

    @abstractmethod
    def image(self, ref: str) -> Image:
        """One image by id, id prefix, tag or digest; LookupFailed otherwise."""

    @abstractmethod
    def image_layers(self, image: Image) -> list[Layer]:
        """The image's layers bottom to top (shared between callers: treat as read-only)."""

    def layers(self, container: Container) -> list[Layer]:
        """The container's layers bottom (image base) to top (RW)."""
        return container.layers

    def layer_dir(self, layer: Layer) -> str | None:
        """Evidence path of the layer's contents, None when they are missing."""
        return layer.path

    def driver(self, layer: Layer) -> StorageDriver:
        """The storage driver that gives the layer's directory its meaning."""
        return storage_driver(layer.driver, layer)

    def storage_drivers(self) -> list[StorageDriver]:
        """The drivers whose layer stores a data root of this engine may hold."""
        return []

    def data_root_dirs(self) -> tuple[str, ...]:
        """The top-level directory names of this engine's data roots (layer stores and the rest)."""
        return ()

    def volumes(self) -> list[Volume]:
        """Volumes and the containers mounting them (none for engines without volumes)."""
        return []

    def checkpoints(self, container: Container) -> dict[str, str]:
        """The container's checkpoints: name -> evidence path of the CRIU image directory."""
        return {}

    def diff_filter(self, container: Container, changes: list[Change]) -> list[Change]:
        """CHANGES of CONTAINER with ``engine_reports`` set as the engine's own diff command
        reports them (the default: as computed, Docker's rules)."""
        return changes

    def owner_maps(self, target: Container | Image, layers: list[Layer]) -> list | None:
        """Per layer of TARGET's view, how its owners on disk read inside (None: as on disk)."""
        return None

    def verify_layers(
        self, image: Image | None = None, images: bool = True
    ) -> tuple[list[LayerVerdict], list[ImageVerdict]]:
        """Verdicts of every image layer of the host (or of IMAGE's, one of the host's images)
        and, unless IMAGES is False (an engine may then return none), of every image; an engine
        that keeps nothing to verify against returns none."""
        return [], []

    def export_layer(self, chain_id: str, write: StreamSink) -> LayerVerdict:
        """Hand the tar stream of the layer CHAIN_ID to WRITE and return its verdict; LookupError
        when the host holds no such layer."""
        raise LookupError(f"no layer {chain_id} in {self.evidence.description}")

    def boundaries(self) -> list[str]:
        """Host paths that are evidence: the evidence's own, and every data root on it."""
        return self.evidence.boundaries()

    def close(self) -> None:
        """Give back what the host holds open (the evidence's descriptors, spool files); calling
        it twice is harmless.  Hosts are context managers: ``with open_host(src) as host: ...``."""
        self.evidence.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def kubernetes_matches(containers: list[Container], ref: str) -> list[Container]:
    """The CRI containers REF names as Kubernetes does: ``container``, ``pod/container`` or
    ``namespace/pod/container``; of one container's restarts the latest attempt (as ``kubectl
    logs`` shows), several containers when the name is ambiguous."""
    parts = ref.split("/")
    if len(parts) > 3:
        return []
    name, pod, ns = (
        parts[-1],
        (parts[-2] if len(parts) > 1 else None),
        (parts[0] if len(parts) == 3 else None),
    )
    found = [
        c
        for c in containers
        if c.k8s_container == name and pod in (None, c.pod_name) and ns in (None, c.pod_namespace)
    ]
    latest: dict[tuple, Container] = {}
    for c in found:
        key = (c.pod_namespace, c.pod_name, c.pod_uid, c.k8s_container)
        if key not in latest or (c.attempt or 0) > (latest[key].attempt or 0):
            latest[key] = c
    return list(latest.values())
