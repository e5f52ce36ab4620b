"""What every live view shares: the ``/proc`` it reads, the engine records of the host's data roots
(read offline, read-only, through the same engines as every offline command), and the join of a
live process's cgroup owner with those records.

The engines' records are optional: with no readable data root (a host whose engine keeps its
state elsewhere, or an unprivileged user), a process is still attributed by its cgroup path, and
says its container is one no engine record describes.
"""

from __future__ import annotations

import os

from pensieve.live.attribution import cgroup_owner
from pensieve.live.procfs import ProcessGone, ProcFS, Unreadable
from pensieve.records.core import Problem
from pensieve.records.host import Container, Image
from pensieve.records.live import Owner

__all__ = ["LiveContext"]


class LiveContext:
    """The live host at PROC (default ``/proc``), with engine data from ROOTS (host roots or
    engine data roots, default ``/``; an empty list reads no engine data)."""

    def __init__(self, proc: str = "/proc", roots: list[str] | None = None) -> None:
        self.procfs = ProcFS(proc)
        self.roots = ["/"] if roots is None else list(roots)
        self.problems: list[Problem] = []
        self._containers: dict[str, Container] | None = None
        self._hosts: list = []
        self._images: dict[str, Image] | None = None
        self._pid1_ns: dict[str, int] | None = None

    # ---- engine records --------------------------------------------------------------------

    def containers(self) -> dict[str, Container]:
        """Every container the engines of ROOTS describe, by full id (read once)."""
        if self._containers is None:
            self._containers = {}
            for root in self.roots:
                self._open_root(root)
        return self._containers

    def _open_root(self, root: str) -> None:
        from pensieve.engines.discover import open_engines
        from pensieve.errors import EvidenceError, NotADataRoot
        from pensieve.evidence import open_evidence

        try:
            host = open_engines(open_evidence(root))
        except NotADataRoot:
            if root != "/":  # the default root without any engine is a host without engines
                self.problems.append(Problem(root, "no container engine data found here"))
            return
        except (OSError, ValueError, EvidenceError) as exc:  # one bad root: the others still join
            self.problems.append(Problem(root, f"engine data not read: {exc}"))
            return
        self._hosts.append(host)
        self.problems.extend(host.problems)
        for c in host.containers():
            self._containers.setdefault(c.id, c)  # type: ignore[union-attr]

    def image_for(self, container: Container) -> Image | None:
        """The engine record of CONTAINER's image (None: unknown or unreadable)."""
        if self._images is None:
            self._images = {}
            for host in self.engine_hosts():
                try:
                    for image in host.images():
                        self._images.setdefault(image.id, image)
                except (OSError, ValueError) as exc:
                    self.problems.append(
                        Problem(str(getattr(host, "evidence", "")), f"images not read: {exc}")
                    )
        if not container.image_id:
            return None
        return self._images.get(container.image_id) or self._images.get(
            container.image_id.removeprefix("sha256:")
        )

    def engine_hosts(self) -> list:
        """The Hosts opened over ROOTS (after :meth:`containers`)."""
        self.containers()
        return list(self._hosts)

    def close(self) -> None:
        """Close the engine hosts opened."""
        while self._hosts:
            self._hosts.pop().close()

    # ---- attribution -----------------------------------------------------------------------

    def owner(self, pid: int) -> tuple[Owner, str | None, dict[str, str]]:
        """(owner, the cgroup path it was read from, hierarchy -> path) of PID: the v2 path when
        it names a container, else the first v1 hierarchy that does (a hybrid host keeps
        containers in v1 ``pids``/``memory``/``cpu`` while v2 says ``/``)."""
        lines = self.procfs.cgroups(pid)
        paths = {controllers: path for _, controllers, path in lines}
        best: tuple[Owner, str | None] | None = None
        order = sorted(lines, key=lambda line: (line[0] != "0", line[0]))  # v2 first
        for _, _, path in order:
            owner = cgroup_owner(path)
            if owner.container_id:
                return owner, path, paths
            if best is None or (best[0].kind == "host" and owner.kind != "host"):
                best = (owner, path)
        if best is None:
            return Owner(kind="unknown"), None, paths
        return best[0], best[1], paths

    def container_for(self, owner: Owner) -> Container | None:
        """The engine record of OWNER's container (None: no engine data describes it)."""
        if owner.container_id is None:
            return None
        return self.containers().get(owner.container_id)

    def host_namespaces(self) -> dict[str, int]:
        """The namespaces of pid 1 (the host's, when PROC is the host's /proc)."""
        if self._pid1_ns is None:
            try:
                self._pid1_ns = self.procfs.namespaces(1)
            except (ProcessGone, Unreadable) as exc:
                self.problems.append(Problem(self.procfs.path(1, "ns"), f"host namespaces unknown: {exc}"))
                self._pid1_ns = {}
            else:
                if not self._pid1_ns:  # each link denied (pid 1 beyond the reader's ptrace reach)
                    self.problems.append(
                        Problem(
                            self.procfs.path(1, "ns"), "host namespaces unknown: no namespace link readable"
                        )
                    )
        return self._pid1_ns

    def matches(self, ref: str) -> set[str]:
        """The container ids REF names: an id or its prefix, an engine name (``/name`` too), a
        Kubernetes name (``container``, ``pod/container``, ``ns/pod/container``)."""
        from pensieve.engines.base import kubernetes_matches

        ref = ref.strip()
        containers = list(self.containers().values())
        named = {c.id for c in containers if c.name is not None and c.name.lstrip("/") == ref.lstrip("/")}
        if named:
            return named
        kube = {c.id for c in kubernetes_matches(containers, ref)}
        if kube:
            return kube
        hexref = ref.lower()
        if hexref and all(ch in "0123456789abcdef" for ch in hexref):
            if len(hexref) == 64:
                return {hexref}
            return {c.id for c in containers if c.id.startswith(hexref)} or {f"prefix:{hexref}"}
        return set()

    def wanted(self, refs: list[str] | None) -> set[str] | None:
        """The container ids the --container REFS name together (None: no filter); LookupFailed
        (exit 4) for a ref that names nothing."""
        if not refs:
            return None
        from pensieve.errors import LookupFailed

        out: set[str] = set()
        for ref in refs:
            found = self.matches(ref)
            if not found:
                raise LookupFailed(f"no container {ref!r} on this host (an id, a name or ns/pod/container)")
            out |= found
        return out

    @staticmethod
    def selected(container_id: str | None, wanted: set[str] | None) -> bool:
        """Whether CONTAINER_ID is one of WANTED (None: every one); ``prefix:HEX`` entries match
        ids no engine record knows by their prefix."""
        if wanted is None:
            return True
        if container_id is None:
            return False
        if container_id in wanted:
            return True
        return any(w.startswith("prefix:") and container_id.startswith(w[7:]) for w in wanted)


def is_root() -> bool:
    """Whether pensieve runs as root (what an unprivileged run cannot see is said, not guessed)."""
    return os.geteuid() == 0
