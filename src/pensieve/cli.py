"""The ``pensieve`` command: a thin shell over the library; every command is a library call.

argparse, not a heavier framework: a forensic CLI is started hundreds of times from scripts and
its start-up time counts.  Commands register themselves with ``@command``; each returns the
problems it met (warnings) and writes its records through ``pensieve.output.render``.

Exit codes (also in the README):
  0  done
  1  internal error (a bug: rerun with --debug for the traceback)
  2  usage error (including an output destination inside the evidence)
  3  the source is unusable (missing, unreadable, no Docker data root in it)
  4  the named container, image or path is not in the evidence
  5  done, but some evidence could not be read: warnings on stderr, the rest is in the output
  6  done, and the evidence shows tampering (`verify`: a layer or image does not match its digest)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from pensieve import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_SOURCE, EXIT_NOT_FOUND, EXIT_PARTIAL = 0, 1, 2, 3, 4, 5

EPILOG = (
    "exit codes: 0 ok, 1 internal error, 2 usage, 3 unusable source, 4 not found, "
    "5 finished with warnings (some evidence unreadable; the rest is in the output), "
    "6 tampering found (verify)"
)


from pensieve.errors import UsageError  # noqa: E402 - re-exported for the command modules
from pensieve.times import iso_ns  # noqa: E402

# ---- small helpers --------------------------------------------------------------------------


def _color(text: str, code: str, stream) -> str:
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[{code}m{text}\033[0m"
    return text


def _err(text: str, code: str = "31") -> None:
    print(_color(text, code, sys.stderr), file=sys.stderr)


def _short(value: str | None, n: int = 12) -> str:
    if not value:
        return ""
    return value.split(":", 1)[-1][:n]


def _warn(problems: list) -> None:
    seen = set()
    for p in problems:
        key = (p.source, p.message)
        if key not in seen:
            seen.add(key)
            _err(f"warning: {p.source}: {p.message}", "33")


def _host(source: str):
    """The host behind SOURCE: a DockerHost over a directory (host root, data root) or a disk
    image (raw, split raw, E01, qcow2; ``disk.img@2`` / ``disk.img@offset=N`` picks a partition),
    or an ArchiveHost over an image archive (docker save, OCI layout or archive, docker export)."""
    if _source_kind(source) == "archive":
        from pensieve.images.archive import open_archive  # imported only for archives (~10 ms)

        return open_archive(source)
    from pensieve.engines.docker import DockerHost
    from pensieve.evidence import open_evidence

    evidence = open_evidence(source)
    host = DockerHost(evidence)
    host.problems.extend(getattr(evidence, "problems", []))  # skipped partitions and the like
    return host


def _source_kind(source: str) -> str:
    """dir | archive | disk, from the path and the first bytes (no engine imported)."""
    if os.path.isdir(source):
        layout = os.path.isfile(os.path.join(source, "manifest.json")) or (
            os.path.isfile(os.path.join(source, "index.json"))
            and os.path.exists(os.path.join(source, "oci-layout"))
        )
        return "archive" if layout else "dir"
    if not os.path.exists(source):
        base = source.rsplit("@", 1)[0]
        if "@" in source and os.path.isfile(base):
            return "disk"  # disk.img@2, disk.img@offset=N
        from pensieve.evidence import EvidenceError

        raise EvidenceError(f"source does not exist: {source}")
    return "archive" if _looks_like_archive(source) else "disk"


_ARCHIVE_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")


def _looks_like_archive(path: str) -> bool:
    """A tar (ustar magic at 257), or a gzip/zstd/xz/bzip2 stream (a compressed tar)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return True  # let the archive opener report it
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"


def _is_archive(host) -> bool:
    from pensieve.images.archive import ArchiveHost

    return isinstance(host, ArchiveHost)


def _refuse_inside_evidence(host, dest: str) -> None:
    real = os.path.realpath(dest)
    for image_file in getattr(host.evidence, "image_files", None) or []:
        if real == os.path.realpath(image_file):
            raise UsageError(f"refusing to write over the evidence: {dest}")
    archive = getattr(host, "source", None)  # an image archive: the file, or the layout directory
    root = getattr(host.evidence, "root", None) or (archive if archive and os.path.isdir(archive) else None)
    if archive is not None and real == archive:
        raise UsageError(f"refusing to write over the evidence: {dest}")
    if root is None:
        return
    if real == root or real.startswith(root.rstrip("/") + "/"):
        raise UsageError(f"refusing to write inside the evidence: {dest}")


def _when(t: int | str | None) -> str:
    """A record time (int ns; a string from a reader not yet converted) to the second."""
    return ((iso_ns(t) if isinstance(t, int) else t) or "")[:19]


def _iso(t: int | None) -> str:
    return _when(t).replace("T", " ")


# ---- command registry -----------------------------------------------------------------------

Arg = tuple[tuple[str, ...], dict[str, Any]]
_COMMANDS: list[tuple[str, str, list[Arg], bool, Callable]] = []
_FS_COMMANDS: list[tuple[str, str, list[Arg], bool, Callable]] = []


def arg(*names: str, **kwargs: Any) -> Arg:
    return names, kwargs


def command(name: str, help: str, *args: Arg, output: bool = True, fs: bool = False) -> Callable:
    """Register a command: ``fn(opts) -> problems``; ``output`` adds --json/--jsonl/--csv."""

    def register(fn: Callable) -> Callable:
        (_FS_COMMANDS if fs else _COMMANDS).append((name, help, list(args), output, fn))
        return fn

    return register


def _add_output(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", dest="fmt", action="store_const", const="json", help="one JSON document")
    g.add_argument("--jsonl", dest="fmt", action="store_const", const="jsonl", help="one JSON object a line")
    g.add_argument("--csv", dest="fmt", action="store_const", const="csv", help="CSV with a header row")
    g.add_argument("--format", dest="fmt", choices=["table", "json", "jsonl", "csv"], help="output format")
    p.set_defaults(fmt="table")


def _add(sub, spec) -> None:
    name, help_text, args, output, fn = spec
    p = sub.add_parser(name, help=help_text, description=(fn.__doc__ or help_text).strip(), epilog=EPILOG)
    for names, kwargs in args:
        p.add_argument(*names, **kwargs)
    if output:
        _add_output(p)
    p.set_defaults(func=fn)


#: command groups that live in pensieve.commands.<name>, each with add_parser(subparsers)
COMMAND_MODULES = ("mem", "recover", "carve")


def _add_command_modules(sub) -> None:
    import importlib
    import importlib.util

    for name in COMMAND_MODULES:
        module = f"{__package__}.commands.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pensieve",
        description=(
            "pensieve: container forensics, offline and read-only. SOURCE is a directory (a live "
            "host root /, a mounted or copied host filesystem, a Docker data root), a disk image "
            "(raw, split raw, E01, qcow2; disk.img@N picks partition N), or an image archive (docker "
            "save tar, OCI layout or archive, docker export tar). Nothing in SOURCE is ever written."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"pensieve {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in _COMMANDS:
        _add(sub, spec)
    _add_command_modules(sub)
    fs = sub.add_parser(
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
    fs_sub = fs.add_subparsers(dest="fs_command", metavar="ACTION", required=True)
    for spec in _FS_COMMANDS:
        _add(fs_sub, spec)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns (and, as a console script, exits with) the documented exit code."""
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return int(exc.code or 0)
    from pensieve.errors import EvidenceError, LookupFailed, NotADataRoot, NotFound

    try:
        problems = opts.func(opts) or []
    except UsageError as exc:
        _err(f"pensieve: error: {exc}")
        return EXIT_USAGE
    except (LookupFailed, NotFound) as exc:
        _err(f"error: {exc}")
        return EXIT_NOT_FOUND
    except (NotADataRoot, EvidenceError) as exc:
        _err(f"error: {exc}")
        return EXIT_SOURCE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence, documented exit 1
        if opts.debug:
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)")
        return EXIT_INTERNAL
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    tampered = [p for p in problems if type(p).__name__ == "_Tampered"]
    problems = [p for p in problems if p not in tampered]
    if problems:
        _warn(problems)
    if tampered:
        _err("tampering found: see the output", "31")
        return EXIT_TAMPERED
    return EXIT_PARTIAL if problems else EXIT_OK


def console() -> None:
    sys.exit(main())


SOURCE = arg(
    "source",
    metavar="SOURCE",
    help="host root or Docker data root (a directory), or an image archive (docker save, OCI, docker export)",
)

# ---- inventory ------------------------------------------------------------------------------


def _state(c) -> str:
    s = c.state
    if s == "exited" and c.exit_code is not None:
        s = f"exited ({c.exit_code})"
    if c.oom_killed:
        s += " OOM-killed"
    return s


@command("roots", "Docker data roots found in SOURCE and how they were found", SOURCE)
def cmd_roots(o):
    """Docker data roots found in SOURCE, their layout and storage drivers, and how they were found."""
    from pensieve.output.render import emit

    host = _host(o.source)
    if _is_archive(host):
        rows = [{"path": host.source, "layout": host.layout, "drivers": [], "found": "image archive"}]
    else:
        rows = [
            {"path": r.path, "layout": r.layout, "drivers": r.drivers(), "found": r.how_found}
            for r in host.roots
        ]
    emit(
        rows,
        o.fmt,
        [
            ("DATA ROOT", lambda r: r["path"]),
            ("LAYOUT", lambda r: r["layout"]),
            ("DRIVERS", lambda r: r["drivers"]),
            ("FOUND BY", lambda r: r["found"]),
        ],
    )
    return host.problems


@command("containers", "every container: identity, image, state, settings, mounts, layers", SOURCE)
def cmd_containers(o):
    """Every container: id, name, image, state (with exit code, OOM), times, command, env, labels,
    ports, mounts, networks, risky settings, log driver and path, storage driver and layer chain."""
    from pensieve.output.render import emit

    host = _host(o.source)
    cs = host.containers()
    emit(
        cs,
        o.fmt,
        [
            ("CONTAINER", lambda c: _short(c.id)),
            ("NAME", lambda c: c.name),
            ("IMAGE", lambda c: c.image or _short(c.image_id)),
            ("STATE", _state),
            ("CREATED", lambda c: _when(c.created)),
            ("COMMAND", lambda c: " ".join(c.command)[:40]),
            ("RISKS", lambda c: c.risks),
            ("PROBLEMS", lambda c: [p.message for p in c.problems]),
        ],
        title=f"{len(cs)} containers",
    )
    return host.problems


@command("images", "every image: tags, digests, created, config, layers", SOURCE)
def cmd_images(o):
    """Every image (build-step images included): tags, digests, created, config, diff ids, chain
    ids, cache ids, sizes."""
    from pensieve.output.render import emit

    host = _host(o.source)
    imgs = host.images()
    parents = {i.parent for i in imgs if i.parent}
    emit(
        imgs,
        o.fmt,
        [
            ("IMAGE ID", lambda i: _short(i.id)),
            ("TAGS", lambda i: i.tags or ("<none> (build step)" if i.id in parents else "<none>")),
            ("CREATED", lambda i: _when(i.created)),
            ("LAYERS", lambda i: len(i.diff_ids)),
            ("SIZE", lambda i: i.size),
            ("CMD", lambda i: " ".join((i.entrypoint or []) + (i.cmd or []))[:40]),
        ],
        title=f"{len(imgs)} images",
    )
    return host.problems


@command("history", "an image's build history aligned to its layers", SOURCE, arg("image", metavar="IMAGE"))
def cmd_history(o):
    """An image's build history, each step aligned to the layer it produced."""
    from pensieve.output.render import emit

    host = _host(o.source)
    img = host.image(o.image)
    emit(
        img.history,
        o.fmt,
        [
            ("CREATED", lambda s: _when(s.created)),
            ("CREATED BY", lambda s: (s.created_by or (f"({s.comment})" if s.comment else ""))[:70]),
            ("LAYER", lambda s: "(empty)" if s.empty_layer else _short(s.cache_id)),
            ("DIFF ID", lambda s: _short(s.diff_id)),
            ("SIZE", lambda s: s.size),
        ],
        title=f"history of {_short(img.id)} {' '.join(img.tags)}",
    )
    return host.problems


@command("volumes", "volumes, their data and the containers mounting them", SOURCE)
def cmd_volumes(o):
    """Named and anonymous volumes, their data and the containers that mount them."""
    from pensieve.output.render import emit

    host = _host(o.source)
    vols = host.volumes()
    emit(
        vols,
        o.fmt,
        [
            ("VOLUME", lambda v: v.name if not v.anonymous else _short(v.name)),
            ("DRIVER", lambda v: v.driver),
            ("CREATED", lambda v: _when(v.created)),
            ("FILES", lambda v: v.file_count),
            ("BYTES", lambda v: v.size),
            ("USED BY", lambda v: [_short(c) for c in v.used_by]),
            ("LABELS", lambda v: [f"{k}={x}" for k, x in v.labels.items()]),
        ],
    )
    return host.problems


@command(
    "logs",
    "a container's log (json-file and local drivers, rotated and compressed files included)",
    SOURCE,
    arg("container", metavar="CONTAINER"),
    arg("--stream", choices=["stdout", "stderr"], help="only this stream"),
)
def cmd_logs(o):
    """A container's log: json-file and local drivers, rotated and compressed files, oldest first."""
    import posixpath

    from pensieve.engines.docker.logs import log_files, read_logs
    from pensieve.output.render import emit

    host = _host(o.source)
    c = host.container(o.container)
    problems = list(host.problems)
    cdir = posixpath.dirname(c.config_path or "")
    files = log_files(host.evidence, cdir, c.log_path, c.log_driver)
    if not files:
        _err(f"no log files for {_short(c.id)} (driver {c.log_driver or 'unknown'})", "33")
    lines = read_logs(host.evidence, c.id, files, problems)
    if o.stream:
        lines = (line for line in lines if line.stream == o.stream)
    if o.fmt == "table":
        out = sys.stdout
        for line in lines:
            out.write(f"{iso_ns(line.time) or '':<31} {line.stream or '':<6} {line.message}\n")
    else:
        emit(lines, o.fmt)
    return problems


# ---- layered filesystem ---------------------------------------------------------------------


def _fs_columns(long: bool):
    cols = [
        ("TYPE", lambda e: e.type),
        ("MODE", lambda e: oct(e.mode & 0o7777) if e.mode is not None else ""),
        ("UID:GID", lambda e: f"{e.uid}:{e.gid}"),
        ("SIZE", lambda e: e.size),
        ("MTIME", lambda e: _iso(e.mtime)),
        ("PATH", lambda e: e.path + (f" -> {e.link_target}" if e.link_target else "")),
        ("LAYER", lambda e: f"{e.layer_role}:{_short(e.layer)}"),
    ]
    if long:
        cols.append(("CREATED BY", lambda e: (e.created_by or "")[:50]))
        cols.append(("SHADOWS", lambda e: [_short(s) for s in e.shadows]))
    return cols


def _view(o):
    from pensieve.api import target_view

    host = _host(o.source)
    _, v = target_view(host, o.target)
    return host, v


@command(
    "ls",
    "list a directory of the merged filesystem",
    arg("path", nargs="?", default="/"),
    arg("-R", "--recursive", action="store_true", help="recurse into directories"),
    arg("-l", "--long", action="store_true", help="also the history step and shadowed layers"),
    fs=True,
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
    emit(entries, o.fmt, _fs_columns(o.long))
    return host.problems


@command(
    "stat",
    "one entry with its providing layer, what it shadows, and its sha256",
    arg("path"),
    arg("-L", "--follow", action="store_true", help="follow a final symlink (inside the container root)"),
    fs=True,
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


@command("cat", "write a file's bytes to stdout", arg("path"), output=False, fs=True)
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
    fs=True,
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

    cols = _fs_columns(False) + ([("SHA256", lambda e: e.sha256)] if o.do_hash else [])
    emit(rows(), o.fmt, cols)
    return host.problems


@command(
    "export",
    "export the merged tree as a tar (keeps metadata) or into a directory",
    arg("dest", metavar="DEST", help="DEST.tar / .tar.gz for a tar, else a directory (outside the evidence)"),
    arg("--path", dest="top", default="/", help="export only this subtree (default /)"),
    arg("--tar", dest="as_tar", action="store_true", help="write a tar whatever DEST's name"),
    output=False,
    fs=True,
)
def cmd_fs_export(o):
    """Export the merged tree: a PAX tar keeping mode, owner, nanosecond times, links, devices and
    each entry's layer (DEST.tar), or a directory."""
    from pensieve.filesystem.export import export_dir, export_tar

    host, v = _view(o)
    _refuse_inside_evidence(host, o.dest)
    from pensieve.engines.base import Host

    bounds = host.boundaries() if isinstance(host, Host) else None  # ArchiveHost: its evidence's
    if o.as_tar or o.dest.endswith((".tar", ".tar.gz", ".tgz")):
        n, problems = export_tar(v, o.top, o.dest, bounds)
    else:
        n, problems = export_dir(v, o.top, o.dest, bounds)
    _err(f"exported {n} entries to {o.dest}", "32")
    return host.problems + problems


# ---- diff and attribution -------------------------------------------------------------------


_ENGINE_OPS = {"added": "A", "modified": "C", "deleted": "D"}


@command(
    "diff",
    "what a container changed against its image: added, modified, deleted",
    SOURCE,
    arg("container", metavar="CONTAINER"),
    arg(
        "--recover",
        dest="recover_dir",
        metavar="DIR",
        help="copy lower-layer originals of deleted/modified files",
    ),
    arg("--no-hash", action="store_true", help="skip content hashes (content-only changes go unseen)"),
    arg("--engine-view", action="store_true", help="only what `docker diff` lists, in its A/C/D form"),
)
def cmd_diff(o):
    """What a container changed against its image: added, modified (copied up), deleted, with type,
    size, sha256, mode, owner, times and what changed against the lower copy."""
    from pensieve import api
    from pensieve.output.render import emit

    host = _host(o.source)
    if o.recover_dir:
        _refuse_inside_evidence(host, o.recover_dir)
    result = api.diff(host, o.container, hash_files=not o.no_hash)
    changes = result.changes
    if o.engine_view:
        changes = [c for c in changes if c.engine_reports]
    if o.engine_view and o.fmt == "table":
        for c in changes:
            sys.stdout.write(f"{_ENGINE_OPS[c.change]} {c.path}\n")
    else:
        emit(
            changes,
            o.fmt,
            [
                ("CHANGE", lambda c: c.change if c.engine_reports else c.change + "*"),
                ("TYPE", lambda c: c.type),
                ("PATH", lambda c: c.path),
                ("WHAT", lambda c: c.what_changed),
                ("SIZE", lambda c: c.size),
                ("MODE", lambda c: c.mode),
                ("MTIME", lambda c: _when(c.mtime)),
                ("SHA256", lambda c: (c.sha256 or "")[:16]),
            ],
            title="* = not listed by `docker diff`",
        )
    if o.recover_dir:
        import json

        c = host.container(o.container)
        manifest = api.recover(host.evidence, c.layers, result.changes, o.recover_dir)
        os.makedirs(o.recover_dir, exist_ok=True)
        with open(os.path.join(o.recover_dir, "pensieve-recovered.json"), "w") as fh:
            json.dump(manifest, fh, indent=2)
        _err(f"recovered {len(manifest)} original entries into {o.recover_dir}", "32")
    return host.problems + result.problems


@command(
    "whence",
    "attribute a path inside a data root to its layer, images, containers and container path",
    SOURCE,
    arg("hostpath", metavar="HOSTPATH", help="a path in the evidence, or as named on the original host"),
)
def cmd_whence(o):
    """Attribute a path inside a data root (say overlay2/<id>/diff/...) to its layer, the images that
    hold it, the containers that use it, and the path inside the container."""
    from pensieve import api
    from pensieve.output.render import emit_one

    host = _host(o.source)
    path = o.hostpath
    from_host = getattr(host.evidence, "from_host_path", None)
    if from_host is not None and os.path.isabs(path) and os.path.exists(path):
        mapped = from_host(path)
        if mapped is not None:
            path = mapped
    emit_one(api.whence(host, path), o.fmt)
    return host.problems


# ---- integrity ------------------------------------------------------------------------------

EXIT_TAMPERED = 6


@command(
    "verify",
    "check every image layer (host: rebuilt from its directory; archive: its blob) against its digest",
    SOURCE,
    arg("image", metavar="IMAGE", nargs="?", help="only this image's layers (id, tag, digest)"),
    arg("-v", "--verbose", action="store_true", help="one row per differing path"),
    arg("--images", dest="show_images", action="store_true", help="image verdicts instead of layers"),
    arg("--findings", dest="show_findings", action="store_true", help="findings (for reports and hunting)"),
    arg("--export-layer", metavar="CHAIN_ID", help="write this layer's rebuilt tar stream to --to"),
    arg("--to", metavar="FILE", help="destination of --export-layer (outside the evidence)"),
)
def cmd_verify(o):
    """Rebuild each layer's tar stream from the layer directory and its tar-split record, hash it
    and compare with the diff id; recompute chain ids and image ids. Tampered layers name each
    differing path and how it differs (content, size, mode, owner, missing, added ...).
    On an image archive: each layer blob's sha256 against its descriptor and its uncompressed
    sha256 against the config's diff id, streamed; config digests. Exit 6 when something is
    tampered."""
    from pensieve.engines.docker import LookupFailed
    from pensieve.images import verify_layers as integrity
    from pensieve.output.render import emit

    host = _host(o.source)
    archive = _is_archive(host)
    if archive:
        from pensieve.images import verify_archive as archive_verify
    if o.export_layer:
        if not o.to:
            raise UsageError("--export-layer needs --to FILE")
        _refuse_inside_evidence(host, o.to)
        chain = o.export_layer if o.export_layer.startswith("sha256:") else "sha256:" + o.export_layer
        try:
            with open(o.to, "wb") as fh:
                if archive:
                    v = archive_verify.export_layer(host, chain, fh.write)
                else:
                    v = integrity.rebuild_layer(host, chain, fh.write)
        except LookupError as exc:
            raise LookupFailed(str(exc)) from None
        _err(f"layer {chain[7:19]}: {v.status}; {v.stream_size or 0} bytes written to {o.to}", "32")
        return host.problems + _tampered_exit(v.status == integrity.TAMPERED)
    if archive:
        layers = archive_verify.verify_archive(host, o.image)
        want_images = o.show_images or o.show_findings
        images = archive_verify.verify_archive_images(host, layers, o.image) if want_images else []
    else:
        layers = integrity.verify_host(host, o.image)
        images = (
            integrity.verify_image_ids(host, layers, o.image) if (o.show_images or o.show_findings) else []
        )
    if o.show_findings:
        emit(
            integrity.findings(layers, images),
            o.fmt,
            [
                ("SEVERITY", lambda f: f.severity),
                ("TITLE", lambda f: f.title),
                ("SUBJECT", lambda f: f.subject),
            ],
        )
    elif o.show_images:
        emit(
            images,
            o.fmt,
            [
                ("STATUS", lambda i: i.status),
                ("IMAGE ID", lambda i: _short(i.id)),
                ("TAGS", lambda i: i.tags),
                ("PROBLEMS", lambda i: [f"{p.kind}: {p.detail}" for p in i.problems]),
            ],
        )
    elif o.verbose and o.fmt == "table":
        rows = [(v, p) for v in layers for p in v.problems] or []
        emit(
            rows,
            o.fmt,
            [
                ("LAYER", lambda r: _short(r[0].chain_id)),
                ("STATUS", lambda r: r[0].status),
                ("PATH", lambda r: r[1].path or "(layer)"),
                ("KIND", lambda r: r[1].kind),
                ("EXPECTED", lambda r: r[1].expected),
                ("ACTUAL", lambda r: r[1].actual),
            ],
            title=f"{len(layers)} layers, {sum(v.status == 'ok' for v in layers)} ok",
        )
    else:
        emit(
            layers,
            o.fmt,
            [
                ("STATUS", lambda v: v.status),
                ("CHAIN ID", lambda v: _short(v.chain_id)),
                ("DIFF ID", lambda v: _short(v.diff_id)),
                ("ENTRIES", lambda v: v.entries),
                ("MIB", lambda v: round((v.stream_size or 0) / 1048576, 1)),
                ("PROBLEMS", lambda v: _kinds(v.problems)),
                ("IMAGES", lambda v: _more(v.images)),
                ("CONTAINERS", lambda v: _more(v.containers)),
                ("REASON", lambda v: v.reason),
            ],
            title=f"{len(layers)} layers, {sum(v.status == 'ok' for v in layers)} ok",
        )
    problems = list(host.problems)
    if any(v.status == integrity.UNVERIFIABLE for v in layers):
        problems += [_unverifiable(v) for v in layers if v.status == integrity.UNVERIFIABLE]
    tampered = any(v.status == integrity.TAMPERED for v in layers) or any(
        i.status == integrity.TAMPERED for i in images
    )
    return problems + _tampered_exit(tampered)


# ---- compare ----------------------------------------------------------------------------------


@command(
    "compare",
    "an image on two sources (host vs archive, two archives, two hosts): differing layers and files",
    arg("source_a", metavar="A", help="host root, data root or image archive"),
    arg("source_b", metavar="B", help="host root, data root or image archive"),
    arg(
        "--image",
        dest="image_a",
        metavar="REF_A",
        help="the image in A (default: every image of A found in B)",
    ),
    arg(
        "--image-b",
        dest="image_b",
        metavar="REF_B",
        help="the image in B (default: REF_A's id, else its tags)",
    ),
    arg("--path", dest="top", default="/", help="compare only this subtree (default /)"),
    arg("--layers", dest="layers_only", action="store_true", help="layers only, no file walk"),
    arg("--no-hash", action="store_true", help="skip content hashes (content-only changes go unseen)"),
)
def cmd_compare(o):
    """Match images of A and B (by id, else by tag, or as named), list their layers by diff id
    (shared, only in A, only in B) and every file that differs between the two merged trees:
    added (only in B), deleted (only in A) or changed (content sha256, size, mode, owner, link
    target, type, xattrs, mtime), each side with the layer that provides it."""
    from pensieve.engines.docker import LookupFailed
    from pensieve.images.compare import compare_images, match_images
    from pensieve.output.render import dumps, emit

    host_a, host_b = _host(o.source_a), _host(o.source_b)
    rest_a: list = []
    rest_b: list = []
    if o.image_a:
        ia = host_a.image(o.image_a)
        if o.image_b:
            pairs = [(ia, host_b.image(o.image_b), "given")]
        else:
            by_id = [i for i in host_b.images() if i.id == ia.id]
            by_tag = [i for i in host_b.images() if set(i.tags) & set(ia.tags)]
            if not by_id and not by_tag:
                raise LookupFailed(
                    f"image {o.image_a!r} of A is not in B by id or tag: name it with --image-b"
                )
            pairs = [(ia, (by_id or by_tag)[0], "id" if by_id else "tag")]
    elif o.image_b:
        raise UsageError("--image-b needs --image")
    else:
        pairs, rest_a, rest_b = match_images(host_a, host_b)
        if not pairs:
            raise LookupFailed("no image of A is in B by id or tag: name them with --image and --image-b")
    results = [
        compare_images(
            host_a, a, host_b, b, how, hash_files=not o.no_hash, top=o.top, files=not o.layers_only
        )
        for a, b, how in pairs
    ]
    problems = list(host_a.problems) + list(host_b.problems) + [p for c in results for p in c.problems]
    if o.fmt == "json":
        doc = {
            "a": results[0].source_a,
            "b": results[0].source_b,
            "comparisons": results,
            "only_in_a": [{"id": i.id, "tags": i.tags} for i in rest_a if i.tags],
            "only_in_b": [{"id": i.id, "tags": i.tags} for i in rest_b if i.tags],
        }
        sys.stdout.write(dumps(doc) + "\n")
        return problems
    if o.fmt in ("jsonl", "csv"):
        rows = (
            {
                "image_a": c.image_a,
                "image_b": c.image_b,
                "change": f.change,
                "path": f.path,
                "what": ",".join(f.what),
                "type_a": f.type_a,
                "type_b": f.type_b,
                "sha256_a": (f.a or {}).get("sha256"),
                "sha256_b": (f.b or {}).get("sha256"),
                "layer_a": (f.a or {}).get("diff_id"),
                "layer_b": (f.b or {}).get("diff_id"),
                "a": f.a,
                "b": f.b,
            }
            for c in results
            for f in c.files
        )
        emit(rows, o.fmt)
        return problems
    for c in results:
        name_a = c.tags_a[0] if c.tags_a else _short(c.image_a)
        name_b = c.tags_b[0] if c.tags_b else _short(c.image_b)
        shared = sum(m.status == "shared" for m in c.layers)
        emit(
            c.layers,
            "table",
            [
                (
                    "LAYER",
                    lambda m: {"shared": "shared", "only-a": "only in A", "only-b": "only in B"}[m.status],
                ),
                ("DIFF ID", lambda m: _short(m.diff_id)),
                ("A", lambda m: "" if m.index_a is None else f"#{m.index_a} {_short(m.layer_a)}"),
                ("B", lambda m: "" if m.index_b is None else f"#{m.index_b} {_short(m.layer_b)}"),
                ("CREATED BY", lambda m: (m.created_by or "")[:60]),
            ],
            title=(
                f"A {name_a} ({_short(c.image_a)}) vs B {name_b} ({_short(c.image_b)}), matched by "
                f"{c.matched_by}{', same image id' if c.same_id else ''}: {shared} shared layers"
            ),
        )
        if not o.layers_only:
            emit(
                c.files,
                "table",
                [
                    ("CHANGE", lambda f: f.change),
                    ("PATH", lambda f: f.path),
                    ("WHAT", lambda f: f.what),
                    ("A", lambda f: _side(f.a)),
                    ("B", lambda f: _side(f.b)),
                ],
                title=f"{len(c.files)} entries differ" + (f" under {o.top}" if o.top != "/" else ""),
            )
    for label, rest in (("A", rest_a), ("B", rest_b)):
        tagged = [i for i in rest if i.tags]
        if tagged:
            _err(f"only in {label}: " + ", ".join(i.tags[0] for i in tagged), "33")
    return problems


def _side(d) -> str:
    if not d:
        return ""
    bits = [d["type"], d["mode"] or "", f"{d['uid']}:{d['gid']}"]
    if d.get("size") is not None:
        bits.append(str(d["size"]))
    if d.get("sha256"):
        bits.append(d["sha256"][:12])
    if d.get("link_target"):
        bits.append("-> " + d["link_target"])
    bits.append("layer " + _short(d.get("diff_id") or d.get("layer")))
    return " ".join(bits)


def _kinds(problems) -> str:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return ", ".join(f"{k} {n}" if n > 1 else k for k, n in counts.items())


def _more(items: list[str]) -> str:
    return "" if not items else items[0] + (f" +{len(items) - 1}" if len(items) > 1 else "")


def _unverifiable(v):
    from pensieve.records import Problem

    return Problem(
        v.tar_split or v.layer_path or v.chain_id, f"layer {_short(v.chain_id)} unverifiable: {v.reason}"
    )


class _Tampered:
    """A marker in a command's problem list: exit 6 (evidence of tampering) after the output."""

    source = "verify"
    message = "tampering found"


def _tampered_exit(tampered: bool) -> list:
    return [_Tampered()] if tampered else []


if __name__ == "__main__":  # pragma: no cover
    console()
