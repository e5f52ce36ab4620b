"""Finding Docker data roots in evidence and reading their layer store.

Layout facts (moby/moby, daemon/ and layer/ packages):

* v2 layout (Docker >= 1.10): ``containers/<id>/config.v2.json`` + ``hostconfig.json``;
  ``image/<driver>/imagedb/content/sha256/<image-id>`` (image config JSON, its sha256 is the id);
  ``image/<driver>/layerdb/sha256/<chain-id>/{diff,cache-id,size,parent,tar-split.json.gz}``;
  ``image/<driver>/layerdb/mounts/<container-id>/{mount-id,init-id,parent}``;
  ``image/<driver>/repositories.json`` (tags and digests).
* v1 layout (before 1.10): ``graph/<image-id>/json``, ``repositories-<driver>``,
  ``containers/<id>/config.json``; layer ids are image ids.
* storage drivers keep layer contents under ``<driver>/``: overlay2 ``<cache-id>/diff``
  (whiteouts are 0/0 char devices, opaque dirs carry ``trusted.overlay.opaque=y``), overlay
  (legacy: image layers are full ``root/`` snapshots, container layers ``upper/`` over
  ``lower-id``), aufs ``diff/<id>`` (``.wh.`` files), vfs ``dir/<id>`` and btrfs
  ``subvolumes/<id>`` (full snapshots).
"""

from __future__ import annotations

import hashlib
import json
import posixpath

from pensieve.errors import NotADataRoot
from pensieve.evidence import Evidence, EvidenceError, normalize
from pensieve.records import Problem
from pensieve.records.core import record

SUPPORTED_DRIVERS = ("overlay2", "overlay", "aufs", "vfs", "btrfs")
UNSUPPORTED_DRIVERS = ("devicemapper", "zfs", "windowsfilter", "lcow", "fuse-overlayfs")
KNOWN_DRIVERS = SUPPORTED_DRIVERS + UNSUPPORTED_DRIVERS

#: how a driver stores one layer's contents
#:   "overlay"  - a diff directory with overlay whiteouts (char 0/0, opaque xattrs)
#:   "aufs"     - a diff directory with .wh. whiteout files
#:   "snapshot" - a full copy of the filesystem at that layer (vfs, btrfs, legacy overlay image)
LAYER_FORMAT = {
    "overlay2": "overlay",
    "overlay": "overlay",
    "aufs": "aufs",
    "vfs": "snapshot",
    "btrfs": "snapshot",
}



def short_id(value: str | None, n: int = 12) -> str:
    if not value:
        return ""
    return value.split(":", 1)[-1][:n]


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

    def image_dir(self, driver: str) -> str:
        return self.join("image", driver)

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

    def layers(self, driver: str) -> dict[str, LayerInfo]:
        """All image layers of layerdb/sha256 keyed by chain id ("sha256:...")."""
        if driver in self._layers:
            return self._layers[driver]
        ev = self.evidence
        out: dict[str, LayerInfo] = {}
        for name, d in self._entries("image", driver, "layerdb", "sha256"):
            size = _read_small(ev, posixpath.join(d, "size"))
            info = LayerInfo(
                chain_id="sha256:" + name,
                diff_id=_read_small(ev, posixpath.join(d, "diff")),
                cache_id=_read_small(ev, posixpath.join(d, "cache-id")),
                parent=_read_small(ev, posixpath.join(d, "parent")),
                size=int(size) if size and size.isdigit() else None,
            )
            out[info.chain_id] = info
        self._layers[driver] = out
        return out

    def mounts(self, driver: str) -> dict[str, MountInfo]:
        """Container layers of layerdb/mounts keyed by container id."""
        if driver in self._mounts:
            return self._mounts[driver]
        ev = self.evidence
        out: dict[str, MountInfo] = {}
        for name, d in self._entries("image", driver, "layerdb", "mounts"):
            out[name] = MountInfo(
                container_id=name,
                mount_id=_read_small(ev, posixpath.join(d, "mount-id")),
                init_id=_read_small(ev, posixpath.join(d, "init-id")),
            )
        self._mounts[driver] = out
        return out

    def has_layer_dir(self, driver: str, cache_id: str) -> bool:
        """Whether the driver keeps a directory for this layer id (one listing per driver)."""
        if driver == "overlay2":
            names = self._driver_dirs.get(driver)
            if names is None:
                try:
                    names = {e.name for e in self.evidence.scandir(self.join(driver)) if e.stat.is_dir}
                except (EvidenceError, OSError):
                    names = set()
                self._driver_dirs[driver] = names
            return cache_id in names
        path, _ = self.layer_path(driver, cache_id)
        return self.evidence.is_dir(path)

    def layer_path(self, driver: str, cache_id: str, role: str = "image") -> tuple[str, str]:
        """(evidence path of a layer's contents, its format) for a driver's layer id."""
        ev = self.evidence
        if driver == "overlay2":
            return self.join("overlay2", cache_id, "diff"), "overlay"
        if driver == "overlay":
            root = self.join("overlay", cache_id, "root")
            if ev.is_dir(root):
                return root, "snapshot"
            return self.join("overlay", cache_id, "upper"), "overlay-upper"
        if driver == "aufs":
            return self.join("aufs", "diff", cache_id), "aufs"
        if driver == "vfs":
            return self.join("vfs", "dir", cache_id), "snapshot"
        if driver == "btrfs":
            return self.join("btrfs", "subvolumes", cache_id), "snapshot"
        raise EvidenceError(f"unsupported storage driver {driver!r}")

    def overlay2_lowers(self, cache_id: str) -> list[str] | None:
        """Cache ids of an overlay2 layer's lowers, top first, from its ``lower`` file.

        ``lower`` holds ``l/<short>:l/<short>...``; each ``l/<short>`` is a symlink to
        ``../<cache-id>/diff``.  Used when layerdb is gone (a removed container or image).
        """
        text = _read_small(self.evidence, self.join("overlay2", cache_id, "lower"))
        if text is None:
            return None if not self.evidence.exists(self.join("overlay2", cache_id)) else []
        out = []
        for part in text.split(":"):
            short = posixpath.basename(part)
            try:
                target = self.evidence.readlink(self.join("overlay2", "l", short))
            except (EvidenceError, OSError):
                out.append(f"?l/{short}")
                continue
            out.append(posixpath.basename(posixpath.dirname(target)))
        return out


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
    return ev.is_dir(j(path, "containers")) and any(ev.is_dir(j(path, d)) for d in KNOWN_DRIVERS)


def _daemon_json(ev: Evidence, path: str) -> dict:
    try:
        data = json.loads(ev.read_bytes(path, 1 << 20))
    except (EvidenceError, OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_data_roots(ev: Evidence) -> list[DockerRoot]:
    """Every Docker data root in the evidence.

    The evidence may itself be a data root; otherwise it is read as a host root and searched at
    /var/lib/docker, the ``data-root`` (or legacy ``graph``) of /etc/docker/daemon.json, the snap
    location, and each user's rootless ~/.local/share/docker.
    """
    if looks_like_data_root(ev, "/"):
        return [DockerRoot(ev, "/", how_found="source is a data root")]
    roots: list[DockerRoot] = []
    seen: set[str] = set()

    def add(path: str, how: str, config: dict | None = None) -> None:
        path = normalize(path)
        if path in seen or not looks_like_data_root(ev, path):
            return
        seen.add(path)
        roots.append(DockerRoot(ev, path, daemon_config=config or {}, how_found=how))

    config = _daemon_json(ev, "/etc/docker/daemon.json")
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
        user_cfg = _daemon_json(ev, posixpath.join(home, ".config/docker/daemon.json"))
        rootless = user_cfg.get("data-root")
        if isinstance(rootless, str):
            add(rootless, f"rootless data-root in {home}/.config/docker/daemon.json", user_cfg)
        add(posixpath.join(home, ".local/share/docker"), f"rootless ({home})", user_cfg)
    return roots


def open_data_roots(ev: Evidence) -> list[DockerRoot]:
    roots = find_data_roots(ev)
    if not roots:
        raise NotADataRoot(
            f"no Docker data root found in {ev.description}: looked for a data root at the top "
            "and, as a host root, at /var/lib/docker, daemon.json's data-root, the snap location "
            "and ~/.local/share/docker of each user"
        )
    return roots
