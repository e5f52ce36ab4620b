"""containerd images: a name's target in the content store resolved to its config, its layers
matched to the namespace's snapshots (OCI image-spec image-index.md, manifest.md, config.md;
containerd images/image.go, snapshots are keyed by chain id: rootfs/apply.go).

An image name points at a descriptor (``target``): an index (or Docker manifest list) naming one
manifest per platform, or a manifest.  The index is resolved to the first manifest whose blob is
in the store (platform ``unknown/unknown`` entries are buildkit attestations, not images); the
manifest names the config, whose ``rootfs.diff_ids`` give the chain ids under which containerd
commits the unpacked layers as snapshots.  Every blob is read through the bounded JSON loader
and checked against its digest; what is wrong is a problem naming the blob.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from pensieve.engines.containerd.metadata import CONTENT_DIR
from pensieve.engines.docker.images import _history, runtime_config
from pensieve.engines.docker.root import LayerInfo, chain_ids
from pensieve.evidence.base import Evidence, EvidenceError, join
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records.containerd import ContainerdImage, Snapshot
from pensieve.records.core import Problem
from pensieve.records.host import Image

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
#: the largest manifest, index or config read (real ones are a few KiB)
MAX_BLOB_JSON = 4 << 20
#: an index naming an index naming ...: deeper than this is refused
MAX_INDEX_DEPTH = 4


class ContentStore:
    """The blobs of one containerd root (``io.containerd.content.v1.content/blobs/<alg>/<hex>``)."""

    def __init__(self, evidence: Evidence, root: str, problems: list[Problem]) -> None:
        self.evidence = evidence
        self.base = join(root, CONTENT_DIR, "blobs")
        self.problems = problems

    def path(self, digest: str) -> str | None:
        """The evidence path of the blob DIGEST when it is there (None: absent or not a digest)."""
        alg, _, hexpart = digest.partition(":")
        if alg != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
            return None
        path = join(self.base, alg, hexpart)
        return path if self.evidence.is_file(path) else None

    def json(self, digest: str, subject: str) -> tuple[Doc, str] | None:
        """(document, path) of the JSON blob DIGEST, checked against its digest; None + a
        problem when it is absent, unreadable, too large or not a JSON object."""
        path = self.path(digest)
        if path is None:
            alg, _, hexpart = digest.partition(":")
            if not self.evidence.not_collected(join(self.base, alg, hexpart)):
                self.problems.append(Problem(self.base, f"content blob {digest} not in the store", subject))
            return None
        try:
            raw = self.evidence.read_bytes(path, MAX_BLOB_JSON + 1)
            doc = load(raw, path, self.problems, subject=subject, max_bytes=MAX_BLOB_JSON)
        except (EvidenceError, OSError, UntrustedJSONError) as exc:
            self.problems.append(Problem(path, f"unreadable content blob: {exc}", subject))
            return None
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if actual != digest:
            self.problems.append(Problem(path, f"blob digest {actual} does not match its name", subject))
        return doc, path


def _platform_ok(entry: Doc) -> bool:
    platform = entry.obj("platform")
    return (platform.str("os"), platform.str("architecture")) != ("unknown", "unknown")


def resolve_manifest(store: ContentStore, digest: str, subject: str) -> Doc | None:
    """The image manifest DIGEST stands for: itself, or the first platform manifest of an index
    present in the store."""
    for _depth in range(MAX_INDEX_DEPTH):
        got = store.json(digest, subject)
        if got is None:
            return None
        doc, path = got
        if doc.str("mediaType") not in INDEX_TYPES and "manifests" not in doc:
            return doc
        entries = [m for m in doc.list_of_obj("manifests") if _platform_ok(m) and m.str("digest")]
        present = [m for m in entries if store.path(m.str("digest") or "") is not None]
        if not present:
            store.problems.append(Problem(path, "index names no manifest present in the store", subject))
            return None
        digest = present[0].str("digest") or ""
    store.problems.append(Problem(store.base, f"indexes nested deeper than {MAX_INDEX_DEPTH}", subject))
    return None


def image_config(store: ContentStore, target: str, subject: str) -> tuple[str, Doc, str] | None:
    """(config digest, config, its path) of the image whose target is TARGET."""
    manifest = resolve_manifest(store, target, subject)
    if manifest is None:
        return None
    config_digest = manifest.obj("config").str("digest")
    if not config_digest:
        store.problems.append(Problem(store.base, f"manifest of {target} names no config", subject))
        return None
    got = store.json(config_digest, subject)
    return (config_digest, *got) if got is not None else None


def pick_snapshot(candidates: list[Snapshot], preferred: tuple[str, ...]) -> Snapshot | None:
    """The snapshot of the first preferred snapshotter among CANDIDATES (else the first)."""
    for name in preferred:
        for snap in candidates:
            if snap.snapshotter == name:
                return snap
    return candidates[0] if candidates else None


def build_images(
    store: ContentStore,
    named: list[ContainerdImage],
    snapshots: dict[str, list[Snapshot]],
    root: str,
    preferred: tuple[str, ...],
) -> list[Image]:
    """One Image per config digest of a namespace, every name pointing at it as a tag.

    SNAPSHOTS: key -> the namespace's snapshots of that key (one per snapshotter)."""
    by_config: dict[str, Image] = {}
    names: dict[str, list[ContainerdImage]] = defaultdict(list)
    for item in named:
        if not item.target_digest:
            store.problems.append(Problem(item.source or root, f"image {item.name} has no target", item.name))
            continue
        got = image_config(store, item.target_digest, item.name)
        if got is None:
            continue
        config_digest, config, path = got
        names[config_digest].append(item)
        if config_digest not in by_config:
            by_config[config_digest] = _image(config_digest, config, path, snapshots, root, preferred)
            by_config[config_digest].namespace = item.namespace
    for config_digest, image in by_config.items():
        items = names[config_digest]
        image.tags = sorted(i.name for i in items)
        image.digests = sorted({f"{i.name.split('@')[0].rsplit(':', 1)[0]}@{i.target_digest}" for i in items})
    return list(by_config.values())


def _image(
    image_id: str,
    config: Doc,
    path: str,
    snapshots: dict[str, list[Snapshot]],
    root: str,
    preferred: tuple[str, ...],
) -> Image:
    diff_ids = config.obj("rootfs").list_of_str("diff_ids") or []
    chains = chain_ids(diff_ids)
    layerdb: dict[str, LayerInfo] = {}
    for chain in chains:
        snap = pick_snapshot(snapshots.get(chain, []), preferred)
        if snap is not None:
            layerdb[chain] = LayerInfo(chain_id=chain, cache_id=snap.id, parent=snap.parent, size=snap.size)
    sizes = [layerdb[c].size for c in chains if c in layerdb]
    return Image(
        id=image_id,
        engine="containerd",
        created=config.time("created"),
        os=config.str("os"),
        architecture=config.str("architecture"),
        author=config.str("author"),
        **runtime_config(config.obj("config")),
        diff_ids=diff_ids,
        chain_ids=chains,
        cache_ids=[layerdb[c].cache_id if c in layerdb else None for c in chains],
        size=sum(sizes) if sizes and None not in sizes else None,
        history=_history(config, diff_ids, chains, layerdb),
        config_path=path,
        data_root=root,
    )
