"""A ``pensieve collect`` bundle as evidence: its ``root/`` tree (the engine's files at their
data-root paths for Docker, at their evidence paths for Podman and containerd) with each layer
tar of ``layers/`` mounted where the layer directory was (the manifest's ``mounts``:
``overlay2/<id>/diff``, ``overlay/<id>/diff``, ``snapshots/<n>/fs``), so an engine reads the
bundle as it read the host.

The layer tars keep the layer directories raw (whiteout devices, ``trusted.overlay.*`` xattrs,
nanosecond times), and :class:`~pensieve.evidence.tar.TarEvidence` gives them back through the
Evidence interface, so the storage driver's rules apply to them unchanged.  The whole bundle
directory is the evidence boundary: no output goes into it.
"""

from __future__ import annotations

import json
import os
import posixpath

from pensieve.evidence.base import EvidenceError
from pensieve.evidence.directory import DirectoryEvidence
from pensieve.evidence.mount import MountEvidence
from pensieve.evidence.tar import TarEvidence

__all__ = ["BundleEvidence", "is_bundle", "open_bundle"]

#: the largest layer index read (one small record per member)
MAX_INDEX = 1 << 30


def is_bundle(path: str) -> bool:
    """Whether the directory PATH is a collect bundle (a manifest.json marked as one)."""
    from pensieve.collect.bundle import is_bundle as marked

    return marked(path)


class BundleEvidence(MountEvidence):
    """The bundle directory PATH: ``root/`` at ``/``, each layer tar at its mount point."""

    def __init__(self, path: str) -> None:
        from pensieve.collect.bundle import read_manifest

        self.path = os.path.realpath(path)
        try:
            doc, _ = read_manifest(self.path)
        except ValueError as exc:
            raise EvidenceError(str(exc)) from None
        tree = str(doc.get("tree") or "root")
        base = DirectoryEvidence(self._inside(tree))
        super().__init__(base, f"pensieve bundle {self.path}")
        self.manifest = doc
        self._recorded: set[str] | None = None
        mounts = doc.get("mounts") or {}
        for prefix, tar in sorted(mounts.items() if isinstance(mounts, dict) else []):
            tar_path = self._inside(str(tar))
            self.mount(str(prefix), lambda p=tar_path: _layer_tar(p))

    def _inside(self, rel: str) -> str:
        full = os.path.realpath(os.path.join(self.path, rel))
        if not full.startswith(self.path + "/"):
            raise EvidenceError(f"bundle manifest names a path outside the bundle: {rel}")
        return full

    def boundaries(self) -> list[str]:
        return [self.path, *(b for b in super().boundaries() if not b.startswith(self.path + "/"))]

    def host_path(self, path: str) -> str | None:
        return None

    def not_collected(self, path: str) -> bool:
        """A missing PATH that the bundle never meant to hold: not one of its layer mounts (nor
        inside or above one), and not the source of a problem the collection recorded (what was
        missing on the host at collection time is still reported when the bundle is read)."""
        path = posixpath.normpath(path)
        mounts = self.manifest.get("mounts") or {}
        for mount in mounts if isinstance(mounts, dict) else []:
            mount = posixpath.normpath(str(mount))
            if path == mount or path.startswith(mount + "/") or mount.startswith(path + "/"):
                return False
        if self._recorded is None:
            listed = self.manifest.get("problems")
            sources = [
                posixpath.normpath(str(p.get("source")))
                for p in (listed if isinstance(listed, list) else [])
                if isinstance(p, dict) and p.get("source")
            ]
            # a collection problem names a path, a layer id or a digest: each is looked for
            tokens = {posixpath.basename(s).split(":")[-1] for s in sources}
            self._recorded = set(sources) | {t for t in tokens if len(t) >= 12}
        return path not in self._recorded and not any(t in path for t in self._recorded)

    def tar_of(self, mount: str) -> str | None:
        """The bundle path of the layer tar mounted at MOUNT."""
        return (self.manifest.get("mounts") or {}).get(posixpath.normpath(mount))


def _layer_tar(path: str) -> TarEvidence:
    """The layer tar PATH, its directories given the sizes their filesystem reported (a tar
    header says 0; ``layers/<id>.index.json`` beside it keeps what lstat said)."""
    ev = TarEvidence(path)
    index_path = path[: -len(".tar")] + ".index.json" if path.endswith(".tar") else ""
    try:
        with open(index_path, "rb") as fh:
            index = json.loads(fh.read(MAX_INDEX))
    except (OSError, ValueError):
        return ev  # no index: directories keep size 0
    sizes = (
        {
            _key(str(e.get("path", ""))): e.get("size")
            for e in index
            if isinstance(e, dict) and e.get("type") == "5" and isinstance(e.get("size"), int)
        }
        if isinstance(index, list)
        else {}
    )
    try:
        members = [ev.entry("/"), *ev.entries()]  # the layer directory itself, then its contents
    except EvidenceError:
        members = list(ev.entries())
    for m in members:
        size = sizes.get(_key(m.name))
        if size is not None and m.kind == "dir":
            m.size = size
    return ev


def _key(name: str) -> str:
    name = name[2:] if name.startswith("./") else name
    return name.strip("/")


def open_bundle(path: str) -> BundleEvidence:
    """The bundle directory PATH as evidence (EvidenceError when its manifest is unusable)."""
    return BundleEvidence(path)
