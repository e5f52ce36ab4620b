"""Where checkpoints come from: a CRIU image directory, a Docker data root, or a checkpoint archive.

:func:`open_source` takes

* a CRIU image directory (``criu dump -D DIR``, or any directory holding ``inventory.img``);
* a Docker data root (or a host root holding one) with a container and a checkpoint name:
  ``docker checkpoint create C NAME`` keeps the images in ``containers/<id>/checkpoints/NAME``;
* a checkpoint archive -- Podman ``container checkpoint --export``, CRI-O and the kubelet's
  forensic checkpoints (``/var/lib/kubelet/checkpoints/checkpoint-<pod>_<ns>-<ctr>-<time>.tar``),
  containerd's CRI checkpoints -- plain, gzip or zstd: ``config.dump``, ``spec.dump``,
  ``network.status``, ``stats-dump``, ``checkpoint/`` (the images), ``rootfs-diff.tar`` and
  ``deleted.files``; a plain tar of a CRIU image directory is accepted too;
* a host root holding the kubelet's checkpoint directory (``<kubelet root>/checkpoints/*.tar``:
  :func:`kubelet_checkpoints` finds them), one archive picked with ``checkpoint`` (its file name).

and returns a :class:`Source`: the open :class:`~pensieve.formats.criu.Checkpoint` (for the views
of :mod:`pensieve.memory.views`), a :class:`CheckpointInfo` record with what the source says
about the container (engine, id, name, image, runtime, Kubernetes pod / namespace / container from
the annotations ...) and, for archives, :meth:`Source.changes` -- ``rootfs-diff.tar`` and
``deleted.files`` as :class:`~pensieve.records.Change` records.  Nothing is extracted or written.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from datetime import UTC, datetime

from pensieve.evidence.base import Evidence, EvidenceError
from pensieve.formats.criu.checkpoint import Checkpoint, EvidenceStore
from pensieve.formats.criu.images import CriuImageError
from pensieve.records import Change, record_fields
from pensieve.records.host import Container
from pensieve.records.memory import CheckpointInfo
from pensieve.times import parse_rfc3339

__all__ = [
    "CheckpointInfo",
    "Source",
    "SourceError",
    "docker_checkpoints",
    "kubelet_checkpoints",
    "open_source",
    "parse_kubelet_name",
]

#: config.dump / spec.dump / deleted.files / network.status are JSON documents of this size at most
_MAX_JSON = 64 << 20


class SourceError(EvidenceError):
    """The source is not a usable checkpoint (exit 3 in the CLI)."""


class Source:
    """An opened checkpoint source: ``checkpoint``, ``info``, ``changes()``; close it after use.

    ``boundaries()`` are the host paths no output may be written into: the evidence's own (a
    data root's evidence, an archive file), and for a CRIU directory given as SOURCE the
    directory holding it (an incremental chain keeps its siblings there)."""

    def __init__(
        self, checkpoint: Checkpoint, info: CheckpointInfo, archive=None, evidence: Evidence | None = None
    ) -> None:
        self.checkpoint = checkpoint
        self.info = info
        self.archive = archive
        self.evidence = evidence
        self._changes: list[Change] | None = None

    @property
    def problems(self) -> list[str]:
        return self.info.problems + self.checkpoint.problems

    def boundaries(self) -> list[str]:
        return self.checkpoint.boundaries()

    def changes(self) -> list[Change]:
        """Filesystem changes the archive carries: rootfs-diff.tar entries and deleted.files."""
        if self._changes is None:
            self._changes = _archive_changes(self) if self.archive is not None else []
        return self._changes

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()
        if self.evidence is not None:
            self.evidence.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- opening -----------------------------------------------------------------------------------


def open_source(source: str, container: str | None = None, checkpoint: str | None = None) -> Source:
    """Open SOURCE (an image directory, a checkpoint archive, or a data root with CONTAINER and
    CHECKPOINT).  Unusable sources raise :class:`SourceError`; a named container that is not
    there raises ``LookupFailed`` (pensieve.engines.docker)."""
    path = os.fspath(source)
    if not os.path.lexists(path):
        raise SourceError(f"source does not exist: {path}")
    if os.path.isdir(path) and container is None and checkpoint is None:
        from pensieve.collect.bundle import bundle_checkpoint

        path = bundle_checkpoint(path) or path  # a collect bundle: the checkpoint it holds
    if os.path.isdir(path):
        if container is None and checkpoint is None and os.path.exists(os.path.join(path, "inventory.img")):
            return _criu_dir(path)
        if container is None:
            hint = ""
            try:
                found = docker_checkpoints(path)
            except (EvidenceError, OSError):
                found = []
            kubelet = _kubelet_pick(path, checkpoint, allow_single=not found)
            if isinstance(kubelet, Source):
                return kubelet
            if found or kubelet:
                hint = "; checkpoints here: " + ", ".join(
                    [f"--container {_docker_label(c)} --checkpoint {c['name']}" for c in found[:6]]
                    + [f"--checkpoint {name}" for name in kubelet[:6]]
                )
            raise SourceError(
                f"{path} holds no inventory.img: not a CRIU image directory (for a Docker data "
                f"root name --container and --checkpoint, for a kubelet checkpoint --checkpoint{hint})"
            )
        return _docker(path, container, checkpoint)
    if container is not None or checkpoint is not None:
        raise SourceError(
            f"{path} is a file: --container/--checkpoint name a checkpoint in a Docker data root"
        )
    return _archive(path)


def _docker_label(c: dict) -> str:
    return c["container_name"] or c["container_id"][:12]


def _inventory_facts(ck: Checkpoint, info: CheckpointInfo) -> None:
    try:
        info.criu_images_version = ck.inventory.get("img_version")
        info.tasks = len(ck.image("pstree.img", required=True).entries)  # no core decoded yet
    except CriuImageError as exc:
        raise SourceError(f"unusable checkpoint: {exc}") from None
    # a refused parent link (outside the SOURCE, absolute, a loop) is a problem, not the end
    ck.settle_chain()


def _criu_dir(path: str) -> Source:
    """A CRIU image directory given as SOURCE: the evidence is the directory itself, so its
    ``parent`` chain may not leave it."""
    from pensieve.evidence import open_evidence

    try:
        evidence = open_evidence(path)
    except EvidenceError as exc:
        raise SourceError(f"unusable checkpoint: {exc}") from None
    try:
        # the directory holding it is protected too: an incremental chain keeps its siblings there
        holder = os.path.dirname(os.path.realpath(path))
        ck = Checkpoint(store=EvidenceStore(evidence, "/", label=path, protect=[holder]))
        info = CheckpointInfo(kind="criu", source=path, checkpoint=ck.path)
        _inventory_facts(ck, info)
    except CriuImageError as exc:
        evidence.close()
        raise SourceError(f"unusable checkpoint: {exc}") from None
    except BaseException:
        evidence.close()
        raise
    return Source(ck, info, evidence=evidence)


def _host(path: str):
    from pensieve.engines.docker import DockerHost, NotADataRoot
    from pensieve.evidence import open_evidence

    try:
        return DockerHost(open_evidence(path))
    except NotADataRoot as exc:
        raise SourceError(str(exc)) from None


def docker_checkpoints(path: str) -> list[dict]:
    """Every Docker checkpoint in the data roots of PATH: container id/name, name, directory."""
    host = _host(path)
    out = []
    for c in host.containers():
        for n, where in host.checkpoints(c).items():
            out.append(
                {
                    "container_id": c.id,
                    "container_name": c.name,
                    "name": n,
                    "path": where,
                    "data_root": c.data_root,
                }
            )
    return out


#: whether the engines' container record carries the OCI runtime (TODO: Container.runtime)
_CONTAINER_RUNTIME = "runtime" in (record_fields(Container) or ())


def _pick_checkpoint(c: Container, found: dict[str, str], name: str | None) -> str:
    """The evidence path of checkpoint NAME of C (the only one when NAME is None)."""
    from pensieve.engines.docker import LookupFailed

    names = sorted(found)
    if name is None:
        if len(names) == 1:
            name = names[0]
        else:
            raise LookupFailed(
                f"container {c.name or c.id[:12]} has "
                + (
                    f"checkpoints {', '.join(names)}: name one with --checkpoint"
                    if names
                    else "no checkpoints"
                )
            )
    if name not in found:
        raise LookupFailed(
            f"no checkpoint {name!r} for container {c.name or c.id[:12]}"
            + (f" (it has: {', '.join(names)})" if names else " (it has none)")
        )
    return found[name]


def _docker(path: str, container: str, name: str | None) -> Source:
    """Checkpoint NAME of CONTAINER in the data roots of PATH, read through the host's evidence;
    its ``parent`` chain may not leave the container's checkpoints directory."""
    host = _host(path)
    c = host.container(container)  # LookupFailed: exit 4
    ev_dir = _pick_checkpoint(c, host.checkpoints(c), name)
    return container_checkpoint(host, c, ev_dir, path)


def container_checkpoint(host, c: Container, ev_dir: str, path: str) -> Source:
    """The checkpoint of container C kept at EV_DIR on HOST's evidence (``host.checkpoints(c)``),
    read through that evidence; PATH names the source in the record.  Closing the Source closes
    the host's evidence too."""
    name = posixpath.basename(ev_dir)
    host_dir = host.evidence.host_path(ev_dir)
    try:
        store = EvidenceStore(host.evidence, ev_dir, boundary=posixpath.dirname(ev_dir), label=host_dir)
        ck = Checkpoint(store=store)
    except CriuImageError as exc:
        raise SourceError(f"unusable checkpoint: {exc}") from None
    info = CheckpointInfo(
        kind="docker",
        source=path,
        checkpoint=ck.path,
        name=name,
        engine="Docker",
        container_id=c.id,
        container_name=c.name,
        image=c.image,
        image_id=c.image_id,
        created=_ns(c.created),
        hostname=c.hostname,
        command=list(c.command),
        env=list(c.env),
        labels=dict(c.labels),
    )
    info.pod = c.labels.get("io.kubernetes.pod.name")  # dockershim containers carry these labels
    info.namespace = c.labels.get("io.kubernetes.pod.namespace")
    info.pod_uid = c.labels.get("io.kubernetes.pod.uid")
    info.k8s_container = c.labels.get("io.kubernetes.container.name")
    if _CONTAINER_RUNTIME:
        info.runtime = c.runtime  # type: ignore[attr-defined]
    try:
        info.checkpointed = host.evidence.lstat(ev_dir).mtime_ns
    except (EvidenceError, OSError):
        pass
    # host.problems are about the data root at large (layer directories ...): not this checkpoint's
    _inventory_facts(ck, info)
    return Source(ck, info, evidence=host.evidence)


def _ns(value) -> int | None:
    """A time as the engines give it (RFC 3339 text, or nanoseconds already) in nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_rfc3339(value)


def _json_member(archive, name: str, info: CheckpointInfo):
    if name not in archive.members:
        return None
    try:
        return json.loads(archive.read(name, _MAX_JSON))
    except (CriuImageError, ValueError, UnicodeDecodeError) as exc:
        info.problems.append(f"{archive.where(name)}: unreadable JSON ({exc})")
        return None


def _archive(path: str, evidence: Evidence | None = None, ev_path: str | None = None) -> Source:
    """The archive at host path PATH, or at EV_PATH of EVIDENCE (a host root; PATH then labels it)."""
    from pensieve.memory.checkpoint_archive import ArchiveStore, CheckpointArchive

    try:
        if evidence is not None and ev_path is not None:
            archive = CheckpointArchive.in_evidence(evidence, ev_path, path)
        else:
            archive = CheckpointArchive(path)
    except CriuImageError as exc:
        raise SourceError(f"unusable checkpoint archive: {exc}") from None
    try:
        if "checkpoint/inventory.img" in archive.members:
            prefix = "checkpoint"
        elif "inventory.img" in archive.members:
            prefix = "."
        else:
            kinds = [m for m in ("checkpointed.pods", "pod.dump") if m in archive.members]
            what = f" (a {'kubelet' if kinds[0] == 'checkpointed.pods' else 'pod'} archive: " if kinds else ""
            raise SourceError(
                f"{path}: no checkpoint/inventory.img: not a container checkpoint archive"
                + (what + "open the container archives it lists)" if kinds else "")
            )
        ck = Checkpoint(archive.where(prefix), store=ArchiveStore(archive, prefix))
        if evidence is not None:
            ck.protect += evidence.boundaries()  # the host root holding the archive
        else:
            ck.protect.append(os.path.realpath(path))  # the archive file (and so its directory)
        info = CheckpointInfo(
            kind="archive", source=path, checkpoint=ck.path, compression=archive.compression
        )
        info.problems += archive.problems
        info.members = sorted({m.split("/", 1)[0] for m in archive.members})
        config = _json_member(archive, "config.dump", info)
        spec = _json_member(archive, "spec.dump", info)
        _describe(info, config if isinstance(config, dict) else {}, spec if isinstance(spec, dict) else {})
        status = _json_member(archive, "status.dump", info)
        _describe_status(info, status if isinstance(status, dict) else {})
        _describe_name(info, posixpath.basename(ev_path or path))
        info.network = _json_member(archive, "network.status", info)
        _inventory_facts(ck, info)
    except BaseException:
        archive.close()
        raise
    return Source(ck, info, archive)


def _describe(info: CheckpointInfo, config: dict, spec: dict) -> None:
    """Fill INFO from config.dump (the engine's container config) and spec.dump (OCI spec)."""
    ann = spec.get("annotations") or {}
    ann = {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {}
    info.annotations = ann
    manager = ann.get("io.container.manager")
    if manager == "libpod":
        info.kind, info.engine = "podman", "Podman"
    elif manager == "cri-o":
        info.kind, info.engine = "cri-o", "CRI-O"
    elif config or spec:
        info.kind, info.engine = "containerd", "containerd"
    info.container_id = config.get("id") or config.get("ID")
    info.container_name = config.get("name") or config.get("Name")
    info.image = config.get("rootfsImageName") or config.get("RawImageName") or config.get("rootfsImageRef")
    # containerd's CRI: rootfsImage is the name, rootfsImageRef the image id
    info.image_id = config.get("rootfsImageID") or config.get("rootfsImageRef") or config.get("rootfsImage")
    info.runtime = config.get("runtime") or config.get("OCIRuntime")
    info.created = _ns(config.get("createdTime") or ann.get("io.kubernetes.cri-o.Created"))
    info.checkpointed = _ns(config.get("checkpointedTime"))
    labels = config.get("labels") or config.get("Labels") or {}
    info.labels = dict(labels) if isinstance(labels, dict) else {}
    proc = spec.get("process") or {}
    if isinstance(proc, dict):
        info.command = [str(a) for a in proc.get("args") or []]
        info.env = [str(e) for e in proc.get("env") or []]
    info.hostname = spec.get("hostname") if isinstance(spec.get("hostname"), str) else None
    # Kubernetes: CRI-O and Podman use io.kubernetes.*, containerd io.kubernetes.cri.*
    info.pod = ann.get("io.kubernetes.pod.name") or ann.get("io.kubernetes.cri.sandbox-name")
    info.namespace = ann.get("io.kubernetes.pod.namespace") or ann.get("io.kubernetes.cri.sandbox-namespace")
    info.pod_uid = ann.get("io.kubernetes.pod.uid") or ann.get("io.kubernetes.cri.sandbox-uid")
    info.k8s_container = ann.get("io.kubernetes.container.name") or ann.get(
        "io.kubernetes.cri.container-name"
    )
    if info.engine == "CRI-O":
        try:
            meta = json.loads(ann.get("io.kubernetes.cri-o.Metadata", "{}"))
            info.k8s_container = info.k8s_container or meta.get("name")
        except ValueError:
            info.problems.append("io.kubernetes.cri-o.Metadata annotation is not JSON")
        info.container_name = info.container_name or ann.get("io.kubernetes.cri-o.Name")
    if info.engine == "containerd" and not info.container_name:
        info.container_name = info.k8s_container


def _describe_status(info: CheckpointInfo, status: dict) -> None:
    """Fill what config.dump and spec.dump left open from status.dump: the CRI ContainerStatus
    the runtime gave at checkpoint time (containerd internal/cri/server/container_checkpoint_linux.go;
    cri-api runtime.v1 ContainerStatus: metadata, image, image_ref, labels, created_at in ns)."""
    if not status:
        return
    labels = status.get("labels")
    labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    if not info.labels:
        info.labels = labels
    meta = status.get("metadata") if isinstance(status.get("metadata"), dict) else {}
    image = status.get("image") if isinstance(status.get("image"), dict) else {}
    info.pod = info.pod or labels.get("io.kubernetes.pod.name")
    info.namespace = info.namespace or labels.get("io.kubernetes.pod.namespace")
    info.pod_uid = info.pod_uid or labels.get("io.kubernetes.pod.uid")
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    info.k8s_container = info.k8s_container or labels.get("io.kubernetes.container.name") or name
    info.container_id = info.container_id or (status.get("id") if isinstance(status.get("id"), str) else None)
    if not info.image and isinstance(image.get("image"), str):
        info.image = image["image"]
    if not info.image_id and isinstance(status.get("image_ref"), str):
        info.image_id = status["image_ref"]
    if info.created is None:
        info.created = _ns(status.get("created_at")) if isinstance(status.get("created_at"), int) else None


#: the kubelet's archive name: checkpoint-<pod>_<namespace>-<container>-<RFC 3339 time>.tar
#: (k8s.io/kubernetes pkg/kubelet/server, KEP-2008); a pod name holds no "_" (a DNS subdomain)
_KUBELET_NAME = re.compile(
    r"^checkpoint-(?P<pod>[^_/]+)_(?P<rest>[^/]+)-"
    r"(?P<time>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))\.tar$"
)


def parse_kubelet_name(name: str, namespace: str | None = None, container: str | None = None) -> dict | None:
    """Pod, namespace, container and time of a kubelet checkpoint file NAME, None when NAME is not
    one.  "<namespace>-<container>" is split where NAMESPACE or CONTAINER (from the dumps) says, or
    at its only dash; otherwise both stay None and ``namespace_container`` holds the text."""
    m = _KUBELET_NAME.match(name)
    if m is None:
        return None
    rest = m.group("rest")
    ns = ctr = None
    if namespace and rest.startswith(namespace + "-") and len(rest) > len(namespace) + 1:
        ns, ctr = namespace, rest[len(namespace) + 1 :]
    elif container and rest.endswith("-" + container) and len(rest) > len(container) + 1:
        ns, ctr = rest[: -len(container) - 1], container
    elif rest.count("-") == 1:
        ns, ctr = rest.split("-")
    return {
        "pod": m.group("pod"),
        "namespace": ns,
        "container": ctr,
        "namespace_container": rest,
        "time": parse_rfc3339(m.group("time")),
    }


def _describe_name(info: CheckpointInfo, filename: str) -> None:
    """What a kubelet archive's file name says: fills the gaps the dumps left, a problem where
    the name and the dumps disagree (a renamed or planted archive)."""
    parsed = parse_kubelet_name(filename, info.namespace, info.k8s_container)
    if parsed is None:
        return
    info.name = filename
    for field_name, value in (
        ("pod", parsed["pod"]),
        ("namespace", parsed["namespace"]),
        ("k8s_container", parsed["container"]),
    ):
        held = getattr(info, field_name)
        if value is None:
            continue
        if held is None:
            setattr(info, field_name, value)
        elif held != value:
            info.problems.append(
                f"file name says {field_name.replace('k8s_', '')} {value!r}, the dumps say {held!r}"
            )
    if parsed["namespace"] is None and info.namespace is None:
        info.problems.append(
            f"file name: namespace and container not told apart in {parsed['namespace_container']!r}"
        )
    if info.checkpointed is None:
        info.checkpointed = parsed["time"]


# ---- the kubelet's checkpoint directory --------------------------------------------------------

#: kubelet root directories: the default (kubeadm, k3s and RKE2 today), k3s before it moved back to
#: the default (k3s-io/k3s#3801), k0s, MicroK8s
KUBELET_ROOTS = (
    "/var/lib/kubelet",
    "/var/lib/rancher/k3s/agent/kubelet",
    "/var/lib/k0s/kubelet",
    "/var/snap/microk8s/common/var/lib/kubelet",
)
#: files that may give the kubelet a --root-dir (kubeadm's flags file, distribution defaults,
#: systemd units and drop-ins, the k3s / RKE2 config's kubelet-arg)
KUBELET_FLAG_FILES = (
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
    "/etc/systemd/system/kubelet.service",
    "/lib/systemd/system/kubelet.service",
    "/usr/lib/systemd/system/kubelet.service",
    "/etc/rancher/k3s/config.yaml",
    "/etc/rancher/rke2/config.yaml",
)
KUBELET_FLAG_DIRS = (
    "/etc/systemd/system/kubelet.service.d",
    "/lib/systemd/system/kubelet.service.d",
    "/usr/lib/systemd/system/kubelet.service.d",
)
_ROOT_DIR_FLAG = re.compile(r"(?<![\w-])(?:--)?root-dir(?:=|\s+)[\"']?(/[^\s\"',\]]+)")
_MAX_FLAG_FILE = 1 << 20
#: at most this many archives are taken from one checkpoints directory
_MAX_ARCHIVES = 10_000


def _flag_files(evidence: Evidence) -> list[str]:
    out = list(KUBELET_FLAG_FILES)
    for d in KUBELET_FLAG_DIRS:
        try:
            out += [posixpath.join(d, n) for n in sorted(evidence.listdir(d)) if n.endswith(".conf")]
        except (EvidenceError, OSError):
            continue
    return out


def kubelet_roots(evidence: Evidence) -> list[str]:
    """The kubelet root directories of a host root: the known defaults and every --root-dir a
    kubelet flags file names, those that are directories, each once."""
    roots = list(KUBELET_ROOTS)
    for f in _flag_files(evidence):
        try:
            if not evidence.is_file(f):
                continue
            text = evidence.read_bytes(f, _MAX_FLAG_FILE).decode("utf-8", "replace")
        except (EvidenceError, OSError):
            continue
        roots += [posixpath.normpath(m.group(1)) for m in _ROOT_DIR_FLAG.finditer(text)]
    out: list[str] = []
    for r in roots:
        try:
            if r not in out and evidence.is_dir(r):
                out.append(r)
        except (EvidenceError, OSError):
            continue
    return out


def _archives_in(evidence: Evidence) -> list[str]:
    """Evidence paths of every regular ``*.tar`` in a kubelet root's ``checkpoints`` directory."""
    out: list[str] = []
    for root in kubelet_roots(evidence):
        d = posixpath.join(root, "checkpoints")
        try:
            names = sorted(evidence.listdir(d))[:_MAX_ARCHIVES]
        except (EvidenceError, OSError):
            continue
        for n in names:
            p = posixpath.join(d, n)
            try:
                if n.endswith(".tar") and evidence.lstat(p).is_file and p not in out:
                    out.append(p)
            except (EvidenceError, OSError):
                continue
    return out


def kubelet_archives(evidence: Evidence) -> list[str]:
    """Evidence paths of every kubelet checkpoint archive of a host root (every kubelet root,
    ``--root-dir`` followed)."""
    return _archives_in(evidence)


def open_kubelet_archive(evidence: Evidence, ev_path: str, source: str) -> Source:
    """The kubelet checkpoint archive EV_PATH of EVIDENCE as a Source (SourceError when it is
    unusable); SOURCE names the host root in its record.  Closing it leaves EVIDENCE open."""
    src = _archive(evidence.host_path(ev_path) or f"{source}:{ev_path}", evidence, ev_path)
    src.info.source = source
    return src


def _open_host_root(path: str) -> Evidence:
    from pensieve.evidence import open_evidence

    try:
        return open_evidence(path)
    except EvidenceError as exc:
        raise SourceError(str(exc)) from None


def kubelet_checkpoints(path: str) -> list[CheckpointInfo]:
    """Every kubelet checkpoint archive under host root PATH, each as the CheckpointInfo its file
    name and dumps give; an archive that cannot be read is one with ``problems`` (the rest are read)."""
    evidence = _open_host_root(path)
    out: list[CheckpointInfo] = []
    try:
        for ev_path in _archives_in(evidence):
            label = evidence.host_path(ev_path) or f"{path}:{ev_path}"
            try:
                with _archive(label, evidence, ev_path) as src:
                    src.changes()
                    src.info.source = path
                    src.info.problems = src.problems
                    out.append(src.info)
            except SourceError as exc:
                info = CheckpointInfo(kind="archive", source=path, checkpoint=label, problems=[str(exc)])
                _describe_name(info, posixpath.basename(ev_path))
                out.append(info)
    finally:
        evidence.close()
    return out


def _kubelet_pick(path: str, name: str | None, allow_single: bool) -> Source | list[str]:
    """Kubelet archive NAME (its file name, ``.tar`` optional) of host root PATH opened as a Source;
    with no NAME the only archive when ALLOW_SINGLE; else the file names there are."""
    from pensieve.engines.docker import LookupFailed

    try:
        evidence = _open_host_root(path)
    except SourceError:
        return []
    try:
        found = _archives_in(evidence)
        names = [posixpath.basename(p) for p in found]
        if name is None and not (allow_single and len(found) == 1):
            evidence.close()
            return names
        if name is not None:
            wanted = [p for p in found if posixpath.basename(p) in (name, name + ".tar")]
            if not wanted:
                evidence.close()
                if not found:
                    return []
                raise LookupFailed(
                    f"no kubelet checkpoint {name!r} in {path} (there are: {', '.join(names)})"
                )
            found = wanted
        label = evidence.host_path(found[0]) or f"{path}:{found[0]}"
        src = _archive(label, evidence, found[0])
    except BaseException:
        evidence.close()
        raise
    src.evidence = evidence
    src.info.source = path
    return src


# ---- rootfs changes ----------------------------------------------------------------------------


def _iso(t: float | None) -> str | None:
    if not t:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


#: an overlay whiteout (a deleted path) and an opaque directory marker, as OCI layers write them
#: (image-spec layer.md "Whiteouts"); containerd's CRI checkpoint keeps deletions this way
_WHITEOUT, _OPAQUE = ".wh.", ".wh..wh..opq"


def _diff_change(diff, name: str, m) -> Change:
    """One entry of rootfs-diff.tar as a Change: a whiteout is the deletion it stands for."""
    from pensieve.util import sha256_stream

    base, parent = posixpath.basename(name), posixpath.dirname(name)
    if base == _OPAQUE:
        return Change(
            change="modified",
            path="/" + parent if parent else "/",
            type="dir",
            layer="rootfs-diff.tar",
            what_changed=[f"opaque directory ({_OPAQUE}): the image's entries below it are hidden"],
            host_path=diff.where(name),
        )
    if base.startswith(_WHITEOUT) and len(base) > len(_WHITEOUT):
        return Change(
            change="deleted",
            path="/" + posixpath.join(parent, base[len(_WHITEOUT) :]),
            layer="rootfs-diff.tar",
            what_changed=[f"whiteout {base}"],
            host_path=diff.where(name),
        )
    c = Change(
        # Podman and CRI-O put added and modified entries alike into rootfs-diff.tar
        # (directories only when added); the image's copy is not in the archive
        change="added",
        path="/" + name,
        type=m.type,
        size=m.size if m.type == "file" else None,
        mode=oct(m.mode & 0o7777),
        uid=m.uid,
        gid=m.gid,
        mtime=_iso(m.mtime),
        layer="rootfs-diff.tar",
        what_changed=["added or modified (rootfs-diff.tar does not keep the image's copy)"],
        host_path=diff.where(name),
    )
    if m.type == "symlink":
        c.what_changed.append(f"link -> {m.linkname}")
    if m.type == "file" and m.size <= 256 << 20:
        c.sha256 = sha256_stream(_MemberReader(diff, name))
    return c


def _archive_changes(src: Source) -> list[Change]:
    """rootfs-diff.tar (added or modified entries; whiteouts as deletions) and deleted.files
    (deleted paths).  rootfs-diff.tar may be plain or compressed whatever its name (containerd
    gzips it)."""
    archive = src.archive
    out: list[Change] = []
    if "rootfs-diff.tar" in archive.members:
        try:
            diff = archive.nested("rootfs-diff.tar")
        except CriuImageError as exc:
            src.info.problems.append(f"rootfs-diff.tar unreadable: {exc}")
            diff = None
        if diff is not None:
            with diff:  # a compressed rootfs-diff.tar holds a spool: given back here
                src.info.problems += [f"rootfs-diff.tar: {p}" for p in diff.problems]
                for name, m in sorted(diff.members.items()):
                    if name == "." or (m.offset == 0 and m.type == "dir" and m.mtime == 0.0):
                        continue  # a parent synthesised by the index, not in the tar
                    out.append(_diff_change(diff, name, m))
    deleted = _json_member(archive, "deleted.files", src.info)
    if isinstance(deleted, list):
        seen = {c.path for c in out if c.change == "deleted"}
        for p in deleted:
            if isinstance(p, str) and "/" + p.lstrip("/") not in seen:
                seen.add("/" + p.lstrip("/"))
                out.append(
                    Change(change="deleted", path="/" + p.lstrip("/"), layer="deleted.files", host_path=None)
                )
    elif deleted is not None:
        src.info.problems.append("deleted.files is not a JSON list of paths")
    src.info.rootfs_changes = len(out)
    return out


class _MemberReader:
    """read(n) over one member of an archive, for hashing."""

    def __init__(self, archive, name: str) -> None:
        self.archive, self.name, self.pos = archive, name, 0

    def read(self, n: int = -1) -> bytes:
        data = self.archive.pread(self.name, self.pos, n if n and n > 0 else 1 << 20)
        self.pos += len(data)
        return data
