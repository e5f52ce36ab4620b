"""One CRI-O container as a Container record: its containers.json entry, the OCI spec CRI-O saved
(``userdata/config.json``) and the runtime state it recorded (``state.json`` in the run dir).

The spec's annotations (cri-o internal/annotations/annotations.go; set in
internal/factory/container/container.go for a container, server/sandbox_run_linux.go for a pod
sandbox) carry what the CRI asked for:

* ``io.kubernetes.cri-o.ContainerType`` -- ``sandbox`` (the pod's infra, "pause", container) or
  ``container``; ``...SandboxID`` / ``...SandboxName`` -- the pod sandbox; ``...Name`` -- the
  storage name, ``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`` (a sandbox:
  ``k8s_POD_...``, server/naming.go);
* ``...Metadata`` -- the CRI metadata as JSON: ``{"name", "attempt"}`` of a container,
  ``{"name", "uid", "namespace", "attempt"}`` of a sandbox (protobuf's Go JSON: a zero attempt is
  left out); ``...Labels`` / ``...Annotations`` -- the kubelet's labels and annotations as JSON
  (``io.kubernetes.pod.name`` / ``.pod.namespace`` / ``.pod.uid`` / ``.container.name``; also
  copied as plain annotations);
* ``...LogPath`` -- the CRI log (``<log_directory>/<log_path>``, /var/log/pods/... on a node);
  ``...Image`` (what the user asked for), ``...ImageName``, ``...ImageRef`` (the image id);
  ``...Created`` (RFC 3339); ``...HostName``, ``...PrivilegedRuntime`` (sandbox).

state.json (internal/oci/container.go ContainerState): ``status`` (OCI: creating | created |
running | stopped), ``pid``, ``created``/``started``/``finished`` (Go times), ``exitCode``,
``oomKilled``, ``error``.  A stopped container is ``exited``, as the CRI reports it.

References: github.com/cri-o/cri-o internal/annotations/annotations.go,
internal/factory/container/container.go, server/sandbox_run_linux.go, server/naming.go,
internal/oci/container.go, internal/storage/runtime.go; opencontainers/runtime-spec
specs-go/state.go.
"""

from __future__ import annotations

import posixpath

from pensieve.engines.containerd.cri import CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID, CriMetadata
from pensieve.engines.podman.storage import StorageContainer
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import Container

PREFIX = "io.kubernetes.cri-o."
#: OCI runtime status -> the CRI's container state
STATES = {"running": "running", "stopped": "exited", "created": "created", "creating": "created",
          "paused": "paused"}  # fmt: skip
_UINT32 = 1 << 32
#: the largest JSON annotation read (labels, annotations, metadata: a few KiB)
MAX_ANNOTATION = 1 << 20


def _json(ann: Doc, key: str) -> Doc:
    """The JSON object an annotation holds as a string (empty when absent; a problem naming the
    spec and the annotation when it is not a JSON object)."""
    text = ann.str(PREFIX + key)
    if not text:
        return Doc({}, ann.source, ann.problems, f"annotations.{PREFIX}{key}.", ann.subject)
    try:
        doc = load(text, ann.source, ann.problems, subject=ann.subject, max_bytes=MAX_ANNOTATION)
    except UntrustedJSONError as exc:
        ann.problem(PREFIX + key, f"not a JSON object: {exc}".replace(f"{ann.source}: ", ""))
        return Doc({}, ann.source, ann.problems, "", ann.subject)
    doc.prefix = f"annotations.{PREFIX}{key}."
    return doc


def _attempt(meta: Doc, fallback: object) -> int | None:
    attempt = meta.int("attempt", fallback if isinstance(fallback, int) else 0)
    if attempt is not None and not 0 <= attempt < _UINT32:
        meta.problem("attempt", f"out of range for a uint32: {attempt}")
        return None
    return attempt


def _from_storage(sc: StorageContainer, graphroot: str) -> Container:
    """What the containers.json entry alone says (CRI-O's RuntimeContainerMetadata)."""
    md = sc.metadata

    def text(key: str) -> str | None:
        value = md.get(key)
        return value if isinstance(value, str) and value else None

    is_sandbox = md.get("pod") is True
    c = Container(
        id=sc.id,
        engine="cri-o",
        name=sc.names[0] if sc.names else text("name"),
        image=text("image-name"),
        image_id=sc.image or text("image-id"),
        created=sc.created,
        storage_driver="overlay",
        rw_layer=sc.layer,
        config_path=posixpath.join(graphroot, "overlay-containers", "containers.json"),
        data_root=graphroot,
        pod_name=text("pod-name"),
        is_sandbox=is_sandbox,
        sandbox_id=sc.id if is_sandbox else text("pod-id"),
        privileged=md.get("privileged") is True,
    )
    if is_sandbox:
        c.pod_namespace, c.pod_uid = text("namespace"), text("uid")
    else:
        c.k8s_container = text("metadata-name")
    attempt = md.get("attempt", 0)
    c.attempt = attempt if isinstance(attempt, int) and 0 <= attempt < _UINT32 else None
    return c


def crio_container(sc: StorageContainer, spec: Doc | None, graphroot: str) -> tuple[Container, CriMetadata]:
    """The Container of storage entry SC with what its SPEC (None: not on the evidence or
    unreadable) adds, and its CRI metadata (the pod's, for a sandbox).  Problems of the spec go
    to the spec Doc's list."""
    c = _from_storage(sc, graphroot)
    if spec is None:
        return c, CriMetadata(bool(c.is_sandbox), c.k8s_container or c.pod_name, c.attempt,
                              c.sandbox_id, c.pod_namespace, c.pod_uid, None, None, {}, {})  # fmt: skip
    ann = spec.obj("annotations")
    kind = ann.str(PREFIX + "ContainerType")
    if kind not in (None, "sandbox", "container"):
        ann.problem(PREFIX + "ContainerType", f"unknown container type {kind[:40]!r}")
    if kind is not None:
        c.is_sandbox = kind == "sandbox"
    labels = _json(ann, "Labels").dict_of_str_items()
    kube_labels = dict(labels)
    meta = _json(ann, "Metadata")
    c.labels = kube_labels
    c.name = ann.str(PREFIX + "Name") or c.name
    c.image = ann.str(PREFIX + "Image") or ann.str(PREFIX + "ImageName") or c.image
    c.image_id = c.image_id or (ann.str(PREFIX + "ImageRef") or None)
    c.created = ann.time(PREFIX + "Created") or c.created
    c.attempt = _attempt(meta, c.attempt)
    c.pod_name = kube_labels.get(POD_NAME) or (meta.str("name") if c.is_sandbox else None) or c.pod_name
    if c.is_sandbox:
        c.sandbox_id = c.id
        c.pod_namespace = kube_labels.get(POD_NAMESPACE) or meta.str("namespace") or c.pod_namespace
        c.pod_uid = kube_labels.get(POD_UID) or meta.str("uid") or c.pod_uid
        c.k8s_container = None
        c.hostname = ann.str(PREFIX + "HostName") or spec.str("hostname") or None
        c.privileged = ann.str(PREFIX + "PrivilegedRuntime") == "true" or c.privileged
    else:
        c.sandbox_id = ann.str(PREFIX + "SandboxID") or c.sandbox_id
        c.pod_namespace = kube_labels.get(POD_NAMESPACE) or c.pod_namespace
        c.pod_uid = kube_labels.get(POD_UID) or c.pod_uid
        c.k8s_container = kube_labels.get(CONTAINER_NAME) or meta.str("name") or c.k8s_container
        c.hostname = spec.str("hostname") or None
    log_path = ann.str(PREFIX + "LogPath") or None
    if log_path:
        c.log_path, c.log_driver = log_path, "cri"
    process = spec.obj("process")
    c.command = process.list_of_str("args") or []
    c.env = process.list_of_str("env") or []
    c.working_dir = process.str("cwd") or None
    c.config_path = spec.source
    if c.privileged:
        c.risks.append("privileged")
    cri = CriMetadata(
        is_sandbox=bool(c.is_sandbox),
        name=meta.str("name"),
        attempt=c.attempt,
        sandbox_id=c.sandbox_id,
        pod_namespace=c.pod_namespace if c.is_sandbox else None,
        pod_uid=c.pod_uid if c.is_sandbox else None,
        log_path=log_path,
        log_directory=posixpath.dirname(log_path) if c.is_sandbox and log_path else None,
        labels=kube_labels,
        annotations=dict(_json(ann, "Annotations").dict_of_str_items()),
    )
    return c, cri


def apply_state(c: Container, state: Doc) -> None:
    """C's state, pid, times and exit from CRI-O's state.json (an unknown status is a problem)."""
    status = state.str("status")
    c.state = STATES.get(status or "", "unknown")
    if c.state == "unknown":
        state.problem("status", f"unknown runtime status {str(status)[:40]!r}")
    c.pid = state.int("pid") or None
    c.created = c.created or state.time("created")
    c.started = state.time("started")
    c.finished = state.time("finished")
    c.exit_code = state.int("exitCode")  # a *int32 with omitempty: absent until the exit was read
    c.oom_killed = state.bool("oomKilled")
    c.error = state.str("error") or None
    if c.state == "exited":
        c.pid = None
