"""Hunting tasks of triage: YARA and IOCs over what the other tasks do not read themselves --
every image layer of a host or of an image archive, each checkpointed process's memory, every
file recovered or carved from a disk image -- and a rescan of the files a container changed when
the rules differ from those its diff ran with.

Each writes ``findings`` rows under its own producer (``yara.layers``, ``yara.memory``,
``yara.recovered``, ``yara.carved``; no case analysis replaces them) or, for the rescan, the
``changes.matches`` the analysis ``findings.rules`` reads.  The task row keeps the digest of the
rules and indicators (``tasks.params``): a later triage with the same ones reuses the task, one
with other ones runs it again, and the new run replaces what the task wrote before (its findings
of the source; the rescanned rows' matches).

What a container changed (its RW layer, what its merged view adds to the image) is scanned by the
diff task as it reads each file (``changes.matches``); the image layers below are scanned here, so
every file of the merged view is scanned once per layer that holds it.  Every file is read
through the evidence (or the disk image) in blocks, and YARA sees at most ``max_size`` bytes of
it (the rest is a problem, not a silent miss).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pensieve.case.content import CHUNK
from pensieve.errors import EvidenceError
from pensieve.hunting.findings import ioc_finding, rule_finding
from pensieve.hunting.matchers import FileScan
from pensieve.records import Problem

Rows = Iterator[tuple[str, list[dict]]]


def _want_sha(hunting) -> dict:
    return {i.value: i for i in hunting.iocs if i.type == "sha256"}


def scan_file(
    evidence, path: str, factories: list, want_sha: dict, problems: list[Problem]
) -> list[dict] | None:
    """The matches entries of the file PATH of EVIDENCE, read once in blocks (None, and a problem,
    when it cannot be read)."""
    scan = FileScan(factories, path, want_sha)
    try:
        with evidence.open(path) as fh:
            while block := fh.read(CHUNK):
                scan.feed(block)
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(path, f"not scanned: {exc}"))
        return None
    return scan.finish()


def scan_tree(evidence, top: str, hunting, problems: list[Problem]) -> Iterator[tuple[str, int, dict]]:
    """(evidence path, size, matches entry) of every YARA or IOC hit in the regular files below
    TOP, each file read once through the evidence in blocks."""
    want_sha = _want_sha(hunting)
    factories = hunting.factories(problems)
    for dirpath, entries in evidence.walk(top):
        for e in entries:
            if not e.stat.is_file:
                continue
            path = f"{dirpath.rstrip('/')}/{e.name}"
            for m in scan_file(evidence, path, factories, want_sha, problems) or ():
                yield path, e.stat.size, m


def hit_finding(
    m: dict, what: str, where: str, ref: dict, keys: dict[str, Any], details: dict
) -> dict | None:
    """The finding of one matches entry M (a rule or an indicator) of the file WHAT names."""
    if m["type"] == "yara":
        return rule_finding(m, where, ref, keys, details)
    if m["type"] == "ioc":
        seen = "the content" if m.get("seen") == "content" else f"the {m['indicator']}"
        return ioc_finding(m, f"{seen} of {what}", where, ref, keys, None, details)
    return None


def _replace(ctx, producer: str) -> None:
    """Forget the findings PRODUCER wrote for this source before (an earlier run, other rules)."""
    if ctx.store is not None:
        ctx.store.query(
            "DELETE FROM findings WHERE producer = ? AND source_id = ?", [producer, ctx.source_id]
        )


def _stamp(findings: list[dict], producer: str) -> list[dict]:
    seen: set[str] = set()
    out = []
    for f in findings:
        if f["finding_id"] not in seen:
            seen.add(f["finding_id"])
            f["producer"] = producer
            out.append(f)
    return out


def image_layers(ctx, hunting) -> Rows:
    """YARA and IOCs over every image layer of the host or image archive (each layer once): a
    finding per hit naming the image, the layer (its id and digest) and the path in the layer."""
    host = ctx.host
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
            named = {
                "layer_path": layer.path,
                "image": (image.tags or [image.id])[0],
                "layer_digest": layer.diff_id or layer.cache_id,
            }
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
                where = f"{rel} in layer {named['layer_digest']} of {named['image']}"
                f = hit_finding(m, rel, where, ref, keys, named)
                if f is not None:
                    out.append(f)
    _replace(ctx, "yara.layers")
    yield "findings", _stamp(out, "yara.layers")


def changed_files(ctx, hunting, container) -> Rows:
    """The files CONTAINER added or modified, scanned again with these rules (its diff ran with
    others): their ``changes.matches`` replaced, read through the evidence as the diff read them."""
    tops = tuple(layer.path.rstrip("/") + "/" for layer in container.layers if layer.path)
    _names, rows = ctx.store.query(
        "SELECT DISTINCT host_path FROM changes WHERE source_id = ? AND container_id = ? "
        "AND change <> 'deleted' AND host_path IS NOT NULL AND type = 'file'",
        [ctx.source_id, container.id],
    )
    factories = hunting.factories(ctx.problems)
    evidence = ctx.host.evidence
    for (host_path,) in rows:
        if not host_path.startswith(tops):
            continue  # a change a checkpoint carried, not one of the diff's
        found = scan_file(evidence, host_path, factories, {}, ctx.problems)
        if found is None:
            continue
        ctx.store.query(
            "UPDATE changes SET matches = ? WHERE source_id = ? AND container_id = ? AND host_path = ?",
            [_json(found), ctx.source_id, container.id, host_path],
        )
    yield from ()


def _json(found: list[dict]) -> str | None:
    import json

    return json.dumps(found) if found else None


def _case_rows(ctx, sql: str) -> list[dict]:
    names, rows = ctx.store.query(sql, [ctx.source_id])
    return [dict(zip(names, r, strict=True)) for r in rows]


def _disk_keys(ctx, row: dict) -> dict[str, Any]:
    return ctx.keys(**{k: row.get(k) for k in ("engine", "container_id", "image_id", "layer_id")})


class _ScanSink:
    """Stands for the OutputSink of a recovery (:meth:`pensieve.disk.recover.Recovery.run`): each
    recovered file's content goes to a FileScan instead of a file, nothing is written."""

    dest = ""

    def __init__(self, hunting, problems: list[Problem]) -> None:
        self.factories = hunting.factories(problems)
        self.want_sha = _want_sha(hunting)
        self.found: dict[str, list[dict]] = {}  # the name the recovery gave the file -> matches

    def create(self, rel: str) -> _ScanFile:
        return _ScanFile(self, rel)


class _ScanFile:
    def __init__(self, sink: _ScanSink, rel: str) -> None:
        self.sink, self.rel = sink, rel
        self.scan = FileScan(sink.factories, rel, sink.want_sha)

    def write(self, block: bytes) -> None:
        self.scan.feed(block)

    def close(self) -> None:
        found = self.scan.finish()
        if found:
            self.sink.found[self.rel] = found


def recovered_files(ctx, hunting) -> Rows:
    """YARA and IOCs over the content of every file recovered from the disk image (the recovery
    run again, each file's bytes scanned as they come back), attributed as the ``recovered`` rows
    of the source are (container, layer, container path)."""
    from pensieve.disk.recover import Recovery

    disk = ctx.source.opened
    sink = _ScanSink(hunting, ctx.problems)
    files = Recovery(disk.evidence).run(sink)
    rows = _case_rows(
        ctx,
        "SELECT engine, container_id, image_id, layer_id, path, inode, container_path, container_name, "
        "layer_kind, epoch_ns(dtime) AS dtime FROM recovered WHERE source_id = ?",
    )
    known = {(r["path"], r["inode"]): r for r in rows}
    out: list[dict] = []
    for rec in files:
        found = sink.found.get(rec.out_path or "")
        if not found:
            continue
        row = known.get((rec.path, rec.inode), {})
        where = row.get("container_path") or rec.path
        ref = {"table": "recovered", "source_id": ctx.source_id, "path": rec.path, "inode": rec.inode}
        details = {
            "recovered_path": rec.path,
            "container_path": row.get("container_path"),
            "container_name": row.get("container_name"),
            "layer_kind": row.get("layer_kind"),
            "confidence": rec.confidence,
            "sha256": rec.sha256,
        }
        for m in found:
            f = hit_finding(m, f"a recovered file ({rec.path})", where, ref, _disk_keys(ctx, row), details)
            if f is not None:
                f["time"] = row.get("dtime")
                out.append(f)
    _replace(ctx, "yara.recovered")
    yield "findings", _stamp(out, "yara.recovered")


def carved_files(ctx, hunting) -> Rows:
    """YARA and IOCs over the bytes of every file carved from the disk image (its offset and length
    in the image, as the ``carved`` rows of the source say), read through the image in blocks."""
    from pensieve.disk import carve as carving

    rows = _case_rows(
        ctx,
        'SELECT engine, container_id, image_id, layer_id, path, "offset", length, type, sha256 '
        'FROM carved WHERE source_id = ? ORDER BY "offset"',
    )
    factories = hunting.factories(ctx.problems)
    want_sha = _want_sha(hunting)
    out: list[dict] = []
    img, _filesystems = carving.open_for_carving(ctx.source.path)
    try:
        for row in rows:
            label = f"carved {row['type']} at offset {row['offset']}"
            scan = FileScan(factories, f"{ctx.source.path}@{row['offset']}", want_sha)
            pos, end = row["offset"], row["offset"] + row["length"]
            while pos < end:
                block = img.read(pos, min(CHUNK, end - pos))
                if not block:
                    break
                scan.feed(block)
                pos += len(block)
            where = row.get("path") or label
            ref = {
                "table": "carved",
                "source_id": ctx.source_id,
                "offset": row["offset"],
                "sha256": row["sha256"],
            }
            details = {"offset": row["offset"], "length": row["length"], "carved_type": row["type"]}
            for m in scan.finish():
                f = hit_finding(m, f"a {label}", where, ref, _disk_keys(ctx, row), details)
                if f is not None:
                    out.append(f)
    finally:
        img.close()
    _replace(ctx, "yara.carved")
    yield "findings", _stamp(out, "yara.carved")


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
        out.append(f)
    _replace(ctx, "yara.memory")
    yield "findings", _stamp(out, "yara.memory")
