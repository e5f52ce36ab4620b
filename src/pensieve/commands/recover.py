"""``pensieve recover SOURCE``: deleted files of an ext2/3/4 disk image, from the jbd2 journal and
the orphan list, attributed to the container, layer and image they belonged to.

SOURCE is a disk image (raw, split raw, E01, qcow2; ``disk.img@2`` / ``disk.img@offset=N`` picks
the filesystem).  The whole journal area is read, not only its live part: old copies of directory
blocks give names and inode numbers, old inode-table blocks give size, times and extents; content
is read from those extents where the block bitmap shows the blocks free (not reused) today.
Every result has its full path, inode, size, times (with the deletion time), how many bytes came
back and how sure that is (complete, partial, metadata-only), sha256, and, below a Docker data
root, a containerd root or a Podman graphroot, the container (also a removed Docker one, from
remnants in the journal), layer (containerd: snapshot), images and the path inside the container.

``--out DIR`` writes each recovered file under DIR with its path mirrored (missing blocks as
zeros) and a manifest (``pensieve-manifest.json``: size and sha256 of every file written); DIR
may be neither the image, nor inside or holding the directory of the image, and nothing in it is
overwritten.  ``--all`` also lists nameless inodes
with nothing to read.  A progress bar goes to stderr when it is a terminal.

Exit codes: 3 when SOURCE is not an ext2/3/4 disk image, 2 for a bad --out, 5 when the journal
(or anything else) could not be fully read: the problems are warnings, the rest is in the output.
"""

from __future__ import annotations

import argparse

from pensieve.commands.common import add_output, described_parser, full_ids
from pensieve.output import columns


def cmd_recover(o):
    """Deleted files of an ext2/3/4 disk image, from the jbd2 journal and the orphan list:
    path, inode, size, times (deletion time too), bytes recovered, confidence, sha256, method,
    and the container, layer and image below a Docker, containerd or Podman root."""
    from pensieve.disk.recover import recover
    from pensieve.evidence import open_evidence
    from pensieve.output.progress import progress
    from pensieve.output.render import emit

    evidence = open_evidence(o.source)
    try:
        with progress("recover") as update:
            report = recover(
                evidence,
                out_dir=o.out,
                include_all=o.all,
                progress=lambda phase, done, total: update(done, total=total, phase=phase),
            )
        emit(
            report.files,
            o.fmt,
            columns.recovered_files(full_ids(o)),
            title=f"deleted files recovered from {evidence.description}",
        )
        return list(evidence.problems) + report.problems
    finally:
        evidence.close()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``recover`` to the CLI's sub-parsers; returns its parser."""
    p = described_parser(
        subparsers,
        "recover",
        "deleted files of an ext4 disk image from the jbd2 journal and orphan inodes, attributed",
        __doc__,
    )
    p.add_argument(
        "source", metavar="SOURCE", help="a disk image (raw, split raw, E01, qcow2; img@N, img@offset=BYTES)"
    )
    p.add_argument("-o", "--out", metavar="DIR", help="write the recovered files here (outside the evidence)")
    p.add_argument("--all", action="store_true", help="also nameless inodes with nothing to read")
    add_output(p)
    p.set_defaults(func=cmd_recover)
    return p
