"""Kubernetes pods as a node's container runtime keeps them (CRI: containerd's CRI plugin).

A pod is its sandbox (the "pause" container holding the pod's namespaces) and the application
containers created in it, one container per restart attempt (CRI api.proto ``PodSandbox``,
``Container``; the ``io.kubernetes.*`` labels the kubelet sets, kubelet/types/labels.go).
"""

from __future__ import annotations

from pensieve.records.core import Problem, Timestamp, field, record


@record
class PodContainer:
    """One container of a pod: a CRI container (one restart attempt of a pod's container)."""

    id: str
    name: str | None  # io.kubernetes.container.name
    attempt: int | None = None
    state: str = "unknown"
    exit_code: int | None = None
    image: str | None = None
    created: Timestamp | None = None
    log_path: str | None = None  # the CRI LogPath as recorded (a path on the node)


@record
class Pod:
    """One pod sandbox and the containers created in it."""

    name: str | None
    namespace: str | None
    uid: str | None
    sandbox_id: str
    engine: str
    state: str = "unknown"  # of the sandbox: running | created | unknown
    created: Timestamp | None = None
    attempt: int | None = None  # the sandbox's own attempt (a recreated sandbox: 1, 2 ...)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_directory: str | None = None  # the CRI log_directory as recorded (/var/log/pods/...)
    containers: list[PodContainer] = field(default_factory=list)  # by name, then attempt
    runtime_namespace: str | None = None  # containerd: the namespace (k8s.io)
    problems: list[Problem] = field(default_factory=list)
