"""containers/storage, the store Podman, Buildah and CRI-O share (github.com/containers/storage:
layers.go, images.go, containers.go, and drivers/overlay).

A graphroot (``/var/lib/containers/storage``, rootless ``~/.local/share/containers/storage``)
holds, for the ``overlay`` driver:

* ``overlay-layers/layers.json`` -- a JSON list of layers: ``id``, ``names``, ``parent``,
  ``created``, ``compressed-diff-digest`` / ``compressed-size``, ``diff-digest`` /
  ``diff-size`` (the uncompressed digest: the image config's diff id), ``mountlabel``,
  ``flags``, ``uidset``/``gidset``; beside it ``<id>.tar-split.gz`` for image layers;
* ``overlay-images/images.json`` -- a JSON list of images: ``id`` (the config digest, bare hex),
  ``digest``/``digests`` (manifest digests), ``names`` (tags), ``names-history``, ``layer`` (the
  top layer), ``metadata`` (a JSON string), ``big-data-names``/``-sizes``/``-digests``,
  ``created``; each image's big data (manifest, config ``sha256:<id>``, signatures) are files in
  ``overlay-images/<id>/`` named by :func:`big_data_file`;
* ``overlay-containers/containers.json`` -- a JSON list of containers: ``id``, ``names``,
  ``image``, ``layer`` (the container's own RW layer), ``metadata`` (a JSON string libpod fills
  with ``image-name``, ``name``, ``created-at``), ``created``, ``flags``;
* ``overlay/<layer-id>/{diff,link,lower}`` and ``overlay/l/<short>`` -- Docker overlay2's layout.

Every list is read through the untrusted JSON loader: an item of the wrong type is a problem
naming the file and the item, never the end of the listing.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Iterator

from pensieve.evidence import Evidence, EvidenceError
from pensieve.evidence.base import NotFound
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load, parse
from pensieve.records import Problem
from pensieve.records.core import field, record

#: the largest store file read (a host with thousands of containers stays far below it)
MAX_STORE_BYTES = 256 << 20
#: the largest big-data item read (manifests and configs are KiB)
MAX_BIG_DATA = 64 << 20


@record
class StorageLayer:
    """One entry of layers.json."""

    id: str
    parent: str | None = None
    names: list[str] = field(default_factory=list)
    created: int | None = None
    compressed_digest: str | None = None
    compressed_size: int | None = None
    diff_digest: str | None = None
    diff_size: int | None = None
    mount_label: str | None = None
    tar_split: str | None = None  # evidence path of <id>.tar-split.gz, when present
    #: ``uidmap``/``gidmap``: (container id, host id, size) ranges the contents' owners were shifted
    #: by (a container's own layers, and the copies c/storage makes of an image for one mapping)
    uid_map: list[tuple[int, int, int]] = field(default_factory=list)
    gid_map: list[tuple[int, int, int]] = field(default_factory=list)


@record
class StorageImage:
    """One entry of images.json."""

    id: str
    top_layer: str | None = None
    names: list[str] = field(default_factory=list)
    digest: str | None = None
    digests: list[str] = field(default_factory=list)
    created: int | None = None
    metadata: dict[str, object] = field(default_factory=dict)
    big_data_names: list[str] = field(default_factory=list)
    big_data_digests: dict[str, str] = field(default_factory=dict)
    big_data_sizes: dict[str, int] = field(default_factory=dict)
    #: ``mapped-layers``: copies of the top layer made for another id mapping (a container's own)
    mapped_layers: list[str] = field(default_factory=list)


@record
class StorageContainer:
    """One entry of containers.json."""

    id: str
    layer: str | None = None
    image: str | None = None
    names: list[str] = field(default_factory=list)
    created: int | None = None
    metadata: dict[str, object] = field(default_factory=dict)
    mount_label: str | None = None
    process_label: str | None = None
    #: the container's own id mapping (``podman run --uidmap``, ``--userns=auto``), as layers'
    uid_map: list[tuple[int, int, int]] = field(default_factory=list)
    gid_map: list[tuple[int, int, int]] = field(default_factory=list)


def big_data_file(key: str) -> str:
    """The file name containers/storage gives a big-data KEY (images.go makeBigDataBaseName): the
    key itself when it is only ``[0-9a-z.]``, otherwise ``=`` + its standard base64."""
    if key and all(c == "." or "0" <= c <= "9" or "a" <= c <= "z" for c in key):
        return key
    return "=" + base64.b64encode(key.encode("utf-8", "surrogateescape")).decode("ascii")


def read_list(ev: Evidence, path: str, problems: list[Problem]) -> list[Doc]:
    """The objects of a store file (a JSON list); [] and a problem when it is unreadable, corrupt
    or not a list; non-object items dropped with a problem each. A missing file is no problem
    (a store that never held an image has no images.json)."""
    try:
        raw = ev.read_bytes(path, MAX_STORE_BYTES + 1)
    except NotFound:
        return []
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(path, f"unreadable: {exc}"))
        return []
    if not raw.strip():
        return []
    try:
        value = parse(raw, path, max_bytes=MAX_STORE_BYTES)
    except UntrustedJSONError as exc:
        problems.append(Problem(path, f"corrupt: {exc}".replace(f"{path}: ", "")))
        return []
    if not isinstance(value, list):
        problems.append(Problem(path, f"expected a JSON list, found {type(value).__name__}"))
        return []
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            out.append(Doc(item, path, problems, f"[{i}]."))
        else:
            problems.append(Problem(path, f"[{i}]: expected an object, found {type(item).__name__}"))
    return out


def _id(doc: Doc, path: str, problems: list[Problem], index: int) -> str | None:
    ident = doc.str("id")
    if not ident or "/" in ident or ident in (".", ".."):
        problems.append(Problem(path, f"[{index}].id: missing or not a usable id ({ident!r}): item skipped"))
        return None
    doc.subject = ident
    return ident


def _entries(
    ev: Evidence, graphroot: str, store: str, problems: list[Problem]
) -> Iterator[tuple[str, Doc, str]]:
    """(id, entry, file) of every usable entry of the store file STORE (``overlay-layers/layers.json``
    ...) below GRAPHROOT; an entry without a usable id is a problem and is skipped."""
    path = posixpath.join(graphroot, store)
    for i, doc in enumerate(read_list(ev, path, problems)):
        ident = _id(doc, path, problems, i)
        if ident is not None:
            yield ident, doc, path


def _metadata(doc: Doc) -> dict[str, object]:
    """The ``metadata`` string of an entry, itself JSON (libpod's, or the image's signature sizes)."""
    text = doc.str("metadata")
    if not text:
        return {}
    try:
        meta = load(text, doc.source, doc.problems, subject=doc.subject, max_bytes=1 << 20)
    except UntrustedJSONError as exc:
        doc.problem("metadata", f"not a JSON object: {exc}".replace(f"{doc.source}: ", ""))
        return {}
    return {k: v for k, v in meta.value.items() if isinstance(v, (str, int, float, bool))}


#: the most ranges an id map may hold (user_namespaces(7): 340 lines of a uid_map since Linux 4.15)
MAX_ID_RANGES = 340
_MAX_ID = (1 << 32) - 1


def _id_map(doc: Doc, key: str) -> list[tuple[int, int, int]]:
    """An ``idtools.IDMap`` list (``container_id``, ``host_id``, ``size``: containers/storage
    pkg/idtools) as (container id, host id, size) triples; a range that is not three ids within
    32 bits is a problem and left out (a map with any such range is dropped whole: half a map
    would misstate owners)."""
    if len(doc.list(key) or []) > MAX_ID_RANGES:
        doc.problem(key, f"more than {MAX_ID_RANGES} id ranges: map ignored")
        return []
    out: list[tuple[int, int, int]] = []
    for i, r in enumerate(doc.list_of_obj(key)):
        ids = (r.int("container_id"), r.int("host_id"), r.int("size"))
        if not all(v is not None and 0 <= v <= _MAX_ID for v in ids) or not ids[2]:
            doc.problem(key, f"range {i} is not three ids within 32 bits: map ignored")
            return []
        out.append(ids)  # type: ignore[arg-type]
    return out


def _digest(doc: Doc, key: str) -> str | None:
    value = doc.str(key)
    return value or None


def read_layers(ev: Evidence, graphroot: str, problems: list[Problem], driver: str = "overlay") -> dict:
    """layer id -> StorageLayer, from ``<driver>-layers/layers.json``."""
    store = posixpath.join(graphroot, f"{driver}-layers")
    out: dict[str, StorageLayer] = {}
    try:  # one listing instead of a lookup per layer (a container's own layer has no tar-split)
        names: set[str] | None = set(ev.listdir(store))
    except (EvidenceError, OSError):
        names = None  # each asked on its own, as before
    for ident, doc, _path in _entries(ev, store, "layers.json", problems):
        tar_split = posixpath.join(store, f"{ident}.tar-split.gz")
        listed = names is None or f"{ident}.tar-split.gz" in names
        out[ident] = StorageLayer(
            id=ident,
            parent=doc.str("parent") or None,
            names=doc.list_of_str("names") or [],
            created=doc.time("created"),
            compressed_digest=_digest(doc, "compressed-diff-digest"),
            compressed_size=doc.int("compressed-size"),
            diff_digest=_digest(doc, "diff-digest"),
            diff_size=doc.int("diff-size"),
            mount_label=doc.str("mountlabel") or None,
            tar_split=tar_split if listed and ev.is_file(tar_split) else None,
            uid_map=_id_map(doc, "uidmap"),
            gid_map=_id_map(doc, "gidmap"),
        )
    return out


def read_images(ev: Evidence, graphroot: str, problems: list[Problem], driver: str = "overlay") -> list:
    """Every StorageImage of ``<driver>-images/images.json``."""
    out: list[StorageImage] = []
    for ident, doc, _path in _entries(ev, graphroot, f"{driver}-images/images.json", problems):
        digest = _digest(doc, "digest")
        digests = doc.list_of_str("digests") or ([digest] if digest else [])
        out.append(
            StorageImage(
                id=ident,
                top_layer=doc.str("layer") or None,
                names=doc.list_of_str("names") or [],
                digest=digest,
                digests=digests,
                created=doc.time("created"),
                metadata=_metadata(doc),
                big_data_names=doc.list_of_str("big-data-names") or [],
                big_data_digests=doc.dict_of_str("big-data-digests"),
                big_data_sizes=_sizes(doc.obj("big-data-sizes")),
                mapped_layers=doc.list_of_str("mapped-layers") or [],
            )
        )
    return out


def _sizes(sizes: Doc) -> dict[str, int]:
    """``big-data-sizes``: key -> byte count (what is not a count is a problem, left out)."""
    out, names = {}, sizes.keys()  # a Doc is not iterable
    for key in names:
        size = sizes.int(key)
        if size is not None and size >= 0:
            out[key] = size
    return out


def read_containers(ev: Evidence, graphroot: str, problems: list[Problem], driver: str = "overlay") -> list:
    """Every StorageContainer of ``<driver>-containers/containers.json``."""
    out: list[StorageContainer] = []
    for ident, doc, _path in _entries(ev, graphroot, f"{driver}-containers/containers.json", problems):
        flags = doc.obj("flags")
        out.append(
            StorageContainer(
                id=ident,
                layer=doc.str("layer") or None,
                image=doc.str("image") or None,
                names=doc.list_of_str("names") or [],
                created=doc.time("created"),
                metadata=_metadata(doc),
                mount_label=flags.str("MountLabel") or None,
                process_label=flags.str("ProcessLabel") or None,
                uid_map=_id_map(doc, "uidmap"),
                gid_map=_id_map(doc, "gidmap"),
            )
        )
    return out


def read_big_data(
    ev: Evidence,
    graphroot: str,
    image: StorageImage,
    key: str,
    problems: list[Problem],
    driver: str = "overlay",
) -> tuple[bytes | None, str]:
    """(bytes or None, evidence path) of one big-data item of IMAGE (a problem when it is listed
    but missing or unreadable)."""
    path = posixpath.join(graphroot, f"{driver}-images", image.id, big_data_file(key))
    try:
        return ev.read_bytes(path, MAX_BIG_DATA + 1), path
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(path, f"image big-data {key!r} unreadable: {exc}", image.id))
        return None, path


def layer_chain(
    layers: dict[str, StorageLayer],
    top: str | None,
    source: str,
    problems: list[Problem],
    subject: str | None = None,
) -> list[StorageLayer]:
    """The layers from TOP down its ``parent`` links, returned bottom first; a missing parent or
    a loop is a problem naming SOURCE (the chain above it is kept)."""
    chain: list[StorageLayer] = []
    seen: set[str] = set()
    current = top
    while current:
        if current in seen:
            problems.append(Problem(source, f"layer parent chain loops at {current}", subject))
            break
        seen.add(current)
        layer = layers.get(current)
        if layer is None:
            problems.append(Problem(source, f"layer {current} not in layers.json", subject))
            break
        chain.append(layer)
        current = layer.parent
    chain.reverse()
    return chain
