"""Image archives as evidence: ``docker save`` tars, OCI image layouts, ``docker export`` tars.

``open_archive(path)`` gives an ``ArchiveHost``: the image side of ``DockerHost`` (``images()``,
``image(ref)``, ``image_layers(image)``; no containers, volumes or data roots), so ``images``,
``history``, ``fs`` and ``verify`` read an archive the way they read a host.

Layouts (moby image/tarexport, OCI image-spec image-layout.md and manifest.md):

* ``docker save``: ``manifest.json`` (``[{Config, RepoTags, Layers, Parent}]``); Docker < 25
  writes ``<config-hex>.json`` and ``<v1-id>/layer.tar`` (a layer shared by two images may be a
  symlink to another ``layer.tar``), plus ``<v1-id>/json`` and ``repositories``; Docker >= 25
  writes the same ``manifest.json`` over an OCI layout (``oci-layout``, ``index.json``,
  ``blobs/sha256/<hex>``).  Layer tars are uncompressed.
* OCI image layout (a directory, or a tar of one: ``skopeo``'s ``oci-archive``, ``buildah``,
  ``docker buildx --output type=oci``): ``index.json`` -> (nested indexes) -> manifests -> config
  and layers, each a content-addressed blob; layers ``tar``, ``tar+gzip`` or ``tar+zstd``.
  Tags come from ``io.containerd.image.name`` or ``org.opencontainers.image.ref.name``.
* ``docker export`` (or any root filesystem tar): one flat tree; an image of one layer, no
  history, no tags, whose id is the sha256 of the (uncompressed) tar, the diff id ``docker
  import`` would give it.  ``-`` names the only image of an archive.

Each layer is a ``TarEvidence`` mounted at ``/.layers/<blob path>`` of ``host.evidence``; the
archive itself is at ``/``.  Layer tars use the aufs whiteouts (``.wh.<name>``,
``.wh..wh..opq``): their ``Layer.driver`` is ``oci-layer``, which ``LayeredView`` reads that way.
Nothing is trusted: blob digests are what ``pensieve verify`` checks (analysis/archive_verify.py).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from functools import cached_property
from typing import BinaryIO

from pensieve.engines.base import Host
from pensieve.engines.docker.images import _history, resolve_image, runtime_config
from pensieve.engines.docker.root import chain_ids
from pensieve.errors import LookupFailed
from pensieve.evidence import DirectoryEvidence, Evidence, EvidenceError
from pensieve.evidence.mount import MountEvidence
from pensieve.evidence.tar import TarEvidence
from pensieve.formats import untrusted_json
from pensieve.formats.untrusted_json import Doc
from pensieve.records import Container, HistoryStep, Image, Layer, Problem
from pensieve.records.images import ArchiveImage, Blob

__all__ = ["ArchiveHost", "ArchiveImage", "Blob", "NotAnArchive", "blob_path", "open_archive"]

LAYERS = "/.layers"
#: Layer.driver of a layer tar (aufs whiteouts) and of a flat root filesystem tar
OCI_LAYER = "oci-layer"
ROOTFS_TAR = "rootfs-tar"

DOCKER_SAVE, OCI_LAYOUT, DOCKER_EXPORT, ROOTFS = "docker-save", "oci-layout", "docker-export", "rootfs-tar"

_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]{64,128})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_JSON = 64 << 20
#: deepest nesting accepted in archive JSON (manifests, indexes, configs nest a few levels)
_MAX_JSON_DEPTH = 512
_MAX_DEPTH = 8


class NotAnArchive(EvidenceError):
    """The source is not an image archive pensieve knows."""


def blob_path(digest: str | None) -> str | None:
    """``blobs/<alg>/<hex>`` of a digest, None if it is not a well-formed one (no path tricks)."""
    m = _DIGEST.match(digest) if isinstance(digest, str) else None
    return f"/blobs/{m.group(1)}/{m.group(2)}" if m else None


def _sha256(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class ArchiveHost(Host):
    """An image archive read like a host: images, their layers, their merged filesystems; no
    containers, volumes or checkpoints.  Its boundary is the archive file or directory."""

    engine = "archive"

    def __init__(self, archive: Evidence, source: str) -> None:
        self.source = os.path.realpath(source)
        self.archive = archive
        self.roots: list = []
        self.problems: list[Problem] = list(archive.problems)
        self.kind = self._detect()
        self.evidence = MountEvidence(archive, f"{self.kind} {self.source}")

    def boundaries(self) -> list[str]:
        """The archive file or directory (the sink refuses it, and the directory of a file)."""
        return [self.source]

    # ---- layout detection -------------------------------------------------------------------
    def _detect(self) -> str:
        ev = self.archive
        if ev.is_file("/manifest.json"):
            return DOCKER_SAVE
        if ev.is_file("/index.json") and ev.exists("/oci-layout"):
            return OCI_LAYOUT
        if isinstance(ev, TarEvidence):
            names = set(ev.listdir("/"))
            saved = any(_HEX64.match(n) and ev.is_file(f"/{n}/layer.tar") for n in names)
            if saved or "repositories" in names or ev.is_dir("/blobs/sha256"):
                why = "; ".join(p.message for p in ev.problems[-1:]) or "the file lists none"
                raise NotAnArchive(
                    f"{self.source}: image layers without their manifest.json / index.json "
                    f"(a truncated or partial image archive: {why})"
                )
            return DOCKER_EXPORT if ev.exists("/.dockerenv") else ROOTFS
        raise NotAnArchive(
            f"{self.source}: neither a Docker data root nor an image archive "
            "(no manifest.json, no oci-layout + index.json)"
        )

    @property
    def layout(self) -> str:
        if self.kind == DOCKER_SAVE and self.archive.exists("/oci-layout"):
            return "docker-save (OCI layout)"
        return self.kind

    # ---- reading the archive ----------------------------------------------------------------
    def _problem(self, path: str, message: str, subject: str | None = None) -> None:
        self.problems.append(Problem(f"{self.source}:{path}", message, subject))

    def _once(self, path: str, message: str, subject: str | None = None) -> None:
        """A problem recorded once, however often the same layer is asked for."""
        p = Problem(f"{self.source}:{path}", message, subject)
        if p not in self.problems:
            self.problems.append(p)

    def _read(self, path: str) -> bytes:
        return self.archive.read_bytes(path, _MAX_JSON)

    def _json(self, path: str):
        raw = self._read(path)
        try:
            return untrusted_json.parse(raw, path, max_depth=_MAX_JSON_DEPTH), raw
        except ValueError as exc:
            raise EvidenceError(f"{path}: not JSON ({exc})") from exc

    def _doc(self, value: dict, path: str, prefix: str = "", subject: str | None = None) -> Doc:
        """VALUE (an object of the archive member PATH) read field by field: a field of the
        wrong type is a problem in ``host.problems`` naming the member and the field."""
        return Doc(value, f"{self.source}:{path}", self.problems, prefix, subject)

    def _resolve(self, name: str) -> str | None:
        """Evidence path of a member named by a manifest (symlinks followed inside the archive)."""
        path = posixpath.normpath("/" + name.lstrip("/"))
        if isinstance(self.archive, TarEvidence):
            try:
                path = self.archive.realpath(path)
            except EvidenceError:
                return None
        elif self.archive.exists(path) and self.archive.lstat(path).is_symlink:
            target = self.archive.readlink(path)
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        return path if self.archive.is_file(path) else None

    # ---- images -------------------------------------------------------------------------------
    @cached_property
    def entries(self) -> list[ArchiveImage]:
        try:
            if self.kind == DOCKER_SAVE:
                out = self._docker_save()
            elif self.kind == OCI_LAYOUT:
                out = self._oci_layout()
            else:
                out = self._rootfs()
        except EvidenceError as exc:
            self._problem("/", f"unreadable archive index: {exc}")
            out = []
        merged: dict[str, ArchiveImage] = {}
        for e in out:  # the same image named twice (two tags, two manifests): one record
            seen = merged.get(e.image.id)
            if seen is None:
                merged[e.image.id] = e
            else:
                seen.image.tags = sorted(set(seen.image.tags) | set(e.image.tags))
                seen.image.digests = sorted(set(seen.image.digests) | set(e.image.digests))
        return list(merged.values())

    def images(self) -> list[Image]:
        for e in self.entries:
            self._fill_sizes(e)
        return [e.image for e in self.entries]

    def image(self, ref: str) -> Image:
        imgs = [e.image for e in self.entries]
        img = imgs[0] if ref == "-" and len(imgs) == 1 else resolve_image(imgs, ref)
        if img is None:
            raise LookupFailed(f"no image {ref!r} in {self.evidence.description}")
        self._fill_sizes(self.entry_of(img))
        return img

    def entry_of(self, image: Image) -> ArchiveImage:
        for e in self.entries:
            if e.image is image or e.image.id == image.id:
                return e
        raise LookupFailed(f"no image {image.id} in {self.evidence.description}")

    def _image(self, raw: bytes, image_id: str, config_path: str, engine: str) -> Image:
        """The Image of a config blob (OCI image-spec config.md); ValueError if it is not an object."""
        config = untrusted_json.parse(raw, config_path, max_depth=_MAX_JSON_DEPTH)
        if not isinstance(config, dict):
            raise ValueError("image config is not a JSON object")
        doc = self._doc(config, config_path, subject=image_id)
        # the runtime config; a build step's (container_config) when it is absent or empty
        cfg = doc.obj("config") if config.get("config") not in (None, {}) else doc.obj("container_config")
        diff_ids = doc.obj("rootfs").list_of_str("diff_ids") or []
        chains = chain_ids(diff_ids)
        return Image(
            id=image_id,
            engine=engine,
            created=doc.str("created"),  # as written (RFC 3339 text)
            os=doc.str("os"),
            architecture=doc.str("architecture"),
            author=doc.str("author"),
            **runtime_config(cfg),
            diff_ids=diff_ids,
            chain_ids=chains,
            cache_ids=[],
            history=_history(doc, diff_ids, chains, {}),
            config_path=config_path,
            data_root=self.source,
        )

    def _config(self, name: str, declared: str | None, engine: str) -> ArchiveImage | None:
        path = self._resolve(name)
        if path is None:
            self._problem(name, "image config missing from the archive", declared)
            return None
        try:
            raw = self._read(path)
            computed = _sha256(raw)
            image = self._image(raw, declared or computed, path, engine)
        except (EvidenceError, OSError, ValueError) as exc:
            self._problem(path, f"unreadable image config: {exc}", declared)
            return None
        e = ArchiveImage(image, config_path=path, declared_id=declared, computed_id=computed)
        if declared and declared != computed:
            detail = f"config {path} hashes to {computed}, the archive names it {declared}"
            e.problems.append(("config-digest", detail))
            self._problem(path, detail, declared)
        return e

    def _attach_blobs(self, e: ArchiveImage, blobs: list[Blob]) -> None:
        img = e.image
        if len(blobs) != len(img.diff_ids):
            detail = f"{len(blobs)} layers in the manifest, {len(img.diff_ids)} diff ids in the config"
            e.problems.append(("layer-diff-id", detail))
            self._problem(e.config_path or "/", detail, img.id)
        for i, b in enumerate(blobs):
            b.diff_id = img.diff_ids[i] if i < len(img.diff_ids) else None
            b.chain_id = img.chain_ids[i] if i < len(img.chain_ids) else None
            if b.path is None:
                e.problems.append(("missing-layer", f"layer {i} ({b.name}): {b.problem}"))
                self._problem(b.name or "/", f"layer blob unavailable: {b.problem}", img.id)
        e.blobs = blobs
        img.cache_ids = [self._blob_id(b) for b in blobs]
        steps = [s for s in img.history if not s.empty_layer]
        for s, b in zip(steps, blobs, strict=False):
            s.cache_id = self._blob_id(b)

    @staticmethod
    def _blob_id(b: Blob) -> str | None:
        """The name a layer goes by in this archive (provenance column of `fs`)."""
        name = b.path or b.name
        if not name:
            return None
        m = re.match(r"^/?blobs/(sha256|sha512)/([0-9a-f]+)$", name)
        if m:
            return f"{m.group(1)}:{m.group(2)}"
        parent = posixpath.basename(posixpath.dirname(name))
        return parent if _HEX64.match(parent) else name.lstrip("/")

    def _docker_save(self) -> list[ArchiveImage]:
        manifest, _ = self._json("/manifest.json")
        if not isinstance(manifest, list):
            raise EvidenceError("manifest.json is not a list")
        out = []
        for i, item in enumerate(manifest):
            # (an entry of another type is a problem naming it: "field [1]: expected an object")
            entry = self._doc({f"[{i}]": item}, "/manifest.json").obj(f"[{i}]")
            cname = entry.str("Config")
            if not cname:
                self._problem("/manifest.json", f"entry {i} has no Config")
                continue
            base = posixpath.basename(cname).removesuffix(".json")
            declared = "sha256:" + base if _HEX64.match(base) else None
            e = self._config(cname, declared, "docker-save")
            if e is None:
                continue
            entry.subject = e.image.id
            e.image.tags = sorted(entry.list_of_str("RepoTags") or [])
            e.image.parent = entry.str("Parent") or None
            blobs = []
            for name in entry.list_of_str("Layers") or []:
                path = self._resolve(name)
                m = re.match(r"^/?blobs/(sha256)/([0-9a-f]{64})$", name)
                b = Blob(path, name=name, digest=f"sha256:{m.group(2)}" if m else None)
                if path is None:
                    b.problem = "not in the archive"
                blobs.append(b)
            self._attach_blobs(e, blobs)
            out.append(e)
        return out

    def _oci_layout(self) -> list[ArchiveImage]:
        index, _ = self._json("/index.json")
        try:
            raw = self._read("/oci-layout")
            value = untrusted_json.load(raw, "/oci-layout", max_depth=_MAX_JSON_DEPTH).value
            version = self._doc(value, "/oci-layout").str("imageLayoutVersion")
            if version != "1.0.0" and (version is not None or value.get("imageLayoutVersion") is None):
                self._problem("/oci-layout", f"image layout version {version!r}")
        except (EvidenceError, ValueError) as exc:
            self._problem("/oci-layout", f"unreadable oci-layout file: {exc}")
        out: list[ArchiveImage] = []
        self._walk_index(index, "/index.json", None, out, 0)
        return out

    def _walk_index(self, index, where: str, name: str | None, out: list[ArchiveImage], depth: int) -> None:
        if depth > _MAX_DEPTH or not isinstance(index, dict):
            self._problem(where, "index nested too deep or not an object")
            return
        for d in self._doc(index, where).list_of_obj("manifests"):
            ann = d.obj("annotations")
            ref = ann.str("io.containerd.image.name") or ann.str("org.opencontainers.image.ref.name") or name
            digest = d.str("digest") or ""
            path = blob_path(digest)
            mt = d.str("mediaType")
            if path is None or not self.archive.is_file(path):
                self._problem(where, f"descriptor {digest or '?'} ({mt}): blob not in the archive")
                continue
            try:
                doc, raw = self._json(path)
            except EvidenceError as exc:
                self._problem(path, f"unreadable: {exc}")
                continue
            problems = []
            if _sha256(raw) != digest and digest.startswith("sha256:"):
                detail = f"{path} hashes to {_sha256(raw)}, its descriptor says {digest}"
                problems.append(("manifest-digest", detail))
                self._problem(path, detail)
            if mt in _INDEX_TYPES or (mt is None and isinstance(doc, dict) and "manifests" in doc):
                self._walk_index(doc, path, ref, out, depth + 1)
            elif mt in _MANIFEST_TYPES or (mt is None and isinstance(doc, dict) and "config" in doc):
                e = self._oci_manifest(doc, path, digest, ref)
                if e is not None:
                    e.problems += problems
                    out.append(e)
            # other media types (attestations, signatures, artifacts) are not images

    def _oci_manifest(self, value, where: str, digest: str, ref: str | None) -> ArchiveImage | None:
        """The image of an OCI image manifest (image-spec manifest.md): its config and layers."""
        doc = self._doc(value if isinstance(value, dict) else {}, where)
        config_digest = doc.obj("config").str("digest")
        config_blob = blob_path(config_digest)
        if config_blob is None or config_digest is None:
            self._problem(where, "manifest without a config descriptor")
            return None
        e = self._config(config_blob, config_digest, "oci")
        if e is None:
            return None
        doc.subject = e.image.id
        e.manifest_digest = digest
        if ref:
            e.image.tags = [ref]
            repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
            e.image.digests = [f"{repo}@{digest}"] if ("/" in ref or ":" in ref) else [digest]
        else:
            e.image.digests = [digest]
        blobs = []
        for layer in doc.list_of_obj("layers"):
            ldigest = layer.str("digest") or ""
            path = blob_path(ldigest)
            b = Blob(
                path if path and self.archive.is_file(path) else None,
                name=path or ldigest,
                digest=ldigest if path else None,
                size=layer.int("size"),
                media_type=layer.str("mediaType"),
            )
            if b.path is None:
                foreign = "nondistributable" in (b.media_type or "") or "foreign" in (b.media_type or "")
                b.problem = "foreign layer, not shipped in the archive" if foreign else "not in the archive"
            blobs.append(b)
        self._attach_blobs(e, blobs)
        return e

    @cached_property
    def _rootfs_digest(self) -> str:
        ev = self.archive
        assert isinstance(ev, TarEvidence)  # a flat root filesystem is only ever a tar
        if ev.stream_sha256:
            return ev.stream_sha256
        h = hashlib.sha256()
        pos = 0
        while block := ev.source.pread(1 << 20, pos):
            h.update(block)
            pos += len(block)
        return "sha256:" + h.hexdigest()

    def _rootfs(self) -> list[ArchiveImage]:
        digest = self._rootfs_digest
        comment = (
            "docker export: a container's flattened filesystem, no build history"
            if self.kind == DOCKER_EXPORT
            else "a root filesystem tar: one layer, no build history"
        )
        step = HistoryStep(
            None, None, False, comment=comment, diff_id=digest, chain_id=digest, cache_id="rootfs"
        )
        img = Image(
            id=digest,
            engine=self.kind,
            diff_ids=[digest],
            chain_ids=[digest],
            cache_ids=["rootfs"],
            history=[step],
            data_root=self.source,
        )
        e = ArchiveImage(img, [Blob("/", name="/", diff_id=digest, chain_id=digest)])
        return [e]

    # ---- layers -------------------------------------------------------------------------------
    def layer_evidence(self, blob: Blob) -> Evidence:
        """The layer's files (opening, and for a compressed blob spooling, it on first use)."""
        if blob.path is None:
            raise EvidenceError(f"layer {blob.name}: {blob.problem}")
        if self.kind in (DOCKER_EXPORT, ROOTFS):
            return self.archive
        prefix = LAYERS + blob.path
        if not self.evidence.is_mount(prefix):
            path = blob.path
            name = f"{self.source}:{path.lstrip('/')}"

            def factory() -> Evidence:
                return TarEvidence(self.open_blob(path), name=name)

            self.evidence.mount(prefix, factory)
        return self.evidence.mounted(prefix)

    def open_blob(self, path: str) -> BinaryIO:
        """The bytes of the archive member at PATH as stored (a layer blob, compressed or not):
        unbuffered and nestable for a tar archive, a read-only file for a layout directory."""
        if isinstance(self.archive, TarEvidence):
            return self.archive.open_raw(path)
        return self.archive.open(path)

    def open_flat(self) -> BinaryIO:
        """The whole archive file as stored: the one layer of a docker export / rootfs tar."""
        assert isinstance(self.archive, TarEvidence)
        return self.archive.open_stored()

    def _layer_path(self, blob: Blob) -> str:
        return "/" if self.kind in (DOCKER_EXPORT, ROOTFS) else LAYERS + (blob.path or "")

    def image_layers(self, image: Image, driver: str | None = None) -> list[Layer]:
        """The image's layers bottom to top; a layer whose blob is absent or unreadable has path
        None (the view shows the others) and a problem in ``host.problems``."""
        e = self.entry_of(image)
        steps = [s for s in image.history if not s.empty_layer]
        out = []
        flat = self.kind in (DOCKER_EXPORT, ROOTFS)
        for i, b in enumerate(e.blobs):
            step = steps[i] if i < len(steps) else None
            layer = Layer(
                role="image",
                cache_id=self._blob_id(b) if not flat else "rootfs",
                path=None,
                diff_id=b.diff_id,
                chain_id=b.chain_id,
                size=step.size if step else None,
                driver=ROOTFS_TAR if flat else OCI_LAYER,
                created_by=step.created_by if step else None,
                history_index=image.history.index(step) if step else None,
            )
            try:
                self.layer_evidence(b)
                layer.path = self._layer_path(b)
            except (EvidenceError, OSError) as exc:
                self._once(b.name or "/", f"layer {i} unreadable: {exc}", image.id)
            mounted = self._mounted_or_none(b)
            for p in mounted.problems if mounted is not None else []:
                if p not in self.problems:
                    self.problems.append(p)
            out.append(layer)
        return out

    def _mounted_or_none(self, b: Blob) -> Evidence | None:
        try:
            return self.layer_evidence(b) if b.path is not None else None
        except (EvidenceError, OSError):
            return None

    def _fill_sizes(self, e: ArchiveImage) -> None:
        """Layer sizes as Docker counts them (file bytes once per inode, symlink lengths); a layer
        that cannot be opened (corrupt, too large to spool) is a problem and has no size."""
        if e.image.size is not None:
            return
        total = 0
        sizes: list[int | None] = []
        for i, b in enumerate(e.blobs):
            ev = None
            if b.path is not None:
                try:
                    ev = self.layer_evidence(b)
                except (EvidenceError, OSError) as exc:
                    self._once(b.name or "/", f"layer {i} unreadable: {exc}", e.image.id)
            size = ev.content_size() if isinstance(ev, TarEvidence) else None
            sizes.append(size)
            total += size or 0
        steps = [s for s in e.image.history if not s.empty_layer]
        for s, size in zip(steps, sizes, strict=False):
            s.size = size
        e.image.size = total if any(s is not None for s in sizes) else None

    # ---- what a host has and an archive does not -----------------------------------------------
    def containers(self) -> list[Container]:
        return []

    def container(self, ref: str) -> Container:
        raise LookupFailed(f"no container {ref!r}: {self.source} is an image archive ({self.kind})")


def open_archive(source: str) -> ArchiveHost:
    """An image archive: a tar file (plain or compressed) or an OCI layout / docker-save directory."""
    if os.path.isdir(source):
        return ArchiveHost(DirectoryEvidence(source), source)
    if not os.path.exists(source):
        raise EvidenceError(f"source does not exist: {source}")
    return ArchiveHost(TarEvidence(source), source)
