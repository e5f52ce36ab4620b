"""The Host interface: what every engine (Docker now; containerd and Podman next) answers.

A host is one piece of evidence seen through one engine's storage. Analyses -- layered views,
diff, whence, verify, compare, memory-source lookup, recovery attribution -- call only this
interface and the Evidence interface: no engine internals, no storage-driver names.

Contract:

* ``evidence`` -- the :class:`~pensieve.evidence.base.Evidence` the host reads (nothing else);
* ``engine`` -- the engine's name (``"docker"``, ``"containerd"``, ``"podman"``, ``"archive"``);
* ``problems`` -- the one channel for what could not be read, as :class:`~pensieve.records.Problem`
  records naming the evidence path; a problem never stops the rest of the inventory;
* ``containers()`` / ``container(ref)`` -- every container, or one by id, unique prefix or name
  (``LookupFailed`` when absent or ambiguous); each carries its ordered layer chain;
* ``images()`` / ``image(ref)`` / ``image_layers(image)`` -- images, and an image's layers bottom
  to top (each :class:`~pensieve.records.Layer` with its contents' evidence path, or None);
* ``volumes()`` -- volumes and who mounts them;
* ``driver(layer)`` -- the :class:`StorageDriver` that gives a layer's directory its meaning
  (whiteouts, opaque directories, redirects, copy-up): the only place driver rules live;
* ``checkpoints(container)`` -- the container's checkpoints, name -> evidence path;
* ``boundaries()`` -- the host paths that are evidence, which no output may touch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pensieve.evidence.base import Evidence
from pensieve.records import Container, Image, Layer, Problem, Volume


class StorageDriver:
    """How one storage driver lays a layer out on disk (overlay2, overlay, aufs, vfs, btrfs, the
    layer tars of image archives). See ``pensieve.engines.docker.drivers``."""

    #: the driver's name as the engine records it
    name: str = ""


class Host(ABC):
    """One engine's view of one piece of evidence."""

    evidence: Evidence
    engine: str = ""
    problems: list[Problem]

    @abstractmethod
    def containers(self) -> list[Container]:
        """Every container, each with its layer chain resolved."""

    @abstractmethod
    def container(self, ref: str) -> Container:
        """One container by full id, unique id prefix or name; LookupFailed otherwise."""

    @abstractmethod
    def images(self) -> list[Image]:
        """Every image."""

    @abstractmethod
    def image(self, ref: str) -> Image:
        """One image by id, id prefix, tag or digest; LookupFailed otherwise."""

    @abstractmethod
    def image_layers(self, image: Image) -> list[Layer]:
        """The image's layers bottom to top (shared between callers: treat as read-only)."""

    def volumes(self) -> list[Volume]:
        """Volumes and the containers mounting them (none for engines without volumes)."""
        return []

    def checkpoints(self, container: Container) -> dict[str, str]:
        """The container's checkpoints: name -> evidence path of the CRIU image directory."""
        return {}

    def boundaries(self) -> list[str]:
        """Host paths that are evidence: the evidence's own, and every data root on it."""
        return self.evidence.boundaries()
