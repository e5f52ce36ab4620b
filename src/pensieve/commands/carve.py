"""``pensieve carve SOURCE``: deleted files carved from a disk image by their content.

SOURCE is a disk image (raw, split raw, E01, qcow2; ``disk.img@N`` for partition N,
``disk.img@offset=BYTES`` for the filesystem at that offset) or any other file (scanned whole).
By default only the unallocated space is scanned: the free blocks of each ext2/3/4 filesystem
(its block bitmaps) and the space outside the partitions; ``--all`` scans the whole image.

Types: elf, script (shell, python ... by their #! line), gzip, zip (jar), tar, pdf, jpeg, png,
sqlite, json (JSON lines such as docker json-file logs, JSON documents), log (timestamped text).
Each carved file is validated by its structure and gets a confidence: complete (validates end
to end), partial (truncated, overwritten or fragmented: the part that validated), header-only.
A carved file equal (sha256) to an allocated file of the filesystem is reported with
``duplicate_of`` (the allocated path) and not written a second time; ``--skip-duplicates`` hides
it.  A carved file whose first block the ext4 journal remembers
is attributed to that inode and path (and, below a Docker data root, a containerd root or a
Podman graphroot, its layer or snapshot and container);
otherwise it is unattributed.

``--out DIR`` writes the carved files (OFFSET.EXT, OFFSET.partial.EXT ...) and a manifest
(``pensieve-manifest.json``: size and sha256 of every file written), never over, inside or beside
the evidence and never over an existing file.  The image is only read.  A progress bar goes to
stderr when it is a terminal.

Exit codes: 3 when the source is missing or unreadable, 2 for bad arguments or an output
directory inside the evidence, 5 when part of the image could not be scanned (warnings).
"""

from __future__ import annotations

import argparse
import os

from pensieve.commands.common import UsageError, add_output, described_parser, full_ids
from pensieve.output import columns


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def cmd_carve(o):
    """Carve deleted files out of a disk image (see `pensieve carve --help`)."""
    from pensieve.disk import carve as carving
    from pensieve.evidence import EvidenceError
    from pensieve.evidence.disk import split_spec
    from pensieve.output.progress import progress
    from pensieve.output.render import emit

    base, _part, _off = split_spec(o.source)
    if not os.path.exists(base):
        raise EvidenceError(f"source does not exist: {o.source}")
    if os.path.isdir(base):
        raise EvidenceError(f"{o.source} is a directory: carving reads a disk image or a file")
    try:
        types = carving.normalise_types(o.types)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    img, filesystems = carving.open_for_carving(o.source)
    try:
        with progress("carving", enabled=not o.no_progress) as update:
            carver = carving.Carver(
                img,
                whole=o.all,
                types=types,
                out_dir=o.out,
                skip_duplicates=o.skip_duplicates,
                filesystems=filesystems,
                progress=lambda done, total: update(done, total=total),
            )
            emit(
                carver.run(),
                o.fmt,
                columns.carved_files(full_ids(o)),
                title=f"carved from {carver.summary.image}",
            )
        s = carver.summary
        if o.fmt == "table":
            by_type = ", ".join(f"{n} {t}" for t, n in sorted(s.carved.items())) or "nothing"
            rate = s.scanned_bytes / max(s.seconds, 1e-6)
            print(
                f"{sum(s.carved.values())} carved ({by_type}) from {_size(s.scanned_bytes)} "
                f"{'(whole image)' if o.all else 'of unallocated space'} in {s.seconds:.2f} s "
                f"({_size(rate)}/s); {len(s.duplicates)} equal to allocated files "
                + ("skipped" if o.skip_duplicates else "reported (duplicate_of), not written")
            )
        return list(s.problems)
    finally:
        img.close()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``carve`` to the CLI's sub-parsers; returns its parser."""
    p = described_parser(
        subparsers,
        "carve",
        "carve deleted files (ELF, scripts, gzip, zip/jar, tar, PDF, JPEG, PNG, SQLite, JSON, logs) "
        "out of a disk image's unallocated space",
        __doc__,
    )
    p.add_argument(
        "source", metavar="SOURCE", help="a disk image (disk.img, disk.img@N, disk.E01 ...) or a file"
    )
    p.add_argument("--all", action="store_true", help="scan the whole image, allocated space included")
    p.add_argument(
        "--types",
        action="append",
        metavar="T[,T...]",
        help="only these types (elf, script, gzip, zip, tar, pdf, jpeg, png, sqlite, json, log; "
        "aliases jar, jpg, shell, python, text); repeatable",
    )
    p.add_argument("-o", "--out", metavar="DIR", help="write the carved files to DIR (outside the evidence)")
    p.add_argument(
        "--skip-duplicates",
        action="store_true",
        help="hide carved files equal to an allocated file (reported with duplicate_of by default)",
    )
    p.add_argument("--keep-duplicates", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    add_output(p)
    p.set_defaults(func=cmd_carve)
    return p
