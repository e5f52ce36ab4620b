"""The ``pensieve`` command: a thin shell over pensieve.api; every command is a library call.

Exit codes (also in the README):
  0  done, nothing to report
  1  internal error (a bug: please report it with --debug output)
  2  usage error
  3  the source is unusable (missing, unreadable, no Docker data root in it)
  4  the named container, image or path is not in the evidence
  5  done, but some evidence could not be read: warnings on stderr, the rest is in the output
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_SOURCE, EXIT_NOT_FOUND, EXIT_PARTIAL = 0, 1, 2, 3, 4, 5


class Ctx:
    debug = False


def _short(value: str | None, n: int = 12) -> str:
    if not value:
        return ""
    return value.split(":", 1)[-1][:n]


def _warn(problems: list) -> None:
    seen = set()
    for p in problems:
        key = (p.source, p.message)
        if key in seen:
            continue
        seen.add(key)
        click.secho(f"warning: {p.source}: {p.message}", fg="yellow", err=True)


def output_options(f: Callable) -> Callable:
    """--json / --jsonl / --csv / --format on a command; passes fmt=..."""

    @click.option("--json", "fmt", flag_value="json", help="One JSON document.")
    @click.option("--jsonl", "fmt", flag_value="jsonl", help="One JSON object per line.")
    @click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row.")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "jsonl", "csv"]),
        default="table",
        show_default=True,
    )
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def guarded(f: Callable) -> Callable:
    """Map library errors to documented exit codes and clear one-line messages."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .engines.docker import LookupFailed, NotADataRoot
        from .evidence import EvidenceError, NotFound

        try:
            problems = f(*args, **kwargs) or []
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except (LookupFailed, NotFound) as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_NOT_FOUND)
        except (NotADataRoot, EvidenceError) as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_SOURCE)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_OK)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last line of defence, documented exit 1
            if Ctx.debug:
                raise
            click.secho(
                f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", fg="red", err=True
            )
            sys.exit(EXIT_INTERNAL)
        if problems:
            _warn(problems)
            sys.exit(EXIT_PARTIAL)
        return None

    return wrapper


def _host(source: str):
    from .engines.docker import DockerHost
    from .evidence import open_evidence

    return DockerHost(open_evidence(source))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="pensieve")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def main(debug: bool) -> None:
    """pensieve: container forensics, offline and read-only.

    SOURCE is a directory: a live host root (/), a mounted or copied host filesystem, or a Docker
    data root itself. Nothing in SOURCE is ever written.

    Exit codes: 0 ok, 1 internal error, 2 usage, 3 unusable source, 4 not found,
    5 finished with warnings (some evidence unreadable; the rest is in the output).
    """
    Ctx.debug = debug


# ---- inventory ----------------------------------------------------------------------------


def _state(c) -> str:
    s = c.state
    if s == "exited" and c.exit_code is not None:
        s = f"exited ({c.exit_code})"
    if c.oom_killed:
        s += " OOM-killed"
    return s


@main.command()
@click.argument("source")
@output_options
@guarded
def roots(source: str, fmt: str):
    """Docker data roots found in SOURCE and how they were found."""
    from .output.render import emit

    host = _host(source)
    rows = [
        {"path": r.path, "layout": r.layout, "drivers": r.drivers(), "found": r.how_found} for r in host.roots
    ]
    emit(
        rows,
        fmt,
        [
            ("DATA ROOT", lambda r: r["path"]),
            ("LAYOUT", lambda r: r["layout"]),
            ("DRIVERS", lambda r: r["drivers"]),
            ("FOUND BY", lambda r: r["found"]),
        ],
    )
    return host.problems


@main.command()
@click.argument("source")
@output_options
@guarded
def containers(source: str, fmt: str):
    """Every container: identity, image, state, times, command, mounts, risky settings, layers."""
    from .output.render import emit

    host = _host(source)
    cs = host.containers()
    emit(
        cs,
        fmt,
        [
            ("CONTAINER", lambda c: _short(c.id)),
            ("NAME", lambda c: c.name),
            ("IMAGE", lambda c: c.image or _short(c.image_id)),
            ("STATE", _state),
            ("CREATED", lambda c: (c.created or "")[:19]),
            ("COMMAND", lambda c: " ".join(c.command)[:40]),
            ("RISKS", lambda c: c.risks),
            ("PROBLEMS", lambda c: c.problems),
        ],
        title=f"{len(cs)} containers",
    )
    return host.problems


@main.command()
@click.argument("source")
@output_options
@guarded
def images(source: str, fmt: str):
    """Every image: tags, digests, created, config, layers."""
    from .output.render import emit

    host = _host(source)
    imgs = host.images()
    parents = {i.parent for i in imgs if i.parent}
    emit(
        imgs,
        fmt,
        [
            ("IMAGE ID", lambda i: _short(i.id)),
            ("TAGS", lambda i: i.tags or ("<none> (build step)" if i.id in parents else "<none>")),
            ("CREATED", lambda i: (i.created or "")[:19]),
            ("LAYERS", lambda i: len(i.diff_ids)),
            ("SIZE", lambda i: i.size),
            ("CMD", lambda i: " ".join((i.entrypoint or []) + (i.cmd or []))[:40]),
        ],
        title=f"{len(imgs)} images",
    )
    return host.problems


@main.command()
@click.argument("source")
@click.argument("image")
@output_options
@guarded
def history(source: str, image: str, fmt: str):
    """An image's build history, each step aligned to the layer it produced."""
    from .output.render import emit

    host = _host(source)
    img = host.image(image)
    emit(
        img.history,
        fmt,
        [
            ("CREATED", lambda s: (s.created or "")[:19]),
            ("CREATED BY", lambda s: (s.created_by or (f"({s.comment})" if s.comment else ""))[:70]),
            ("LAYER", lambda s: "(empty)" if s.empty_layer else _short(s.cache_id)),
            ("DIFF ID", lambda s: _short(s.diff_id)),
            ("SIZE", lambda s: s.size),
        ],
        title=f"history of {_short(img.id)} {' '.join(img.tags)}",
    )
    return host.problems


@main.command()
@click.argument("source")
@output_options
@guarded
def volumes(source: str, fmt: str):
    """Named and anonymous volumes, their data and the containers that mount them."""
    from .output.render import emit

    host = _host(source)
    vols = host.volumes()
    emit(
        vols,
        fmt,
        [
            ("VOLUME", lambda v: v.name if not v.anonymous else _short(v.name)),
            ("DRIVER", lambda v: v.driver),
            ("FILES", lambda v: v.file_count),
            ("BYTES", lambda v: v.size),
            ("USED BY", lambda v: [_short(c) for c in v.used_by]),
            ("PATH", lambda v: v.path),
        ],
    )
    return host.problems


@main.command()
@click.argument("source")
@click.argument("container")
@click.option("--stream", type=click.Choice(["stdout", "stderr"]), help="Only this stream.")
@output_options
@guarded
def logs(source: str, container: str, stream: str | None, fmt: str):
    """A container's log (json-file and local drivers; rotated and compressed files included)."""
    import posixpath

    from .engines.docker.logs import log_files, read_logs
    from .output.render import emit

    host = _host(source)
    c = host.container(container)
    problems = list(host.problems)
    cdir = posixpath.dirname(c.config_path or "")
    files = log_files(host.evidence, cdir, c.log_path, c.log_driver)
    if not files:
        click.secho(
            f"no log files for {_short(c.id)} (driver {c.log_driver or 'unknown'})", fg="yellow", err=True
        )
    lines = read_logs(host.evidence, c.id, files, problems)
    if stream:
        lines = (line for line in lines if line.stream == stream)
    if fmt == "table":
        for line in lines:
            click.echo(f"{line.time or '':<31} {line.stream or '':<6} {line.message}")
    else:
        emit(lines, fmt)
    return problems


# ---- layered filesystem -------------------------------------------------------------------


@main.group()
@click.argument("source")
@click.argument("target")
@click.pass_context
def fs(ctx: click.Context, source: str, target: str) -> None:
    """Browse the merged filesystem of a container (or image) with per-file layer provenance.

    TARGET is a container (id, prefix, name) or an image (id, tag). Symlinks resolve inside the
    container root only.
    """
    ctx.obj = (source, target)


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


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


@fs.command("ls")
@click.argument("path", default="/")
@click.option("-R", "--recursive", is_flag=True, help="Recurse into directories.")
@click.option("-l", "--long", is_flag=True, help="Also the history step and shadowed layers.")
@output_options
@click.pass_obj
@guarded
def fs_ls(obj, path: str, recursive: bool, long: bool, fmt: str):
    """List a directory of the merged filesystem."""
    import posixpath

    from .api import target_view
    from .output.render import emit

    host = _host(obj[0])
    _, v = target_view(host, obj[1])
    if recursive:
        entries = v.walk(path)
    else:
        r = v.resolve(path)
        if r.stat.is_dir:
            entries = (v.stat(posixpath.join(r.path, n)) for n in v.listdir(r.path))
        else:
            entries = iter([v.entry(r)])
    emit(entries, fmt, _fs_columns(long))
    return host.problems


@fs.command("stat")
@click.argument("path")
@click.option("-L", "--follow", is_flag=True, help="Follow a final symlink (inside the container root).")
@output_options
@click.pass_obj
@guarded
def fs_stat(obj, path: str, follow: bool, fmt: str):
    """One entry with its providing layer and what it shadows."""
    from .api import target_view
    from .output.render import emit_one
    from .util import sha256_stream

    host = _host(obj[0])
    _, v = target_view(host, obj[1])
    e = v.stat(path, follow=follow)
    if e.type == "file" and e.host_path:
        with host.evidence.open(e.host_path) as fh:
            e.sha256 = sha256_stream(fh)
    emit_one(e, fmt)
    return host.problems


@fs.command("cat")
@click.argument("path")
@click.pass_obj
@guarded
def fs_cat(obj, path: str):
    """Write a file's bytes to stdout (symlinks followed inside the container root)."""
    from .api import target_view

    host = _host(obj[0])
    _, v = target_view(host, obj[1])
    out = sys.stdout.buffer
    with v.open(path) as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            out.write(block)
    out.flush()
    return host.problems


@fs.command("find")
@click.argument("path", default="/")
@click.option("--name", "pattern", help="Shell glob on the file name.")
@click.option("--type", "kind", type=click.Choice(["f", "d", "l", "c", "b", "p", "s"]), help="Entry type.")
@click.option("--layer", help="Only entries provided by this layer (cache id prefix, or image|init|rw).")
@click.option("--newer", help="Only entries modified after this ISO time (UTC).")
@click.option("--hash", "do_hash", is_flag=True, help="Add sha256 of regular files.")
@output_options
@click.pass_obj
@guarded
def fs_find(obj, path: str, pattern, kind, layer, newer, do_hash: bool, fmt: str):
    """Find entries by name, type, providing layer and time."""
    import fnmatch
    import posixpath
    from datetime import datetime

    from .api import target_view
    from .output.render import emit
    from .util import sha256_stream

    types = {"f": "file", "d": "dir", "l": "symlink", "c": "char", "b": "block", "p": "fifo", "s": "socket"}
    after = None
    if newer:
        after = datetime.fromisoformat(newer.replace("Z", "+00:00")).timestamp()
    host = _host(obj[0])
    _, v = target_view(host, obj[1])

    def keep(e) -> bool:
        if pattern and not fnmatch.fnmatchcase(posixpath.basename(e.path), pattern):
            return False
        if kind and e.type != types[kind]:
            return False
        if layer and not (e.layer_role == layer or (e.layer or "").startswith(layer)):
            return False
        return not (after is not None and (e.mtime or 0) <= after)

    def rows():
        for e in v.walk(path):
            if keep(e):
                if do_hash and e.type == "file" and e.host_path:
                    with host.evidence.open(e.host_path) as fh:
                        e.sha256 = sha256_stream(fh)
                yield e

    cols = _fs_columns(False) + ([("SHA256", lambda e: e.sha256)] if do_hash else [])
    emit(rows(), fmt, cols)
    return host.problems


@fs.command("export")
@click.argument("dest")
@click.option("--path", "top", default="/", show_default=True, help="Export only this subtree.")
@click.option("--tar", "as_tar", is_flag=True, help="Write a tar even if DEST does not end in .tar.")
@click.pass_obj
@guarded
def fs_export(obj, dest: str, top: str, as_tar: bool):
    """Export the merged tree: a tar keeping mode, owner, times, links and devices (DEST.tar), or
    a directory. DEST must be outside the evidence."""
    from .analysis.export import export_dir, export_tar
    from .api import target_view

    host = _host(obj[0])
    _, v = target_view(host, obj[1])
    _refuse_inside_evidence(host, dest)
    if as_tar or dest.endswith((".tar", ".tar.gz", ".tgz")):
        n, problems = export_tar(v, top, dest)
    else:
        n, problems = export_dir(v, top, dest)
    click.echo(f"exported {n} entries to {dest}", err=True)
    return host.problems + problems


def _refuse_inside_evidence(host, dest: str) -> None:
    root = getattr(host.evidence, "root", None)
    if root is None:
        return
    real = os.path.realpath(dest)
    if real == root or real.startswith(root.rstrip("/") + "/"):
        raise click.UsageError(f"refusing to write inside the evidence: {dest}")


# ---- diff and attribution -----------------------------------------------------------------


@main.command()
@click.argument("source")
@click.argument("container")
@click.option("--recover", "recover_dir", help="Copy lower-layer originals of deleted/modified files here.")
@click.option("--no-hash", is_flag=True, help="Skip content hashes (faster; content-only changes go unseen).")
@click.option("--engine-view", is_flag=True, help="Only what `docker diff` would list, in its A/C/D form.")
@output_options
@guarded
def diff(source: str, container: str, recover_dir: str | None, no_hash: bool, engine_view: bool, fmt: str):
    """What a container changed against its image: added, modified (copied up), deleted."""
    from . import api
    from .output.render import emit

    host = _host(source)
    result = api.diff(host, container, hash_files=not no_hash)
    changes = result.changes
    if engine_view:
        changes = [c for c in changes if c.engine_reports]
        if fmt == "table":
            for c in changes:
                click.echo(f"{c.change[0].upper().replace('M', 'C')} {c.path}")
            return host.problems + result.problems
    emit(
        changes,
        fmt,
        [
            ("CHANGE", lambda c: c.change if c.engine_reports else c.change + "*"),
            ("TYPE", lambda c: c.type),
            ("PATH", lambda c: c.path),
            ("WHAT", lambda c: c.what_changed),
            ("SIZE", lambda c: c.size),
            ("MODE", lambda c: c.mode),
            ("MTIME", lambda c: (c.mtime or "")[:19]),
            ("SHA256", lambda c: (c.sha256 or "")[:16]),
        ],
        title="* = invisible to `docker diff`",
    )
    if recover_dir:
        c = host.container(container)
        _refuse_inside_evidence(host, recover_dir)
        manifest = api.recover(host.evidence, c.layers, result.changes, recover_dir)
        import json

        os.makedirs(recover_dir, exist_ok=True)
        with open(os.path.join(recover_dir, "pensieve-recovered.json"), "w") as fh:
            json.dump(manifest, fh, indent=2)
        click.echo(f"recovered {len(manifest)} original entries into {recover_dir}", err=True)
    return host.problems + result.problems


@main.command()
@click.argument("source")
@click.argument("hostpath")
@output_options
@guarded
def whence(source: str, hostpath: str, fmt: str):
    """Attribute a path inside a data root to its layer, images, containers and container path."""
    from . import api
    from .output.render import emit_one

    host = _host(source)
    path = hostpath
    from_host = getattr(host.evidence, "from_host_path", None)
    if from_host is not None and os.path.isabs(hostpath) and os.path.exists(hostpath):
        mapped = from_host(hostpath)
        if mapped is not None:
            path = mapped
    emit_one(api.whence(host, path), fmt)
    return host.problems


if __name__ == "__main__":  # pragma: no cover
    main()
