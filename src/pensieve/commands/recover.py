"""``pensieve recover SOURCE``: deleted files of an ext2/3/4 disk image, from the jbd2 journal and
the orphan list, attributed to the container, layer and image they belonged to.

SOURCE is a disk image (raw, split raw, E01, qcow2; ``disk.img@2`` / ``disk.img@offset=N`` picks
the filesystem).  The whole journal area is read, not only its live part: old copies of directory
blocks give names and inode numbers, old inode-table blocks give size, times and extents; content
is read from those extents where the block bitmap shows the blocks free (not reused) today.
Every result has its full path, inode, size, times (with the deletion time), how many bytes came
back and how sure that is (complete, partial, metadata-only), sha256, and, below a Docker data
root, the container (also a removed one, from remnants in the journal), layer, images and the
path inside the container.

``--out DIR`` writes each recovered file under DIR with its path mirrored (missing blocks as
zeros); DIR may not be the image or inside the evidence.  ``--all`` also lists nameless inodes
with nothing to read.  A progress bar goes to stderr when it is a terminal.

Exit codes: 3 when SOURCE is not an ext2/3/4 disk image, 2 for a bad --out, 5 when the journal
(or anything else) could not be fully read: the problems are warnings, the rest is in the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pensieve.commands.common import EPILOG, UsageError
from pensieve.commands.common import add_output as _add_output


class _Bar:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self._last = 0.0
        self._shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        frac = min(1.0, done / total) if total else 1.0
        width = 30
        fill = int(frac * width)
        self.stream.write(f"\rrecover: {phase:<15} [{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}%")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


def _refuse_out(evidence, source: str, out: str) -> None:
    """--out may be neither an image file of the evidence nor inside it (a directory source)."""
    real = os.path.realpath(out)
    files = list(getattr(evidence, "image_files", None) or [])
    base = source.rsplit("@", 1)[0] if not os.path.exists(source) else source
    files.append(base)
    for f in files:
        rf = os.path.realpath(f)
        if real == rf:
            raise UsageError(f"refusing to write over the evidence: {out}")
        if os.path.isdir(rf) and (real == rf or real.startswith(rf.rstrip("/") + "/")):
            raise UsageError(f"refusing to write inside the evidence: {out}")
    root = getattr(evidence, "root", None)
    if root and (real == root or real.startswith(root.rstrip("/") + "/")):
        raise UsageError(f"refusing to write inside the evidence: {out}")
    if os.path.exists(real) and not os.path.isdir(real):
        raise UsageError(f"--out must be a directory: {out}")


def cmd_recover(o):
    """Deleted files of an ext2/3/4 disk image, from the jbd2 journal and the orphan list:
    path, inode, size, times (deletion time too), bytes recovered, confidence, sha256, method,
    and the container, layer and image below a Docker data root."""
    from pensieve.disk.recover import recover
    from pensieve.evidence import open_evidence
    from pensieve.output.render import emit

    if o.out:
        # before opening: a destination equal to the image is refused whatever the image holds
        for f in (o.source, o.source.rsplit("@", 1)[0]):
            if os.path.exists(f) and os.path.realpath(f) == os.path.realpath(o.out):
                raise UsageError(f"refusing to write over the evidence: {o.out}")
    evidence = open_evidence(o.source)
    try:
        if o.out:
            _refuse_out(evidence, o.source, o.out)
        bar = _Bar()
        try:
            report = recover(evidence, out_dir=o.out, include_all=o.all, progress=bar)
        finally:
            bar.close()
        emit(
            report.files,
            o.fmt,
            [
                ("PATH", lambda f: f.path),
                ("INODE", lambda f: f.inode),
                ("TYPE", lambda f: f.type),
                ("SIZE", lambda f: "?" if f.size is None else f.size),
                ("RECOVERED", lambda f: f.bytes_recovered),
                ("CONFIDENCE", lambda f: f.confidence),
                ("METHOD", lambda f: f.method),
                ("DELETED", lambda f: (f.dtime or "")[:19].replace("T", " ")),
                ("CONTAINER", lambda f: f.container_name or (f.container or "")[:12]),
                ("IN CONTAINER", lambda f: f.container_path or ""),
                ("SHA256", lambda f: (f.sha256 or "")[:16]),
            ],
            title=f"deleted files recovered from {getattr(evidence, 'description', o.source)}",
        )
        return list(getattr(evidence, "problems", [])) + report.problems
    finally:
        close = getattr(evidence, "close", None)
        if close is not None:
            close()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``recover`` to the CLI's sub-parsers; returns its parser."""
    p = subparsers.add_parser(
        "recover",
        help="deleted files of an ext4 disk image from the jbd2 journal and orphan inodes, attributed",
        description=(__doc__ or "").split("\n\n", 1)[1].strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", metavar="SOURCE", help="a disk image (raw, split raw, E01, qcow2; img@N, img@offset=BYTES)"
    )
    p.add_argument("-o", "--out", metavar="DIR", help="write the recovered files here (outside the evidence)")
    p.add_argument("--all", action="store_true", help="also nameless inodes with nothing to read")
    _add_output(p)
    p.set_defaults(func=cmd_recover)
    return p
