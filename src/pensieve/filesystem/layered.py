"""A merged, read-only view of a layered container filesystem, with per-entry provenance.

The view is computed from the layer directories themselves, the way the kernel's union
filesystems do it, without mounting anything.  What a layer directory's entries mean --
whiteouts, opaque directories, redirects of renamed directories, whole-tree snapshots -- is the
layer's storage driver's to say (:class:`pensieve.engines.base.StorageDriver`, found by the name
each :class:`~pensieve.records.Layer` records); this module only merges.  A snapshot layer holds
the whole tree; an entry's origin is the lowest snapshot in which it is unchanged.

Every lookup walks component by component through the merged view, iteratively; symlinks are
resolved inside the container root (absolute targets re-rooted, ``..`` clamped), never on the
host, with at most 40 symlinks per lookup (the kernel's limit: ELOOP beyond).  A redirect is
followed only inside the lower layers; one that would climb out is a problem and ignored.
"""

from __future__ import annotations

import errno
import posixpath
from collections import OrderedDict
from collections.abc import Iterator

from pensieve.engines.base import LayerDir, storage_driver
from pensieve.evidence import Evidence, EvidenceError, FileStat, NotFound
from pensieve.evidence.base import MAX_SYMLINKS, chroot_link
from pensieve.records import FileEntry, Layer, Problem

_MAX_HOPS = MAX_SYMLINKS


class PathNotInView(NotFound):
    """No such path in the merged container filesystem."""


class TooManySymlinks(PathNotInView):
    """ELOOP: more than 40 symlinks met resolving one path (a loop or an over-long chain)."""

    errno = errno.ELOOP


class Resolved:
    """A path found in the view: the providing layer and the lower layers it hides."""

    __slots__ = ("path", "stat", "layer", "rel", "shadows", "dirs")

    def __init__(
        self, path: str, stat: FileStat, layer: int, rel: str, shadows: list[int], dirs: list[tuple[int, str]]
    ) -> None:
        self.path = path
        self.stat = stat
        self.layer = layer  # index into the view's layers (0 = bottom)
        self.rel = rel  # the path inside that layer's directory (differs after a redirect)
        self.shadows = shadows
        self.dirs = dirs  # for directories: contributing (layer, rel path), top first


def same_metadata(a: FileStat, b: FileStat) -> bool:
    """The stat comparison Docker's naive differ uses (moby pkg/archive ``statDifferent``):
    mode, owner and rdev, plus size and mtime for non-directories."""
    if a.mode != b.mode or a.uid != b.uid or a.gid != b.gid or a.rdev != b.rdev:
        return False
    return a.is_dir or (a.size == b.size and a.mtime_ns == b.mtime_ns)


class LayeredView:
    """The union of ``layers`` (bottom first) as one filesystem tree."""

    def __init__(
        self,
        evidence: Evidence,
        layers: list[Layer],
        cache_dirs: int = 4096,
        problems: list[Problem] | None = None,
        owners: list | None = None,
    ) -> None:
        self.evidence = evidence
        self.layers = layers
        #: per layer, ids on disk -> the ids the container sees (Host.owner_maps), None: as on disk
        self.owners = owners
        self.drivers = [storage_driver(layer.driver, layer) for layer in layers]
        self.snapshots = [d.is_snapshot(layer) for d, layer in zip(self.drivers, layers, strict=True)]
        #: what could not be used while reading the view (refused redirects ...)
        self.problems: list[Problem] = problems if problems is not None else []
        # a driver whose RW layer already holds the init layer's copy (legacy overlay) must not
        # merge the init layer in (it would resurrect files deleted in the container); it
        # still serves provenance.
        self.subsumed: int | None = None
        if layers and self.drivers[-1].subsumes_init(layers):
            self.subsumed = len(layers) - 2
        self._hops = 0
        self._dirs: OrderedDict[tuple[int, str], LayerDir | None] = OrderedDict()
        self._cache_dirs = cache_dirs
        self._resolved: OrderedDict[str, Resolved | None] = OrderedDict()

    # ---- per-layer access -----------------------------------------------------------------
    def layer_host_path(self, index: int, rel: str) -> str | None:
        base = self.layers[index].path
        if base is None:
            return None
        rel = rel.lstrip("/")
        return posixpath.join(base, rel) if rel else base

    def _layer_dir(self, index: int, rel: str) -> LayerDir | None:
        key = (index, rel)
        if key in self._dirs:
            self._dirs.move_to_end(key)
            return self._dirs[key]
        result = self._read_layer_dir(index, rel)
        self._dirs[key] = result
        if len(self._dirs) > self._cache_dirs:
            self._dirs.popitem(last=False)
        return result

    def _read_layer_dir(self, index: int, rel: str) -> LayerDir | None:
        host = self.layer_host_path(index, rel)
        if host is None:
            return None
        try:
            listing = list(self.evidence.scandir(host))
        except (EvidenceError, OSError):
            return None
        return self.drivers[index].read_dir(self.evidence, host, rel, listing, self.snapshots[index])

    def is_snapshot(self, index: int) -> bool:
        """Whether layer INDEX holds the whole tree (its entries' origin may lie below)."""
        return self.snapshots[index]

    def _redirect(self, index: int, rel: str, parent_rel: str) -> str | None:
        """The lower path a renamed directory's contents come from (inside the lower layers
        only; a redirect that would leave them is a problem and the directory not redirected)."""
        if self.snapshots[index]:
            return None
        host = self.layer_host_path(index, rel)
        if host is None:
            return None
        target, problem = self.drivers[index].redirect(self.evidence, host, parent_rel)
        if problem is not None:
            self.problems.append(Problem(host, problem))
        return target

    # ---- merged lookups -------------------------------------------------------------------
    def _root(self) -> Resolved:
        top = len(self.layers) - 1
        dirs: list[tuple[int, str]] = []
        for i in range(top, -1, -1):
            if self.layers[i].path is None or i == self.subsumed:
                continue
            dirs.append((i, "/"))
            if self.snapshots[i]:
                break
        if not dirs:
            raise PathNotInView("no layer contents available for this view")
        i0 = dirs[0][0]
        st = self.evidence.lstat(self.layers[i0].path or "/")
        return Resolved("/", st, i0, "/", [], dirs)

    def _child(self, parent: Resolved, name: str) -> Resolved | None:
        """Look NAME up in the merged directory PARENT.

        The top-most layer holding NAME provides it.  For a directory, lower copies keep
        contributing (merging) until an opaque copy, a redirect, or a non-directory ends the
        chain; every other lower copy is recorded as shadowed.
        """
        path = posixpath.join(parent.path, name)
        found: Resolved | None = None
        merging = False  # lower directory copies still merge into `found`
        for i, rel_dir in parent.dirs:
            ld = self._layer_dir(i, rel_dir)
            if ld is None:
                continue
            st = ld.entries.get(name)
            if st is None:
                if name in ld.whiteouts:
                    if found is None:
                        return None  # deleted in this layer
                    break  # a whiteout below what we found: nothing further shows
                continue
            rel = posixpath.join(rel_dir, name)
            if found is None:
                found = Resolved(path, st, i, rel, [], [])
                if st.is_dir:
                    found.dirs.append((i, rel))
                    redirect = self._redirect(i, rel, rel_dir)
                    if redirect is not None:
                        found.dirs.extend(self._redirected(i, redirect))
                        merging = False
                    else:
                        child = self._layer_dir(i, rel)
                        merging = child is not None and not child.opaque
                continue
            if merging and st.is_dir:
                found.dirs.append((i, rel))
                child = self._layer_dir(i, rel)
                merging = child is not None and not child.opaque
                continue
            found.shadows.append(i)
            merging = False
        return found

    def _layer_lstat(self, index: int, rel: str) -> FileStat | None:
        """lstat of REL in layer INDEX's directory (None when the layer has no contents or REL
        cannot be read there)."""
        host = self.layer_host_path(index, rel)
        if host is None:
            return None
        try:
            return self.evidence.lstat(host)
        except (EvidenceError, OSError):
            return None

    def _redirected(self, index: int, target: str) -> list[tuple[int, str]]:
        """Lower layers' copies of a renamed (redirected) directory."""
        out: list[tuple[int, str]] = []
        for i in range(index - 1, -1, -1):
            st = self._layer_lstat(i, target)
            if st is not None and st.is_dir:
                out.append((i, target))
                ld = self._layer_dir(i, target)
                if ld is not None and ld.opaque:
                    break
        return out

    def lookup(self, path: str) -> Resolved:
        """The merged entry at PATH without following a final symlink; directory symlinks on
        the way are resolved inside the container root (40 symlinks at most: TooManySymlinks)."""
        path = posixpath.normpath("/" + path.lstrip("/"))
        self._hops = 0
        return self._lookup(path)

    def _cached(self, path: str) -> Resolved | None:
        r = self._resolved[path]
        if r is None:
            raise PathNotInView(f"no such path in container filesystem: {path}")
        self._resolved.move_to_end(path)
        return r

    def _remember(self, path: str, r: Resolved | None) -> None:
        self._resolved[path] = r
        if len(self._resolved) > 65536:
            self._resolved.popitem(last=False)
        if r is None:
            raise PathNotInView(f"no such path in container filesystem: {path}")

    def _lookup(self, path: str) -> Resolved:
        """Iterative walk from the deepest cached ancestor of PATH (a normalised absolute path)."""
        if path in self._resolved:
            return self._cached(path)  # type: ignore[return-value]
        names = [n for n in path.split("/") if n]
        # the deepest ancestor already resolved
        depth = len(names)
        while depth > 0 and "/" + "/".join(names[:depth]) not in self._resolved:
            depth -= 1
        if depth == 0:
            if "/" not in self._resolved:
                self._remember("/", self._root())
            current = self._cached("/")
        else:
            current = self._cached("/" + "/".join(names[:depth]))
        for i in range(depth, len(names)):
            parent_path = "/" + "/".join(names[:i])
            parent = self._follow(current) if current.stat.is_symlink else current  # type: ignore[union-attr]
            if not parent.stat.is_dir:
                raise PathNotInView(f"not a directory in container filesystem: {parent_path}")
            current = self._child(parent, names[i])  # its path: below the followed parent
            self._remember(posixpath.join(parent_path, names[i]), current)
        return current  # type: ignore[return-value]

    def _follow(self, r: Resolved) -> Resolved:
        """The entry a symlink R finally points at, inside the container root."""
        while r.stat.is_symlink:
            self._hops += 1
            if self._hops > _MAX_HOPS:
                raise TooManySymlinks(f"too many levels of symbolic links (ELOOP) at {r.path}")
            r = self._lookup(chroot_link(posixpath.dirname(r.path), self.readlink_entry(r)))
        return r

    def resolve(self, path: str) -> Resolved:
        """Like lookup() but follows a final symlink too (inside the container root)."""
        r = self.lookup(path)
        return self._follow(r) if r.stat.is_symlink else r

    def realpath(self, path: str) -> str:
        """Canonical container path: every symlink resolved inside the container root."""
        path = posixpath.normpath("/" + path.lstrip("/"))
        parts = [p for p in path.split("/") if p]
        parts.reverse()  # a stack: the next component last
        current = "/"
        hops = 0
        while parts:
            name = parts.pop()
            if name == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, name)
            try:
                r = self.lookup(candidate)
            except TooManySymlinks:
                raise
            except PathNotInView:
                return posixpath.join(candidate, *reversed(parts)) if parts else candidate
            if r.stat.is_symlink:
                hops += 1
                if hops > _MAX_HOPS:
                    raise TooManySymlinks(f"too many levels of symbolic links (ELOOP) at {candidate}")
                target = self.readlink_entry(r)
                if target.startswith("/"):
                    current = "/"
                parts.extend(reversed([p for p in target.split("/") if p and p != "."]))
                continue
            current = candidate
        return current

    def readlink_entry(self, r: Resolved) -> str:
        host = self.layer_host_path(r.layer, r.rel)
        if host is None:
            raise PathNotInView(f"layer contents missing for {r.path}")
        return self.evidence.readlink(host)

    def listdir(self, path: str, follow: bool = True) -> list[str]:
        """Names in the merged directory at PATH (sorted)."""
        r = self.resolve(path) if follow else self.lookup(path)
        return self._names(r)

    def _names(self, r: Resolved) -> list[str]:
        if not r.stat.is_dir:
            raise PathNotInView(f"not a directory in container filesystem: {r.path}")
        names: set[str] = set()
        hidden: set[str] = set()
        for i, rel in r.dirs:
            ld = self._layer_dir(i, rel)
            if ld is None:
                continue
            for name in ld.entries:
                if name not in hidden:
                    names.add(name)
            hidden |= ld.whiteouts
            hidden |= set(ld.entries)
            if ld.opaque:
                break
        return sorted(names)

    def entry(self, r: Resolved) -> FileEntry:
        """The FileEntry record (with provenance) for a resolved path."""
        layer = self.layers[r.layer]
        index = r.layer
        # snapshot layers: attribute to the lowest snapshot holding the same file
        shadows = r.shadows
        if self.snapshots[index]:
            index = self._snapshot_origin(index, r.rel, r.stat)
            shadows = self._snapshot_shadows(index, r.rel)
            layer = self.layers[index]
        elif self.subsumed is not None and index == self.subsumed + 1:
            init = self.layer_host_path(self.subsumed, r.rel)
            try:
                ist = self.evidence.lstat(init) if init else None
            except (EvidenceError, OSError):
                ist = None
            if ist is not None and same_metadata(ist, r.stat):
                index = self.subsumed
                layer = self.layers[index]
        st = r.stat
        ids = self.owners[index] if self.owners else None
        return FileEntry(
            path=r.path,
            type=st.kind,
            mode=st.mode,
            uid=ids.uid(st.uid) if ids else st.uid,
            gid=ids.gid(st.gid) if ids else st.gid,
            size=st.size,
            mtime=st.mtime_ns,
            atime=st.atime_ns,
            ctime=st.ctime_ns,
            inode=st.ino,
            nlink=st.nlink,
            rdev=st.rdev or None,
            link_target=self.readlink_entry(r) if st.is_symlink else None,
            layer=layer.cache_id,
            layer_role=layer.role,
            layer_index=index,
            created_by=layer.created_by,
            shadows=[self.layers[i].cache_id or f"#{i}" for i in shadows],
            host_path=self.layer_host_path(index, r.rel),  # the copy in the layer named above
        )

    def _snapshot_shadows(self, origin: int, rel: str) -> list[int]:
        """Snapshot layers below ORIGIN holding an older version of REL, top first: what the
        entry hides (each older version attributed to its own origin snapshot)."""
        out: list[int] = []
        i = origin - 1
        while i >= 0 and self.snapshots[i]:
            st = self._layer_lstat(i, rel)
            if st is None:
                break
            i = self._snapshot_origin(i, rel, st)
            out.append(i)
            i -= 1
        return out

    def _snapshot_origin(self, index: int, rel: str, st: FileStat) -> int:
        while index > 0 and self.snapshots[index - 1]:
            lower = self._layer_lstat(index - 1, rel)
            if lower is None:
                break
            same_inode = lower.ino == st.ino and lower.dev == st.dev
            if not (same_inode or same_metadata(lower, st)):
                break
            index -= 1
        return index

    def stat(self, path: str, follow: bool = False) -> FileEntry:
        return self.entry(self.resolve(path) if follow else self.lookup(path))

    def open(self, path: str):
        """Open the merged file at PATH (symlinks followed inside the root) for reading."""
        r = self.resolve(path)
        if not r.stat.is_file:
            raise PathNotInView(f"not a regular file in container filesystem: {r.path}")
        host = self.layer_host_path(r.layer, r.rel)
        if host is None:
            raise PathNotInView(f"layer contents missing for {r.path}")
        return self.evidence.open(host)

    def walk(self, top: str = "/") -> Iterator[FileEntry]:
        """Every entry below TOP (TOP included), depth-first, sorted; symlinks not followed."""
        start = self.resolve(top)
        stack: list[Resolved] = [start]
        while stack:
            r = stack.pop()
            yield self.entry(r)
            if r.stat.is_dir:
                children = []
                for name in self._names(r):
                    child = self._child(r, name)
                    if child is not None:
                        child.path = posixpath.join(r.path, name)
                        children.append(child)
                stack.extend(reversed(children))
