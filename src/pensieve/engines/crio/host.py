"""One CRI-O node: its containers/storage graphroots, the specs and runtime state CRI-O saved.

``CrioHost`` is a PodmanHost (engines/podman/host.py) over the same store -- layers, images,
the overlay driver, diff and whence are containers/storage's, not CRI-O's -- whose containers
are CRI-O's (containers.py) and whose pods are the Kubernetes pod sandboxes (``pod_records``,
the ``pods`` command).  A graphroot Podman shares (one store, both engines) keeps its images
with Podman's host (they are the store's, listed once) while its CRI-O containers are listed
here only (PodmanHost leaves them out).

A container's state comes from ``<runroot>/overlay-containers/<id>/userdata/state.json``; the
runroot is a tmpfs on a node, so a disk image seldom holds it: the state is then ``unknown``
with a problem saying so.

References: github.com/cri-o/cri-o internal/oci/container.go (StatePath), internal/storage/
runtime.go (RunDir below the runroot), server/sandbox_run_linux.go; the Kubernetes CRI
PodSandboxState (READY / NOTREADY).
"""

from __future__ import annotations

import posixpath
from functools import cached_property

from pensieve.engines.containerd.cri import CriMetadata, build_pods
from pensieve.engines.crio.containers import apply_state, crio_container
from pensieve.engines.crio.layout import is_crio_container
from pensieve.engines.podman.host import PodmanHost, _Graphroot
from pensieve.engines.podman.roots import store_drivers
from pensieve.engines.podman.storage import read_containers
from pensieve.evidence.base import EvidenceError, relative_to
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import Change, Container, Image, Problem, Volume
from pensieve.records.kubernetes import Pod

__all__ = ["CrioHost"]

#: the largest state.json read (a few hundred bytes)
MAX_STATE = 1 << 20


class CrioHost(PodmanHost):
    """Every CRI-O graphroot of one evidence (the Host interface of engines/base.py)."""

    engine = "cri-o"

    def __init__(
        self, evidence, roots: list[tuple[str, str | None, str]], shared: set[str] | frozenset = frozenset()
    ) -> None:
        """ROOTS: (graphroot, runroot or None, how found) as engines/crio/roots.py finds them;
        SHARED: the graphroots a PodmanHost of the same evidence lists too."""
        super().__init__(evidence, [path for path, _run, _how in roots])
        self.runroots = {path: run for path, run, _how in roots}
        self._found = {path: how for path, _run, how in roots}
        self.shared = set(shared)
        self._cri: dict[str, CriMetadata] = {}

    @cached_property
    def how_found(self) -> dict[str, str]:
        return dict(self._found)

    def root_rows(self) -> list[dict]:
        """One ``roots`` row per graphroot: the run directory and whether Podman shares it."""
        rows = []
        for root in self.roots:
            run = self.runroots.get(root.path)
            hints = [f"runroot: {run}" if run else "runroot: not in the evidence"]
            if root.path in self.shared:
                hints.append("store shared with Podman")
            rows.append(
                {
                    "engine": "cri-o",
                    "path": root.path,
                    "layout": "containers/storage",
                    "drivers": store_drivers(self.evidence, root.path),
                    "hints": hints,
                    "found": self.how_found[root.path],
                }
            )
        return rows

    # ---- images: a shared store's images are listed by its PodmanHost ----------------------
    def images(self) -> list[Image]:
        return [i for i in self._images if i.data_root not in self.shared]

    # ---- containers ------------------------------------------------------------------------
    @cached_property
    def _containers(self) -> list[Container]:
        out: list[Container] = []
        for root in self.roots:
            libpod = root.state.containers
            for sc in read_containers(self.evidence, root.path, self.problems):
                if sc.id in libpod:
                    continue
                spec = self._crio_spec(root, sc.id, sc.metadata)
                if not is_crio_container(sc.metadata, spec):
                    continue
                mine: list[Problem] = []
                c, cri = crio_container(sc, _rebind(spec, mine), root.path)
                for p in mine:
                    self._add(c, p.source, p.message)
                self._cri[c.id] = cri
                self._state(root, c)
                self._fill_layers(root, c, True)
                out.append(c)
        return out

    def _crio_spec(self, root: _Graphroot, cid: str, metadata: dict) -> Doc | None:
        """The spec CRI-O saved below the graphroot, else its copy in the run directory."""
        spec = self._runtime_spec(root, cid)
        run = self.runroots.get(root.path)
        if spec is None and run and is_crio_container(metadata, None):
            run_root = _Graphroot(run, {}, [], root.state)
            spec = self._runtime_spec(run_root, cid)
        return spec

    def _state(self, root: _Graphroot, c: Container) -> None:
        """C's runtime state from the run directory's state.json (unknown, with a problem, when
        it is not on the evidence or cannot be read)."""
        run = self.runroots.get(root.path)
        if run is None:
            self._add(c, root.path, "runtime state unknown: no run directory (runroot) on the evidence")
            return
        path = posixpath.join(run, "overlay-containers", c.id, "userdata", "state.json")
        if not self.evidence.is_file(path):
            self._add(c, path, "runtime state unknown: state.json not on the evidence (a runroot is a tmpfs)")
            return
        mine: list[Problem] = []
        try:
            raw = self.evidence.read_bytes(path, MAX_STATE + 1)
            doc = load(raw, path, mine, subject=c.id, max_bytes=MAX_STATE)
        except (EvidenceError, OSError, UntrustedJSONError) as exc:
            self._add(c, path, f"runtime state unreadable: {exc}".replace(f"{path}: ", ""))
            return
        apply_state(c, doc)
        for p in mine:
            self._add(c, p.source, p.message)

    # ---- pods --------------------------------------------------------------------------------
    @cached_property
    def _pods(self) -> list:
        return []  # libpod pods are Podman's; the Kubernetes pods are pod_records()

    def pod_records(self) -> list[Pod]:
        """The pod sandboxes and their containers (containerd/cri.py build_pods), each pod
        ``ready`` while its sandbox runs, ``notready`` once it stopped, ``unknown`` without
        its state."""
        containers = self.containers()
        pods = build_pods(containers, self._cri, self.problems, has_state=True)
        sandboxes = {c.id: c for c in containers if c.is_sandbox}
        for pod in pods:
            sandbox = sandboxes.get(pod.sandbox_id)
            state = sandbox.state if sandbox else "unknown"
            pod.state = "ready" if state == "running" else "unknown" if state == "unknown" else "notready"
        return pods

    def volumes(self) -> list[Volume]:
        return []  # CRI-O keeps no named volumes (libpod's are Podman's)

    def diff_filter(self, container: Container, changes: list[Change]) -> list[Change]:
        return changes  # CRI-O has no diff command of its own to compare with

    # ---- whence ------------------------------------------------------------------------------
    def holds(self, path: str) -> bool:
        """PATH is below a CRI-O graphroot; in a store shared with Podman, only the RW layers and
        container directories of CRI-O's containers are CRI-O's."""
        for root in self.roots:
            rel = relative_to(root.path, path)
            if rel is None:
                continue
            if root.path not in self.shared:
                return True
            mine = [c for c in self.containers() if c.data_root == root.path]
            dirs = [f"overlay/{c.rw_layer}" for c in mine if c.rw_layer] + [
                f"overlay-containers/{c.id}" for c in mine
            ]
            if any(rel == d or rel.startswith(d + "/") for d in dirs):
                return True
        return False


def _rebind(spec: Doc | None, problems: list[Problem]) -> Doc | None:
    """SPEC with its problems going to PROBLEMS (a Doc made by _runtime_spec reports to the host)."""
    if spec is None:
        return None
    return Doc(spec.value, spec.source, problems, spec.prefix, spec.subject)
