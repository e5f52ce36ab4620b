"""``fs``: browse a container's (or image's) merged filesystem with per-file layer provenance."""

from __future__ import annotations

import sys

from pensieve.commands.common import (
    EPILOG,
    Commands,
    UsageError,
    arg,
    err,
    full_ids,
    open_host,
    refuse_inside_evidence,
)
from pensieve.errors import NotFound
from pensieve.output import columns
from pensieve.records import FileEntry

COMMANDS = Commands()
command = COMMANDS.command


def _view(o):
    from pensieve.api import target_view

    host = open_host(o.source)
    _, v = target_view(host, o.target)
    return host, v


@command(
    "ls",
    "list a directory of the merged filesystem",
    arg("path", nargs="?", default="/"),
    arg("-R", "--recursive", action="store_true", help="recurse into directories"),
    arg("-l", "--long", action="store_true", help="also the history step and shadowed layers"),
)
def cmd_fs_ls(o):
    """List a directory of the merged filesystem, each entry with its providing layer."""
    import posixpath

    from pensieve.output.render import emit

    host, v = _view(o)
    if o.recursive:
        entries = v.walk(o.path)
    else:
        r = v.resolve(o.path)
        if r.stat.is_dir:
            entries = (v.stat(posixpath.join(r.path, n)) for n in v.listdir(r.path))
        else:
            entries = iter([v.entry(r)])
    emit(entries, o.fmt, columns.file_entries(full_ids(o), long=o.long), record_type=FileEntry)
    return host.problems


@command(
    "stat",
    "one entry with its providing layer, what it shadows, and its sha256",
    arg("path"),
    arg("-L", "--follow", action="store_true", help="follow a final symlink (inside the container root)"),
)
def cmd_fs_stat(o):
    """One entry with its providing layer and what it shadows."""
    from pensieve.output.render import emit_one
    from pensieve.util import sha256_stream

    host, v = _view(o)
    e = v.stat(o.path, follow=o.follow)
    if e.type == "file" and e.host_path:
        with host.evidence.open(e.host_path) as fh:
            e.sha256 = sha256_stream(fh)
    emit_one(e, o.fmt)
    return host.problems


@command("cat", "write a file's bytes to stdout", arg("path"), output=False)
def cmd_fs_cat(o):
    """Write a file's bytes to stdout (symlinks followed inside the container root)."""
    host, v = _view(o)
    out = sys.stdout.buffer
    with v.open(o.path) as fh:
        while block := fh.read(1 << 20):
            out.write(block)
    out.flush()
    return host.problems


@command(
    "find",
    "find entries by name, type, providing layer and time",
    arg("path", nargs="?", default="/"),
    arg("--name", dest="pattern", help="shell glob on the file name"),
    arg("--type", dest="kind", choices=["f", "d", "l", "c", "b", "p", "s"], help="entry type"),
    arg("--layer", help="only entries provided by this layer (cache id prefix, or image|init|rw)"),
    arg("--newer", help="only entries modified after this ISO time (UTC)"),
    arg("--hash", dest="do_hash", action="store_true", help="add sha256 of regular files"),
)
def cmd_fs_find(o):
    """Find entries by name, type, providing layer and modification time."""
    import fnmatch
    import posixpath
    from datetime import datetime

    from pensieve.output.render import emit
    from pensieve.util import sha256_stream

    types = {"f": "file", "d": "dir", "l": "symlink", "c": "char", "b": "block", "p": "fifo", "s": "socket"}
    after = None
    if o.newer:
        try:
            after = int(datetime.fromisoformat(o.newer.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError as exc:
            raise UsageError(f"--newer: not an ISO time: {o.newer}") from exc
    host, v = _view(o)
    if o.layer and not any(x.role == o.layer or (x.cache_id or "").startswith(o.layer) for x in v.layers):
        roles = "|".join(dict.fromkeys(x.role for x in v.layers))
        raise NotFound(
            f"not in the evidence: no layer {o.layer} in {o.target} (a cache id prefix or {roles})"
        )

    def keep(e) -> bool:
        if o.pattern and not fnmatch.fnmatchcase(posixpath.basename(e.path), o.pattern):
            return False
        if o.kind and e.type != types[o.kind]:
            return False
        if o.layer and not (e.layer_role == o.layer or (e.layer or "").startswith(o.layer)):
            return False
        return not (after is not None and (e.mtime or 0) <= after)

    def rows():
        for e in v.walk(o.path):
            if keep(e):
                if o.do_hash and e.type == "file" and e.host_path:
                    with host.evidence.open(e.host_path) as fh:
                        e.sha256 = sha256_stream(fh)
                yield e

    emit(rows(), o.fmt, columns.file_entries(full_ids(o), sha256=o.do_hash), record_type=FileEntry)
    return host.problems


@command(
    "export",
    "export the merged tree as a tar (keeps metadata) or into a directory",
    arg("dest", metavar="DEST", help="DEST.tar / .tar.gz for a tar, else a directory (outside the evidence)"),
    arg("--path", dest="top", default="/", help="export only this subtree (default /)"),
    arg("--tar", dest="as_tar", action="store_true", help="write a tar whatever DEST's name"),
    output=False,
)
def cmd_fs_export(o):
    """Export the merged tree: a PAX tar keeping mode, owner, nanosecond times, links, devices and
    each entry's layer (DEST.tar), or a directory."""
    from pensieve.filesystem.export import export_dir, export_tar

    host, v = _view(o)
    refuse_inside_evidence(host, o.dest)
    if o.as_tar or o.dest.endswith((".tar", ".tar.gz", ".tgz")):
        n, problems = export_tar(v, o.top, o.dest, host.boundaries())
    else:
        n, problems = export_dir(v, o.top, o.dest, host.boundaries())
    err(f"exported {n} entries to {o.dest}", "32")
    return host.problems + problems


def add_parser(subparsers) -> None:
    """Add ``fs SOURCE TARGET ACTION`` and its actions to the CLI's sub-parsers."""
    fs = subparsers.add_parser(
        "fs",
        help="browse a container's (or image's) merged filesystem with per-file layer provenance",
        description=(
            "Browse the merged filesystem of a container (or image) with per-file layer provenance. "
            "TARGET is a container (id, prefix, name) or an image (id, tag). Symlinks resolve inside "
            "the container root only."
        ),
        epilog=EPILOG,
    )
    fs.add_argument("source", metavar="SOURCE")
    fs.add_argument("target", metavar="TARGET")
    COMMANDS.add_parser(fs.add_subparsers(dest="fs_command", metavar="ACTION", required=True))
