"""What every engine's part of a bundle shares: the engine's files copied byte for byte under
``root/`` of the bundle, each layer directory as a raw tar mounted back at its path, and the
image as a ``docker save`` archive rebuilt from the engine's tar-split records.

An acquisition maps one evidence directory (BASE: Docker's data root; ``/`` for Podman and
containerd, whose files keep their evidence paths so the engine's own discovery finds them
again in the bundle) onto ``root/``.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from typing import Any

from pensieve.collect.bundle import BundleWriter
from pensieve.collect.tarstream import TarStream, layer_dir_tar
from pensieve.evidence import EvidenceError
from pensieve.evidence.base import relative_to
from pensieve.records import Container, Image, Layer, Problem

__all__ = ["ROOT", "TreeAcquisition"]

ROOT = "root"
#: the largest image config copied into an image archive
MAX_CONFIG = 64 << 20


class TreeAcquisition:
    """The files of container C of HOST (an engine Host) into the bundle OUT; BASE is the
    evidence directory that becomes the bundle's ``root/``."""

    def __init__(self, host, c: Container, out: BundleWriter, base: str = "/") -> None:
        self.host, self.c, self.out = host, c, out
        self.ev = host.evidence
        self.base = base
        self.mounts: dict[str, str] = {}
        self.layers: list[dict[str, Any]] = []
        self._copied: set[str] = set()

    # ---- paths ------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        """The bundle path of the evidence's PATH (under ``root/``)."""
        inner = relative_to(self.base, path)
        return posixpath.join(ROOT, (inner if inner is not None else path).lstrip("/"))

    def copy(self, path: str) -> None:
        """The regular file PATH, byte for byte (each path once)."""
        if path in self._copied:
            return
        self._copied.add(path)
        self.out.copy(self.ev, path, self.rel(path))

    def copy_if_there(self, path: str) -> bool:
        if self.ev.is_file(path):
            self.copy(path)
            return True
        return False

    def copy_dir(self, path: str, required: bool = True) -> None:
        """Every regular file and symlink below PATH, copied (a missing PATH: a problem when
        REQUIRED)."""
        if not self.ev.is_dir(path):
            if required:
                self.out.problems.append(Problem(path, "not collected: no such directory", self.c.id))
            return
        for dirpath, entries in self.ev.walk(path):
            for e in entries:
                full = posixpath.join(dirpath, e.name)
                if e.stat.is_file:
                    self.copy(full)
                elif e.stat.is_symlink:
                    self.out.copy_symlink(self.ev, full, self.rel(full))

    def expect(self, directory: str, names: tuple[str, ...]) -> None:
        """A problem for each of NAMES missing from DIRECTORY (the rest is collected anyway)."""
        for name in names:
            path = posixpath.join(directory, name)
            if not self.ev.is_file(path):
                self.out.problems.append(
                    Problem(path, "missing from the engine's data: not collected", self.c.id)
                )

    # ---- layers -----------------------------------------------------------------------
    def layer_links(self, store: str, cache_id: str) -> None:
        """The overlay driver's bookkeeping of layer CACHE_ID in STORE (overlay2 and
        containers/storage overlay alike): ``<id>/link`` and ``<id>/lower`` copied, and the
        ``l/<short>`` symlink that ``link`` names recreated."""
        base = posixpath.join(store, cache_id)
        for name in ("link", "lower"):
            self.copy_if_there(posixpath.join(base, name))
        link = posixpath.join(base, "link")
        if not self.ev.is_file(link):
            return
        try:
            short = self.ev.read_bytes(link, 64).decode("ascii", "replace").strip()
        except (EvidenceError, OSError):
            return
        full = posixpath.join(store, "l", short)
        if short and "/" not in short and self.ev.exists(full):
            self.out.copy_symlink(self.ev, full, self.rel(full))

    def layer_tar(self, layer: Layer, where: str | None = None, **record: Any) -> None:
        """LAYER's directory as the raw tar ``layers/<cache-id>.tar`` (and its index), mounted
        at the directory's place in the bundle's tree; a layer without contents is a problem
        about WHERE (default: its cache id)."""
        cache = layer.cache_id or ""
        record = {"cache_id": cache, "role": layer.role, "chain_id": layer.chain_id,
                  "diff_id": layer.diff_id, **record}  # fmt: skip
        if layer.path is None:
            self.out.problems.append(
                Problem(
                    where or cache or self.c.id,
                    f"{layer.role} layer contents missing: not collected",
                    self.c.id,
                )
            )
            self.layers.append({**record, "tar": None})
            return
        tar_rel = f"layers/{cache}.tar"
        with self.out.create(tar_rel) as fh:
            index = layer_dir_tar(self.ev, layer.path, fh.write, self.out.problems)
        self.out.done(fh, layer=cache, role=layer.role, entries=len(index))
        self.out.write(
            f"layers/{cache}.index.json",
            (json.dumps(index, indent=1, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape"),
            layer=cache,
        )
        mount = "/" + self.rel(layer.path)[len(ROOT) + 1 :]
        self.mounts[mount] = tar_rel
        self.layers.append({**record, "tar": tar_rel, "source": layer.path, "mount": mount})

    # ---- the image archive ------------------------------------------------------------
    def image_config(self, image: Image) -> tuple[bytes | None, str]:
        """(IMAGE's config bytes, where they were read); None and a problem when unreadable."""
        path = image.config_path or image.id
        try:
            return self.ev.read_bytes(path, MAX_CONFIG), path
        except (EvidenceError, OSError) as exc:
            self.out.problems.append(Problem(path, f"image archive not written: {exc}", image.id))
            return None, path

    def image_archive(self, image: Image) -> None:
        """``image.tar``: IMAGE as ``docker save`` writes it (Docker < 25 layout: manifest.json,
        repositories, ``<config>.json``, ``<dir>/layer.tar`` with ``VERSION`` and ``json``), each
        layer tar rebuilt by the engine's ``export_layer`` from its directory and tar-split."""
        config, _ = self.image_config(image)
        if config is None:
            return
        cfg_hex = image.id.split(":", 1)[-1]
        dirs = [c.split(":", 1)[-1] for c in image.chain_ids]
        sizes = self._layer_sizes(image)
        if sizes is None:
            return
        with self.out.create("image.tar") as fh:
            tar = TarStream(fh.write)
            tar.add_bytes(f"{cfg_hex}.json", config)
            parent = ""
            for i, (chain, d) in enumerate(zip(image.chain_ids, dirs, strict=True)):
                tar.add_bytes(f"{d}/VERSION", b"1.0")
                v1 = {"id": d, **({"parent": parent} if parent else {})}
                tar.add_bytes(f"{d}/json", json.dumps(v1).encode())
                self._layer_member(tar, chain, f"{d}/layer.tar", sizes[i])
                parent = d
            tags = [t for t in image.tags if "@" not in t]
            manifest = [{"Config": f"{cfg_hex}.json", "RepoTags": tags or None,
                         "Layers": [f"{d}/layer.tar" for d in dirs]}]  # fmt: skip
            tar.add_bytes("manifest.json", json.dumps(manifest).encode())
            repos: dict[str, dict[str, str]] = {}
            for tag in tags:
                repo, _, name = tag.rpartition(":")
                repos.setdefault(repo, {})[name] = dirs[-1] if dirs else cfg_hex
            tar.add_bytes("repositories", json.dumps(repos).encode())
            tar.close()
        self.out.done(fh, image=image.id, layout="docker-save")

    def _layer_sizes(self, image: Image) -> list[int] | None:
        """The size of each layer's rebuilt tar stream (a first pass: a tar header needs it)."""
        sizes = []
        for chain in image.chain_ids:
            count = [0]

            def counter(data, count=count) -> None:
                count[0] += len(data)

            try:
                verdict = self.host.export_layer(chain, counter)
            except (LookupError, EvidenceError, OSError) as exc:
                self.out.problems.append(Problem(chain, f"image archive not written: {exc}", image.id))
                return None
            if verdict.status != "ok":
                why = getattr(verdict, "reason", None) or verdict.status
                self.out.problems.append(
                    Problem(chain, f"layer {verdict.status} as rebuilt: {why}", image.id)
                )
            sizes.append(count[0])
        return sizes

    def _layer_member(self, tar: TarStream, chain: str, name: str, size: int) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = size, 0o644
        tar.header(ti)
        tar.begin(size)
        self.host.export_layer(chain, tar.feed)
        got = tar.end()
        if got != size:
            self.out.problems.append(
                Problem(chain, f"layer changed between two reads: {size} then {got} bytes")
            )

    def summary(self, engine: str, image: Image | None, **extra: Any) -> dict[str, Any]:
        """What the manifest says of the acquisition."""
        rw = next((x for x in self.layers if x["role"] == "rw"), None)
        return {
            "engine": engine,
            **extra,
            "image": image.id if image is not None else self.c.image_id,
            "image_tags": image.tags if image is not None else [],
            "layers": self.layers,
            "rw_layer": rw["tar"] if rw else None,
            "image_archive": "image.tar" if image is not None and self.out_has("image.tar") else None,
            "mounts": self.mounts,
            "tree": ROOT,
        }

    def out_has(self, rel: str) -> bool:
        return any(f["path"] == rel for f in self.out.files)
