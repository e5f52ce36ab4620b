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
import tomllib

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


def _storage_conf(ev: Evidence) -> dict:
    for conf in STORAGE_CONFS:
        try:
            raw = ev.read_bytes(conf, 1 << 20)
        except (EvidenceError, OSError):
            continue
        try:
            data = tomllib.loads(raw.decode("utf-8", "replace"))
        except (tomllib.TOMLDecodeError, ValueError):
            return {}
        storage = data.get("storage")
        return storage if isinstance(storage, dict) else {}
    return {}


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


def find_podman_roots(ev: Evidence) -> list[str]:
    """Every graphroot in the evidence (evidence paths, each once, in the order found)."""
    candidates = ["/"]
    conf = _storage_conf(ev)
    graphroot = conf.get("graphroot")
    if isinstance(graphroot, str) and graphroot.startswith("/"):
        candidates.append(posixpath.normpath(graphroot))
    candidates.append(DEFAULT_GRAPHROOT)
    rootless = conf.get("rootless_storage_path")
    for home, user in _homes(ev):
        if isinstance(rootless, str) and rootless:
            path = rootless.replace("$HOME", home).replace("$USER", user)
            if path.startswith("/"):
                candidates.append(posixpath.normpath(path))
        candidates.append(posixpath.join(home, ROOTLESS_GRAPHROOT))
    out: list[str] = []
    for path in candidates:
        if path not in out and is_graphroot(ev, path):
            out.append(path)
    return out
