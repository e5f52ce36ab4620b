"""A collect bundle: files written through the output sink, each one recorded with its sha256,
size and source, then a ``manifest.json`` that is itself hashed (``manifest.json.sha256``), and
the check of a bundle against them (``pensieve collect verify``).

The manifest (JSON, UTF-8) is ``{"pensieve_bundle": 1, "files": [...], "symlinks": [...],
"mounts": {...}, "custody": {...}, ...}``; each file is ``{"path", "size", "sha256", "source"}``
where ``source`` is the evidence path it was copied from byte for byte (with ``source_stat``:
mode, owner, size and times as it was then) or ``"generated"`` (written by pensieve: layer tars,
the image archive, live snapshots).  ``manifest.json.sha256`` is ``<hex>  manifest.json\\n``, the
``sha256sum`` format.  The sink's own ``pensieve-manifest.json`` (every file it wrote) is written
last and is part of the bundle too.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat as statmod
from typing import Any

from pensieve.evidence import Evidence, EvidenceError, FileStat
from pensieve.output.sink import MANIFEST as SINK_MANIFEST
from pensieve.output.sink import OutputSink
from pensieve.records import Problem

__all__ = ["BUNDLE_FORMAT", "MANIFEST", "BundleWriter", "bundle_checkpoint", "read_manifest", "verify_bundle"]

MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.json.sha256"
BUNDLE_FORMAT = 1
#: the largest manifest a bundle reader accepts (a manifest lists files, not contents)
MAX_MANIFEST = 256 << 20
_CHUNK = 1 << 20


def source_stat(st: FileStat) -> dict[str, Any]:
    """What a copied file's lstat said when it was copied."""
    return {
        "mode": oct(st.mode),
        "uid": st.uid,
        "gid": st.gid,
        "size": st.size,
        "mtime_ns": st.mtime_ns,
        "ctime_ns": st.ctime_ns,
    }


class BundleWriter:
    """The files of one bundle, written through an OutputSink at DEST (refused inside BOUNDARIES)."""

    def __init__(self, dest: str, boundaries: list[str]) -> None:
        self.sink = OutputSink(dest, boundaries, kind="dir")
        self.path = self.sink.path
        self.files: list[dict[str, Any]] = []
        self.symlinks: list[dict[str, str]] = []
        self.problems: list[Problem] = []

    def copy(self, ev: Evidence, src: str, rel: str) -> dict[str, Any] | None:
        """Copy the regular file SRC of EV byte for byte to REL; None (and a problem) when it
        cannot be read or is not a regular file."""
        try:
            st = ev.lstat(src)
            if not st.is_file:
                raise EvidenceError(f"not a regular file ({st.kind})")
            with ev.open(src) as fh, self.sink.create(rel) as out:
                while block := fh.read(_CHUNK):
                    out.write(block)
        except (EvidenceError, OSError) as exc:
            self.problems.append(Problem(src, f"not collected: {exc}"))
            return None
        entry = {"path": out.path, "size": out.size, "sha256": out.sha256, "source": src}
        entry["source_stat"] = source_stat(st)
        host = ev.host_path(src)
        if host and host != src:
            entry["host_path"] = host
        self.files.append(entry)
        return entry

    def copy_symlink(self, ev: Evidence, src: str, rel: str) -> None:
        """Recreate the symlink SRC of EV at REL (its target as it is: never followed)."""
        try:
            target = ev.readlink(src)
            self.sink.symlink(rel, target)
        except (EvidenceError, OSError) as exc:
            self.problems.append(Problem(src, f"symlink not collected: {exc}"))
            return
        self.symlinks.append({"path": posixpath.normpath(rel), "target": target, "source": src})

    def create(self, rel: str):
        """A new generated file REL (a WrittenFile); record it with :meth:`done` once closed."""
        return self.sink.create(rel)

    def done(self, written, **extra: Any) -> dict[str, Any]:
        """Record the closed generated file WRITTEN (EXTRA: what it holds)."""
        entry = {"path": written.path, "size": written.size, "sha256": written.sha256, "source": "generated"}
        entry.update(extra)
        self.files.append(entry)
        return entry

    def write(self, rel: str, data: bytes, **extra: Any) -> dict[str, Any]:
        """A generated file REL holding DATA."""
        return self.done(self.sink.write(rel, data), **extra)

    def close(self, doc: dict[str, Any]) -> str:
        """Write manifest.json (DOC with the files and symlinks) and its hash; close the sink.
        Returns the manifest's path."""
        manifest = {"pensieve_bundle": BUNDLE_FORMAT, **doc, "files": self.files, "symlinks": self.symlinks}
        data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
        try:
            self.sink.write(MANIFEST, data)
            self.sink.write(MANIFEST_HASH, f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n".encode())
        finally:
            self.sink.close({"bundle_manifest": MANIFEST})
        return posixpath.join(self.path, MANIFEST)


# ---- reading and checking a bundle ----------------------------------------------------------


def _open_file(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0))


def _read_file(path: str, limit: int) -> bytes:
    try:
        fd = _open_file(path)
    except PermissionError:  # O_NOATIME on a file of another user
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit + 1)


def read_manifest(bundle: str) -> tuple[dict[str, Any], bytes]:
    """(the manifest of the bundle directory BUNDLE, its bytes); ValueError when BUNDLE holds no
    pensieve bundle manifest."""
    path = os.path.join(bundle, MANIFEST)
    try:
        data = _read_file(path, MAX_MANIFEST)
    except OSError as exc:
        raise ValueError(f"no bundle manifest: {path}: {exc.strerror}") from None
    if len(data) > MAX_MANIFEST:
        raise ValueError(f"{path}: larger than {MAX_MANIFEST} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("pensieve_bundle") != BUNDLE_FORMAT:
        raise ValueError(f"{path}: not a pensieve bundle manifest")
    return doc, data


def is_bundle(path: str) -> bool:
    """Whether the directory PATH is a pensieve collect bundle (its manifest says so)."""
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        return False
    try:
        read_manifest(path)
    except ValueError:
        return False
    return True


def _hash_file(path: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    fd = _open_file(path)
    with os.fdopen(fd, "rb") as fh:
        if not statmod.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"not a regular file: {path}")
        while block := fh.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _present(bundle: str) -> dict[str, str]:
    """Every name in BUNDLE (relative) -> its kind (file, symlink, other), directories left out."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(bundle, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, bundle)
            st = os.lstat(full)
            if statmod.S_ISDIR(st.st_mode):
                continue
            out[rel] = (
                "symlink"
                if statmod.S_ISLNK(st.st_mode)
                else "file"
                if statmod.S_ISREG(st.st_mode)
                else "other"
            )
    return out


def verify_bundle(bundle: str) -> list[dict[str, str]]:
    """Each file of BUNDLE checked against its manifest, and the manifest against its hash:
    ``[{"path", "status", "detail"}]`` with status ok | changed | missing | extra."""
    results: list[dict[str, str]] = []
    doc, data = read_manifest(bundle)
    results.append(_check_manifest_hash(bundle, data))
    present = _present(bundle)
    known = {MANIFEST, MANIFEST_HASH, SINK_MANIFEST}
    for f in doc.get("files") or []:
        rel = str(f.get("path", ""))
        known.add(rel)
        results.append(_check_file(bundle, rel, f, present))
    for link in doc.get("symlinks") or []:
        rel = str(link.get("path", ""))
        known.add(rel)
        results.append(_check_link(bundle, rel, str(link.get("target", "")), present))
    for rel in sorted(set(present) - known):
        results.append(
            {"path": rel, "status": "extra", "detail": f"a {present[rel]} the manifest does not list"}
        )
    return results


def _check_manifest_hash(bundle: str, data: bytes) -> dict[str, str]:
    want = hashlib.sha256(data).hexdigest()
    try:
        line = _read_file(os.path.join(bundle, MANIFEST_HASH), 4096).decode("ascii", "replace")
    except OSError as exc:
        return {"path": MANIFEST_HASH, "status": "missing", "detail": exc.strerror or str(exc)}
    recorded = line.split()[0] if line.split() else ""
    if recorded != want:
        return {
            "path": MANIFEST,
            "status": "changed",
            "detail": f"sha256 {want}, its hash file says {recorded}",
        }
    return {"path": MANIFEST, "status": "ok", "detail": f"sha256 {want}"}


def _check_file(bundle: str, rel: str, f: dict, present: dict[str, str]) -> dict[str, str]:
    if rel.startswith("/") or ".." in rel.split("/") or rel not in present:
        return {"path": rel, "status": "missing", "detail": "listed in the manifest, not in the bundle"}
    try:
        size, sha = _hash_file(os.path.join(bundle, rel))
    except OSError as exc:
        return {"path": rel, "status": "changed", "detail": f"unreadable: {exc}"}
    if size != f.get("size") or sha != f.get("sha256"):
        return {
            "path": rel,
            "status": "changed",
            "detail": f"sha256 {sha} ({size} bytes), manifest: {f.get('sha256')} ({f.get('size')} bytes)",
        }
    return {"path": rel, "status": "ok", "detail": f"sha256 {sha}"}


def _check_link(bundle: str, rel: str, target: str, present: dict[str, str]) -> dict[str, str]:
    if present.get(rel) != "symlink":
        return {
            "path": rel,
            "status": "missing",
            "detail": "symlink listed in the manifest, not in the bundle",
        }
    now = os.readlink(os.path.join(bundle, rel))
    if now != target:
        return {"path": rel, "status": "changed", "detail": f"symlink to {now!r}, manifest: {target!r}"}
    return {"path": rel, "status": "ok", "detail": f"symlink to {target}"}


def bundle_checkpoint(path: str) -> str | None:
    """The checkpoint inside the bundle directory PATH (a CRIU image directory or a checkpoint
    archive: the manifest's ``checkpoint.path``), None when PATH is no bundle or has none."""
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        return None
    try:
        doc, _ = read_manifest(path)
    except ValueError:
        return None
    cp = doc.get("checkpoint")
    rel = cp.get("path") if isinstance(cp, dict) and cp.get("status") == "ok" else None
    if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/"):
        return None
    return os.path.join(path, rel)
