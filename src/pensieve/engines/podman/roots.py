"""Where Podman (containers/storage) keeps its graphroots on a host (containers-storage.conf(5)).

* rootful: ``/var/lib/containers/storage``, or ``[storage] graphroot`` of
  ``/etc/containers/storage.conf`` (``/usr/share/containers/storage.conf`` when there is no /etc
  one);
* rootless: ``$HOME/.local/share/containers/storage`` of every user (``/root``, ``/home/*``,
  ``/var/home/*``), or ``rootless_storage_path`` from the same file with ``$HOME``/``$USER``;
* a graphroot handed over directly (the evidence root itself is one).
"""

from __future__ import annotations

import posixpath

from pensieve.evidence import Evidence, EvidenceError

DEFAULT_GRAPHROOT = "/var/lib/containers/storage"
ROOTLESS_GRAPHROOT = ".local/share/containers/storage"
STORAGE_CONFS = ("/etc/containers/storage.conf", "/usr/share/containers/storage.conf")
HOME_PARENTS = ("/home", "/var/home")
#: what only a containers/storage graphroot holds (any one is enough)
MARKERS = (
    "overlay-containers/containers.json",
    "overlay-images/images.json",
    "overlay-layers/layers.json",
    "libpod/bolt_state.db",
    "libpod/db.sql",
)


def is_graphroot(ev: Evidence, path: str) -> bool:
    """Whether PATH in the evidence looks like a containers/storage graphroot."""
    return any(ev.is_file(posixpath.join(path, m)) for m in MARKERS)


def _storage_conf(ev: Evidence) -> tuple[dict, str | None]:
    """(``[storage]`` table, the file it came from) of the first storage.conf the evidence holds."""
    for conf in STORAGE_CONFS:
        try:
            raw = ev.read_bytes(conf, 1 << 20)
        except (EvidenceError, OSError):
            continue
        import tomllib  # only where a storage.conf is found (start-up time)

        try:
            data = tomllib.loads(raw.decode("utf-8", "replace"))
        except (tomllib.TOMLDecodeError, ValueError):
            return {}, conf
        storage = data.get("storage")
        return (storage if isinstance(storage, dict) else {}), conf
    return {}, None


def _homes(ev: Evidence) -> list[tuple[str, str]]:
    """(home, user name) of every home directory the evidence holds."""
    out = [("/root", "root")]
    for parent in HOME_PARENTS:
        try:
            names = sorted(ev.listdir(parent))
        except (EvidenceError, OSError):
            continue
        out += [(posixpath.join(parent, n), n) for n in names]
    return out


def podman_roots(ev: Evidence) -> list[tuple[str, str]]:
    """(graphroot, how it was found) of every graphroot in the evidence, each once, in the order
    found: the source itself (``given``), storage.conf's ``graphroot``, the default path, then
    each user's rootless store (``rootless_storage_path`` or the default below the home)."""
    candidates = [("/", "given")]
    conf, conf_path = _storage_conf(ev)
    graphroot = conf.get("graphroot")
    if isinstance(graphroot, str) and graphroot.startswith("/"):
        candidates.append((posixpath.normpath(graphroot), f"graphroot in {conf_path}"))
    candidates.append((DEFAULT_GRAPHROOT, "default path"))
    rootless = conf.get("rootless_storage_path")
    for home, user in _homes(ev):
        if isinstance(rootless, str) and rootless:
            path = rootless.replace("$HOME", home).replace("$USER", user)
            if path.startswith("/"):
                how = f"rootless user {user} (rootless_storage_path in {conf_path})"
                candidates.append((posixpath.normpath(path), how))
        candidates.append((posixpath.join(home, ROOTLESS_GRAPHROOT), f"rootless user {user}"))
    out: dict[str, str] = {}
    for path, how in candidates:
        if path not in out and is_graphroot(ev, path):
            out[path] = how
    return list(out.items())


def find_podman_roots(ev: Evidence) -> list[str]:
    """Every graphroot in the evidence (evidence paths, each once, in the order found)."""
    return [path for path, _how in podman_roots(ev)]


def store_drivers(ev: Evidence, graphroot: str) -> list[str]:
    """The storage drivers with a store in GRAPHROOT (containers/storage keeps each driver's
    layers, images and containers in ``<driver>-layers`` / ``-images`` / ``-containers``)."""
    try:
        names = ev.listdir(graphroot)
    except (EvidenceError, OSError):
        return []
    suffixes = ("-layers", "-images", "-containers")
    found = {n.rsplit("-", 1)[0] for n in names if n.endswith(suffixes) and not n.startswith(".")}
    return sorted(found)
