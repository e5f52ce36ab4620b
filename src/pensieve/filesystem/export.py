"""Export a merged container tree as a tar (PAX: nanosecond times, owners, modes, links,
devices, provenance in ``PENSIEVE.*`` PAX records) or into a directory.

Everything is written through :class:`pensieve.output.sink.OutputSink`: the destination is
refused when it resolves into the evidence (every boundary of the host: the evidence itself and
every data root), nothing existing is overwritten, nothing is followed inside it, and a manifest
holds the sha256 of every file written.  Device nodes, FIFOs and sockets are never created on
disk: in a tar they are tar entries; in a directory they are listed in the manifest
(``special_files``) with their type, mode, owner and device number.  Bytes are streamed from the
evidence, never held whole in memory.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Iterable

from pensieve.evidence import EvidenceError
from pensieve.filesystem.layered import LayeredView
from pensieve.output.sink import OutputSink
from pensieve.records import FileEntry, Problem
from pensieve.times import iso_ns

_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_SPECIAL = ("char", "block", "fifo", "socket")


def _pax_time(ns: int | None) -> str:
    if ns is None:
        return "0"
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{sec}.{frac:09d}"


def _tarinfo(e: FileEntry) -> tarfile.TarInfo | None:
    kind = _TYPES.get(e.type)
    if kind is None:
        return None  # sockets cannot be archived
    name = e.path.lstrip("/") or "."
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = (e.mode or 0) & 0o7777
    ti.uid, ti.gid = e.uid or 0, e.gid or 0
    ti.mtime = (e.mtime or 0) // 1_000_000_000
    ti.size = e.size or 0 if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        ti.linkname = e.link_target or ""
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE) and e.rdev:
        ti.devmajor, ti.devminor = os.major(e.rdev), os.minor(e.rdev)
    ti.pax_headers = {
        "PENSIEVE.layer": e.layer or "",
        "PENSIEVE.layer_role": e.layer_role or "",
        "mtime": _pax_time(e.mtime),
        "atime": _pax_time(e.atime),
        "ctime": _pax_time(e.ctime),
    }
    return ti


def _boundaries(view: LayeredView, boundaries: Iterable[str] | None) -> list[str]:
    return list(boundaries) if boundaries is not None else view.evidence.boundaries()


def export_tar(
    view: LayeredView, top: str, dest: str, boundaries: Iterable[str] | None = None
) -> tuple[int, list[Problem]]:
    """Write the tree below TOP as a PAX tar (gzip for ``*gz`` names) at DEST; BOUNDARIES are
    the host's (``host.boundaries()``), the evidence's own by default."""
    problems: list[Problem] = []
    n = 0
    sink = OutputSink(dest, _boundaries(view, boundaries), kind="file")
    try:
        with (
            sink.create() as out,
            tarfile.open(
                fileobj=out,  # type: ignore[arg-type]
                mode="w|gz" if dest.endswith(("gz", "tgz")) else "w|",
                format=tarfile.PAX_FORMAT,
            ) as tar,
        ):
            for e in view.walk(top):
                n += _add_to_tar(tar, view, e, problems)
    finally:
        sink.close()
    return n, problems


def _add_to_tar(tar: tarfile.TarFile, view: LayeredView, e: FileEntry, problems: list[Problem]) -> int:
    ti = _tarinfo(e)
    if ti is None:
        problems.append(Problem(e.path, f"{e.type} entries cannot be archived; skipped"))
        return 0
    if ti.type == tarfile.REGTYPE and e.host_path:
        try:
            with view.evidence.open(e.host_path) as fh:
                tar.addfile(ti, fh)
        except (EvidenceError, OSError) as exc:
            problems.append(Problem(e.host_path, f"unreadable, exported empty: {exc}"))
            ti.size = 0
            tar.addfile(ti)
    else:
        tar.addfile(ti)
    return 1


def _special(e: FileEntry) -> dict:
    return {
        "path": e.path,
        "type": e.type,
        "mode": oct((e.mode or 0) & 0o7777),
        "uid": e.uid,
        "gid": e.gid,
        "rdev": [os.major(e.rdev), os.minor(e.rdev)] if e.rdev else None,
        "mtime": iso_ns(e.mtime),
        "layer": e.layer,
    }


def export_dir(
    view: LayeredView, top: str, dest: str, boundaries: Iterable[str] | None = None
) -> tuple[int, list[Problem]]:
    """Write the tree below TOP into the directory DEST (created).  Devices, FIFOs and sockets
    are listed in the manifest, never created; owners are set only as root."""
    problems: list[Problem] = []
    sink = OutputSink(dest, _boundaries(view, boundaries), kind="dir")
    root_user = os.geteuid() == 0
    dirs: list[tuple[str, FileEntry]] = []
    special: list[dict] = []
    n = 0
    try:
        for e in view.walk(top):
            rel = e.path.lstrip("/")
            if e.type in _SPECIAL:
                special.append(_special(e))
                continue
            try:
                if _write_entry(sink, view, e, rel):
                    if e.type == "dir":
                        dirs.append((rel, e))
                    else:
                        _apply_meta(sink, rel, e, root_user)
                    n += 1
            except (EvidenceError, OSError) as exc:
                problems.append(Problem(e.path, f"not exported: {exc}"))
        for rel, e in reversed(dirs):  # after their contents, so mtimes stick
            try:
                _apply_meta(sink, rel, e, root_user)
            except OSError as exc:
                problems.append(Problem(e.path, f"metadata not applied: {exc}"))
    finally:
        sink.close({"special_files": special} if special else None)
    return n, problems


def _write_entry(sink: OutputSink, view: LayeredView, e: FileEntry, rel: str) -> bool:
    if e.type == "dir":
        if rel:
            sink.mkdir(rel)
        return True
    if e.type == "file" and e.host_path:
        with view.evidence.open(e.host_path) as src, sink.create(rel) as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        return True
    if e.type == "symlink":
        sink.symlink(rel, e.link_target or "")
        return True
    return False


def _apply_meta(sink: OutputSink, rel: str, e: FileEntry, root_user: bool) -> None:
    """Owner (as root), mode and times of an entry the sink just wrote (never through a link:
    the sink created every component of the path itself)."""
    target = posixpath.join(sink.path, rel) if rel else sink.path
    if root_user:
        os.chown(target, e.uid or 0, e.gid or 0, follow_symlinks=False)
    if e.type != "symlink":
        os.chmod(target, (e.mode or 0) & 0o7777)
    if e.mtime is not None:
        os.utime(target, ns=(e.atime or e.mtime, e.mtime), follow_symlinks=False)
