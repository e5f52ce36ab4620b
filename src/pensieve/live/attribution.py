"""Which container a cgroup path belongs to, by the names each engine gives its cgroups.

The cgroup path is the reliable link from a live process to its container: a process can change
its name, its namespaces' contents and its uid, but not leave its cgroup without privilege.  The
engines name them so (cgroupfs driver, then systemd driver):

* Docker: ``/docker/<id>``; ``/system.slice/docker-<id>.scope``;
* containerd (standalone, ``ctr run``): ``/<namespace>/<id>`` -- the same shape as any engine's
  container under a custom cgroup parent, so the engine is left open there (the engines' records
  decide; ``namespace`` holds the parent's name);
* Kubernetes through CRI: ``/kubepods/<qos>/pod<uid>/<id>``;
  ``/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/<runtime>-<id>.scope``
  with runtime ``cri-containerd``, ``crio`` or ``docker``; Guaranteed pods sit directly under
  kubepods;
* Podman: ``/machine.slice/libpod-<id>.scope`` (rootful), under ``user@UID.service`` (rootless),
  ``/libpod_parent/libpod-<id>`` (cgroupfs); ``libpod-conmon-<id>.scope`` holds conmon, the
  monitor beside the container, not in it;
* CRI-O: ``crio-<id>.scope``, and ``crio-conmon-<id>.scope`` for its monitor.

A container may nest cgroups of its own below these (systemd in a container, ``init.scope``):
the innermost engine-named component wins.  The pod uid's dashes are underscores in systemd
slice names (systemd.unit(5): ``-`` separates a slice's parents).

References: moby daemon/oci_linux.go (cgroup parent ``docker``, systemd ``docker-<id>.scope``);
containerd cmd/ctr (``/<namespace>/<id>``); kubelet pkg/kubelet/cm/cgroup_manager_linux.go
(``kubepods``, qos classes, ``pod<uid>``); libpod pkg/specgen (``machine.slice``, ``libpod-``,
``libpod_parent``); cri-o internal/config/cgmgr (``crio-``, ``crio-conmon-``).
"""

from __future__ import annotations

import re

from pensieve.records.live import Owner

__all__ = ["cgroup_owner", "container_path"]

_ID = r"[0-9a-f]{64}"
#: one path component of a systemd scope or a plain directory naming a container
_SCOPE = re.compile(rf"^(?:(?P<prefix>[a-z][a-z0-9-]*?)-)?(?P<id>{_ID})(?:\.scope)?$")
_POD = re.compile(r"^(?:kubepods-(?:[a-z]+-)?)?pod(?P<uid>[0-9a-f_-]{32,36})(?:\.slice)?$")
_QOS = ("guaranteed", "burstable", "besteffort")

#: a scope prefix -> (owner kind, engine)
_PREFIXES = {
    "docker": ("container", "docker"),
    "cri-containerd": ("container", "containerd"),
    "crio": ("container", "crio"),
    "crio-conmon": ("conmon", "crio"),
    "libpod": ("container", "podman"),
    "libpod-conmon": ("conmon", "podman"),
}


def container_path(path: str) -> tuple[int, str, str] | None:
    """(index of the component, its prefix, the 64-hex id) of the innermost component of PATH
    naming a container, or None."""
    parts = path.split("/")
    for index in range(len(parts) - 1, -1, -1):
        m = _SCOPE.match(parts[index])
        if m:
            return index, m.group("prefix") or "", m.group("id")
    return None


def _pod(parts: list[str]) -> tuple[str | None, str | None]:
    """(pod uid with dashes, qos) named by the kubepods components of PARTS."""
    uid = qos = None
    for part in parts:
        stem = part.removesuffix(".slice")
        for q in _QOS:
            if stem in (q, f"kubepods-{q}"):
                qos = q
        m = _POD.match(part)
        if m:
            uid = m.group("uid").replace("_", "-")
    return uid, qos


def cgroup_owner(path: str) -> Owner:
    """The owner of the cgroup at PATH (a ``/proc/PID/cgroup`` path)."""
    parts = [p for p in path.split("/") if p]
    unit = next((p for p in reversed(parts) if p.endswith((".scope", ".service"))), None)
    found = container_path("/".join(parts))
    kube = bool(parts) and parts[0].startswith("kubepods")
    if found is None:
        if kube:
            uid, qos = _pod(parts)
            return Owner(kind="sandbox-unknown" if uid else "host", engine="kubernetes", pod_uid=uid, qos=qos)
        return Owner(kind="host", unit=unit)
    index, prefix, cid = found
    kind, engine = _PREFIXES.get(prefix, ("container", None))
    namespace = None
    if kube:
        uid, qos = _pod(parts[:index])
        return Owner(kind, engine or "kubernetes", cid, uid, qos, unit=unit)
    if engine is None:
        if prefix:
            return Owner(kind="unknown", container_id=cid, unit=unit)
        # a bare id: /docker/<id>, /libpod_parent/libpod-<id> handled above, /<namespace>/<id>
        # (ctr run), or a custom --cgroup-parent: the engine's records decide which
        parent = parts[index - 1] if index > 0 else None
        if parent == "docker":
            engine = "docker"
        elif parent is not None and not parent.endswith((".slice", ".scope", ".service")):
            namespace = parent
    return Owner(kind, engine, cid, namespace=namespace, unit=unit)
