"""Compare an image on two sources: a host against an archive of it, two archives, two hosts.

Layers are matched by diff id (the digest of their content as recorded); files are compared on
the two merged views, whatever each side is made of (a storage driver's layer directories on a
host, layer tars in an archive, one flat ``docker export``).  The views are walked together, each in sorted
depth-first order (pre-order with sorted names is the order of the paths' component lists), so
memory holds one directory listing per level, never a tree or a file.

A file differs in: ``type``, ``content`` (sha256, streamed), ``size``, ``mode`` (permission,
setuid/setgid/sticky bits), ``owner``, ``link`` (symlink target), ``device``, ``xattr`` (those a
layer tar carries: not the storage driver's own, ``StorageDriver.private_xattrs``) and, for
non-directories,
``mtime`` (a directory's mtime moves with every change inside it; those changes are listed).
Each side names the layer that provides the entry (its diff id, its id in that source, the
build step).  The recorded digests match even when a host's layer directory was edited:
that is the point of comparing the bytes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any

from pensieve.engines.base import private_xattr_prefixes
from pensieve.evidence import EvidenceError
from pensieve.filesystem.layered import LayeredView
from pensieve.records import FileEntry, Image, Layer, Problem
from pensieve.records.images import Comparison, FileDifference, LayerMatch
from pensieve.times import iso_ns
from pensieve.util import sha256_stream

_HOST_XATTRS = ("security.selinux",)
#: xattrs a storage driver keeps for itself, whichever side holds them (never image content)
_PRIVATE_XATTRS = private_xattr_prefixes()


def match_layers(a: list[Layer], b: list[Layer]) -> list[LayerMatch]:
    """A's layers in order (shared or only-a), then B's that A lacks (only-b)."""
    pos_b: dict[str, int] = {}
    for i, layer in enumerate(b):
        if layer.diff_id:
            pos_b.setdefault(layer.diff_id, i)
    pos_a = {layer.diff_id for layer in a if layer.diff_id}
    out = []
    for i, layer in enumerate(a):
        j = pos_b.get(layer.diff_id or "")
        if j is not None:
            out.append(
                LayerMatch(
                    "shared",
                    layer.diff_id,
                    i,
                    j,
                    layer.cache_id,
                    b[j].cache_id,
                    layer.created_by or b[j].created_by,
                    i == j,
                )
            )
        else:
            out.append(LayerMatch("only-a", layer.diff_id, i, None, layer.cache_id, None, layer.created_by))
    for j, layer in enumerate(b):
        if not layer.diff_id or layer.diff_id not in pos_a:
            out.append(LayerMatch("only-b", layer.diff_id, None, j, None, layer.cache_id, layer.created_by))
    return out


def _key(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


class _Side:
    def __init__(self, host, layers: list[Layer], hash_files: bool, problems: list[Problem]) -> None:
        self.host = host
        self.layers = layers
        self.view = LayeredView(host.evidence, layers, problems=problems)
        self.hash_files = hash_files
        self.problems = problems

    def sha256(self, e: FileEntry) -> str | None:
        if e.type != "file" or not e.host_path or not self.hash_files:
            return None
        if e.sha256 is None:
            try:
                with self.host.evidence.open(e.host_path) as fh:
                    e.sha256 = sha256_stream(fh)
            except (EvidenceError, OSError) as exc:
                self.problems.append(Problem(e.host_path, f"cannot hash {e.path}: {exc}"))
        return e.sha256

    def xattrs(self, e: FileEntry) -> dict[str, bytes]:
        if not e.host_path:
            return {}
        try:
            have = self.host.evidence.xattrs(e.host_path)
        except (EvidenceError, OSError):
            return {}
        private = _PRIVATE_XATTRS
        return {k: v for k, v in have.items() if not k.startswith(private) and k not in _HOST_XATTRS}

    def describe(self, e: FileEntry) -> dict[str, Any]:
        layer = self.layers[e.layer_index] if e.layer_index is not None else None
        return {
            "type": e.type,
            "mode": oct(e.mode & 0o7777) if e.mode is not None else None,
            "uid": e.uid,
            "gid": e.gid,
            "size": e.size if e.type != "dir" else None,
            "mtime": iso_ns(e.mtime),
            "sha256": e.sha256,
            "link_target": e.link_target,
            "layer": e.layer,
            "layer_index": e.layer_index,
            "diff_id": layer.diff_id if layer else None,
            "created_by": layer.created_by if layer else None,
            "host_path": e.host_path,
        }


def _differences(a: _Side, ea: FileEntry, b: _Side, eb: FileEntry) -> list[str]:
    what: list[str] = []
    if ea.type != eb.type:
        return ["type"]
    if ea.type == "file":
        sa, sb = a.sha256(ea), b.sha256(eb)
        if sa is not None and sb is not None and sa != sb:
            what.append("content")
    if ea.type != "dir" and ea.size != eb.size:
        what.append("size")
    if ((ea.mode or 0) & 0o7777) != ((eb.mode or 0) & 0o7777) and ea.type != "symlink":
        what.append("mode")
    if (ea.uid, ea.gid) != (eb.uid, eb.gid):
        what.append("owner")
    if ea.link_target != eb.link_target:
        what.append("link")
    if (ea.rdev or 0) != (eb.rdev or 0):
        what.append("device")
    if a.xattrs(ea) != b.xattrs(eb):
        what.append("xattr")
    if ea.type != "dir" and _seconds(ea.mtime) != _seconds(eb.mtime):
        what.append("mtime")  # whole seconds: Docker's layer tars keep no more
    return what


def _seconds(t: int | None) -> int | None:
    return None if t is None else t // 1_000_000_000


def iter_differences(a: _Side, b: _Side, top: str = "/") -> Iterator[FileDifference]:
    """The differing entries of two views, in path order."""
    wa, wb = a.view.walk(top), b.view.walk(top)
    ea, eb = next(wa, None), next(wb, None)
    while ea is not None or eb is not None:
        ka = _key(ea.path) if ea is not None else None
        kb = _key(eb.path) if eb is not None else None
        if eb is None or (ea is not None and ka < kb):  # type: ignore[operator]
            a.sha256(ea)  # type: ignore[arg-type]
            yield FileDifference("deleted", ea.path, ["deleted"], ea.type, None, a.describe(ea), None)  # type: ignore[union-attr]
            ea = next(wa, None)
        elif ea is None or kb < ka:  # type: ignore[operator]
            b.sha256(eb)
            yield FileDifference("added", eb.path, ["added"], None, eb.type, None, b.describe(eb))
            eb = next(wb, None)
        else:
            if ea.path != "/":  # the roots' own metadata is the storage driver's
                what = _differences(a, ea, b, eb)
                if what:
                    a.sha256(ea)
                    b.sha256(eb)
                    yield FileDifference(
                        "changed", ea.path, what, ea.type, eb.type, a.describe(ea), b.describe(eb)
                    )
            ea, eb = next(wa, None), next(wb, None)


def compare_images(
    host_a,
    image_a: Image,
    host_b,
    image_b: Image,
    matched_by: str = "given",
    hash_files: bool = True,
    top: str = "/",
    files: bool = True,
) -> Comparison:
    """Layers and files of IMAGE_A (in HOST_A) against IMAGE_B (in HOST_B)."""
    problems: list[Problem] = []
    layers_a = host_a.image_layers(image_a)
    layers_b = host_b.image_layers(image_b)
    c = Comparison(
        source_a=_source(host_a),
        source_b=_source(host_b),
        image_a=image_a.id,
        image_b=image_b.id,
        tags_a=list(image_a.tags),
        tags_b=list(image_b.tags),
        matched_by=matched_by,
        same_id=image_a.id == image_b.id,
        layers=match_layers(layers_a, layers_b),
        problems=problems,
    )
    for side, layers in (("A", layers_a), ("B", layers_b)):
        for i, layer in enumerate(layers):
            if layer.path is None:
                problems.append(
                    Problem(
                        f"{side}:{layer.cache_id}", f"layer {i} unreadable: its files are left out of {side}"
                    )
                )
    if files:
        sa = _Side(host_a, layers_a, hash_files, problems)
        sb = _Side(host_b, layers_b, hash_files, problems)
        c.files = list(iter_differences(sa, sb, posixpath.normpath("/" + top.lstrip("/"))))
    return c


def _source(host) -> str:
    return getattr(host, "source", None) or host.evidence.description


def match_images(host_a, host_b) -> tuple[list[tuple[Image, Image, str]], list[Image], list[Image]]:
    """Pairs (a, b, how) matched by image id, else by a shared tag; then A's and B's leftovers.
    Build-step images (no tags, parents of others) are left out unless matched by id."""
    imgs_a, imgs_b = host_a.images(), host_b.images()
    by_id = {i.id: i for i in imgs_b}
    used: set[str] = set()
    pairs = []
    rest_a = []
    for ia in imgs_a:
        ib = by_id.get(ia.id)
        how = "id"
        if ib is None or ib.id in used:
            ib = next((i for i in imgs_b if i.id not in used and set(i.tags) & set(ia.tags)), None)
            how = "tag"
        if ib is None:
            rest_a.append(ia)
            continue
        used.add(ib.id)
        pairs.append((ia, ib, how))
    rest_b = [i for i in imgs_b if i.id not in used]
    return pairs, rest_a, rest_b
