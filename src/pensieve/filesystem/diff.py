"""What a container changed against its image: the RW layer read against the layers below it.

Only the RW layer is walked; every entry in it is looked up in the lower view (init + image
layers), so the cost follows the size of the RW layer, not of the image.

The changes reported agree with ``docker diff`` (moby pkg/archive/changes.go): an entry absent
below is *added*; with a driver that has a native differ (``StorageDriver.native_diff``: the
differ walks the RW layer, pkg/archive ``OverlayChanges``) a non-directory present below was
copied up and is *modified*, and so is every directory of the RW layer that exists below; other
drivers get the naive stat comparison;
an entry present below and hidden by a whiteout, or by an opaque directory, is *deleted* (the
top-most deleted path only).  pensieve says more: content hashes and exactly what changed
(content, size, mode, owner, mtime, capabilities, link target) with the lower copy's metadata.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from pensieve.evidence import Evidence, EvidenceError, FileStat
from pensieve.filesystem.layered import LayeredView, PathNotInView, Resolved
from pensieve.output.sink import OutputSink
from pensieve.records import Change, FileEntry, Layer, Problem
from pensieve.times import iso_ns
from pensieve.util import sha256_stream

_CAP = "security.capability"


#: (an open evidence file, its evidence path) -> the sha256 of its content, hex
Digest = Callable[[BinaryIO, str], str]


class DiffResult:
    """The changes of a container's RW layer and the problems met computing them."""

    __slots__ = ("changes", "problems")

    def __init__(self, changes: list[Change], problems: list[Problem]) -> None:
        self.changes = changes
        self.problems = problems


def _meta(st: FileStat) -> dict:
    return {
        "type": st.kind,
        "mode": oct(st.mode & 0o7777),
        "uid": st.uid,
        "gid": st.gid,
        "size": st.size,
        "mtime": iso_ns(st.mtime_ns),
        "rdev": st.rdev or None,
    }


class ContainerDiff:
    """Compute the changes of the top layer of ``layers`` against the ones below it."""

    def __init__(
        self, evidence: Evidence, layers: list[Layer], hash_files: bool = True, digest: Digest | None = None
    ) -> None:
        if not layers or layers[-1].role != "rw":
            raise ValueError("the top layer must be the container's RW layer")
        self.evidence = evidence
        self.layers = layers
        self.hash_files = hash_files
        self.digest = digest or (lambda fh, _host: sha256_stream(fh))
        self.full = LayeredView(evidence, layers)
        self.lower = LayeredView(evidence, layers[:-1]) if len(layers) > 1 else None
        self.top = len(layers) - 1
        self.problems: list[Problem] = []
        # drivers without a native differ make Docker compare the whole RW tree with its
        # parent's by stat (moby pkg/archive ChangesDirs, "naive" diff)
        self.naive = not self.full.drivers[-1].native_diff

    def _lower(self, path: str) -> Resolved | None:
        if self.lower is None:
            return None
        try:
            return self.lower.lookup(path)
        except PathNotInView:
            return None
        except (EvidenceError, OSError) as exc:
            self.problems.append(Problem(path, f"lower layer unreadable: {exc}"))
            return None

    def _hash(self, view: LayeredView, r: Resolved) -> str | None:
        if not self.hash_files or not r.stat.is_file:
            return None
        host = view.layer_host_path(r.layer, r.rel)
        if host is None:
            return None
        try:
            with self.evidence.open(host) as fh:
                return self.digest(fh, host)
        except (EvidenceError, OSError) as exc:
            self.problems.append(Problem(host, f"cannot hash: {exc}"))
            return None

    def _xattr(self, view: LayeredView, r: Resolved, name: str) -> bytes | None:
        host = view.layer_host_path(r.layer, r.rel)
        return self.evidence.xattrs(host).get(name) if host else None

    def _change(self, kind: str, r: Resolved, view: LayeredView, lower: Resolved | None) -> Change:
        st = r.stat
        layer = view.layers[r.layer]
        c = Change(
            change=kind,
            path=r.path,
            type=st.kind,
            size=st.size if not st.is_dir else None,
            mode=oct(st.mode & 0o7777),
            uid=st.uid,
            gid=st.gid,
            mtime=st.mtime_ns,
            ctime=st.ctime_ns,
            layer=layer.cache_id,
            host_path=view.layer_host_path(r.layer, r.rel),
        )
        if lower is not None and self.lower is not None:
            c.lower_layer = self._origin(lower)
            c.lower = _meta(lower.stat)
        return c

    def _origin(self, lower: Resolved) -> str | None:
        """Cache id of the layer that provided a lower entry (snapshot origins resolved)."""
        assert self.lower is not None
        index = lower.layer
        if self.lower.is_snapshot(index):
            index = self.lower._snapshot_origin(index, lower.rel, lower.stat)
        return self.lower.layers[index].cache_id

    def _deleted(self, lower: Resolved, why: str) -> Change:
        assert self.lower is not None
        c = self._change("deleted", lower, self.lower, None)
        c.layer = c.lower_layer = self._origin(lower)
        c.lower = _meta(lower.stat)
        c.sha256 = self._hash(self.lower, lower)
        c.what_changed = [why]
        return c

    def changes(self) -> Iterator[Change]:
        """Yield changes in path order."""
        view = self.full
        rw = self.layers[self.top]
        if rw.path is None or not self.evidence.is_dir(rw.path):
            raise EvidenceError(f"RW layer contents missing ({rw.cache_id})")
        root = view.lookup("/")
        yield from self._walk_dir("/", root)
        lower_root = self._lower("/")
        if lower_root is not None:
            yield from self._hidden_below(root, lower_root)

    def _walk_dir(self, dpath: str, merged: Resolved) -> Iterator[Change]:
        """Changes below the merged directory DPATH; the RW copy drives the walk."""
        view = self.full
        ld = view._layer_dir(self.top, dpath)
        if ld is None:
            return
        names = sorted(set(ld.entries) | ld.whiteouts)
        for name in names:
            path = posixpath.join(dpath, name)
            if name in ld.whiteouts and name not in ld.entries:
                lower = self._lower(path)
                if lower is None:
                    continue  # whiteout of nothing: invisible to the engine too
                yield self._deleted(lower, "deleted")
                continue
            r = view._child(merged, name)
            if r is None or r.layer != self.top:
                continue
            lower = self._lower(path)
            if lower is None:
                yield from self._added(r)
                continue
            yield from self._compared(r, lower)

    def _added(self, r: Resolved) -> Iterator[Change]:
        c = self._change("added", r, self.full, None)
        c.sha256 = self._hash(self.full, r)
        c.what_changed = ["added"]
        if r.stat.is_symlink:
            c.what_changed.append("-> " + self.full.readlink_entry(r))
        yield c
        if r.stat.is_dir:
            for name in self.full._names(r):
                child = self.full._child(r, name)
                if child is not None:
                    yield from self._added(child)

    def _compared(self, r: Resolved, lower: Resolved) -> Iterator[Change]:
        """The change (if any) of an RW entry R that also exists below (LOWER)."""
        what = self._metadata_differences(r, lower)
        sha, lower_sha = self._content_differences(r, lower, what)
        if r.stat.is_dir and lower.stat.is_dir:
            yield from self._compared_dirs(r, lower, what)
        else:
            yield from self._compared_copy_up(r, lower, what, sha, lower_sha)

    def _metadata_differences(self, r: Resolved, lower: Resolved) -> list[str]:
        """What differs in the entries' metadata: type, mode, owner, rdev, size, mtime, capabilities."""
        st, lst = r.stat, lower.stat
        what: list[str] = []
        if st.kind != lst.kind:
            what.append("type")
        if (st.mode & 0o7777) != (lst.mode & 0o7777):
            what.append("mode")
        if st.uid != lst.uid or st.gid != lst.gid:
            what.append("owner")
        if st.rdev != lst.rdev:
            what.append("rdev")
        both_dirs = st.is_dir and lst.is_dir
        if not both_dirs and st.size != lst.size:
            what.append("size")
        if st.mtime_ns != lst.mtime_ns:
            what.append("mtime")
        if not both_dirs and self._xattr(self.full, r, _CAP) != self._xattr(self.lower, lower, _CAP):  # type: ignore[arg-type]
            what.append("capabilities")
        return what

    def _content_differences(
        self, r: Resolved, lower: Resolved, what: list[str]
    ) -> tuple[str | None, str | None]:
        """(sha256 above, sha256 below) of two files; ``content`` (files) or ``target`` (symlinks)
        put first in WHAT when the bytes differ."""
        st, lst = r.stat, lower.stat
        if st.is_file and lst.is_file:
            sha = self._hash(self.full, r)
            lower_sha = self._hash(self.lower, lower)  # type: ignore[arg-type]
            if sha is not None and lower_sha is not None and sha != lower_sha:
                what.insert(0, "content")
            return sha, lower_sha
        if st.is_symlink and lst.is_symlink:
            try:
                if self.full.readlink_entry(r) != self.lower.readlink_entry(lower):  # type: ignore[union-attr]
                    what.insert(0, "target")
            except (EvidenceError, OSError):
                pass
        return None, None

    def _compared_dirs(self, r: Resolved, lower: Resolved, what: list[str]) -> Iterator[Change]:
        """A directory above and below, then the changes inside it."""
        inner = list(self._dir_changes(r, lower))
        if self.naive:
            meta = [w for w in what if w in ("type", "mode", "owner", "rdev")]
            if meta or inner:
                c = self._change("modified", r, self.full, lower)
                c.what_changed = what or ["contents"]
                c.engine_reports = bool(meta) or any(i.engine_reports for i in inner)
                yield c
            yield from inner
            return
        # a directory of the RW layer that exists below: docker's native diff lists it
        # whether or not its own metadata differs (seen with docker 20.10, native diff)
        c = self._change("modified", r, self.full, lower)
        c.what_changed = what or ["contents"]
        yield c
        yield from inner

    def _compared_copy_up(
        self, r: Resolved, lower: Resolved, what: list[str], sha: str | None, lower_sha: str | None
    ) -> Iterator[Change]:
        """A non-directory above that exists below (copied up)."""
        if self.naive and not [w for w in what if w not in ("content", "target")]:
            if not what:
                return  # same metadata, same bytes: a copy, not a change
            engine_reports = False  # bytes differ behind restored metadata
        else:
            engine_reports = True
        # a non-directory in the RW layer that exists below was copied up: the native differ
        # reports it even when nothing visible differs
        c = self._change("modified", r, self.full, lower)
        c.sha256 = sha
        if c.lower is not None:
            c.lower["sha256"] = lower_sha
        c.what_changed = what or ["copied up, no difference"]
        c.engine_reports = engine_reports
        yield c

    def _dir_changes(self, r: Resolved, lower: Resolved) -> Iterator[Change]:
        """Changes inside a directory present both above and below."""
        yield from self._walk_dir(r.path, r)
        yield from self._hidden_below(r, lower)

    def _hidden_below(self, r: Resolved, lower: Resolved) -> Iterator[Change]:
        """Lower children an opaque RW directory (or a full RW snapshot) does not hold."""
        ld = self.full._layer_dir(self.top, r.rel)
        if ld is None or not ld.opaque or self.lower is None:
            return
        why = "deleted" if self.full.is_snapshot(self.top) else "deleted (opaque directory)"
        for name in self.lower._names(lower):
            if name in ld.entries or name in ld.whiteouts:
                continue
            child = self.lower._child(lower, name)
            if child is not None:
                yield self._deleted(child, why)


def container_diff(
    evidence: Evidence, layers: list[Layer], hash_files: bool = True, digest: Digest | None = None
) -> DiffResult:
    """The changes of a container's RW layer (the top of LAYERS) against the layers below it.
    DIGEST(file object, evidence path) -> sha256 hex replaces the plain hashing of each file:
    triage reads each file once for its hash, its kind and its YARA matches."""
    d = ContainerDiff(evidence, layers, hash_files, digest)
    changes = sorted(d.changes(), key=lambda c: c.path)
    return DiffResult(changes, d.problems)


RECOVERED = "pensieve-recovered.json"


class Recovered:
    """What ``recover`` wrote: one entry per original (container path, change, layer, type,
    where it was written and its sha256, or a symlink's target), and the problems met."""

    __slots__ = ("entries", "manifest", "problems")

    def __init__(self, entries: list[dict], problems: list[Problem], manifest: str | None) -> None:
        self.entries = entries
        self.problems = problems
        self.manifest = manifest  # the sink's pensieve-manifest.json


def recover(
    evidence: Evidence,
    layers: list[Layer],
    changes: list[Change],
    out_dir: str,
    boundaries: Iterable[str] | None = None,
) -> Recovered:
    """Copy the lower-layer originals of deleted and modified entries into OUT_DIR.

    The image still holds them: nothing is carved, the bytes are the lower layer's.  Everything
    is written through an OutputSink (BOUNDARIES: ``host.boundaries()``, the evidence's own by
    default): OUT_DIR may not be or hold evidence, nothing in it is followed or overwritten.  The
    originals keep their container paths below OUT_DIR; ``pensieve-recovered.json`` lists them
    (container path, where it was written, sha256, the layer it came from) and the sink's
    ``pensieve-manifest.json`` the sha256 of every file written.
    """
    sink = OutputSink(out_dir, evidence.boundaries() if boundaries is None else boundaries, kind="dir")
    lower = LayeredView(evidence, layers[:-1])
    shown_dir = os.path.abspath(out_dir)
    written: dict[str, str] = {}  # rel -> sha256 of what this run wrote there
    entries: list[dict] = []
    problems: list[Problem] = []
    try:
        for c in changes:
            if c.change not in ("deleted", "modified") or c.lower is None and c.change == "modified":
                continue
            try:
                r = lower.lookup(c.path)
            except PathNotInView:
                continue
            for entry in lower.walk(c.path) if r.stat.is_dir else [lower.entry(r)]:
                item = {"path": entry.path, "change": c.change, "layer": entry.layer, "type": entry.type}
                try:
                    _recover_entry(evidence, sink, entry, item, shown_dir, written)
                except (EvidenceError, OSError) as exc:
                    problems.append(Problem(entry.path, f"original not recovered: {exc}"))
                    continue
                entries.append(item)
        sink.write(RECOVERED, json.dumps(entries, indent=2).encode())
    finally:
        manifest = sink.close()
    return Recovered(entries, problems, manifest)


def _recover_entry(
    evidence: Evidence,
    sink: OutputSink,
    entry: FileEntry,
    item: dict,
    shown_dir: str,
    written: dict[str, str],
) -> None:
    """Write one original below the sink: a directory, a file's bytes (once per run: a modified
    directory's walk meets the files changed inside it again), or just a symlink's target."""
    rel = entry.path.lstrip("/")
    if entry.type == "dir":
        if rel:
            sink.mkdir(rel)
    elif entry.type == "file" and entry.host_path:
        if rel not in written:
            with evidence.open(entry.host_path) as src, sink.create(rel) as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            written[rel] = dst.sha256
        item["sha256"] = written[rel]
        item["written"] = os.path.join(shown_dir, rel)
    else:
        item["link_target"] = entry.link_target
