"""Docker images from a data root: imagedb configs, repositories.json tags, history aligned to
layers (moby image/ and reference/ packages; OCI image config spec for the config fields)."""

from __future__ import annotations

import hashlib
import posixpath
from collections import defaultdict

from pensieve.engines.docker.root import DockerRoot, chain_ids, read_json
from pensieve.evidence import EvidenceError
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import HistoryStep, Image, Problem


def read_repositories(
    root: DockerRoot, driver: str, problems: list[Problem] | None = None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """image id -> tags, image id -> digests, from image/<driver>/repositories.json."""
    tags: dict[str, list[str]] = defaultdict(list)
    digests: dict[str, list[str]] = defaultdict(list)
    path = root.join("image", driver, "repositories.json")
    problems = problems if problems is not None else []
    if not root.evidence.exists(path):
        return tags, digests
    doc = read_json(root.evidence, path, problems)
    if doc is None:
        return tags, digests
    for _repo, refs in doc.items_of_obj("Repositories"):
        for ref, image_id in refs.dict_of_str_items():
            (digests if "@" in ref else tags)[image_id].append(ref)
    return tags, digests


def _as_doc(value: Doc | dict, source: str = "image config") -> Doc:
    """A Doc of VALUE (callers holding a parsed dict: its type problems are not kept)."""
    return value if isinstance(value, Doc) else Doc(value if isinstance(value, dict) else {}, source, [])


def history_steps(
    config: Doc | dict, diff_ids: list[str], chains: list[str], layerdb: dict
) -> list[HistoryStep]:
    """The image config's ``history`` as HistoryStep records, each non-empty step joined to its
    layer (DIFF_IDS, CHAINS; LAYERDB: chain id -> an object with ``cache_id`` and ``size``)."""
    config = _as_doc(config)
    steps: list[HistoryStep] = []
    layer_i = 0
    for h in config.list_of_obj("history"):
        empty = h.bool("empty_layer")
        step = HistoryStep(
            created=h.time("created"),
            created_by=h.str("created_by"),
            empty_layer=empty,
            comment=h.str("comment"),
            author=h.str("author"),
        )
        if not empty and layer_i < len(diff_ids):
            step.diff_id = diff_ids[layer_i]
            step.chain_id = chains[layer_i]
            info = layerdb.get(step.chain_id)
            if info is not None:
                step.cache_id = info.cache_id
                step.size = info.size
            layer_i += 1
        steps.append(step)
    # layers without a history entry (imported images, hand-edited configs)
    while layer_i < len(diff_ids):
        info = layerdb.get(chains[layer_i])
        steps.append(
            HistoryStep(
                created=None,
                created_by=None,
                empty_layer=False,
                comment="(layer without history entry)",
                diff_id=diff_ids[layer_i],
                chain_id=chains[layer_i],
                cache_id=info.cache_id if info else None,
                size=info.size if info else None,
            )
        )
        layer_i += 1
    return steps


_history = history_steps  # the old name, still imported by images/archive.py and containerd/images.py


def runtime_config(cfg: Doc | dict) -> dict:
    """Image fields from a config's ``config`` object (the OCI image config's runtime part)."""
    cfg = _as_doc(cfg)
    return {
        "cmd": cfg.str_slice("Cmd"),
        "entrypoint": cfg.str_slice("Entrypoint"),
        "env": cfg.list_of_str("Env") or [],
        "user": cfg.str("User") or None,
        "workdir": cfg.str("WorkingDir") or None,
        "labels": cfg.dict_of_str("Labels"),
        "exposed_ports": sorted(cfg.dict_keys("ExposedPorts")),
    }


def parse_image_config(
    image_id: str, raw: bytes, root: DockerRoot, driver: str, problems: list[Problem], path: str
) -> Image:
    """One Image from its config blob (OCI/Docker image config JSON); UntrustedJSONError when
    it is not a JSON object, type problems of its fields in PROBLEMS."""
    config = load(raw, path, problems, subject=image_id)
    actual = "sha256:" + hashlib.sha256(raw).hexdigest()
    if actual != image_id:
        problems.append(Problem(path, f"image config digest {actual} does not match its id", image_id))
    cfg = config.obj("config") if config.raw("config") is not None else config.obj("container_config")
    diff_ids = config.obj("rootfs").list_of_str("diff_ids") or []
    chains = chain_ids(diff_ids)
    layerdb = root.layers(driver)
    cache_ids = [layerdb[c].cache_id if c in layerdb else None for c in chains]
    sizes = [layerdb[c].size for c in chains if c in layerdb and layerdb[c].size is not None]
    return Image(
        id=image_id,
        engine="docker",
        created=config.time("created"),
        parent=None,
        os=config.str("os"),
        architecture=config.str("architecture"),
        author=config.str("author"),
        **runtime_config(cfg),
        diff_ids=diff_ids,
        chain_ids=chains,
        cache_ids=cache_ids,
        size=sum(sizes) if sizes else None,
        history=history_steps(config, diff_ids, chains, layerdb),
        config_path=path,
        data_root=root.path,
    )


def list_images(root: DockerRoot, problems: list[Problem]) -> list[Image]:
    """Every image of every driver's imagedb in a v2 data root."""
    ev = root.evidence
    images: list[Image] = []
    for driver in root.drivers():
        content = root.join("image", driver, "imagedb", "content", "sha256")
        try:
            names = sorted(ev.listdir(content))
        except (EvidenceError, OSError):
            continue
        tags, digests = read_repositories(root, driver, problems)
        meta = root.join("image", driver, "imagedb", "metadata", "sha256")
        for name in names:
            image_id = "sha256:" + name
            path = posixpath.join(content, name)
            try:
                raw = ev.read_bytes(path, (64 << 20) + 1)
                image = parse_image_config(image_id, raw, root, driver, problems, path)
            except UntrustedJSONError as exc:
                problems.append(
                    Problem(path, f"unreadable image config: {exc}".replace(f"{path}: ", ""), image_id)
                )
                continue
            except (EvidenceError, OSError) as exc:
                problems.append(Problem(path, f"unreadable image config: {exc}", image_id))
                continue
            image.tags = sorted(tags.get(image_id, []))
            image.digests = sorted(digests.get(image_id, []))
            try:
                parent = ev.read_text(posixpath.join(meta, name, "parent"), 4096).strip()
                image.parent = parent or None
            except (EvidenceError, OSError):
                pass
            images.append(image)
    return images


def resolve_image(images: list[Image], ref: str) -> Image | None:
    """Find an image by id (full, sha256:-prefixed or a unique prefix), tag or digest."""
    ref = ref.strip()
    for img in images:
        if ref in img.tags or ref in img.digests:
            return img
    if ":" not in ref.replace("sha256:", ""):
        for img in images:
            if f"{ref}:latest" in img.tags:
                return img
    want = ref.removeprefix("sha256:")
    if len(want) >= 4:
        matches = [i for i in images if i.id.removeprefix("sha256:").startswith(want)]
        if len(matches) == 1:
            return matches[0]
    return None
