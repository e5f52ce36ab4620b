"""Docker's pre-1.10 "v1 graph" data root: images and containers.

Layout facts (docker 1.x before the 1.10 content-addressable store; moby graph/, daemon/ and
daemon/graphdriver/aufs of that era):

* ``graph/<image-id>/json``: the v1 image JSON (id, parent, created, container_config whose
  ``Cmd`` is the build step, config {Cmd, Entrypoint, Env, User, WorkingDir, Labels,
  ExposedPorts}, author, comment, docker_version, architecture, os);
  ``graph/<image-id>/layersize``: the layer's size in bytes.  Every v1 image is one layer and
  one history step; its ancestry is the ``parent`` chain.  ``graph/_tmp`` is scratch space.
* ``repositories-<driver>``: ``{"Repositories": {"name": {"tag": "<image-id>"}}}``; a key that
  is itself a digest (``sha256:...``) is a pull-by-digest reference.
* ``containers/<id>/config.json`` (ID, Created, Path, Args, Config, State, Image - a bare image
  id, NetworkSettings, Name, Driver, MountLabel, Volumes {dest: host path} and VolumesRW before
  1.7, MountPoints after) and ``hostconfig.json``.
* layer contents live under the storage driver's directory keyed by image id; a container's RW
  layer id is the container id and its init layer ``<container-id>-init``.  aufs keeps
  ``aufs/diff/<id>`` and ``aufs/layers/<id>`` (the parent ids, top first).

Image ids are kept exactly as in the evidence (bare hex, no ``sha256:`` prefix): in v1 they are
random ids, not digests.  Nothing here raises on bad evidence: corrupt or missing JSON becomes a
Problem and a placeholder record.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict

from pensieve.engines.docker.containers import (
    _mounts,
    _refused_dir,
    _risks,
    _unreadable,
    add_problem,
    drop_missing_layers,
    endpoint,
    read_container,
)
from pensieve.engines.docker.images import runtime_config
from pensieve.engines.docker.root import SUPPORTED_DRIVERS, DockerRoot
from pensieve.evidence import EvidenceError
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import Container, HistoryStep, Image, Layer, Problem
from pensieve.times import parse_rfc3339

__all__ = ["list_containers_v1", "Graph", "list_images_v1", "read_repositories_v1"]

_LIMIT = 64 << 20


def _read_json(root: DockerRoot, path: str) -> dict:
    """A JSON object from the evidence through the untrusted loader (bounded size and depth);
    raises EvidenceError/OSError/ValueError."""
    return load(root.evidence.read_bytes(path, _LIMIT + 1), path, max_bytes=_LIMIT).value


def _cmd(value: object) -> str | None:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, str):
        return value
    return None


class Graph:
    """``graph/``: v1 image JSONs keyed by image id (None when unreadable) and layer sizes."""

    def __init__(self, root: DockerRoot, problems: list[Problem]) -> None:
        self.root = root
        self.images: dict[str, dict | None] = {}
        self.sizes: dict[str, int | None] = {}
        self.paths: dict[str, str] = {}
        ev = root.evidence
        base, names = root.listdir_sorted("v1 image graph", problems, "graph")
        for name in names:
            d = posixpath.join(base, name)
            if name.startswith("_") or not ev.is_dir(d):
                continue  # graph/_tmp and stray files
            path = posixpath.join(d, "json")
            self.paths[name] = path
            try:
                data = _read_json(root, path)
            except (EvidenceError, OSError, ValueError) as exc:
                problems.append(Problem(path, f"unreadable v1 image json: {exc}", name))
                data = None
            if data is not None and data.get("id") not in (None, name):
                problems.append(
                    Problem(path, f"v1 image json id {data.get('id')!r} differs from its directory", name)
                )
            self.images[name] = data
            try:
                text = ev.read_text(posixpath.join(d, "layersize"), 64).strip()
                self.sizes[name] = int(text)
            except (EvidenceError, OSError, ValueError):
                self.sizes[name] = None

    def parent(self, image_id: str) -> str | None:
        data = self.images.get(image_id)
        parent = data.get("parent") if data else None
        return parent if isinstance(parent, str) and parent else None

    def ancestry(self, image_id: str, problems: list[Problem] | None = None) -> list[str]:
        """IMAGE_ID and its parents, bottom (base layer) first."""
        chain: list[str] = []
        current: str | None = image_id
        while current is not None:
            if current in chain:
                if problems is not None:
                    problems.append(
                        Problem(self.paths.get(current, current), "parent loop in v1 image graph", image_id)
                    )
                break
            chain.append(current)
            parent = self.parent(current)
            if parent is not None and parent not in self.images:
                if problems is not None:
                    problems.append(
                        Problem(
                            self.paths.get(current, current),
                            f"parent image {parent} missing from graph/: history truncated",
                            image_id,
                        )
                    )
                break
            current = parent
        chain.reverse()
        return chain

    def created_by(self, image_id: str) -> str | None:
        data = self.images.get(image_id) or {}
        return _cmd((data.get("container_config") or {}).get("Cmd"))


def read_repositories_v1(root: DockerRoot) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """image id -> tags, image id -> digests, and the drivers with a ``repositories-<driver>``."""
    tags: dict[str, list[str]] = defaultdict(list)
    digests: dict[str, list[str]] = defaultdict(list)
    drivers: list[str] = []
    ev = root.evidence
    try:
        names = sorted(ev.listdir(root.path))
    except (EvidenceError, OSError):
        names = []
    for fname in names:
        if not fname.startswith("repositories-"):
            continue
        drivers.append(fname[len("repositories-") :])
        try:
            data = _read_json(root, root.join(fname))
        except (EvidenceError, OSError, ValueError):
            continue
        for repo, refs in (data.get("Repositories") or {}).items():
            if not isinstance(refs, dict):
                continue
            for ref, image_id in refs.items():
                if not isinstance(image_id, str):
                    continue
                if ":" in ref:  # "sha256:..." key: pulled by digest
                    digests[image_id].append(f"{repo}@{ref}")
                else:
                    tags[image_id].append(f"{repo}:{ref}")
    return tags, digests, drivers


def _default_driver(root: DockerRoot) -> str | None:
    _t, _d, repo_drivers = read_repositories_v1(root)
    present = root.drivers()
    for d in repo_drivers + present:
        if d in SUPPORTED_DRIVERS:
            return d
    return (repo_drivers + present or [None])[0]


def _image(image_id: str, graph: Graph, root: DockerRoot, problems: list[Problem]) -> Image:
    data = graph.images.get(image_id)
    path = graph.paths.get(image_id)
    if data is None:
        # placeholder: the layer is still there even if its json is not
        return Image(
            id=image_id,
            engine="docker",
            cache_ids=[image_id],
            size=graph.sizes.get(image_id),
            history=[
                HistoryStep(
                    created=None,
                    created_by=None,
                    empty_layer=False,
                    comment="(v1 image json unreadable)",
                    cache_id=image_id,
                    size=graph.sizes.get(image_id),
                )
            ],
            config_path=path,
            data_root=root.path,
        )
    chain = graph.ancestry(image_id, problems)
    history: list[HistoryStep] = []
    for aid in chain:
        a = graph.images.get(aid) or {}
        history.append(
            HistoryStep(
                created=parse_rfc3339(a.get("created")),
                created_by=graph.created_by(aid),
                empty_layer=False,
                comment=a.get("comment") or None,
                author=a.get("author") or None,
                cache_id=aid,
                size=graph.sizes.get(aid),
            )
        )
    doc = Doc(data, path or image_id, problems, "", image_id)
    cfg = doc.obj("config") if doc.raw("config") is not None else doc.obj("container_config")
    sizes = [graph.sizes[a] for a in chain if graph.sizes.get(a) is not None]
    return Image(
        id=image_id,
        engine="docker",
        created=parse_rfc3339(data.get("created")),
        parent=graph.parent(image_id),
        os=data.get("os"),
        architecture=data.get("architecture"),
        author=data.get("author") or None,
        **runtime_config(cfg),
        cache_ids=list(chain),
        size=sum(sizes) if sizes else None,
        history=history,
        config_path=path,
        data_root=root.path,
    )


def list_images_v1(root: DockerRoot, problems: list[Problem]) -> list[Image]:
    """Every image of ``graph/`` with tags and digests from ``repositories-<driver>``."""
    graph = Graph(root, problems)
    tags, digests, _drivers = read_repositories_v1(root)
    images = []
    for image_id in sorted(graph.images):
        try:
            image = _image(image_id, graph, root, problems)
        except (ValueError, TypeError, AttributeError) as exc:
            problems.append(Problem(graph.paths[image_id], f"corrupt v1 image json: {exc}", image_id))
            continue
        image.tags = sorted(tags.get(image_id, []))
        image.digests = sorted(digests.get(image_id, []))
        images.append(image)
    return images


# ---- containers -------------------------------------------------------------------------


def _volume_mounts(config: Doc, host: Doc, root: DockerRoot) -> list:
    """Pre-1.7 ``Volumes``/``VolumesRW`` as mounts (1.7+ writes MountPoints, read by _mounts)."""
    volumes = config.dict_of_str("Volumes")
    rw = config.obj("VolumesRW")
    points: dict[str, dict] = {}
    vfs_dirs: dict[str, str] = {}
    for dest, source in volumes.items():
        if not isinstance(source, str):
            continue
        parts = source.rstrip("/").split("/")
        name = None
        if "volumes" in parts[:-1]:  # <root>/volumes/<name>/_data (1.7+ local volumes)
            name = parts[parts.index("volumes") + 1]
        elif len(parts) >= 3 and parts[-3:-1] == ["vfs", "dir"]:  # <root>/vfs/dir/<id> (< 1.7)
            name = parts[-1]
            vfs_dirs[dest] = root.join("vfs", "dir", name)
        points[dest] = {
            "Destination": dest,
            "Source": source,
            "RW": rw.bool(dest, True),
            "Type": "volume" if name else "bind",
            "Name": name,
            "Driver": ("local" if dest not in vfs_dirs else None) if name else None,
        }
    mounts = _mounts(
        Doc({"MountPoints": points}, config.source, config.problems), Doc({}, host.source, []), root
    )
    for m in mounts:
        if m.destination in vfs_dirs:
            m.host_path = vfs_dirs[m.destination]
    return mounts


def _parse_v1(cid: str, raw: bytes, cdir: str, root: DockerRoot, problems: list[Problem], path: str):
    mine: list[Problem] = []  # type problems of this second read: reported by read_container
    try:
        config = load(raw, path, mine, subject=cid)
    except UntrustedJSONError:
        return read_container(root, cid, cdir, raw, problems, "config.json")  # the placeholder
    c = read_container(root, cid, cdir, raw, problems, "config.json")
    host_path = posixpath.join(cdir, "hostconfig.json")
    try:
        host = load(root.evidence.read_bytes(host_path, _LIMIT + 1), host_path, mine, subject=cid)
    except (EvidenceError, OSError, ValueError):
        host = Doc({}, host_path, mine, "", cid)  # already reported by read_container
    if config.raw("Volumes") and not config.raw("MountPoints"):
        c.mounts = _volume_mounts(config, host, root) + [m for m in c.mounts if m.type == "tmpfs"]
        c.risks = _risks(c, host)
    ns = config.obj("NetworkSettings")
    if not c.networks and ns.str("IPAddress"):
        mode = host.str("NetworkMode") or "bridge"
        c.networks["bridge" if mode == "default" else mode] = endpoint(ns, ("bridge", "Bridge"))
    return c  # type problems of the second read were reported by read_container


def _aufs_parents(root: DockerRoot, layer_id: str) -> list[str] | None:
    """``aufs/layers/<id>``: the layer's parent ids, top first (None when absent)."""
    try:
        text = root.evidence.read_text(root.join("aufs", "layers", layer_id), 1 << 20)
    except (EvidenceError, OSError):
        return None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _fill_layers_v1(
    c: Container, root: DockerRoot, graph: Graph, default_driver: str | None, problems: list[Problem]
) -> None:
    """c.layers bottom to top: image ancestry, ``<id>-init``, the RW layer ``<id>``."""
    driver = c.storage_driver or default_driver
    c.storage_driver = driver
    if driver not in SUPPORTED_DRIVERS:
        msg = f"unsupported storage driver {driver}: metadata listed, layer contents not readable"
        add_problem(c, problems, c.config_path or c.id, msg)
        return
    ev = root.evidence
    chain: list[str] = []
    rebuilt = False
    if c.image_id and graph.images.get(c.image_id) is not None:
        chain = graph.ancestry(c.image_id, problems)
    else:
        parents = _aufs_parents(root, c.id) if driver == "aufs" else None
        if parents:
            chain = [p for p in reversed(parents) if p != f"{c.id}-init"]
            rebuilt = True
        what = f"image {c.image_id} not in graph/" if c.image_id else "image unknown"
        msg = what + (": layer chain rebuilt from aufs/layers" if rebuilt else ": image layers unknown")
        add_problem(c, problems, c.config_path or c.id, msg)
    layers: list[Layer] = []
    for i, lid in enumerate(chain):
        path, _fmt = root.layer_path(driver, lid)
        layers.append(
            Layer(
                role="image",
                cache_id=lid,
                path=path,
                size=graph.sizes.get(lid),
                driver=driver,
                created_by=graph.created_by(lid),
                history_index=None if rebuilt else i,
                parent=chain[i - 1] if i else None,
            )
        )
    init_id = f"{c.id}-init"
    init_path, _ = root.layer_path(driver, init_id, "init")
    if ev.is_dir(init_path):
        c.init_layer = init_id
        layers.append(Layer(role="init", cache_id=init_id, path=init_path, driver=driver))
    else:
        add_problem(c, problems, init_path, f"init layer {init_id} missing at {init_path}")
    rw_path, _ = root.layer_path(driver, c.id, "rw")
    c.rw_layer = c.id
    layers.append(Layer(role="rw", cache_id=c.id, path=rw_path, driver=driver))
    drop_missing_layers(c, problems, layers, lambda layer: ev.is_dir(layer.path or ""))
    c.layers = layers


def list_containers_v1(root: DockerRoot, problems: list[Problem]) -> list[Container]:
    """Every container of a v1 data root, with its layers; corrupt ones kept as placeholders."""
    ev = root.evidence
    base, ids = root.listdir_sorted("containers", problems, "containers")
    if not ids:
        return []
    graph = Graph(root, [])  # graph problems are reported once, by list_images_v1
    default_driver = _default_driver(root)
    out: list[Container] = []
    for cid in ids:
        cdir = posixpath.join(base, cid)
        if not ev.is_dir(cdir):
            if ev.exists(cdir) and ev.lstat(cdir).is_symlink:
                refused = _refused_dir(cid, cdir, root)  # never followed
                problems.extend(refused.problems)
                out.append(refused)
            continue
        path = posixpath.join(cdir, "config.json")
        try:
            raw = ev.read_bytes(path, _LIMIT + 1)
            c = _parse_v1(cid, raw, cdir, root, problems, path)
        except (EvidenceError, OSError) as exc:
            c = _unreadable(cid, root, path, f"container config missing or unreadable: {exc}", problems)
        _fill_layers_v1(c, root, graph, default_driver, problems)
        out.append(c)
    return out
