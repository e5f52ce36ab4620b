"""What a bundle holds of one Docker container (overlay2 and the other layer-directory drivers),
read from the data root's files, never asked of the daemon.

Under ``root/`` of the bundle, at the same paths relative to the data root (moby ``daemon``,
``layer``, ``image`` and ``graphdriver/overlay2`` packages):

* ``containers/<id>/**``: config.v2.json, hostconfig.json, hostname, hosts, resolv.conf(.hash),
  the json-file log ``<id>-json.log`` and its rotations (or ``local-logs/``), checkpoints;
* ``image/<driver>/layerdb/mounts/<id>/*`` (mount-id, init-id, parent);
* ``image/<driver>/imagedb/content/sha256/<image>`` and ``imagedb/metadata/sha256/<image>/*``
  for the container's image and its parents; ``image/<driver>/repositories.json``;
* ``image/<driver>/layerdb/sha256/<chain>/*`` of every layer of the image (diff, size, cache-id,
  parent, tar-split.json.gz);
* ``<driver>/<cache-id>/{link,lower}`` of every layer and the ``<driver>/l/<short>`` links.

Each layer directory's contents (image layers, the init and the RW layer) are the raw tar
``layers/<cache-id>.tar`` (:func:`pensieve.collect.tarstream.layer_dir_tar`), with the index
``layers/<cache-id>.index.json``; the manifest's ``mounts`` puts each at ``/<driver>/<cache-id>/diff``
of the bundle's tree.  ``image.tar`` is the image in the ``docker save`` layout, its layer tars
rebuilt from their directories and tar-split records (:meth:`DockerHost.export_layer`).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from pensieve.collect.bundle import BundleWriter
from pensieve.collect.tarstream import TarStream, layer_dir_tar
from pensieve.engines.docker import DockerHost, DockerRoot
from pensieve.evidence import EvidenceError
from pensieve.evidence.base import relative_to
from pensieve.records import Container, Image, Layer, Problem

__all__ = ["collect_docker"]

ROOT = "root"
#: files every Docker container (and each image layer) has: one missing is a problem
CONTAINER_FILES = ("config.v2.json", "hostconfig.json")
MOUNT_FILES = ("mount-id",)
LAYERDB_FILES = ("diff", "cache-id", "size", "tar-split.json.gz")


class DockerAcquisition:
    """The files of container C of HOST into the bundle OUT."""

    def __init__(self, host: DockerHost, c: Container, out: BundleWriter) -> None:
        self.host, self.c, self.out = host, c, out
        self.ev = host.evidence
        self.root: DockerRoot = host._root_of(c.data_root)
        self.driver = c.storage_driver or "overlay2"
        self.mounts: dict[str, str] = {}
        self.layers: list[dict[str, Any]] = []

    # ---- paths ------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        """The bundle path of the data root's PATH (under ``root/``)."""
        inner = relative_to(self.root.path, path)
        return posixpath.join(ROOT, (inner or path).lstrip("/"))

    def copy(self, path: str) -> None:
        self.out.copy(self.ev, path, self.rel(path))

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

    # ---- the parts --------------------------------------------------------------------
    def metadata(self, image: Image | None) -> None:
        """The engine's own files for the container, its image and layers."""
        cid = self.c.id
        self.copy_dir(self.root.join("containers", cid))
        self.expect(self.root.join("containers", cid), CONTAINER_FILES)
        self.copy_dir(self.root.join("image", self.driver, "layerdb", "mounts", cid))
        self.expect(self.root.join("image", self.driver, "layerdb", "mounts", cid), MOUNT_FILES)
        repos = self.root.join("image", self.driver, "repositories.json")
        if self.ev.exists(repos):
            self.copy(repos)
        if self.c.log_path:
            inner = self.ev.from_host_path(self.c.log_path) or self.c.log_path
            if relative_to(self.root.join("containers", cid), inner) is None and self.ev.is_file(inner):
                self.copy(inner)  # a log kept outside the container's directory
        if image is None:
            return
        for image_id in self._image_chain(image):
            hexid = image_id.split(":", 1)[-1]
            self.copy(self.root.join("image", self.driver, "imagedb", "content", "sha256", hexid))
            self.copy_dir(
                self.root.join("image", self.driver, "imagedb", "metadata", "sha256", hexid), required=False
            )
        for chain in image.chain_ids:
            layerdb = self.root.join("image", self.driver, "layerdb", "sha256", chain.split(":", 1)[-1])
            self.copy_dir(layerdb)
            self.expect(layerdb, LAYERDB_FILES)

    def _image_chain(self, image: Image) -> list[str]:
        """IMAGE's id and its parents' (classic builds), as far as the host knows them."""
        by_id = {i.id: i for i in self.host.images()}
        out, cur = [], image
        while cur is not None and cur.id not in out:
            out.append(cur.id)
            cur = by_id.get(cur.parent or "")
        return out

    def layer_dirs(self) -> None:
        """Each layer's directory as a raw tar, its driver bookkeeping (link, lower) copied."""
        store = posixpath.join(self.root.path, self.driver)
        for layer in self.c.layers:
            if not layer.cache_id:
                continue
            self._layer(layer, store)

    def _layer(self, layer: Layer, store: str) -> None:
        cache = layer.cache_id or ""
        base = posixpath.join(store, cache)
        for name in ("link", "lower"):
            if self.ev.is_file(posixpath.join(base, name)):
                self.copy(posixpath.join(base, name))
        link = posixpath.join(base, "link")
        if self.ev.is_file(link):
            try:
                short = self.ev.read_bytes(link, 64).decode("ascii", "replace").strip()
            except (EvidenceError, OSError):
                short = ""
            if short and "/" not in short and self.ev.exists(posixpath.join(store, "l", short)):
                full = posixpath.join(store, "l", short)
                self.out.copy_symlink(self.ev, full, self.rel(full))
        record = {"cache_id": cache, "role": layer.role, "chain_id": layer.chain_id, "diff_id": layer.diff_id}
        if layer.path is None:
            self.out.problems.append(
                Problem(base, f"{layer.role} layer contents missing: not collected", self.c.id)
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

    def image_archive(self, image: Image) -> None:
        """``image.tar``: IMAGE as ``docker save`` writes it (Docker < 25 layout: manifest.json,
        repositories, ``<config>.json``, ``<dir>/layer.tar`` with ``VERSION`` and ``json``)."""
        cfg_hex = image.id.split(":", 1)[-1]
        cfg_path = self.root.join("image", self.driver, "imagedb", "content", "sha256", cfg_hex)
        try:
            config = self.ev.read_bytes(cfg_path, 64 << 20)
        except (EvidenceError, OSError) as exc:
            self.out.problems.append(Problem(cfg_path, f"image archive not written: {exc}", image.id))
            return
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
            manifest = [
                {
                    "Config": f"{cfg_hex}.json",
                    "RepoTags": image.tags or None,
                    "Layers": [f"{d}/layer.tar" for d in dirs],
                }
            ]
            tar.add_bytes("manifest.json", json.dumps(manifest).encode())
            repos: dict[str, dict[str, str]] = {}
            for tag in image.tags:
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
        import tarfile

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


def collect_docker(host: DockerHost, c: Container, out: BundleWriter) -> dict[str, Any]:
    """Collect container C of HOST into OUT; returns what the manifest says of it."""
    image = host._images_by_id.get(c.image_id or "")
    if image is None and c.image_id:
        out.problems.append(
            Problem(c.config_path or c.id, f"image {c.image_id} not in the image store", c.id)
        )
    acq = DockerAcquisition(host, c, out)
    acq.metadata(image)
    acq.layer_dirs()
    if image is not None:
        acq.image_archive(image)
    rw = next((x for x in acq.layers if x["role"] == "rw"), None)
    return {
        "engine": "docker",
        "data_root": acq.root.path,
        "data_root_host_path": host.evidence.host_path(acq.root.path),
        "storage_driver": acq.driver,
        "image": image.id if image is not None else c.image_id,
        "image_tags": image.tags if image is not None else [],
        "layers": acq.layers,
        "rw_layer": rw["tar"] if rw else None,
        "image_archive": "image.tar" if image is not None else None,
        "mounts": acq.mounts,
        "tree": ROOT,
    }
