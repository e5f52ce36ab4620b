"""Where CRI-O keeps its containers, and how to tell them from Podman's in a shared store.

CRI-O keeps images and containers in containers/storage (engines/podman/storage.py), the same
store Podman uses:

* graphroot ``[crio] root`` (default ``/var/lib/containers/storage``) and run directory
  ``[crio] runroot`` (default ``/var/run/containers/storage``, a tmpfs), with ``storage_driver``
  (default ``overlay``), from ``/etc/crio/crio.conf`` then every ``/etc/crio/crio.conf.d/*.conf``
  in lexical order, the last setting winning (crio.conf(5), crio.conf.d(5)); unset, the values
  of containers-storage.conf(5) apply;
* ``/var/lib/crio`` holds CRI-O's own small files (``version``, ``clean.shutdown``): a node that
  ran CRI-O;
* each container's ``containers.json`` entry carries a ``metadata`` string, CRI-O's
  ``RuntimeContainerMetadata`` (internal/storage/runtime.go): ``pod-name``, ``pod-id``,
  ``image-name``, ``image-id``, ``name``, ``metadata-name``, ``uid``/``namespace`` (pods only),
  ``mountlabel``, ``created-at`` (Unix seconds), ``attempt``, ``pod`` (true for the infra
  container), ``privileged``; libpod's metadata has only image-name, image-id, name, created-at;
* ``<graphroot>/overlay-containers/<id>/userdata/config.json`` and the same path below the
  runroot: the OCI spec, whose annotations say ``io.container.manager: cri-o`` (Podman writes
  ``libpod``; Podman also writes ``io.kubernetes.cri-o.SandboxID`` on pod members, so that key
  alone proves nothing);
* ``<runroot>/overlay-containers/<id>/userdata/state.json``: the runtime state CRI-O records
  (internal/oci/container.go ContainerState: the OCI ``specs.State`` -- ``ociVersion``, ``id``,
  ``status`` creating|created|running|stopped, ``pid``, ``bundle``, ``annotations`` -- plus
  ``created``, ``started``, ``finished`` (Go times), ``exitCode``, ``oomKilled``, ``error``,
  ``initPid``).

References: github.com/cri-o/cri-o internal/storage/runtime.go (RuntimeContainerMetadata),
internal/annotations/annotations.go, internal/oci/container.go (ContainerState, StatePath:
``<run dir>/state.json``), server/container_create.go (config.json saved to both the graphroot
and the run directory), internal/lib/container_server.go (LoadContainer skips a spec whose
``io.container.manager`` is not ``cri-o``), docs/crio.conf.5.md, docs/crio.conf.d.5.md.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

from pensieve.evidence import Evidence, EvidenceError
from pensieve.formats.untrusted_json import Doc

CRIO_CONF = "/etc/crio/crio.conf"
CRIO_CONF_D = "/etc/crio/crio.conf.d"
CRIO_STATE_DIR = "/var/lib/crio"
DEFAULT_ROOT = "/var/lib/containers/storage"
#: the default runroot, and the same directory as /var/run's link target names it
DEFAULT_RUNROOTS = ("/var/run/containers/storage", "/run/containers/storage")
MANAGER = "io.container.manager"
MANAGER_CRIO = "cri-o"
MANAGER_LIBPOD = "libpod"
CONTAINER_TYPE = "io.kubernetes.cri-o.ContainerType"
#: RuntimeContainerMetadata keys libpod never writes (json tags without omitempty: always there)
CRIO_METADATA_KEYS = ("pod-id", "metadata-name")


def is_crio_metadata(metadata: Mapping[str, object]) -> bool:
    """A containers.json ``metadata`` (already decoded) written by CRI-O."""
    return all(key in metadata for key in CRIO_METADATA_KEYS)


def is_crio_spec(spec: Doc | None) -> bool:
    """An OCI spec (userdata/config.json) CRI-O wrote: ``io.container.manager`` is ``cri-o``, or,
    without a manager, the ``io.kubernetes.cri-o.ContainerType`` annotation is there."""
    if spec is None:
        return False
    annotations = spec.value.get("annotations")
    if not isinstance(annotations, dict):
        return False
    manager = annotations.get(MANAGER)
    if manager is not None:
        return manager == MANAGER_CRIO
    return CONTAINER_TYPE in annotations


def is_crio_container(metadata: Mapping[str, object], spec: Doc | None) -> bool:
    """A storage container CRI-O made (its metadata or its spec says so)."""
    return is_crio_metadata(metadata) or is_crio_spec(spec)


def _conf_files(ev: Evidence) -> list[str]:
    """crio.conf, then the drop-ins in lexical order (crio.conf.d(5): the last one wins)."""
    files = [CRIO_CONF] if ev.is_file(CRIO_CONF) else []
    try:
        names = sorted(ev.listdir(CRIO_CONF_D))
    except (EvidenceError, OSError):
        names = []
    return files + [posixpath.join(CRIO_CONF_D, n) for n in names if n.endswith(".conf")]


def crio_config(ev: Evidence, problems: list) -> dict[str, tuple[str, str]]:
    """The ``[crio]`` table's ``root``, ``runroot``, ``storage_driver`` and ``log_dir`` as the
    evidence's configuration sets them: key -> (value, the file that set it last).  A file that
    is not TOML is a problem and is skipped."""
    from pensieve.records import Problem

    out: dict[str, tuple[str, str]] = {}
    for path in _conf_files(ev):
        import tomllib  # only where a crio.conf is found (start-up time)

        try:
            doc = tomllib.loads(ev.read_bytes(path, 1 << 20).decode("utf-8", "replace"))
        except (EvidenceError, OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(Problem(path, f"CRI-O configuration unreadable: {exc}"))
            continue
        table = doc.get("crio")
        if not isinstance(table, dict):
            continue
        for key in ("root", "runroot", "storage_driver", "log_dir"):
            value = table.get(key)
            if isinstance(value, str) and value:
                out[key] = (value, path)
    return out


def default_runroot(ev: Evidence) -> str | None:
    """The default runroot as the evidence holds it (None when neither spelling is a directory)."""
    return next((p for p in DEFAULT_RUNROOTS if ev.is_dir(p)), None)
