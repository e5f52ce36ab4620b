"""One containerd root as a :class:`~pensieve.engines.base.Host`: every namespace's containers and
images as the engine-neutral records, their layers from the snapshotters.

* a container's layers are its snapshot's parent chain (containerd snapshots/snapshotter.go:
  ``Prepare(key, parent)``), bottom to top; the active snapshot is the RW layer;
* an image's layers are the committed snapshots named by its chain ids (rootfs/apply.go);
* a container's task state comes from the runtime's state directory (``/run/containerd`` by
  default: ``io.containerd.runtime.v2.task/<ns>/<id>/`` holds the bundle and ``init.pid``,
  runtime/v2/bundle.go), which only a live host has: on a powered-off host's disk it is gone.

Refs: ``ID``, a unique id prefix, a name, and ``NS/REF`` for one namespace's.
"""

from __future__ import annotations

from functools import cached_property

from pensieve.engines.base import Host, StorageDriver, kubernetes_matches
from pensieve.engines.containerd.cri import CriMetadata, apply_cri, apply_status, build_pods, cri_metadata
from pensieve.engines.containerd.images import ContentStore, build_images, pick_snapshot
from pensieve.engines.containerd.metadata import META_DB, ContainerdMetadata
from pensieve.engines.containerd.snapshotters import PREFERRED, SNAPSHOTTERS
from pensieve.engines.docker.containers import _risks
from pensieve.engines.docker.images import resolve_image
from pensieve.errors import LookupFailed
from pensieve.evidence.base import Evidence, EvidenceError, join
from pensieve.formats.untrusted_json import Doc
from pensieve.records.containerd import ContainerdContainer, Snapshot
from pensieve.records.core import Problem
from pensieve.records.host import Container, Image, Layer
from pensieve.records.kubernetes import Pod

TASK_DIRS = ("io.containerd.runtime.v2.task", "io.containerd.runtime.v1.linux")
#: the capabilities containerd (oci/spec.go defaultUnixCaps) and Docker give by default
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
#: the longest parent chain followed (a cycle in a hostile metadata.db ends here)
MAX_CHAIN = 256
CRI_CONTAINER_NAME = "io.kubernetes.container.name"
CRI_POD_NAME = "io.kubernetes.pod.name"


class ContainerdHost(Host):
    """Every namespace of one containerd root (``ContainerdHost(evidence, "/var/lib/containerd")``).

    STATE is the evidence path of the runtime's state directory when the evidence holds it."""

    engine = "containerd"

    def __init__(
        self,
        evidence: Evidence,
        root: str,
        state: str | None = None,
        how_found: str = "given",
        problems: list[Problem] | None = None,
    ) -> None:
        self.evidence = evidence
        self.root = root
        self.state = state if state and evidence.is_dir(state) else None
        self.state_named = state
        self.how_found = how_found
        self.meta = ContainerdMetadata(evidence, root)
        self.meta.close()  # every value is read by now
        if problems is not None:  # a caller's channel (Docker's containerd store) gets them all
            problems.extend(self.meta.problems)
        self.problems: list[Problem] = self.meta.problems if problems is None else problems
        self.store = ContentStore(evidence, root, self.problems)
        self._cri: dict[str, CriMetadata] = {}  # container id -> its CRI metadata

    def close(self) -> None:
        self.meta.close()
        super().close()

    # ---- snapshots ------------------------------------------------------------------------
    @cached_property
    def _snapshots(self) -> dict[tuple[str, str], list[Snapshot]]:
        """(namespace, key) -> that key's snapshots (one per snapshotter)."""
        out: dict[tuple[str, str], list[Snapshot]] = {}
        for ns in self.meta.namespaces:
            for snap in ns.snapshots:
                out.setdefault((ns.name, snap.key), []).append(snap)
        return out

    def snapshot(self, namespace: str, key: str, snapshotter: str | None = None) -> Snapshot | None:
        candidates = self._snapshots.get((namespace, key), [])
        if snapshotter is not None:
            return next((s for s in candidates if s.snapshotter == snapshotter), None)
        return pick_snapshot(candidates, PREFERRED)

    # ---- images ---------------------------------------------------------------------------
    @cached_property
    def _images(self) -> list[Image]:
        out: list[Image] = []
        for ns in self.meta.namespaces:
            by_key = {key: snaps for (name, key), snaps in self._snapshots.items() if name == ns.name}
            out += build_images(self.store, ns.images, by_key, self.root, PREFERRED)
        return out

    def images(self) -> list[Image]:
        return self._images

    def image(self, ref: str) -> Image:
        return self._one(ref, self._images, "image", _match_image)

    def image_layers(self, image: Image) -> list[Layer]:
        """The committed snapshots of the image's chain ids, bottom to top."""
        return self._image_layers(image.namespace or "", image.id)

    def _image_layers(self, namespace: str, image_id: str) -> list[Layer]:
        image = next((i for i in self._images if i.id == image_id and i.namespace == namespace), None)
        return [] if image is None else self.chain_layers(image)

    def chain_layers(self, image: Image) -> list[Layer]:
        """The committed snapshots of IMAGE's chain ids in its namespace, bottom to top (a problem
        for each one not unpacked); IMAGE need not be one of this host's own records."""
        namespace = image.namespace or ""
        steps = [s for s in image.history if not s.empty_layer]
        layers: list[Layer] = []
        for i, chain in enumerate(image.chain_ids):
            snap = self.snapshot(namespace, chain)
            step = steps[i] if i < len(steps) else None
            layers.append(
                Layer(
                    role="image",
                    cache_id=snap.id if snap else None,
                    path=snap.path if snap else None,
                    diff_id=image.diff_ids[i],
                    chain_id=chain,
                    size=snap.size if snap else None,
                    driver=snap.snapshotter if snap else None,
                    created_by=step.created_by if step else None,
                    history_index=image.history.index(step) if step else None,
                    parent=snap.parent if snap else None,
                )
            )
            if snap is None:
                self.problems.append(
                    Problem(
                        self.meta.db_path,
                        f"image {image.id} ({namespace}): layer {i} (chain id {chain}) is not unpacked "
                        "as a snapshot",
                        image.id,
                    )
                )
        return layers

    # ---- containers -----------------------------------------------------------------------
    @cached_property
    def _containers(self) -> list[Container]:
        return [self._container(c) for c in self.meta.containers()]

    def containers(self) -> list[Container]:
        return self._containers

    def container(self, ref: str) -> Container:
        return self._one(ref, self._containers, "container", _match_container)

    def _container(self, src: ContainerdContainer) -> Container:
        spec = src.spec
        c = Container(
            id=src.id,
            engine="containerd",
            name=_name(src),
            image=src.image,
            created=src.created,
            labels=dict(src.labels),
            storage_driver=src.snapshotter,
            config_path=join(self.root, META_DB),
            data_root=self.root,
            problems=list(src.problems),
            namespace=src.namespace,
            updated=src.updated,
        )
        if spec is not None:
            _apply_spec(c, spec)
        image = self._image_named(src.namespace, src.image)
        c.image_id = image.id if image else None
        self._task_state(c)
        self._cri_fields(c, src)
        c.layers = self._container_layers(c, src, image)
        c.rw_layer = c.layers[-1].cache_id if c.layers and c.layers[-1].role == "rw" else None
        return c

    def _cri_fields(self, c: Container, src: ContainerdContainer) -> None:
        """Pod fields, and state from the CRI plugin's status file (engines/containerd/cri)."""
        found: list[Problem] = []
        meta = cri_metadata(src, found)
        if meta is not None:
            self._cri[c.id] = meta
        apply_cri(c, src, meta, found)
        if c.pod_name is not None or c.is_sandbox is not None:
            apply_status(c, self.evidence, self.root, found)
        c.problems += found
        self.problems += found

    def pods(self) -> list[Pod]:
        """The Kubernetes pods of the CRI containers, their containers grouped."""
        return build_pods(self._containers, self._cri, self.problems, self.state is not None)

    def _problem(self, c: Container, source: str, message: str) -> None:
        p = Problem(source, message, c.id)
        c.problems.append(p)
        self.problems.append(p)

    def _image_named(self, namespace: str, name: str | None) -> Image | None:
        return next((i for i in self._images if i.namespace == namespace and name in i.tags), None)

    @cached_property
    def _no_state(self) -> Problem:
        """One problem, shared by every container, for a runtime state directory not on disk."""
        where = self.state_named or "the runtime state directory (/run/containerd)"
        p = Problem(
            self.meta.db_path,
            f"task state not on disk: {where} is not in the evidence (a powered-off host's /run is "
            "gone); every container's state is unknown",
        )
        self.problems.append(p)
        return p

    def _task_state(self, c: Container) -> None:
        """State and pid from the task bundle in the runtime's state directory."""
        if self.state is None:
            c.problems.append(self._no_state)
            return
        bundle = next(
            (b for d in TASK_DIRS if self.evidence.is_dir(b := join(self.state, d, c.namespace or "", c.id))),
            None,
        )
        if bundle is None:
            c.state = "created"  # no task: never started, or its task deleted
            return
        c.state = "unknown"  # a task existed; running or stopped is kept only in the shim's memory
        pid_path = join(bundle, "init.pid")
        try:
            text = self.evidence.read_text(pid_path, 64).strip()
        except (EvidenceError, OSError):
            return
        if text.isdigit() and 0 < int(text) < 1 << 22:
            c.pid = int(text)
        else:
            self._problem(c, pid_path, f"init.pid holds no pid: {text[:20]!r}")

    def _container_layers(self, c: Container, src: ContainerdContainer, image: Image | None) -> list[Layer]:
        """The snapshot's parent chain, bottom to top; the active snapshot as the RW layer."""
        if not src.snapshot_key:
            self._problem(c, c.config_path or c.id, "no snapshot key: no filesystem")
            return []
        chain, broken = self.snapshot_chain(src.namespace, src.snapshot_key, src.snapshotter)
        for message in broken:
            self._problem(c, self.meta.db_path, message)
        by_chain = {}
        if image is not None:
            by_chain = {layer.chain_id: layer for layer in self._image_layers(src.namespace, image.id)}
        layers = []
        for snap in chain:
            role = "rw" if snap.key == src.snapshot_key else "image"
            layers.append(self.snapshot_layer(snap, role, by_chain.get(snap.key)))
            if snap.path is None and snap.key not in self.meta.not_collected:
                self._problem(c, self.meta.db_path, f"snapshot {snap.key!r} has no directory on the evidence")
        return layers

    def snapshot_chain(
        self, namespace: str, key: str, snapshotter: str | None
    ) -> tuple[list[Snapshot], list[str]]:
        """(the snapshots from KEY down its parents, bottom first; what broke the walk: a key not
        on record, a loop).  Snapshots, containerd snapshots/snapshotter.go ``Prepare(key, parent)``."""
        chain: list[Snapshot] = []
        broken: list[str] = []
        at: str | None = key
        while at is not None and len(chain) < MAX_CHAIN:
            snap = self.snapshot(namespace, at, snapshotter)
            if snap is None:
                broken.append(f"snapshot {at!r} ({snapshotter}) is not on record")
                break
            if snap in chain:
                broken.append(f"snapshot parents loop at {at!r}")
                break
            chain.append(snap)
            at = snap.parent
        return chain[::-1], broken

    @staticmethod
    def snapshot_layer(snap: Snapshot, role: str, known: Layer | None = None) -> Layer:
        """The Layer of snapshot SNAP; KNOWN (the image's layer of the same chain id) lends its
        diff id, chain id and history step."""
        return Layer(
            role=role,
            cache_id=snap.id,
            path=snap.path,
            diff_id=known.diff_id if known else None,
            chain_id=known.chain_id if known else None,
            size=snap.size,
            driver=snap.snapshotter,
            created_by=known.created_by if known else None,
            history_index=known.history_index if known else None,
            parent=snap.parent,
        )

    # ---- lookups --------------------------------------------------------------------------
    def _one(self, ref: str, items: list, what: str, match) -> object:
        ref = ref.strip()
        found = []
        namespace, _, rest = ref.partition("/")
        if rest and self.meta.namespace(namespace) is not None:
            found = match([i for i in items if i.namespace == namespace], rest)
        if not found:
            found = match(items, ref)
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(sorted(f"{i.namespace}/{_short(i.id)}" for i in found)[:6])
            raise LookupFailed(
                f"{what} {ref!r} is ambiguous ({len(found)} matches: {names}); name it as NS/REF"
            )
        raise LookupFailed(f"no {what} {ref!r} in {self.root} of {self.evidence.description}")

    # ---- storage --------------------------------------------------------------------------
    def storage_drivers(self) -> list[StorageDriver]:
        return list(SNAPSHOTTERS.values())

    def data_root_dirs(self) -> tuple[str, ...]:
        return tuple(d.store_dirs[0] for d in SNAPSHOTTERS.values()) + (
            "io.containerd.content.v1.content",
            "io.containerd.metadata.v1.bolt",
        )

    def boundaries(self) -> list[str]:
        out = list(self.evidence.boundaries())
        for path in (self.root, self.state):
            host = self.evidence.host_path(path) if path else None
            if host and host not in out:
                out.append(host)
        return out

    def verify_layers(self, image: Image | None = None, images: bool = True, exclude: tuple[str, ...] = ()):
        """Every image's blobs and snapshots against their digests (verify.py), the namespaces
        EXCLUDE names left out (the image verdicts come with the layers: IMAGES is not needed)."""
        from pensieve.engines.containerd.verify import verify

        return verify(self, image, exclude)

    def export_layer(self, chain_id: str, write, exclude: tuple[str, ...] = ()):
        """The layer's blob, uncompressed, into WRITE, its snapshot checked (verify.export_layer)."""
        from pensieve.engines.containerd.verify import export_layer

        return export_layer(self, chain_id, write, exclude)

    def whence(self, path: str):
        """Attribute an evidence path below this root (see :mod:`.whence`)."""
        from pensieve.engines.containerd.whence import whence

        return whence(self, path)


def _short(value: str) -> str:
    return value.removeprefix("sha256:")[:12]


def _match_container(items: list[Container], ref: str) -> list[Container]:
    found = [c for c in items if ref in (c.id, c.name)]
    if not found and len(ref) >= 3:
        found = [c for c in items if c.id.startswith(ref)]
    return found or kubernetes_matches(items, ref)


def _match_image(items: list[Image], ref: str) -> list[Image]:
    found = [i for i in items if ref in i.tags or ref in i.digests or ref == i.id]
    if not found:
        by_namespace: dict[str | None, list[Image]] = {}
        for i in items:
            by_namespace.setdefault(i.namespace, []).append(i)
        found = [got for imgs in by_namespace.values() if (got := resolve_image(imgs, ref)) is not None]
    return found


def _name(src: ContainerdContainer) -> str:
    """The CRI container name (a sandbox: its pod's name), else the id."""
    return src.labels.get(CRI_CONTAINER_NAME) or src.labels.get(CRI_POD_NAME) or src.id


def _apply_spec(c: Container, spec) -> None:
    """Process, mounts, namespaces and privileges from the container's OCI spec."""
    c.command = list(spec.args)
    c.env = list(spec.env)
    c.working_dir = spec.cwd
    c.hostname = spec.hostname
    if spec.uid is not None:
        c.user = f"{spec.uid}:{spec.gid}" if spec.gid is not None else str(spec.uid)
    c.mounts = list(spec.mounts)
    c.privileged = spec.privileged
    bounding = spec.capabilities.get("bounding")
    if bounding is not None and not spec.privileged:
        c.cap_add = [cap for cap in bounding if cap not in DEFAULT_CAPS]
        c.cap_drop = [cap for cap in DEFAULT_CAPS if cap not in bounding]
    kinds = {ns.type: ns.path for ns in spec.namespaces}
    modes = {}
    for kind in ("network", "pid", "ipc", "uts"):
        modes[kind] = "host" if kind not in kinds else (f"ns:{kinds[kind]}" if kinds[kind] else None)
    c.network_mode, c.pid_mode, c.ipc_mode = modes["network"], modes["pid"], modes["ipc"]
    if not spec.seccomp and not spec.privileged:
        c.security_opt = ["seccomp:unconfined"]
    c.risks = _risks(c, Doc({}, "", []))
    c.risks[1:1] = [f"host {kind} namespace" for kind in ("pid", "ipc", "uts") if modes[kind] == "host"]
