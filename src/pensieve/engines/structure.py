"""Engine roots found by their structure, wherever they are on a host root or a disk.

A data-root volume mounted somewhere else (``/srv/x/docker``, ``/data/containerd``,
``/mnt/disk2/containers/storage``), or a disk holding only such a volume, is in no default path
and no configuration file of the evidence names it.  :func:`search` walks the directories of the
source breadth first, a few levels deep, and recognises each engine's root by what only it holds:

* Docker (moby ``daemon/``, ``layer/``): :func:`pensieve.engines.docker.root.looks_like_data_root`
  -- ``image/`` with ``containers/`` or ``image/<driver>/``; ``graph/`` + ``containers/`` (v1);
  ``containers/`` with a storage driver's directory or ``containerd/daemon``;
* containerd: ``io.containerd.metadata.v1.bolt/meta.db`` (its metadata plugin's bolt file);
* Podman / containers/storage: any of :data:`pensieve.engines.podman.roots.MARKERS`.

The walk is bounded: DEPTH levels below the top, a budget of directories listed and of entries
read, no symlink followed, pseudo and system trees skipped (:data:`SKIP`), nothing below a root
already found, nor that root again by another path (its layers hold whole filesystems of their
own).  Only the cheap test of a
directory's child names is made for every directory; the engine's own test only where those
names fit.
"""

from __future__ import annotations

import posixpath
from collections import deque

from pensieve.engines.containerd.layout import META_DB
from pensieve.engines.docker.root import looks_like_data_root
from pensieve.engines.podman.roots import MARKERS, is_graphroot
from pensieve.evidence.base import Evidence, EvidenceError, join
from pensieve.records.core import record

#: how deep below the top directories are searched (``/mnt/disk2/containers/storage`` is 4)
DEPTH = 4
#: how many directories are listed at most
MAX_DIRS = 4000
#: how many directory entries are read at most (all listings together)
MAX_ENTRIES = 400_000
#: top-level trees that hold no engine root: kernel pseudo filesystems, the OS's own files, and
#: /run (runtime state: containerd's and Docker's state directories are found beside their roots)
SKIP = frozenset(
    {
        "proc",
        "sys",
        "dev",
        "run",
        "usr",
        "boot",
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "lost+found",
    }
)

_DOCKER_HINTS = frozenset({"image", "graph", "containers"})
_CONTAINERD_HINT = META_DB.split("/")[0]
_PODMAN_HINTS = frozenset(m.split("/")[0] for m in MARKERS)


@record
class FoundRoot:
    """An engine root the structure search recognised."""

    engine: str  # docker | containerd | podman
    path: str
    depth: int  # path components below the top (``/data/containerd``: 2)

    @property
    def how_found(self) -> str:
        return f"found by structure at depth {self.depth}"


@record
class SearchResult:
    """What the search found, and whether a budget ended it early."""

    roots: list[FoundRoot]
    dirs_listed: int = 0
    exhausted: bool = False  # a budget ran out before every directory to DEPTH was seen


def recognise(evidence: Evidence, path: str, names: set[str]) -> str | None:
    """The engine whose root PATH is, from its child NAMES and then the engine's own test."""
    if _CONTAINERD_HINT in names and evidence.is_file(join(path, META_DB)):
        return "containerd"
    if names & _PODMAN_HINTS and is_graphroot(evidence, path):
        return "podman"
    if names & _DOCKER_HINTS and looks_like_data_root(evidence, path):
        return "docker"
    return None


def _subdirs(evidence: Evidence, path: str, room: int) -> tuple[set[str], list[str], int]:
    """(child names, child directories, entries read) of PATH, at most ROOM entries read."""
    names: set[str] = set()
    dirs: list[str] = []
    read = 0
    try:
        for entry in evidence.scandir(path):
            read += 1
            names.add(entry.name)
            if entry.stat.is_dir:  # lstat: a symlink is not descended
                dirs.append(entry.name)
            if read >= room:
                break
    except (EvidenceError, OSError):
        pass
    return names, sorted(dirs), read


def _identity(evidence: Evidence, path: str) -> tuple[int, int] | None:
    """(device, inode) of the directory at PATH (a root reached through a symlink elsewhere is the
    same directory), None when it cannot be read or the evidence gives no inode numbers."""
    try:
        st = evidence.lstat(path)
    except (EvidenceError, OSError):
        return None
    return (st.dev, st.ino) if st.ino else None


def search(
    evidence: Evidence,
    known: list[str] | tuple[str, ...] = (),
    depth: int = DEPTH,
    max_dirs: int = MAX_DIRS,
    max_entries: int = MAX_ENTRIES,
) -> SearchResult:
    """Every engine root within DEPTH levels of the top of EVIDENCE that is not in KNOWN (roots
    found otherwise: neither reported again nor descended into), breadth first, shallowest first."""
    known_set = {posixpath.normpath(k) for k in known}
    known_ids = {i for k in known_set if (i := _identity(evidence, k)) is not None}
    result = SearchResult(roots=[])
    queue: deque[tuple[str, int]] = deque([("/", 0)])
    entries_left = max_entries
    while queue:
        path, level = queue.popleft()
        if result.dirs_listed >= max_dirs or entries_left <= 0:
            result.exhausted = True
            break
        result.dirs_listed += 1
        names, dirs, read = _subdirs(evidence, path, entries_left)
        entries_left -= read
        if level > 0:
            engine = recognise(evidence, path, names)
            if engine is not None:
                if _identity(evidence, path) not in known_ids:  # not a known root by another path
                    result.roots.append(FoundRoot(engine=engine, path=path, depth=level))
                continue
        if level >= depth:
            continue
        for name in dirs:
            child = join(path, name)
            if (level == 0 and name in SKIP) or child in known_set:
                continue
            queue.append((child, level + 1))
    return result
