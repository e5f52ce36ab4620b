"""Finding Docker data roots in evidence and reading their layer store.

Layout facts (moby/moby, daemon/ and layer/ packages):

* v2 layout (Docker >= 1.10): ``containers/<id>/config.v2.json`` + ``hostconfig.json``;
  ``image/<driver>/imagedb/content/sha256/<image-id>`` (image config JSON, its sha256 is the id);
  ``image/<driver>/layerdb/sha256/<chain-id>/{diff,cache-id,size,parent,tar-split.json.gz}``;
  ``image/<driver>/layerdb/mounts/<container-id>/{mount-id,init-id,parent}``;
  ``image/<driver>/repositories.json`` (tags and digests).
* v1 layout (before 1.10): ``graph/<image-id>/json``, ``repositories-<driver>``,
  ``containers/<id>/config.json``; layer ids are image ids.
* storage drivers keep layer contents under ``<driver>/``; where, and what the entries mean,
  is each driver's class in :mod:`pensieve.engines.docker.drivers`.
* containerd image store (``"features": {"containerd-snapshotter": true}``, the default from
  Docker Engine 29): ``containers/`` as in v2, no ``image/``; images and layers are in the
  containerd dockerd runs, rooted at ``containerd/daemon`` (namespace ``moby``), read by
  :mod:`pensieve.engines.docker.containerd_store`.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable

from pensieve.engines.docker.drivers import (
    KNOWN_DRIVERS,
    SUPPORTED_DRIVERS,
    UNSUPPORTED_DRIVERS,
    driver_named,
)
from pensieve.errors import NotADataRoot
from pensieve.evidence import Evidence, EvidenceError, NotFound, normalize
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import Problem
from pensieve.records.core import record

__all__ = ["KNOWN_DRIVERS", "SUPPORTED_DRIVERS", "UNSUPPORTED_DRIVERS", "DockerRoot", "NotADataRoot"]


#: where dockerd roots the containerd it runs, below the data root (moby libcontainerd/supervisor)
CONTAINERD_STORE = "containerd/daemon"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)) (OCI image spec, layer chain ids)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            digest = hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
            out.append("sha256:" + digest)
    return out


def read_json(
    ev: Evidence, path: str, problems: list[Problem], subject: str | None = None, limit: int = 64 << 20
) -> Doc | None:
    """The JSON object of an evidence file through the untrusted loader; None, and a problem
    naming the file, when it is missing, not a regular file, too large, too deep or not an object.
    Later type problems of its fields land in PROBLEMS too."""
    try:
        raw = ev.read_bytes(path, limit + 1)
    except NotFound:
        problems.append(Problem(path, "missing", subject))
        return None
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(path, f"unreadable: {exc}", subject))
        return None
    try:
        return load(raw, path, problems, subject=subject, max_bytes=limit)
    except UntrustedJSONError as exc:
        problems.append(Problem(path, f"corrupt: {exc}".replace(f"{path}: ", ""), subject))
        return None


def _read_small(ev: Evidence, path: str, limit: int = 1 << 20) -> str | None:
    try:
        return ev.read_text(path, limit).strip()
    except (EvidenceError, OSError):
        return None


@record
class LayerInfo:
    """One entry of layerdb/sha256: an image layer."""

    chain_id: str
    diff_id: str | None = None
    cache_id: str | None = None
    parent: str | None = None
    size: int | None = None


@record
class MountInfo:
    """One entry of layerdb/mounts: a container's RW (and init) layer."""

    container_id: str
    mount_id: str | None = None
    init_id: str | None = None
    parent: str | None = None  # chain id of the image's top layer


class DockerRoot:
    """A Docker data root inside some evidence."""

    def __init__(
        self, evidence: Evidence, path: str, daemon_config: dict | None = None, how_found: str = "given"
    ) -> None:
        self.evidence = evidence
        self.path = normalize(path)
        self.daemon_config = daemon_config or {}
        self.how_found = how_found
        self._layers: dict[str, dict[str, LayerInfo]] = {}
        self._mounts: dict[str, dict[str, MountInfo]] = {}
        self._driver_dirs: dict[str, set[str]] = {}
        self._drivers: list[str] | None = None

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    # ---- layout and drivers -------------------------------------------------------------
    @property
    def layout(self) -> str:
        if self.evidence.is_dir(self.join("image")):
            return "v2"
        if self.evidence.is_dir(self.join("graph")):
            return "v1"
        if self.evidence.is_dir(self.join(CONTAINERD_STORE)):
            return "containerd"
        return "unknown"

    def drivers(self) -> list[str]:
        """Storage drivers with metadata (image/<driver>) or data (<driver>/) in this root."""
        if self._drivers is not None:
            return self._drivers
        found: list[str] = []
        self._drivers = found
        if self.evidence.is_dir(self.join("image")):
            for name in sorted(self.evidence.listdir(self.join("image"))):
                if self.evidence.is_dir(self.join("image", name)):
                    found.append(name)
        for name in KNOWN_DRIVERS:
            if name not in found and self.evidence.is_dir(self.join(name)):
                found.append(name)
        return found

    def listdir_sorted(self, what: str, problems: list[Problem], *parts: str) -> tuple[str, list[str]]:
        """(path, sorted names) of a directory below the root; no names, and a problem
        "cannot list WHAT", when it cannot be listed."""
        base = self.join(*parts)
        try:
            return base, sorted(self.evidence.listdir(base))
        except (EvidenceError, OSError) as exc:
            problems.append(Problem(base, f"cannot list {what}: {exc}"))
            return base, []

    # ---- layerdb ------------------------------------------------------------------------
    def _entries(self, *parts: str) -> list[tuple[str, str]]:
        """(name, evidence path) of each entry of a directory below the root; [] if unreadable."""
        base = self.join(*parts)
        try:
            return [(n, posixpath.join(base, n)) for n in self.evidence.listdir(base)]
        except (EvidenceError, OSError):
            return []

    def _layerdb(self, cache: dict[str, dict], driver: str, subdir: str, read: Callable) -> dict:
        """The entries of ``image/<driver>/layerdb/<subdir>`` as READ(name, path) -> (key, record)
        makes them, read once per driver into CACHE."""
        if driver not in cache:
            entries = self._entries("image", driver, "layerdb", subdir)
            cache[driver] = dict(read(name, d) for name, d in entries)
        return cache[driver]

    def layers(self, driver: str) -> dict[str, LayerInfo]:
        """All image layers of layerdb/sha256 keyed by chain id ("sha256:...")."""
        ev = self.evidence

        def read(name: str, d: str) -> tuple[str, LayerInfo]:
            size = _read_small(ev, posixpath.join(d, "size"))
            info = LayerInfo(
                chain_id="sha256:" + name,
                diff_id=_read_small(ev, posixpath.join(d, "diff")),
                cache_id=_read_small(ev, posixpath.join(d, "cache-id")),
                parent=_read_small(ev, posixpath.join(d, "parent")),
                size=int(size) if size and size.isdigit() else None,
            )
            return info.chain_id, info

        return self._layerdb(self._layers, driver, "sha256", read)

    def mounts(self, driver: str) -> dict[str, MountInfo]:
        """Container layers of layerdb/mounts keyed by container id."""
        ev = self.evidence

        def read(name: str, d: str) -> tuple[str, MountInfo]:
            return name, MountInfo(
                container_id=name,
                mount_id=_read_small(ev, posixpath.join(d, "mount-id")),
                init_id=_read_small(ev, posixpath.join(d, "init-id")),
            )

        return self._layerdb(self._mounts, driver, "mounts", read)

    def has_layer_dir(self, driver: str, cache_id: str) -> bool:
        """Whether the driver keeps a directory for this layer id (one listing per layer store)."""
        store = driver_named(driver).layer_store(self.path)
        if store is not None:
            names = self._driver_dirs.get(driver)
            if names is None:
                try:
                    names = {e.name for e in self.evidence.scandir(store) if e.stat.is_dir}
                except (EvidenceError, OSError):
                    names = set()
                self._driver_dirs[driver] = names
            return cache_id in names
        path, _ = self.layer_path(driver, cache_id)
        return self.evidence.is_dir(path)

    def layer_path(self, driver: str, cache_id: str, role: str = "image") -> tuple[str, str]:
        """(evidence path of a layer's contents, its form) for a driver's layer id."""
        if driver not in SUPPORTED_DRIVERS:
            raise EvidenceError(f"unsupported storage driver {driver!r}")
        d = driver_named(driver)
        path = d.layer_path(self.evidence, self.path, cache_id, role)
        return path, d.layer_form(path)

    def lowers(self, driver: str, cache_id: str) -> list[str] | None:
        """Layer ids below a layer as the driver records them (top first), None where it keeps
        no such record or the layer is gone."""
        if driver not in SUPPORTED_DRIVERS:
            return None
        return driver_named(driver).lowers(self.evidence, self.path, cache_id)


# ---- discovery ----------------------------------------------------------------------------

_DEFAULT_PLACES = (
    ("/var/lib/docker", "default location"),
    ("/var/snap/docker/common/var-lib-docker", "snap package"),
    ("/var/lib/docker-snap", "snap package (old)"),
)


def looks_like_data_root(ev: Evidence, path: str) -> bool:
    """True when PATH has the shape of a Docker data root (v1 or v2)."""
    j = posixpath.join
    if ev.is_dir(j(path, "image")) and (
        ev.is_dir(j(path, "containers")) or any(ev.is_dir(j(path, "image", d)) for d in KNOWN_DRIVERS)
    ):
        return True
    if ev.is_dir(j(path, "graph")) and ev.is_dir(j(path, "containers")):
        return True
    if not ev.is_dir(j(path, "containers")):
        return False
    return ev.is_dir(j(path, CONTAINERD_STORE)) or any(ev.is_dir(j(path, d)) for d in KNOWN_DRIVERS)


def holds_docker_store(ev: Evidence, path: str) -> bool:
    """Whether the data root PATH's own containerd (``containerd/daemon``) is an image store too:
    its ``moby`` namespace holds an image or a snapshot (a classic Docker's holds only task
    records).  So a v2 root switched to the containerd snapshotter keeps both stores: the classic
    one (image/<driver>, hidden by dockerd since) and the containerd one.  Read from the bolt
    buckets alone; False where meta.db is missing or unreadable."""
    from pensieve.formats.bolt import BoltDB, BoltError

    db_path = posixpath.join(path, CONTAINERD_STORE, "io.containerd.metadata.v1.bolt/meta.db")
    if not ev.is_file(db_path):
        return False
    try:
        with ev.open(db_path) as fh:
            top = BoltDB(fh).bucket(b"v1")
            moby = top.bucket(b"moby") if top is not None else None
            if moby is None:
                return False
            images, snapshots = moby.bucket(b"images"), moby.bucket(b"snapshots")
            if images is not None and next(images.buckets(), None) is not None:
                return True
            return any(
                next(sn.buckets(), None) is not None for _n, sn in (snapshots.buckets() if snapshots else ())
            )
    except (BoltError, EvidenceError, OSError):
        return False


def _daemon_json(ev: Evidence, path: str, problems: list[Problem]) -> dict:
    """daemon.json as a dict of its string-valued settings that matter here (absent: {})."""
    if not ev.exists(path):
        return {}
    doc = read_json(ev, path, problems, limit=1 << 20)
    if doc is None:
        return {}
    out = dict(doc.value)
    for key in ("data-root", "graph", "storage-driver"):
        out.pop(key, None)
        value = doc.str(key)
        if value is not None:
            out[key] = value
    return out


def find_data_roots(ev: Evidence, problems: list[Problem] | None = None) -> list[DockerRoot]:
    """Every Docker data root in the evidence.

    The evidence may itself be a data root; otherwise it is read as a host root and searched at
    /var/lib/docker, the ``data-root`` (or legacy ``graph``) of /etc/docker/daemon.json, the snap
    location, and each user's rootless ~/.local/share/docker.
    """
    if looks_like_data_root(ev, "/"):
        return [DockerRoot(ev, "/", how_found="source is a data root")]
    problems = problems if problems is not None else []
    roots: list[DockerRoot] = []
    seen: set[str] = set()

    def add(path: str, how: str, config: dict | None = None) -> None:
        path = normalize(path)
        if path in seen or not looks_like_data_root(ev, path):
            return
        seen.add(path)
        roots.append(DockerRoot(ev, path, daemon_config=config or {}, how_found=how))

    config = _daemon_json(ev, "/etc/docker/daemon.json", problems)
    configured = config.get("data-root") or config.get("graph")
    if isinstance(configured, str):
        add(configured, "data-root in /etc/docker/daemon.json", config)
    for path, how in _DEFAULT_PLACES:
        add(path, how, config)
    homes = ["/root"]
    try:
        homes += [posixpath.join("/home", u) for u in sorted(ev.listdir("/home"))]
    except (EvidenceError, OSError):
        pass
    for home in homes:
        user_cfg = _daemon_json(ev, posixpath.join(home, ".config/docker/daemon.json"), problems)
        rootless = user_cfg.get("data-root")
        if isinstance(rootless, str):
            add(rootless, f"rootless data-root in {home}/.config/docker/daemon.json", user_cfg)
        add(posixpath.join(home, ".local/share/docker"), f"rootless ({home})", user_cfg)
    return roots


def open_data_roots(ev: Evidence, problems: list[Problem] | None = None) -> list[DockerRoot]:
    roots = find_data_roots(ev, problems)
    if not roots:
        raise NotADataRoot(
            f"no Docker data root found in {ev.description}: looked for a data root at the top "
            "and, as a host root, at /var/lib/docker, daemon.json's data-root, the snap location "
            "and ~/.local/share/docker of each user"
        )
    return roots
