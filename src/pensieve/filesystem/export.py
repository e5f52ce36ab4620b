"""Export a merged container tree as a tar (PAX: nanosecond times, owners, modes, links,
devices, provenance in ``PENSIEVE.*`` PAX records) or into a directory.  Only ever writes the
destination; bytes are streamed from the evidence, never held whole in memory."""

from __future__ import annotations

import os
import stat as statmod
import tarfile

from pensieve.evidence import EvidenceError
from pensieve.filesystem.layered import LayeredView
from pensieve.records import FileEntry, Problem

_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _tarinfo(e: FileEntry) -> tarfile.TarInfo | None:
    kind = _TYPES.get(e.type)
    if kind is None:
        return None  # sockets cannot be archived
    name = e.path.lstrip("/") or "."
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = (e.mode or 0) & 0o7777
    ti.uid, ti.gid = e.uid or 0, e.gid or 0
    ti.mtime = e.mtime or 0
    ti.size = e.size or 0 if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        ti.linkname = e.link_target or ""
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE) and e.rdev:
        ti.devmajor, ti.devminor = os.major(e.rdev), os.minor(e.rdev)
    ti.pax_headers = {
        "PENSIEVE.layer": e.layer or "",
        "PENSIEVE.layer_role": e.layer_role or "",
        "mtime": f"{e.mtime:.9f}" if e.mtime is not None else "0",
        "atime": f"{e.atime:.9f}" if e.atime is not None else "0",
        "ctime": f"{e.ctime:.9f}" if e.ctime is not None else "0",
    }
    return ti


def export_tar(view: LayeredView, top: str, dest: str) -> tuple[int, list[Problem]]:
    problems: list[Problem] = []
    n = 0
    with tarfile.open(
        dest, "w:gz" if dest.endswith(("gz", "tgz")) else "w", format=tarfile.PAX_FORMAT
    ) as tar:
        for e in view.walk(top):
            ti = _tarinfo(e)
            if ti is None:
                problems.append(Problem(e.path, f"{e.type} entries cannot be archived; skipped"))
                continue
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
            n += 1
    return n, problems


def export_dir(view: LayeredView, top: str, dest: str) -> tuple[int, list[Problem]]:
    """Write the tree into DEST (created).  Devices are skipped (listed as problems) unless
    running as root; owners are set only as root."""
    problems: list[Problem] = []
    os.makedirs(dest, exist_ok=True)
    root_user = os.geteuid() == 0
    dirs: list[tuple[str, FileEntry]] = []
    n = 0
    for e in view.walk(top):
        target = os.path.join(dest, e.path.lstrip("/"))
        try:
            if e.type == "dir":
                os.makedirs(target, exist_ok=True)
                dirs.append((target, e))
                n += 1
                continue
            if os.path.lexists(target):
                os.unlink(target)
            if e.type == "file" and e.host_path:
                with view.evidence.open(e.host_path) as src, open(target, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
            elif e.type == "symlink":
                os.symlink(e.link_target or "", target)
            elif e.type in ("char", "block", "fifo") and root_user or e.type == "fifo":
                kind = {"char": statmod.S_IFCHR, "block": statmod.S_IFBLK, "fifo": statmod.S_IFIFO}[e.type]
                os.mknod(target, kind | ((e.mode or 0) & 0o777), e.rdev or 0)
            else:
                problems.append(Problem(e.path, f"{e.type} not exported to a directory"))
                continue
            _apply_meta(target, e, root_user)
            n += 1
        except (EvidenceError, OSError) as exc:
            problems.append(Problem(e.path, f"not exported: {exc}"))
    for target, e in reversed(dirs):  # after their contents, so mtimes stick
        _apply_meta(target, e, root_user)
    return n, problems


def _apply_meta(target: str, e: FileEntry, root_user: bool) -> None:
    if root_user:
        os.chown(target, e.uid or 0, e.gid or 0, follow_symlinks=False)
    if e.type != "symlink":
        os.chmod(target, (e.mode or 0) & 0o7777)
    if e.mtime is not None:
        os.utime(target, (e.atime or e.mtime, e.mtime), follow_symlinks=False)
