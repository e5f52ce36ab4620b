"""Which containers/storage graphroots of an evidence are CRI-O's (layout.py says where CRI-O
keeps them and how its containers look).

A graphroot is CRI-O's when

* ``[crio] root`` of crio.conf / crio.conf.d names it;
* it is the default ``/var/lib/containers/storage`` and ``/var/lib/crio`` exists (CRI-O's own
  files: the node ran CRI-O);
* or any of its containers is CRI-O's (the containers.json metadata CRI-O writes, or, for an
  entry without metadata, ``io.container.manager: cri-o`` in its ``userdata/config.json``).

Each comes with its run directory (``[crio] runroot``, or the default for the default graphroot)
and how it was found.  The containers of a graphroot Podman shares stay CRI-O's: PodmanHost
leaves them out (engines/podman/host.py).

References: crio.conf(5) ``[crio] root``/``runroot``; crio.conf.d(5); cri-o
internal/storage/runtime.go.
"""

from __future__ import annotations

import posixpath

from pensieve.engines.crio.layout import (
    CRIO_STATE_DIR,
    DEFAULT_ROOT,
    crio_config,
    default_runroot,
    is_crio_metadata,
    is_crio_spec,
)
from pensieve.engines.podman.roots import is_graphroot
from pensieve.engines.podman.storage import MAX_STORE_BYTES, read_containers
from pensieve.evidence import Evidence, EvidenceError
from pensieve.evidence.base import normalize
from pensieve.formats.untrusted_json import UntrustedJSONError, load
from pensieve.records import Problem

#: the largest config.json read while looking for CRI-O's (specs are KiB)
MAX_SPEC = 16 << 20
CONTAINERS_JSON = "overlay-containers/containers.json"


def _spec_says_crio(ev: Evidence, graphroot: str, cid: str) -> bool:
    path = posixpath.join(graphroot, "overlay-containers", cid, "userdata", "config.json")
    try:
        return is_crio_spec(load(ev.read_bytes(path, MAX_SPEC + 1), path, max_bytes=MAX_SPEC))
    except (EvidenceError, OSError, UntrustedJSONError):
        return False


def holds_crio_containers(ev: Evidence, graphroot: str) -> bool:
    """Any container of GRAPHROOT's containers.json is CRI-O's.  A store whose text never names
    ``metadata-name`` (a key CRI-O's metadata always has) is not parsed at all; the spec is read
    only for an entry whose metadata is empty (CRI-O and libpod both always write one)."""
    try:
        raw = ev.read_bytes(posixpath.join(graphroot, CONTAINERS_JSON), MAX_STORE_BYTES + 1)
    except (EvidenceError, OSError):
        return False
    if b"metadata-name" not in raw:
        return False
    for sc in read_containers(ev, graphroot, []):
        if is_crio_metadata(sc.metadata):
            return True
        if not sc.metadata and _spec_says_crio(ev, graphroot, sc.id):
            return True
    return False


def podman_uses(ev: Evidence, graphroot: str) -> bool:
    """GRAPHROOT holds libpod's state (Podman 5's ``db.sql``, Podman 4's ``libpod/bolt_state.db``):
    Podman uses the store too; a CRI-O store without it is CRI-O's alone."""
    return any(ev.is_file(posixpath.join(graphroot, p)) for p in ("db.sql", "libpod/bolt_state.db"))


def crio_roots(
    ev: Evidence, graphroots: list[str], problems: list[Problem]
) -> list[tuple[str, str | None, str]]:
    """(graphroot, runroot or None, how found) of every CRI-O graphroot: the configured one, the
    default one on a node with /var/lib/crio, and every graphroot of GRAPHROOTS (the stores
    found for Podman) holding CRI-O containers."""
    conf = crio_config(ev, problems)
    root_conf, run_conf = conf.get("root"), conf.get("runroot")
    configured = normalize(root_conf[0]) if root_conf and root_conf[0].startswith("/") else None
    runroot = normalize(run_conf[0]) if run_conf and run_conf[0].startswith("/") else None
    candidates: list[tuple[str, str]] = []
    if configured and root_conf:
        candidates.append((configured, f"root in {root_conf[1]}"))
    if ev.is_dir(CRIO_STATE_DIR) and not configured:
        candidates.append((DEFAULT_ROOT, f"default path ({CRIO_STATE_DIR} present)"))
    candidates += [(path, "CRI-O containers in the store") for path in graphroots]
    out: dict[str, tuple[str | None, str]] = {}
    for path, how in candidates:
        if path in out or not is_graphroot(ev, path):
            continue
        if how.startswith("CRI-O") and not holds_crio_containers(ev, path):
            continue
        if path == (configured or DEFAULT_ROOT):
            run = runroot or default_runroot(ev)
        else:
            run = None
        out[path] = (run, how)
    return [(path, run, how) for path, (run, how) in out.items()]
