"""What an engine finds on a host: containers, images, their layers and history, volumes, logs."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import Problem, Timestamp, field, record


@record
class Mount:
    type: str  # volume | bind | tmpfs | npipe
    destination: str
    source: str | None = None  # host path (bind) or volume name
    name: str | None = None  # volume name
    driver: str | None = None
    mode: str | None = None
    rw: bool = True
    propagation: str | None = None
    host_path: str | None = None  # where the data lives on the host, when known


@record
class PortBinding:
    container_port: str  # "8080/tcp"
    host_ip: str | None = None
    host_port: str | None = None


@record
class Layer:
    """One filesystem layer as the storage driver keeps it."""

    role: str  # image | init | rw
    cache_id: str | None  # storage driver id (overlay2/<cache_id>)
    path: str | None  # evidence path of the layer contents (diff dir), None if missing
    diff_id: str | None = None
    chain_id: str | None = None
    size: int | None = None
    driver: str | None = None
    created_by: str | None = None  # history step that produced it (image layers)
    history_index: int | None = None
    parent: str | None = None


@record
class HistoryStep:
    created: Timestamp | None
    created_by: str | None
    empty_layer: bool
    comment: str | None = None
    author: str | None = None
    diff_id: str | None = None  # aligned layer, None for empty_layer steps
    chain_id: str | None = None
    cache_id: str | None = None
    size: int | None = None


@record
class Image:
    id: str
    engine: str
    tags: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    created: Timestamp | None = None
    parent: str | None = None
    os: str | None = None
    architecture: str | None = None
    author: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)
    cache_ids: list[str | None] = field(default_factory=list)
    size: int | None = None
    history: list[HistoryStep] = field(default_factory=list)
    config_path: str | None = None
    data_root: str | None = None
    namespace: str | None = None  # containerd: the namespace the image is named in


@record
class Container:
    id: str
    engine: str
    name: str | None = None
    image: str | None = None  # the name the container was created from
    image_id: str | None = None
    state: str = "unknown"  # running|paused|restarting|exited|created|dead|removing|unknown
    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None
    created: Timestamp | None = None
    started: Timestamp | None = None
    finished: Timestamp | None = None
    pid: int | None = None
    command: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    exposed_ports: list[str] = field(default_factory=list)
    published_ports: list[PortBinding] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    network_mode: str | None = None
    restart_count: int = 0
    restart_policy: str | None = None
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    pid_mode: str | None = None
    ipc_mode: str | None = None
    security_opt: list[str] = field(default_factory=list)
    risks: list[str] = field(default_factory=list)
    log_driver: str | None = None
    log_path: str | None = None
    storage_driver: str | None = None
    rw_layer: str | None = None  # mount id / cache id of the RW layer
    init_layer: str | None = None
    layers: list[Layer] = field(default_factory=list)  # bottom (image base) to top (rw)
    config_path: str | None = None
    data_root: str | None = None
    problems: list[Problem] = field(default_factory=list)  # the same records as in host.problems
    namespace: str | None = None  # containerd: the namespace the container lives in
    updated: Timestamp | None = None  # containerd: last change of the container's metadata
    # Kubernetes (CRI): the pod of a container made through the CRI, None elsewhere
    pod_name: str | None = None  # io.kubernetes.pod.name
    pod_namespace: str | None = None  # io.kubernetes.pod.namespace
    pod_uid: str | None = None  # io.kubernetes.pod.uid
    k8s_container: str | None = None  # io.kubernetes.container.name (None for a sandbox)
    attempt: int | None = None  # the CRI metadata's restart attempt (0 for the first run)
    sandbox_id: str | None = None  # the pod sandbox a container runs in (a sandbox: its own id)
    is_sandbox: bool | None = None  # the pod's sandbox ("pause") container, not an application one


@record
class Volume:
    name: str
    engine: str
    driver: str | None = None
    path: str | None = None  # evidence path of the volume data
    created: Timestamp | None = None
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    used_by: list[str] = field(default_factory=list)  # container ids
    file_count: int | None = None
    size: int | None = None


@record
class LogLine:
    container_id: str
    time: Timestamp | None
    stream: str | None  # stdout | stderr
    message: str
    source: str  # evidence path of the log file it came from
    partial: bool = False


@record
class LocalLogEntry:
    """A ``LogEntry`` protobuf of Docker's local log driver as decoded (engines/docker/logs)."""

    source: str = ""
    time_nano: int = 0
    line: bytes = b""
    partial: bool = False
    last: bool | None = None  # partial_log_metadata.last, None when absent
