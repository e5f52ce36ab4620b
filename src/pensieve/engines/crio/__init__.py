"""The CRI-O engine: ``layout`` (where CRI-O keeps its graphroot, runroot and configuration; how
its containers differ from Podman's in one store), ``roots`` (which graphroots of an evidence
are CRI-O's), ``containers`` (a container from containers.json, its config.json annotations
and state.json) and ``host`` (``CrioHost``, a PodmanHost over the same containers/storage).
The fixture pensieve tests it with is hand-made (tests/fixtures/crio/README.md): CRI-O does not
run on the machine pensieve is developed on.
"""

from __future__ import annotations

__all__ = ["CrioHost", "crio_roots"]


def __getattr__(name: str):
    if name == "CrioHost":
        from pensieve.engines.crio.host import CrioHost

        return CrioHost
    if name == "crio_roots":
        from pensieve.engines.crio.roots import crio_roots

        return crio_roots
    raise AttributeError(name)
