"""Hunting tasks of triage: YARA (and hash IOCs) over every image layer of a host, and YARA over
each process's memory of a checkpoint.

Both write ``findings`` rows (producer ``yara.layers`` / ``yara.memory``; no case analysis
replaces them).  Their subject is the digest of the rules and indicators, so a later triage with
other rules runs them again, and one with the same rules reuses them.

What a container changed (its RW layer, what its merged view adds to the image) is scanned by the
diff task as it reads each file (``changes.matches``); the image layers below are scanned here, so
every file of the merged view is scanned once per layer that holds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from pensieve.case.content import CHUNK
from pensieve.errors import EvidenceError
from pensieve.hunting.findings import ioc_finding, rule_finding
from pensieve.hunting.matchers import ioc_entry
from pensieve.records import Problem

Rows = Iterator[tuple[str, list[dict]]]


def scan_tree(evidence, top: str, hunting, problems: list[Problem]) -> Iterator[tuple[str, int, dict]]:
    """(evidence path, size, matches entry) of every YARA or hash-IOC hit in the regular files
    below TOP, each file read once through the evidence in blocks."""
    want_sha = {i.value: i for i in hunting.iocs if i.type == "sha256"}
    factories = hunting.factories(problems)
    for dirpath, entries in evidence.walk(top):
        for e in entries:
            if not e.stat.is_file:
                continue
            path = f"{dirpath.rstrip('/')}/{e.name}"
            consumers = [make(path) for make in factories]
            sha = hashlib.sha256() if want_sha else None
            try:
                with evidence.open(path) as fh:
                    while block := fh.read(CHUNK):
                        for c in consumers:
                            c.feed(block)
                        if sha is not None:
                            sha.update(block)
            except (EvidenceError, OSError) as exc:
                problems.append(Problem(path, f"not scanned: {exc}"))
                continue
            found = [m for c in consumers for m in c.finish()]
            if sha is not None and sha.hexdigest() in want_sha:
                found.append(ioc_entry(want_sha[sha.hexdigest()]))
            for m in found:
                yield path, e.stat.size, m


def _layer_finding(m: dict, rel: str, ref: dict, keys: dict[str, Any]) -> dict | None:
    if m["type"] == "yara":
        return rule_finding(m, rel, ref, keys, {"layer_path": ref["host_path"]})
    if m["type"] == "ioc":
        return ioc_finding(m, f"the {m['indicator']} of {rel} in an image layer", rel, ref, keys)
    return None


def image_layers(ctx, hunting) -> Rows:
    """YARA and hash IOCs over every image layer of the host (each layer directory once)."""
    host = ctx.source.opened
    seen: set[str] = set()
    out: list[dict] = []
    for image in host.images():
        try:
            chain = host.image_layers(image)
        except (LookupError, EvidenceError, OSError):
            continue  # the inventory task reports it
        for layer in chain:
            if not layer.path or layer.path in seen:
                continue
            seen.add(layer.path)
            keys = ctx.keys(engine=image.engine, image_id=image.id, layer_id=layer.cache_id)
            for path, size, m in scan_tree(host.evidence, layer.path, hunting, ctx.problems):
                rel = "/" + path[len(layer.path) :].lstrip("/")
                ref = {
                    "table": "layers",
                    "source_id": ctx.source_id,
                    "layer_id": layer.cache_id,
                    "path": rel,
                    "host_path": path,
                    "size": size,
                }
                f = _layer_finding(m, rel, ref, keys)
                if f is not None:
                    f["producer"] = "yara.layers"
                    out.append(f)
    yield "findings", out


def checkpoint_memory(ctx, hunting) -> Rows:
    """YARA over each live process's memory of a checkpoint: a finding per process and rule, with
    the addresses (:func:`pensieve.memory.scan.yara_scan`)."""
    from pensieve.memory import scan as memscan

    src = ctx.source.opened
    info = src.info
    keys = ctx.keys(
        engine=(info.engine or "").lower() or None, container_id=info.container_id, image_id=info.image_id
    )
    by_rule: dict[tuple[int, str], list] = {}
    for h in memscan.yara_scan(src.checkpoint, hunting.rules):
        by_rule.setdefault((h.pid, h.rule or h.pattern), []).append(h)
    out = []
    for (pid, rule), hits in sorted(by_rule.items()):
        first = hits[0]
        ref = {"table": "processes", "source_id": ctx.source_id, "pid": pid, "checkpoint": info.name}
        where = f"pid {pid} ({first.comm}) at {first.address:#x} in {first.mapping or '[anon]'}"
        hit = {
            "rule": rule,
            "namespace": None,
            "tags": first.tags,
            "meta": first.meta,
            "strings": [[h.pattern.split(":", 1)[-1], h.address, h.length] for h in hits[:20]],
        }
        details = {
            "pid": pid,
            "comm": first.comm,
            "address": first.address,
            "mapping": first.mapping,
            "addresses": [h.address for h in hits[:100]],
            "hits": len(hits),
            "context": first.context,
        }
        f = rule_finding(hit, where, ref, keys, details)
        f["subject"] = f"pid {pid} {rule}"
        f["producer"] = "yara.memory"
        out.append(f)
    yield "findings", out
