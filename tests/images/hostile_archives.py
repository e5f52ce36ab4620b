"""Hostile image archives, generated from the real captured ones (tests/fixtures/archives).

Every JSON field pensieve reads from each file kind of an archive is set, one at a time, to every
wrong JSON type, to null, deleted, and replaced by 100,000 nested brackets; the archive is rebuilt
as a tar with the one member changed (its other members byte for byte as captured).

File kinds and fields (moby image/tarexport; OCI image-spec image-layout.md, image-index.md,
manifest.md, config.md):

* ``docker save`` ``manifest.json`` (a list of ``{Config, RepoTags, Layers, Parent}``) and
  ``repositories`` (``{repo: {tag: v1-id}}``; pensieve does not read it beyond its name);
* the image config (``<hex>.json`` of a save; a config blob of an OCI layout);
* OCI ``oci-layout`` (``imageLayoutVersion``), ``index.json`` (``manifests[]`` descriptors:
  ``mediaType``, ``digest``, ``annotations``) and the image manifest blob it points at
  (``config`` and ``layers[]`` descriptors: ``mediaType``, ``digest``, ``size``).

Mutations always hit the first image's files (``pensieve/aapp:1``); the second image
(``pensieve/abase:1``) has files of its own, so it must still be listed.
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: how deep the nesting bomb goes (the parser refuses more than 512 levels in archive JSON)
BOMB_DEPTH = 100_000

_DELETE = object()
_FLOAT_TOKEN = "\x00pensieve-1e400\x00"
_BOMB_TOKEN = "\x00pensieve-bomb\x00"

#: every JSON type a field can wrongly hold, null, absent, and a nesting bomb
MUTATIONS: dict[str, Any] = {
    "int": 1,
    "bool": True,
    "float": _FLOAT_TOKEN,  # 1e400: valid JSON text, infinite as a Python float
    "string": "x",
    "list": [],
    "dict": {},
    "null": None,
    "missing": _DELETE,
    "nesting": _BOMB_TOKEN,
}

#: the mutations that are a JSON type (the others: null, absent, too deep)
_TYPE_NAMES = ("int", "bool", "float", "string", "list", "dict")

APP, BASE = "pensieve/aapp:1", "pensieve/abase:1"

S, L, D, N, B = "string", "list", "dict", "int", "bool"
#: not read by pensieve (no type to check), only to show it does not matter
UNREAD = None

# (field path from the document's top, the JSON types pensieve accepts there); () = the document
_SAVE_MANIFEST = [
    ((), (L,)),
    ((0,), (D,)),
    ((0, "Config"), (S,)),
    ((0, "RepoTags"), (L,)),
    ((0, "RepoTags", 0), (S,)),
    ((0, "Layers"), (L,)),
    ((0, "Layers", 0), (S,)),
    ((0, "Parent"), (S,)),
]
_REPOSITORIES = [((), UNREAD), (("pensieve/aapp",), UNREAD), (("pensieve/aapp", "1"), UNREAD)]
_CONFIG = [
    ((), (D,)),
    (("created",), (S,)),
    (("os",), (S,)),
    (("architecture",), (S,)),
    (("author",), (S,)),
    (("config",), (D,)),
    (("config", "Cmd"), (L, S)),  # a Go strslice: a list, or one string
    (("config", "Cmd", 0), (S,)),
    (("config", "Entrypoint"), (L, S)),
    (("config", "Env"), (L,)),
    (("config", "Env", 0), (S,)),
    (("config", "User"), (S,)),
    (("config", "WorkingDir"), (S,)),
    (("config", "Labels"), (D,)),
    (("config", "Labels", "org.example.fixture"), (S,)),
    (("config", "ExposedPorts"), (D,)),
    (("container_config",), UNREAD),  # read only when "config" is absent or empty
    (("rootfs",), (D,)),
    (("rootfs", "diff_ids"), (L,)),
    (("rootfs", "diff_ids", 0), (S,)),
    (("history",), (L,)),
    (("history", 0), (D,)),
    (("history", 1, "created"), (S,)),
    (("history", 1, "created_by"), (S,)),
    (("history", 2, "empty_layer"), (B,)),
    (("history", 0, "comment"), (S,)),
    (("history", 1, "author"), (S,)),
]
_OCI_LAYOUT = [((), (D,)), (("imageLayoutVersion",), (S,))]
_INDEX = [
    ((), (D,)),
    (("manifests",), (L,)),
    (("manifests", 0), (D,)),
    (("manifests", 0, "mediaType"), (S,)),
    (("manifests", 0, "digest"), (S,)),
    (("manifests", 0, "annotations"), (D,)),
    (("manifests", 0, "annotations", "org.opencontainers.image.ref.name"), (S,)),
]
_MANIFEST = [
    ((), (D,)),
    (("config",), (D,)),
    (("config", "digest"), (S,)),
    (("layers",), (L,)),
    (("layers", 0), (D,)),
    (("layers", 0, "mediaType"), (S,)),
    (("layers", 0, "digest"), (S,)),
    (("layers", 0, "size"), (N,)),
]
#: maps of strings: a bad value's problem names the map
_STRING_MAPS = ("Labels",)


@dataclass(frozen=True)
class Case:
    """One hostile archive: which member, which field, which mutation."""

    base: str  # save.tar | oci.tar
    member: str  # the archive member changed ("manifest.json", "blobs/sha256/<hex>")
    kind: str  # the file kind, for test ids
    path: tuple  # the field path inside the member's JSON, () = the whole document
    mutation: str  # a key of MUTATIONS
    accepted: tuple[str, ...] | None  # JSON types pensieve accepts there; None: not read

    @property
    def id(self) -> str:
        where = ".".join(str(p) for p in self.path) or "<doc>"
        return f"{self.base}:{self.kind}:{where}:{self.mutation}"

    @property
    def whole_file(self) -> bool:
        return not self.path

    def resolve(self, members) -> str:
        """The tar member this case changes, in the base archive's MEMBERS."""
        return resolve_member(self.base, self.member, members)

    @property
    def wrong_type(self) -> bool:
        """The mutation gives a field pensieve reads a type it does not accept there."""
        return (
            self.accepted is not None and self.mutation in _TYPE_NAMES and self.mutation not in self.accepted
        )

    @property
    def field(self) -> str:
        """The field as pensieve's problems name it: dotted keys, ``[i]`` for list items; a bad
        list item's problem names its list (``RepoTags``), a bad map value its map (``Labels``)."""
        path = list(self.path)
        if len(path) > 1 and isinstance(path[-1], int):
            path.pop()
        elif len(path) > 1 and path[-2] in _STRING_MAPS:
            path.pop()
        out = ""
        for p in path:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def mutate(raw: bytes, path: tuple, mutation: str) -> bytes | None:
    """RAW (a JSON document) with the field at PATH mutated; None when the mutation deletes the
    whole document (the member is left out of the archive)."""
    value = MUTATIONS[mutation]
    if not path:
        if value is _DELETE:
            return None
        text = json.dumps(value)
    else:
        doc = json.loads(raw)
        parent = _get(doc, path[:-1])
        if value is _DELETE:
            if isinstance(parent, list) or path[-1] in parent:
                del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(value)
        text = json.dumps(doc)
    text = text.replace(json.dumps(_FLOAT_TOKEN), "1e400")
    return text.replace(json.dumps(_BOMB_TOKEN), "[" * BOMB_DEPTH + "]" * BOMB_DEPTH).encode()


def read_members(tar_path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Every member of a tar with its bytes (None for non-files), in archive order."""
    out = []
    with tarfile.open(tar_path) as tf:
        for info in tf:
            fh = tf.extractfile(info) if info.isfile() else None
            out.append((info, fh.read() if fh else None))
    return out


def write_tar(
    members: list[tuple[tarfile.TarInfo, bytes | None]], dest: Path, member: str, data: bytes | None
):
    """Rebuild a tar: MEMBER's bytes replaced by DATA (left out when None), the rest as read."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, body in members:
            if info.name.lstrip("./") == member:
                if data is None:
                    continue
                info = copy.copy(info)
                info.size = len(data)
                body = data
            tf.addfile(info, io.BytesIO(body) if body is not None else None)


def oci_tar(layout_dir: Path, dest: Path) -> Path:
    """A tar of the captured OCI layout directory (what ``skopeo copy oci-archive:`` writes)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("oci-layout", "index.json", "blobs"):
            tf.add(layout_dir / name, arcname=name)
    return dest


#: symbolic members: the first image's config and manifest, named by the archive's own index
APP_CONFIG, APP_MANIFEST = "@app-config", "@app-manifest"


def resolve_member(base: str, member: str, members) -> str:
    """The tar member a (possibly symbolic) MEMBER names in the base archive's MEMBERS."""
    if member == APP_CONFIG and base == "save.tar":
        return json.loads(_body(members, "manifest.json"))[0]["Config"]
    if member in (APP_CONFIG, APP_MANIFEST):
        index = json.loads(_body(members, "index.json"))
        manifest_member = "blobs/sha256/" + index["manifests"][0]["digest"].split(":", 1)[1]
        if member == APP_MANIFEST:
            return manifest_member
        manifest = json.loads(_body(members, manifest_member))
        return "blobs/sha256/" + manifest["config"]["digest"].split(":", 1)[1]
    return member


def _body(members, name: str) -> bytes:
    for info, body in members:
        if info.name.lstrip("./") == name and body is not None:
            return body
    raise KeyError(name)


def cases() -> Iterator[Case]:
    """Every (file, field, mutation) of the two base archives."""
    plan = [
        ("save.tar", "manifest.json", "manifest.json", _SAVE_MANIFEST),
        ("save.tar", "repositories", "repositories", _REPOSITORIES),
        ("save.tar", APP_CONFIG, "config", _CONFIG),
        ("oci.tar", "oci-layout", "oci-layout", _OCI_LAYOUT),
        ("oci.tar", "index.json", "index.json", _INDEX),
        ("oci.tar", APP_MANIFEST, "manifest", _MANIFEST),
        ("oci.tar", APP_CONFIG, "config", _CONFIG),
    ]
    for base, member, kind, fields in plan:
        for path, accepted in fields:
            for mutation in MUTATIONS:
                yield Case(base, member, kind, path, mutation, accepted)
