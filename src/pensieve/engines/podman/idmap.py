"""The user namespace of a rootless Podman store: host ids on disk -> the ids its containers see.

A rootless podman runs in a user namespace its user gets from newuidmap(1)/newgidmap(1): id 0 is
the user's own uid/gid (passwd(5)), ids 1, 2, ... are the user's subordinate ranges of
/etc/subuid and /etc/subgid (subuid(5): ``name-or-id:start:count`` lines), in file order, one
after the other (podman's rootless setup, pkg/rootless; the capture in
tests/fixtures/podman-rootless recorded ``podman unshare cat /proc/self/uid_map`` doing exactly
this). Files the containers write are therefore owned on disk by the user (container root) or by
sub-ids (any other container user): container uid 33 is host uid ``start + 32``.  An analyst reads
a container's files as the container does (its /etc/passwd, `podman unshare ls -ln`), so the ids
are mapped back with the store's map; an id outside it (written from outside the namespace) is
kept as it is on disk.

A container may have an id mapping of its own (``podman run --uidmap``, ``--userns=auto``):
containers/storage records it in containers.json and, for every layer whose contents it shifted
(the container's RW layer; the copy it makes of an image for that mapping), in that layer's
``uidmap``/``gidmap`` in layers.json, as ranges of the store's ids (in a rootless store, ids of
the user's namespace).  The ids on disk of such a layer are read back through both maps: the
store's, then the layer's own (the container's wins where the store's alone would answer); an
image layer the container sees through an id-mapped mount (kernel idmapped mounts: what Podman
4.3 on Linux 6.x did in tests/fixtures/podman-rootless) keeps the store's ids and reads as every
other container sees it.  :class:`Owners` is that one answer, used by ``fs`` (the merged view's
entries), ``diff`` (each change's owner and its original's) and ``verify`` (the owners a layer's
tar-split record gives, as they must be on disk).  ``whence`` reports no owners; ``export-layer``
writes the tar-split record's own owners (unmapped, as ``podman save`` does).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from pensieve.evidence import Evidence, EvidenceError
from pensieve.records import Change

MAX_FILE = 1 << 20


class IdRange(NamedTuple):
    """``count`` ids from ``inside`` (the namespace) mapped to ``outside`` (the host), as a line of
    /proc/PID/uid_map (user_namespaces(7))."""

    inside: int
    outside: int
    count: int


def _inside(ranges: Sequence[IdRange], outside_id: int) -> int | None:
    """The id inside for OUTSIDE_ID, None when no range holds it."""
    for r in ranges:
        if r.outside <= outside_id < r.outside + r.count:
            return r.inside + outside_id - r.outside
    return None


def _outside(ranges: Sequence[IdRange], inside_id: int) -> int | None:
    """The id outside for INSIDE_ID, None when no range holds it."""
    for r in ranges:
        if r.inside <= inside_id < r.inside + r.count:
            return r.outside + inside_id - r.inside
    return None


def _through(steps: Sequence[Sequence[IdRange]], value: int | None, lookup) -> int | None:
    """VALUE through every map of STEPS in turn with LOOKUP; unchanged when one does not hold it
    (an id written from outside the namespace reads as it is on disk)."""
    if value is None:
        return None
    out = value
    for ranges in steps:
        mapped = lookup(ranges, out)
        if mapped is None:
            return value
        out = mapped
    return out


class IdMap(NamedTuple):
    """The uid and gid maps of one namespace (a rootless store's user, or a container's own)."""

    user: str | None
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]

    def uid(self, host_uid: int | None) -> int | None:
        """The namespace's uid for HOST_UID (unchanged when outside the map)."""
        return _through((self.uids,), host_uid, _inside)

    def gid(self, host_gid: int | None) -> int | None:
        """The namespace's gid for HOST_GID (unchanged when outside the map)."""
        return _through((self.gids,), host_gid, _inside)

    def host_ids(self, uid: int, gid: int) -> tuple[int, int]:
        """The host's (uid, gid) for the namespace's UID, GID (unchanged when outside the map)."""
        return _through((self.uids,), uid, _outside), _through((self.gids,), gid, _outside)  # type: ignore[return-value]

    def map_changes(self, changes: Iterable[Change]) -> None:
        """Each change's owner (and its original's) as the container sees it, in place."""
        Owners((self,)).map_changes(changes, lambda _layer: None)


def from_storage(
    uid_map: Sequence[tuple[int, int, int]], gid_map: Sequence[tuple[int, int, int]]
) -> IdMap | None:
    """The IdMap of a containers/storage ``uidmap``/``gidmap`` pair (storage.py triples), None
    when both are empty (no mapping of its own)."""
    if not uid_map and not gid_map:
        return None
    return IdMap(None, tuple(IdRange(*r) for r in uid_map), tuple(IdRange(*r) for r in gid_map))


class Owners(NamedTuple):
    """Ids on disk -> the ids a container sees, through each map of ``steps`` in turn (the
    store's first, then the layer's own)."""

    steps: tuple[IdMap, ...]

    def uid(self, disk_uid: int | None) -> int | None:
        """The container's uid for DISK_UID (unchanged when a map does not hold it)."""
        return _through([m.uids for m in self.steps], disk_uid, _inside)

    def gid(self, disk_gid: int | None) -> int | None:
        """The container's gid for DISK_GID (unchanged when a map does not hold it)."""
        return _through([m.gids for m in self.steps], disk_gid, _inside)

    def on_disk(self, uid: int, gid: int) -> tuple[int, int]:
        """The ids on disk of a file the container (or a tar-split record) says is UID:GID."""
        steps = self.steps[::-1]
        return (
            _through([m.uids for m in steps], uid, _outside),
            _through([m.gids for m in steps], gid, _outside),
        )  # type: ignore[return-value]

    def map_changes(self, changes: Iterable[Change], of_layer) -> None:
        """Each change's owner as the container sees it, in place: the current copy's through
        OF_LAYER(change.layer), the original's (``lower``) through OF_LAYER(change.lower_layer);
        ``owner`` leaves ``what_changed`` when the two then agree (only the shift differed)."""
        for ch in changes:
            mine = of_layer(ch.layer) or self
            ch.uid, ch.gid = mine.uid(ch.uid), mine.gid(ch.gid)
            lower = ch.lower
            if not isinstance(lower, dict):
                continue
            theirs = of_layer(ch.lower_layer) or self
            if isinstance(lower.get("uid"), int):
                lower["uid"] = theirs.uid(lower["uid"])
            if isinstance(lower.get("gid"), int):
                lower["gid"] = theirs.gid(lower["gid"])
            if "owner" in ch.what_changed and (lower.get("uid"), lower.get("gid")) == (ch.uid, ch.gid):
                ch.what_changed = [w for w in ch.what_changed if w != "owner"]


def owners(store: IdMap | None, own: IdMap | None) -> Owners | None:
    """The Owners of a layer: the STORE's map (a rootless store's), then the layer's OWN; None
    when neither maps anything (ids read as they are on disk)."""
    steps = tuple(m for m in (store, own) if m is not None)
    return Owners(steps) if steps else None


def _lines(ev: Evidence, path: str) -> list[list[str]]:
    """The colon-separated fields of each non-comment line of PATH in the evidence ([] if absent)."""
    try:
        text = ev.read_bytes(path, MAX_FILE).decode("utf-8", "replace")
    except (EvidenceError, OSError):
        return []
    return [line.split(":") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _owner(ev: Evidence, graphroot: str) -> tuple[str, int, int] | None:
    """(name, uid, gid) of the non-root passwd user whose home holds GRAPHROOT (longest home wins)."""
    best: tuple[str, int, int] | None = None
    best_len = -1
    for fields in _lines(ev, "/etc/passwd"):
        if len(fields) < 6 or not fields[2].isdigit() or not fields[3].isdigit() or fields[2] == "0":
            continue
        home = posixpath.normpath(fields[5]) if fields[5].startswith("/") else ""
        if home not in ("", "/") and graphroot.startswith(home + "/") and len(home) > best_len:
            best, best_len = (fields[0], int(fields[2]), int(fields[3])), len(home)
    return best


def _ranges(ev: Evidence, path: str, name: str, own_id: int) -> tuple[IdRange, ...]:
    """Id 0 -> OWN_ID, then the subordinate ranges of NAME (by name or id) in PATH, in file order."""
    out, nxt = [IdRange(0, own_id, 1)], 1
    for fields in _lines(ev, path):
        if len(fields) != 3 or fields[0] not in (name, str(own_id)):
            continue
        if not (fields[1].isdigit() and fields[2].isdigit()) or int(fields[2]) == 0:
            continue
        out.append(IdRange(nxt, int(fields[1]), int(fields[2])))
        nxt += int(fields[2])
    return tuple(out)


def rootless_idmap(ev: Evidence, graphroot: str) -> IdMap | None:
    """The id map of GRAPHROOT if it is a rootless store below a user's home with sub-ids, else None."""
    owner = _owner(ev, graphroot)
    if owner is None:
        return None
    name, uid, gid = owner
    uids, gids = _ranges(ev, "/etc/subuid", name, uid), _ranges(ev, "/etc/subgid", name, gid)
    if len(uids) == 1 and len(gids) == 1:  # no sub-ids: a namespace of one id, nothing to map
        return None
    return IdMap(name, uids, gids)
