"""What `podman diff` leaves out (libpod/diff.go ``containerMounts``): the mount points libpod
creates in every container's RW layer for the files and filesystems it mounts over them. A
change at exactly one of these paths is still listed, but as one podman does not report."""

from __future__ import annotations

from pensieve.records import Change

#: libpod/diff.go containerMounts (exact paths, not their subtrees)
CONTAINER_MOUNTS = frozenset(
    {
        "/dev",
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/proc",
        "/run",
        "/run/.containerenv",
        "/run/secrets",
        "/sys",
        "/etc/mtab",
    }
)


def mark_podman_silent(changes: list[Change]) -> list[Change]:
    """CHANGES with ``engine_reports`` cleared where `podman diff` stays silent (in place)."""
    for change in changes:
        if change.path in CONTAINER_MOUNTS:
            change.engine_reports = False
    return changes
