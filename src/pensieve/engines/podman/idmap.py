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
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from pensieve.evidence import Evidence, EvidenceError
from pensieve.records import Change

MAX_FILE = 1 << 20


@dataclass(frozen=True)
class IdRange:
    """``count`` ids from ``inside`` (the namespace) mapped to ``outside`` (the host), as a line of
    /proc/PID/uid_map (user_namespaces(7))."""

    inside: int
    outside: int
    count: int


@dataclass(frozen=True)
class IdMap:
    """The uid and gid maps of one rootless store, with the user they belong to."""

    user: str
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]

    @staticmethod
    def _inside(ranges: tuple[IdRange, ...], host_id: int | None) -> int | None:
        if host_id is None:
            return None
        for r in ranges:
            if r.outside <= host_id < r.outside + r.count:
                return r.inside + host_id - r.outside
        return host_id

    def uid(self, host_uid: int | None) -> int | None:
        """The container's uid for HOST_UID (unchanged when outside the map)."""
        return self._inside(self.uids, host_uid)

    def gid(self, host_gid: int | None) -> int | None:
        """The container's gid for HOST_GID (unchanged when outside the map)."""
        return self._inside(self.gids, host_gid)

    def map_changes(self, changes: Iterable[Change]) -> None:
        """Each change's owner (and its original's, in ``lower``) as the container sees it, in place."""
        for ch in changes:
            ch.uid, ch.gid = self.uid(ch.uid), self.gid(ch.gid)
            lower = ch.lower
            if isinstance(lower, dict):
                if isinstance(lower.get("uid"), int):
                    lower["uid"] = self.uid(lower["uid"])
                if isinstance(lower.get("gid"), int):
                    lower["gid"] = self.gid(lower["gid"])


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
