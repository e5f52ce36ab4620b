"""What a container changed against its image (``diff``), and which layer, image and container a
path of the data root belongs to (``whence``).
"""

from __future__ import annotations

import os
import sys

from pensieve.commands.common import SOURCE, Commands, arg, err, full_ids, open_host, refuse_inside_evidence
from pensieve.output import columns
from pensieve.output.sink import refuse_evidence
from pensieve.output.text import printable
from pensieve.records import Change

COMMANDS = Commands()
command = COMMANDS.command
add_parser = COMMANDS.add_parser


_ENGINE_OPS = {"added": "A", "modified": "C", "deleted": "D"}


def _diff_command(container) -> str:
    """The engine command whose listing ``engine_reports`` follows (podman's for Podman)."""
    return "podman" if container.engine == "podman" else "docker"


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

    host = open_host(o.source)
    if o.recover_dir:
        refuse_inside_evidence(host, o.recover_dir)
        refuse_evidence(o.recover_dir, host.boundaries())  # before any output, as the sink will
    result = api.diff(host, o.container, hash_files=not o.no_hash)
    changes = result.changes
    if o.engine_view:
        changes = [c for c in changes if c.engine_reports]
    if o.engine_view and o.fmt == "table":
        for c in changes:
            sys.stdout.write(f"{_ENGINE_OPS[c.change]} {printable(c.path)}\n")
    else:
        emit(
            changes,
            o.fmt,
            columns.changes(full_ids(o)),
            title=f"* = not listed by `{_diff_command(host.container(o.container))} diff`",
            record_type=Change,
        )
    not_recovered = []
    if o.recover_dir:
        c = host.container(o.container)
        recovered = api.recover(host.evidence, c.layers, result.changes, o.recover_dir, host.boundaries())
        err(f"recovered {len(recovered.entries)} original entries into {o.recover_dir}", "32")
        not_recovered = recovered.problems
    return host.problems + result.problems + not_recovered


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

    host = open_host(o.source)
    path = o.hostpath
    if os.path.isabs(path) and os.path.exists(path):
        mapped = host.evidence.from_host_path(path)
        if mapped is not None:
            path = mapped
    emit_one(api.whence(host, path), o.fmt)
    return host.problems
