"""Kubernetes pods as containerd's CRI plugin keeps them: sandboxes, their containers, CRI logs.

What the CRI plugin stores (containerd ``internal/cri``, v1.6 to 2.x):

* every CRI container in the ``k8s.io`` namespace of meta.db carries the label
  ``io.cri-containerd.kind`` (``sandbox`` or ``container``) and the kubelet's labels
  ``io.kubernetes.pod.name`` / ``.pod.namespace`` / ``.pod.uid`` / ``.container.name``;
* its CRI metadata as a container *extension* (a protobuf Any holding JSON, typeurl):
  ``io.cri-containerd.container.metadata`` = ``{"Version": "v1", "Metadata": {"ID", "Name",
  "SandboxID", "Config" (the CRI ContainerConfig: metadata.name, metadata.attempt, labels,
  annotations, log_path ...), "ImageRef", "LogPath"}}`` (store/container/metadata.go), and for a
  sandbox ``io.cri-containerd.sandbox.metadata`` = ``{"Version": "v1", "Metadata": {"ID",
  "Name", "Config" (PodSandboxConfig: metadata.{name, uid, namespace, attempt}, log_directory,
  labels, annotations ...), ...}}`` (store/sandbox/metadata.go).  Protobuf JSON leaves zero values
  out: no ``attempt`` is attempt 0;
* a container's status in ``<root>/io.containerd.grpc.v1.cri/containers/<id>/status``:
  ``{"Version": "v1", "Pid", "CreatedAt", "StartedAt", "FinishedAt", "ExitCode", "Reason",
  "Message", ...}``, times in Unix nanoseconds (store/container/status.go; its ``State()``:
  finished -> exited, else started -> running, else created -> created).

CRI logs (``LogPath``, = the sandbox's ``log_directory`` + the config's ``log_path``) live on a
node under ``/var/log/pods/<namespace>_<pod>_<uid>/<container>/<attempt>.log``; see
:mod:`pensieve.formats.cri_log`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from pensieve.engines.logfiles import each_file
from pensieve.evidence.base import Evidence, EvidenceError, join
from pensieve.formats.cri_log import join_partials, read_records, rotation_order
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records.containerd import ContainerdContainer
from pensieve.records.core import Problem
from pensieve.records.host import Container, LogLine
from pensieve.records.kubernetes import Pod, PodContainer

KIND_LABEL = "io.cri-containerd.kind"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
CONTAINER_EXT = "io.cri-containerd.container.metadata"
SANDBOX_EXT = "io.cri-containerd.sandbox.metadata"
CRI_DIR = "io.containerd.grpc.v1.cri"
#: where the kubelet keeps pod logs on a node
POD_LOGS = "/var/log/pods"
#: the largest CRI metadata or status document read (they are a few KiB)
MAX_DOC = 4 << 20
_UINT32 = 1 << 32


class CriMetadata(NamedTuple):
    """The CRI plugin's metadata of one container or sandbox (from its meta.db extension)."""

    is_sandbox: bool
    name: str | None  # Config.metadata.name: the container's (or the pod's) name
    attempt: int | None
    sandbox_id: str | None
    pod_namespace: str | None  # sandbox: Config.metadata.namespace
    pod_uid: str | None  # sandbox: Config.metadata.uid
    log_path: str | None  # container: LogPath (a node path)
    log_directory: str | None  # sandbox: Config.log_directory
    labels: dict[str, str]
    annotations: dict[str, str]


def cri_metadata(src: ContainerdContainer, problems: list[Problem]) -> CriMetadata | None:
    """The CRI metadata extension of SRC, None when it has none or it cannot be read at all."""
    for ext, is_sandbox in ((CONTAINER_EXT, False), (SANDBOX_EXT, True)):
        raw = src.extension_values.get(ext)
        if raw is None:
            continue
        where = f"{src.source or src.id}/extensions/{ext}"
        try:
            doc = load(raw, where, problems, subject=src.id, max_bytes=MAX_DOC)
        except UntrustedJSONError as exc:
            problems.append(Problem(where, f"CRI metadata unreadable: {exc}", src.id))
            return None
        version = doc.str("Version")
        if version != "v1":
            doc.problem("Version", f"unknown CRI metadata version {str(version)[:20]!r}; read as v1")
        return _metadata(doc.obj("Metadata"), is_sandbox)
    return None


def _metadata(meta: Doc, is_sandbox: bool) -> CriMetadata:
    config = meta.obj("Config")
    md = config.obj("metadata")
    attempt = md.int("attempt", 0)
    if attempt is not None and not 0 <= attempt < _UINT32:
        md.problem("attempt", f"out of range for a uint32: {attempt}")
        attempt = None
    return CriMetadata(
        is_sandbox=is_sandbox,
        name=md.str("name"),
        attempt=attempt,
        sandbox_id=meta.str("ID") if is_sandbox else meta.str("SandboxID"),
        pod_namespace=md.str("namespace") if is_sandbox else None,
        pod_uid=md.str("uid") if is_sandbox else None,
        log_path=None if is_sandbox else meta.str("LogPath"),
        log_directory=config.str("log_directory") if is_sandbox else None,
        labels=config.dict_of_str("labels"),
        annotations=config.dict_of_str("annotations"),
    )


def apply_cri(
    c: Container, src: ContainerdContainer, meta: CriMetadata | None, problems: list[Problem]
) -> None:
    """Fill C's pod fields from SRC's labels and its CRI metadata (labels first: what the
    kubelet set; the metadata where labels are silent).  A container with neither stays as is."""
    labels = src.labels
    kind = labels.get(KIND_LABEL)
    if meta is None and kind is None and not any(k in labels for k in (POD_NAME, CONTAINER_NAME)):
        return
    sandbox = meta.is_sandbox if meta is not None else (kind == "sandbox" if kind else None)
    if sandbox is None and CONTAINER_NAME in labels:
        sandbox = False
    c.is_sandbox = sandbox
    c.pod_name = labels.get(POD_NAME) or (meta.name if meta and meta.is_sandbox else None)
    c.pod_namespace = labels.get(POD_NAMESPACE) or (meta.pod_namespace if meta else None)
    c.pod_uid = labels.get(POD_UID) or (meta.pod_uid if meta else None)
    if not sandbox:
        c.k8s_container = labels.get(CONTAINER_NAME) or (meta.name if meta else None)
    c.attempt = meta.attempt if meta else None
    if sandbox:
        c.sandbox_id = c.id
    else:
        recorded = src.sandbox_id or None
        c.sandbox_id = recorded or (meta.sandbox_id if meta else None)
        if recorded and meta and meta.sandbox_id and meta.sandbox_id != recorded:
            problems.append(
                Problem(
                    src.source or src.id,
                    f"sandbox {recorded} in meta.db, {meta.sandbox_id} in the CRI metadata",
                    c.id,
                )
            )
    if meta is not None and meta.log_path:
        c.log_path, c.log_driver = meta.log_path, "cri"
    if kind is not None and kind not in ("sandbox", "container"):
        problems.append(Problem(src.source or src.id, f"unknown {KIND_LABEL} {kind[:40]!r}", c.id))


def apply_status(c: Container, evidence: Evidence, root: str, problems: list[Problem]) -> None:
    """Times, exit code and state of a CRI container from the plugin's status file.

    An exited container is ``exited`` whatever the task directory says (the CRI plugin deletes
    an exited task); a started one is ``running`` when its task bundle is on the evidence (the
    host's task state said ``unknown``: a task existed), else the task state stays."""
    path = join(root, CRI_DIR, "containers", c.id, "status")
    if c.is_sandbox or not evidence.is_file(path):
        return
    try:
        doc = load(evidence.read_bytes(path, MAX_DOC + 1), path, problems, subject=c.id, max_bytes=MAX_DOC)
    except (EvidenceError, OSError, UntrustedJSONError) as exc:
        problems.append(Problem(path, f"CRI container status unreadable: {exc}", c.id))
        return
    created, started, finished = (_ns(doc, key) for key in ("CreatedAt", "StartedAt", "FinishedAt"))
    c.started = started or c.started
    c.finished = finished or c.finished
    if finished:
        c.state = "exited"
        c.exit_code = doc.int("ExitCode")
        reason = doc.str("Reason")
        c.error = (doc.str("Message") or reason) or c.error
        c.pid = None
    elif started and c.state == "unknown":
        c.state = "running"
    elif created and not started and c.state == "unknown":
        c.state = "created"


def _ns(doc: Doc, key: str) -> int | None:
    """A Unix-nanosecond time of a status file (0: never); out of range is a problem."""
    value = doc.int(key)
    if value is None or value == 0:
        return None
    if not 0 < value < 1 << 63:
        doc.problem(key, f"not a time in nanoseconds: {value}")
        return None
    return value


# ---- pods ---------------------------------------------------------------------------------
def build_pods(
    containers: list[Container], sources: dict[str, CriMetadata], problems: list[Problem], has_state: bool
) -> list[Pod]:
    """The pods of CONTAINERS (the CRI ones), each with its sandbox's metadata (SOURCES: id ->
    CRI metadata) and its containers by name then attempt.  HAS_STATE: the runtime's state
    directory is on the evidence (else every pod's state is unknown)."""
    pods: dict[tuple[str | None, str], Pod] = {}
    for c in containers:
        if c.is_sandbox:
            meta = sources.get(c.id)
            pods[(c.namespace, c.id)] = Pod(
                name=c.pod_name,
                namespace=c.pod_namespace,
                uid=c.pod_uid,
                sandbox_id=c.id,
                engine=c.engine,
                state=_pod_state(c, has_state),
                created=c.created,
                attempt=c.attempt,
                labels=dict(meta.labels) if meta else dict(c.labels),
                annotations=dict(meta.annotations) if meta else {},
                log_directory=meta.log_directory if meta else None,
                runtime_namespace=c.namespace,
                problems=list(c.problems),
            )
    for c in containers:
        if c.is_sandbox is not False or c.pod_name is None and c.sandbox_id is None:
            continue
        pod = pods.get((c.namespace, c.sandbox_id or ""))
        if pod is None:
            pod = pods[(c.namespace, c.sandbox_id or "")] = Pod(
                name=c.pod_name, namespace=c.pod_namespace, uid=c.pod_uid, sandbox_id=c.sandbox_id or "",
                engine=c.engine, runtime_namespace=c.namespace,
            )  # fmt: skip
            p = Problem(
                c.config_path or c.id, f"container {c.id}: its sandbox {c.sandbox_id} is not on record", c.id
            )
            pod.problems.append(p)
            problems.append(p)
        pod.containers.append(
            PodContainer(
                id=c.id,
                name=c.k8s_container,
                attempt=c.attempt,
                state=c.state,
                exit_code=c.exit_code,
                image=c.image,
                created=c.created,
                log_path=c.log_path,
            )  # fmt: skip
        )
    for pod in pods.values():
        pod.containers.sort(key=lambda pc: (pc.name or "", pc.attempt or 0, pc.created or 0))
    return sorted(pods.values(), key=lambda p: (p.namespace or "", p.name or "", p.created or 0))


def _pod_state(sandbox: Container, has_state: bool) -> str:
    """``ready`` when the sandbox's task existed at capture (its bundle in the state directory:
    the host's task state is ``unknown``, not ``created``), ``notready`` when the state directory
    is there without it, ``unknown`` without a state directory (CRI PodSandboxState)."""
    if not has_state:
        return "unknown"
    return "notready" if sandbox.state == "created" else "ready"


# ---- logs ---------------------------------------------------------------------------------
def log_candidates(c: Container) -> list[str]:
    """Evidence paths where C's CRI log may be: the recorded path; the same pod directory under
    /var/log/pods; the tails of the recorded path below the source (a copied tree), longest first;
    the kubelet's naming from the pod labels when nothing was recorded."""
    out: list[str] = []
    recorded = c.log_path if c.log_path and c.log_path.startswith("/") else None
    if recorded:
        parts = [p for p in recorded.split("/") if p not in ("", ".", "..")]
        out.append("/" + "/".join(parts))
        if len(parts) >= 3:
            out.append(join(POD_LOGS, *parts[-3:]))
        out += ["/" + "/".join(parts[i:]) for i in range(1, len(parts) - 2)]
    elif c.pod_namespace and c.pod_name and c.pod_uid and c.k8s_container:
        pod_dir = f"{c.pod_namespace}_{c.pod_name}_{c.pod_uid}"
        if "/" not in pod_dir and "/" not in c.k8s_container:
            out.append(join(POD_LOGS, pod_dir, c.k8s_container, f"{c.attempt or 0}.log"))
    return list(dict.fromkeys(out))


def cri_log_files(evidence: Evidence, c: Container) -> list[str]:
    """Evidence paths of C's CRI log, its rotations first (oldest first), the live file last."""
    for path in log_candidates(c):
        directory, base = posixpath.split(path)
        try:
            names = [e.name for e in evidence.scandir(directory) if e.stat.is_file]
        except (EvidenceError, OSError):
            continue
        family = rotation_order(names, base)
        if family:
            return [join(directory, name) for name in family]
    return []


def read_cri_logs(
    evidence: Evidence, container_id: str, files: list[str], problems: list[Problem]
) -> Iterator[LogLine]:
    """The lines of FILES (oldest first), P records joined across file ends too."""

    def read(stream: BinaryIO, path: str) -> Iterator:
        return read_records(stream, path, problems, container_id)

    records = each_file(evidence, files, read, problems, container_id)
    return join_partials(records, container_id, problems)
