"""``collect``: acquire running containers without stopping them, into a sealed bundle.

  collect CONTAINER --out DIR   one container (id, prefix or name; a container named "verify":
                                /verify) into the new bundle DIR
  collect --all --out DIR       every running container, one bundle each: DIR/<name>-<id12>
  collect verify BUNDLE         re-hash every file of BUNDLE against its manifest, and the
                                manifest against manifest.json.sha256 (exit 6 when tampered)

The engine's files are read from the host (``--root``: host root or engine data root, default
/; repeatable), never asked of the daemon: the container's metadata files copied byte for byte,
each layer directory as a raw tar (whiteouts, xattrs, owners, nanosecond times), the image as
``docker save`` writes it, the logs, and a ``live ps/net/cgroups`` snapshot from ``--proc``.
``--checkpoint`` adds a CRIU checkpoint taken through the engine with ``--leave-running`` (needs
criu).  manifest.json lists every file with its sha256, size and source, and the chain of
custody; it is itself hashed.  A bundle is a SOURCE for the offline commands (containers,
images, fs, diff, logs, verify, mem).  Docker (overlay2 and the other layer-directory drivers),
Podman (containers/storage overlay) and containerd (overlayfs or native snapshotter) are
collected; --checkpoint runs docker checkpoint create, podman container checkpoint --export or
runc checkpoint (containerd), each with --leave-running.
"""

from __future__ import annotations

import argparse
import sys

from pensieve.commands.common import EPILOG, UsageError, add_output, err

__all__ = ["add_parser"]


def _verify_columns():
    from pensieve.output.columns import Column

    return [Column("STATUS", lambda r: r["status"]), Column("PATH", lambda r: r["path"]),
            Column("DETAIL", lambda r: r["detail"])]  # fmt: skip


def cmd_verify(o: argparse.Namespace) -> list:
    """Check BUNDLE against its manifest."""
    import os

    from pensieve.collect import verify_bundle
    from pensieve.errors import EvidenceError, Tampered
    from pensieve.output.render import emit

    if not os.path.isdir(o.bundle):
        raise EvidenceError(f"not a bundle directory: {o.bundle}")
    try:
        results = verify_bundle(o.bundle)
    except ValueError as exc:
        raise EvidenceError(str(exc)) from None
    bad = [r for r in results if r["status"] != "ok"]
    shown = results if o.fmt != "table" or getattr(o, "verbose", False) else bad
    ok = len(results) - len(bad)
    emit(shown, o.fmt, _verify_columns(), title=f"{len(results)} checked, {ok} ok, {len(bad)} not")
    if bad:
        for r in bad:
            err(f"{r['status']}: {r['path']}: {r['detail']}")
        return [Tampered()]
    return []


def cmd_collect(o: argparse.Namespace) -> list:
    """Collect CONTAINER (or --all) into --out."""
    from pensieve.collect import collect
    from pensieve.output.render import emit

    if o.container == "verify" and o.bundle is not None:
        return cmd_verify(o)
    if o.bundle is not None:
        raise UsageError(f"unexpected argument {o.bundle!r} (collect CONTAINER --out DIR)")
    if not o.out:
        raise UsageError("collect needs --out DIR (a new directory outside the evidence)")
    if bool(o.container) == bool(o.all):
        raise UsageError("name one CONTAINER or give --all")
    result = collect(
        o.container, o.out, roots=o.roots, proc=o.proc, every=o.all, checkpoint=o.checkpoint, argv=sys.argv
    )
    from pensieve.output.columns import Column

    cols = [Column("ID", lambda r: r["id"][:12]), Column("NAME", lambda r: r["name"] or ""),
            Column("BUNDLE", lambda r: r["bundle"])]  # fmt: skip
    emit(result.bundles, o.fmt, cols, title=f"{len(result.bundles)} collected")
    return result.problems


def add_parser(subparsers) -> None:
    """``collect CONTAINER --out DIR`` / ``collect --all --out DIR`` / ``collect verify BUNDLE``."""
    p = subparsers.add_parser(
        "collect",
        help="acquire a running container (files, layers, image, logs, live state) into a sealed bundle",
        description=(__doc__ or "").split("\n\n", 1)[1].strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("container", nargs="?", metavar="CONTAINER", help="the container (or: verify BUNDLE)")
    p.add_argument("bundle", nargs="?", metavar="BUNDLE", help=argparse.SUPPRESS)
    p.add_argument("--out", metavar="DIR", help="the new bundle directory (outside the evidence)")
    p.add_argument("--all", action="store_true", help="every running container, one bundle each below --out")
    p.add_argument(
        "--root",
        action="append",
        metavar="DIR",
        dest="roots",
        help="host root or engine data root to collect from (repeatable; default /)",
    )
    p.add_argument(
        "--proc", default="/proc", metavar="DIR", help="the proc filesystem to read (default /proc)"
    )
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="add a CRIU checkpoint taken through the engine with --leave-running (needs criu)",
    )
    p.add_argument(
        "--verbose", "-v", action="store_true", help="collect verify: list every file, not only bad ones"
    )
    add_output(p)
    p.set_defaults(func=cmd_collect)
