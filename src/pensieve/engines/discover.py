"""Which engines a piece of evidence holds, and one Host over all of them.

:func:`find_containerd_roots` looks where containerd and the distributions embedding it keep
their root (each with the state directory its runtime uses, containerd defaults and the projects'
documented paths):

* ``/var/lib/containerd`` (state ``/run/containerd``), or ``root``/``state`` of
  ``/etc/containerd/config.toml``;
* k3s ``/var/lib/rancher/k3s/agent/containerd`` and rke2 ``/var/lib/rancher/rke2/agent/containerd``
  (state ``/run/k3s/containerd``), microk8s ``/var/snap/microk8s/common/var/lib/containerd``
  (state ``/var/snap/microk8s/common/run/containerd``), k0s ``/var/lib/k0s/containerd``
  (state ``/run/k0s/containerd``);
* Docker's containerd image store ``DATA_ROOT/containerd/daemon`` (state
  ``/run/docker/containerd/daemon``);
* the SOURCE itself, or a directory right below it (a copied root, with a ``state/`` beside it
  when the runtime state was copied too).

A root is a directory holding ``io.containerd.metadata.v1.bolt/meta.db``.  Docker data roots are
found by :class:`~pensieve.engines.docker.DockerHost`'s own search.  :func:`open_engines` gives
that DockerHost unchanged when Docker is all there is, a ContainerdHost for a lone containerd
root, and a :class:`MultiHost` over several.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from pensieve.engines.base import Host, StorageDriver
from pensieve.engines.containerd.layout import META_DB, MOBY_NAMESPACES
from pensieve.engines.crio.roots import crio_roots, podman_uses
from pensieve.engines.docker import DockerHost
from pensieve.engines.docker.root import DockerRoot, find_data_roots
from pensieve.engines.podman.roots import find_podman_roots
from pensieve.errors import LookupFailed, NotADataRoot
from pensieve.evidence.base import Evidence, EvidenceError, join, normalize, relative_to
from pensieve.records import Change, Container, Image, Layer, Problem, Volume

if TYPE_CHECKING:  # the engines' readers are imported only where their roots are found
    from pensieve.engines.containerd.host import ContainerdHost

#: (root, state directory, how it was found) of containerd as installed by each distribution
CONTAINERD_PLACES = (
    ("/var/lib/containerd", "/run/containerd", "default location"),
    ("/var/lib/rancher/k3s/agent/containerd", "/run/k3s/containerd", "k3s"),
    ("/var/lib/rancher/rke2/agent/containerd", "/run/k3s/containerd", "rke2"),
    (
        "/var/snap/microk8s/common/var/lib/containerd",
        "/var/snap/microk8s/common/run/containerd",
        "microk8s",
    ),
    ("/var/lib/k0s/containerd", "/run/k0s/containerd", "k0s"),
)
DOCKER_CONTAINERD = "containerd/daemon"
DOCKER_CONTAINERD_STATE = "/run/docker/containerd/daemon"
CONFIG_TOML = "/etc/containerd/config.toml"
TASK_DIR = "io.containerd.runtime.v2.task"


def is_containerd_root(evidence: Evidence, path: str) -> bool:
    """PATH holds containerd's metadata store."""
    return evidence.is_file(join(path, META_DB))


def _configured(evidence: Evidence, problems: list[Problem]) -> tuple[str | None, str | None]:
    """(root, state) set in /etc/containerd/config.toml (None where unset or unreadable)."""
    if not evidence.is_file(CONFIG_TOML):
        return None, None
    import tomllib

    try:
        doc = tomllib.loads(evidence.read_text(CONFIG_TOML, 1 << 20))
    except (EvidenceError, OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(Problem(CONFIG_TOML, f"containerd config unreadable: {exc}"))
        return None, None
    root, state = doc.get("root"), doc.get("state")
    return (root if isinstance(root, str) else None), (state if isinstance(state, str) else None)


def _beside(evidence: Evidence, root: str) -> str | None:
    """A copied runtime state directory next to a copied root (``<parent>/state``)."""
    state = join(posixpath.dirname(root.rstrip("/")) or "/", "state")
    return state if evidence.is_dir(join(state, TASK_DIR)) else None


def find_containerd_roots(
    evidence: Evidence, docker_roots: list[str], problems: list[Problem]
) -> list[tuple[str, str | None, str]]:
    """(root, state directory, how found) of every containerd root in the evidence."""
    found: list[tuple[str, str | None, str]] = []

    def add(root: str, state: str | None, how: str) -> None:
        root = normalize(root)
        if root not in [f[0] for f in found] and is_containerd_root(evidence, root):
            found.append((root, state, how))

    if is_containerd_root(evidence, "/"):
        add("/", None, "source is a containerd root")
        return found
    root, state = _configured(evidence, problems)
    if root is not None:
        add(root, state or "/run/containerd", f"root in {CONFIG_TOML}")
    for path, default_state, how in CONTAINERD_PLACES:
        add(path, state if path == "/var/lib/containerd" and state else default_state, how)
    for data_root in dict.fromkeys(docker_roots + ["/var/lib/docker"]):
        add(join(data_root, DOCKER_CONTAINERD), DOCKER_CONTAINERD_STATE, f"Docker's containerd ({data_root})")
    try:
        children = sorted(evidence.listdir("/"))
    except (EvidenceError, OSError):
        children = []
    for name in children:
        add("/" + name, _beside(evidence, "/" + name), "directory below the source")
    return found


def holds_only_docker_tasks(evidence: Evidence, root_path: str) -> bool:
    """Whether the meta.db below ROOT_PATH holds nothing but the ``moby`` namespace's task records
    (no image, no snapshot): the containerd a classic Docker runs, which adds nothing to the
    DockerHost.  Read from the bucket structure alone (no record decoded), so that discovery on
    a Docker host with thousands of containers costs one page walk; False where the file cannot
    be read (the full reader then says why)."""
    from pensieve.formats.bolt import BoltDB, BoltError

    try:
        with evidence.open(join(root_path, META_DB)) as fh:
            db = BoltDB(fh)
            top = db.bucket(b"v1")
            if top is None:
                return False
            for name, ns in top.buckets():
                if name != b"moby":
                    return False
                images, snapshots = ns.bucket(b"images"), ns.bucket(b"snapshots")
                if images is not None and next(images.buckets(), None) is not None:
                    return False
                for _sn, per_snapshotter in snapshots.buckets() if snapshots is not None else ():
                    if next(per_snapshotter.buckets(), None) is not None:
                        return False
            return True
    except (BoltError, EvidenceError, OSError):
        return False


def only_dockers_tasks(host: ContainerdHost) -> bool:
    """The containerd a classic Docker runs (its own ``DATA_ROOT/containerd/daemon`` or the
    system's): nothing but the ``moby`` namespace's task records of Docker's containers, no
    image, no snapshot; it adds nothing to the DockerHost and is left out."""
    namespaces = host.meta.namespaces
    return all(ns.name == "moby" and not ns.images and not ns.snapshots for ns in namespaces)


def only_dockers_store(host: ContainerdHost, store_roots: list[str]) -> bool:
    """The containerd a Docker data root uses as its image store (``containerd-snapshotter``):
    nothing outside dockerd's own namespaces (``moby``, ``moby_history``), which the DockerHost
    reads as Docker's images and layers; it is left out (its records would be twins)."""
    if host.root not in store_roots:
        return False
    return all(
        ns.name in MOBY_NAMESPACES or not (ns.images or ns.snapshots or ns.containers)
        for ns in host.meta.namespaces
    )


def open_engines(evidence: Evidence) -> Host:
    """One Host over every engine root of EVIDENCE (NotADataRoot when there is none)."""
    problems: list[Problem] = []
    docker_roots = find_data_roots(evidence, problems)
    found = find_containerd_roots(evidence, [r.path for r in docker_roots], problems)
    podman = find_podman_roots(evidence)  # containers/storage graphroots (engines/podman/roots.py)
    podman_how = add_structure_roots(evidence, docker_roots, found, podman)
    crio = crio_roots(evidence, podman, problems)  # the CRI-O ones (engines/crio/roots.py)
    podman = [p for p in podman if p not in {c[0] for c in crio} or podman_uses(evidence, p)]
    if not found and not podman and not crio:
        if docker_roots:
            host = DockerHost(evidence, docker_roots)
            host.problems[:0] = problems
            return host
        raise NotADataRoot(no_root_message(evidence))
    hosts: list[Host] = []
    store_roots: list[str] = []
    if docker_roots:
        docker = DockerHost(evidence, docker_roots)
        hosts.append(docker)
        store_roots = docker.containerd_store_roots()
    if docker_roots:  # a classic Docker's own containerd (task records only) is not opened at all
        found = [f for f in found if not holds_only_docker_tasks(evidence, f[0])]
    if found:
        from pensieve.engines.containerd.host import ContainerdHost
    if podman:
        from pensieve.engines.podman.host import PodmanHost
    ctr = [ContainerdHost(evidence, root, state, how) for root, state, how in found]
    hosts += [
        h for h in ctr if not (docker_roots and (only_dockers_tasks(h) or only_dockers_store(h, store_roots)))
    ]
    hosts += [PodmanHost(evidence, podman, podman_how)] if podman else []
    if crio:
        from pensieve.engines.crio.host import CrioHost

        hosts.append(CrioHost(evidence, crio, shared=set(podman) & {c[0] for c in crio}))
    if len(hosts) == 1:
        hosts[0].problems[:0] = problems
        return hosts[0]
    return MultiHost(evidence, hosts, problems)


def add_structure_roots(
    evidence: Evidence,
    docker_roots: list[DockerRoot],
    found: list[tuple[str, str | None, str]],
    podman: list[str],
) -> dict[str, str]:
    """Add the roots the bounded structure search (:mod:`.structure`) finds to the three engines'
    lists (DOCKER_ROOTS, FOUND, PODMAN: changed in place) when the source is no root itself: a
    host root or a disk, where a data-root volume may be mounted anywhere.  Returns how each
    added graphroot was found (graphroot -> ``found by structure at depth N``)."""
    from pensieve.engines import structure

    known = [r.path for r in docker_roots] + [f[0] for f in found] + podman
    if "/" in known:
        return {}
    podman_how: dict[str, str] = {}
    for root in structure.search(evidence, known).roots:
        if root.engine == "docker":
            docker_roots.append(DockerRoot(evidence, root.path, how_found=root.how_found))
        elif root.engine == "containerd":
            found.append((root.path, _beside(evidence, root.path), root.how_found))
        else:
            podman.append(root.path)
            podman_how[root.path] = root.how_found
    return podman_how


def no_root_message(evidence: Evidence) -> str:
    """What NotADataRoot says: one sentence naming each engine's marks, then where they were
    looked for."""
    from pensieve.engines import structure
    from pensieve.engines.podman.roots import DEFAULT_GRAPHROOT, ROOTLESS_GRAPHROOT, STORAGE_CONFS

    containerd_places = ", ".join(p for p, _s, _h in CONTAINERD_PLACES)
    return (
        f"no Docker data root, containerd root or containers-storage graphroot (Podman, CRI-O) found "
        f"in {evidence.description}: looked for image/ or graph/ beside containers/ (Docker), "
        f"{META_DB} (containerd) and overlay-layers/layers.json, overlay-images/images.json, "
        "overlay-containers/containers.json or libpod's state (containers-storage) "
        "at the top of the source, "
        f"in every directory down to depth {structure.DEPTH} (at most {structure.MAX_DIRS} listed), "
        "and, as a host root, at: /var/lib/docker, daemon.json's data-root, the snap location, "
        "~/.local/share/docker of each user (Docker); "
        f"{CONFIG_TOML}'s root, {containerd_places}, Docker's {DOCKER_CONTAINERD} (containerd); "
        f"{DEFAULT_GRAPHROOT}, the graphroot of {' or '.join(STORAGE_CONFS)}, "
        f"~/{ROOTLESS_GRAPHROOT} of each user (Podman, CRI-O)"
    )


def engine_hosts(host: Host) -> list[Host]:
    """The engines' hosts behind HOST (a MultiHost's, or HOST itself)."""
    return list(getattr(host, "hosts", [host]))


def _snapshotters(host: ContainerdHost) -> list[str]:
    """The snapshotters with a directory below the root (``io.containerd.snapshotter.v1.<name>``)."""
    prefix = "io.containerd.snapshotter.v1."
    try:
        names = host.evidence.listdir(host.root)
    except (EvidenceError, OSError):
        return []
    return sorted(n[len(prefix) :] for n in names if n.startswith(prefix))


def root_rows(host: Host) -> list[dict]:
    """Every engine root of HOST: engine, path, layout (Docker: v2 / v1; containerd: meta.db's
    schema version; Podman: the libpod state database's kind), storage drivers or snapshotters
    present, hints (containerd: namespaces, the runtime state directory; Podman: the libpod
    state's path) and how it was found."""
    rows: list[dict] = []
    for h in engine_hosts(host):
        if isinstance(h, DockerHost):
            rows += [
                {
                    "engine": "docker",
                    "path": r.path,
                    "layout": r.layout + (" + containerd image store" if h.mixed_store(r) else ""),
                    "drivers": r.drivers(),
                    "hints": [],
                    "found": r.how_found,
                }
                for r in h.roots
            ]
        elif h.engine == "containerd":
            version = h.meta.schema_version
            hints = ["namespaces: " + (", ".join(ns.name for ns in h.meta.namespaces) or "none")]
            if h.state:
                hints.append(f"runtime state: {h.state}")
            rows.append(
                {
                    "engine": "containerd",
                    "path": h.root,
                    "layout": f"meta.db v{version}" if version is not None else "meta.db (unreadable)",
                    "drivers": _snapshotters(h),
                    "hints": hints,
                    "found": h.how_found,
                }
            )
        elif h.engine in ("podman", "cri-o"):
            rows += h.root_rows()
    return rows


class _Problems(list):
    """The union of every engine's problems; what callers add lands in the MultiHost's own list."""

    def __init__(self, items: list[Problem], own: list[Problem]) -> None:
        super().__init__(items)
        self._own = own

    def append(self, problem: Problem) -> None:
        super().append(problem)
        self._own.append(problem)

    def extend(self, problems) -> None:
        problems = list(problems)
        super().extend(problems)
        self._own.extend(problems)


class MultiHost(Host):
    """Several engines' hosts over one evidence: every record carries its engine."""

    engine = "multi"

    def __init__(self, evidence: Evidence, hosts: list[Host], problems: list[Problem] | None = None) -> None:
        self.evidence = evidence
        self.hosts = hosts
        self._own: list[Problem] = list(problems or [])

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        super().close()

    @property
    def problems(self) -> list[Problem]:
        seen: set[int] = set()
        out = []
        for p in self._own + [p for h in self.hosts for p in h.problems]:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return _Problems(out, self._own)

    @property
    def roots(self) -> list:
        """The Docker data roots (what the Docker-only analyses walk)."""
        return [r for h in self.hosts for r in getattr(h, "roots", [])]

    # ---- which host a record belongs to ----------------------------------------------------
    def _docker_ids(self) -> set[str]:
        return {c.id for h in self.hosts if h.engine == "docker" for c in h.containers()}

    def _is_twin(self, c: Container, docker_ids: set[str]) -> bool:
        """A container of containerd's ``moby`` namespace that is Docker's own container."""
        return c.engine == "containerd" and c.namespace == "moby" and c.id in docker_ids

    def _store_roots(self) -> set[str]:
        """The containerd roots a DockerHost reads as its image store."""
        return {r for h in self.hosts if isinstance(h, DockerHost) for r in h.containerd_store_roots()}

    def _is_store_image(self, i: Image, store_roots: set[str]) -> bool:
        """An image of dockerd's own namespaces in a containerd a DockerHost reads as its image
        store: Docker's image (listed by the DockerHost) seen through containerd."""
        return i.engine == "containerd" and i.namespace in MOBY_NAMESPACES and i.data_root in store_roots

    def _host_of(self, record: Container | Image) -> Host:
        for h in self.hosts:
            roots = [r.path for r in getattr(h, "roots", [])] or [getattr(h, "root", None)]
            if h.engine == record.engine and record.data_root in roots:
                return h
        raise LookupFailed(f"no engine of {self.evidence.description} holds {record.id}")

    # ---- containers and images -------------------------------------------------------------
    def containers(self) -> list[Container]:
        docker_ids = self._docker_ids()
        return [c for h in self.hosts for c in h.containers() if not self._is_twin(c, docker_ids)]

    def images(self) -> list[Image]:
        stores = self._store_roots()
        return [i for h in self.hosts for i in h.images() if not self._is_store_image(i, stores)]

    def _one(self, ref: str, what: str, find) -> Container | Image:
        found: list = []
        for h in self.hosts:
            try:
                found.append(find(h, ref))
            except LookupFailed as exc:
                if "ambiguous" in str(exc):
                    raise
        if what == "container":
            docker_ids = {c.id for c in found if c.engine == "docker"}
            found = [c for c in found if not self._is_twin(c, docker_ids)]
        else:
            stores = self._store_roots()
            found = [i for i in found if not self._is_store_image(i, stores)]
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(
                f"{r.engine}:{r.namespace + '/' if r.namespace else ''}{r.id.removeprefix('sha256:')[:12]}"
                for r in found
            )
            raise LookupFailed(f"{what} {ref!r} is ambiguous ({len(found)} matches: {names})")
        raise LookupFailed(f"no {what} {ref!r} in {self.evidence.description}")

    def container(self, ref: str) -> Container:
        return self._one(ref, "container", lambda h, r: h.container(r))

    def image(self, ref: str) -> Image:
        return self._one(ref, "image", lambda h, r: h.image(r))

    def image_layers(self, image: Image) -> list[Layer]:
        return self._host_of(image).image_layers(image)

    def volumes(self) -> list[Volume]:
        return [v for h in self.hosts for v in h.volumes()]

    def checkpoints(self, container: Container) -> dict[str, str]:
        return self._host_of(container).checkpoints(container)

    def diff_filter(self, container: Container, changes: list[Change]) -> list[Change]:
        return self._host_of(container).diff_filter(container, changes)

    def owner_maps(self, target: Container | Image, layers: list[Layer]) -> list | None:
        return self._host_of(target).owner_maps(target, layers)

    # ---- verify ----------------------------------------------------------------------------
    def _verify_kwargs(self, h: Host, stores: set[str]) -> dict:
        """A containerd that is also a DockerHost's image store: dockerd's namespaces left to it."""
        return {"exclude": MOBY_NAMESPACES} if h.engine == "containerd" and h.root in stores else {}

    def verify_layers(self, image: Image | None = None, images: bool = True):
        if image is not None:
            return self._host_of(image).verify_layers(image, images)
        layers: list = []
        verdicts: list = []
        stores = self._store_roots()
        for h in self.hosts:
            got, imgs = h.verify_layers(None, images, **self._verify_kwargs(h, stores))
            layers += got
            verdicts += imgs
        return layers, verdicts

    def export_layer(self, chain_id: str, write):
        stores = self._store_roots()
        for h in self.hosts:
            try:
                return h.export_layer(chain_id, write, **self._verify_kwargs(h, stores))
            except LookupError:
                continue
        raise LookupError(f"no layer {chain_id} in {self.evidence.description}")

    # ---- storage and boundaries ------------------------------------------------------------
    def storage_drivers(self) -> list[StorageDriver]:
        out: list[StorageDriver] = []
        for h in self.hosts:
            out += [d for d in h.storage_drivers() if d not in out]
        return out

    def data_root_dirs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for h in self.hosts for d in h.data_root_dirs()))

    def boundaries(self) -> list[str]:
        return list(dict.fromkeys(b for h in self.hosts for b in h.boundaries()))

    def whence(self, path: str):
        """The attribution of the engine whose root holds PATH (containerd roots first: Docker's
        own containerd lives below its data root)."""
        from pensieve.engines.containerd.whence import NotBelowARoot  # lazy: start-up
        from pensieve.filesystem.whence import NotBelowADataRoot

        ctr = [h for h in self.hosts if h.engine == "containerd"]
        ctr.sort(key=lambda h: -len(h.root))
        for h in ctr:
            if relative_to(h.root, path) is not None:
                return h.whence(path)
        for h in sorted(self.hosts, key=lambda h: h.engine != "cri-o"):  # CRI-O's part of a shared store
            if h.engine in ("cri-o", "podman") and h.holds(path):
                return h.whence(path)
        last: Exception | None = None
        for h in self.hosts:
            if isinstance(h, DockerHost):
                try:
                    return h.whence(path)
                except NotBelowADataRoot as exc:
                    last = exc
        raise last or NotBelowARoot(f"not in the evidence: {normalize(path)} is below no engine root")


# ---- the volumes of a disk image (``pensieve roots IMAGE``) --------------------------------


def volume_rows(source: str) -> tuple[list[dict], list[Problem]]:
    """Every volume of disk image SOURCE (:func:`pensieve.evidence.volumes.volume_tree`: the
    disk, partitions, LVM logical volumes, LUKS payloads, nested) as rows: volume path, type,
    size, what lies on it (the filesystem type), the engine roots on that filesystem when it is
    one pensieve reads, and the problem of an unreadable one; and those problems."""
    from pensieve.evidence.disk import _open_fs, open_image, problems_of
    from pensieve.evidence.volumes import volume_tree

    img = open_image(source)
    name = img.describe()
    problems: list[Problem] = list(problems_of(img))
    rows: list[dict] = []
    try:
        tree = volume_tree(img)
        for vol in tree.walk():
            row = {
                "volume": vol.path or "(disk)",
                "type": vol.kind,
                "size": vol.size,
                "content": vol.content,
                "fs_type": None,
                "roots": [],
                "problem": vol.problem,
            }
            rows.append(row)
            if vol.image is not None and not vol.children and vol.content != "LVM2 physical volume":
                _volume_roots(row, vol, _open_fs, img)
            if row["problem"]:
                problems.append(Problem(f"{name}@{vol.path}" if vol.path else name, row["problem"]))
    finally:
        img.close()
    return rows, problems


def _volume_roots(row: dict, vol, open_fs, img) -> None:
    """Fill ROW's filesystem type and engine roots (``engine:path``) from volume VOL."""
    try:
        p = vol.partition
        if p is not None:
            ev = open_fs(img, p.offset, p)
        else:
            ev = open_fs(vol.image, 0, None, label=vol.path or "(no partition table)")
    except EvidenceError as exc:
        if vol.content and vol.content not in ("no filesystem (zero-filled)",):
            row["problem"] = row["problem"] or str(exc)
        return
    row["fs_type"] = ev.fs_type
    row["content"] = ev.fs_type
    try:
        host = open_engines(ev)
    except NotADataRoot:
        return
    except EvidenceError as exc:
        row["problem"] = str(exc)
        return
    row["roots"] = [f"{r['engine']}:{r['path']}" for r in root_rows(host)]


def volume_columns() -> list:
    """The table of :func:`volume_rows`."""
    from pensieve.output.columns import Column

    return [
        Column("VOLUME", lambda r: r["volume"]),
        Column("TYPE", lambda r: r["type"]),
        Column("SIZE", lambda r: r["size"]),
        Column("CONTENT", lambda r: r["content"]),
        Column("ENGINE ROOTS", lambda r: r["roots"]),
        Column("PROBLEM", lambda r: r["problem"]),
    ]
