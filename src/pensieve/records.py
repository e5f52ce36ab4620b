"""Typed records: the one shape every engine produces and every output consumes.

Engines (docker, containerd, podman) turn a data root into these records; analyses add
FileEntry/Change/Finding records; outputs (tables, JSON, JSONL, CSV, bodyfile) only ever see
records. Each record is a ``@record`` class (pensieve._record: a slotted dataclass that is
cheap to define) so ``to_dict`` gives a JSON-ready mapping.
"""

from __future__ import annotations

from typing import Any

from pensieve._record import field, record

_SCALARS = (str, int, float, bool, type(None))


def record_fields(cls: type) -> tuple[str, ...] | None:
    """Field names of a record class (or of any dataclass), None for anything else."""
    names = getattr(cls, "__record_fields__", None)
    if names is None and hasattr(cls, "__dataclass_fields__"):
        names = tuple(cls.__dataclass_fields__)
    return names


def to_dict(record: Any, memo: dict[int, Any] | None = None) -> Any:
    """Turn a record (or a list/dict of records) into JSON-ready builtins.

    MEMO (id -> result) lets records shared between others (an image's layers, listed under
    every container of the image) be converted once; keep the records alive while it is used.
    """
    cls = type(record)
    if cls in _SCALARS:
        return record
    names = record_fields(cls)
    if names is not None:
        if memo is not None:
            done = memo.get(id(record))
            if done is not None:
                return done
        out = {}
        for name in names:
            value = getattr(record, name)
            out[name] = value if type(value) in _SCALARS else to_dict(value, memo)
        if memo is not None:
            memo[id(record)] = out
        return out
    if isinstance(record, (list, tuple)):
        return [r if type(r) in _SCALARS else to_dict(r, memo) for r in record]
    if isinstance(record, dict):
        return {k: v if type(v) in _SCALARS else to_dict(v, memo) for k, v in record.items()}
    if isinstance(record, bytes):
        return record.decode("utf-8", "backslashreplace")
    return record


@record
class Problem:
    """Something that could not be read or parsed; reported, never fatal for the rest."""

    source: str  # evidence path the problem is about
    message: str
    subject: str | None = None  # container/image/layer id when known
    severity: str = "warning"  # warning | error


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
    created: str | None
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
    created: str | None = None
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
    created: str | None = None
    started: str | None = None
    finished: str | None = None
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
    problems: list[str] = field(default_factory=list)


@record
class Volume:
    name: str
    engine: str
    driver: str | None = None
    path: str | None = None  # evidence path of the volume data
    created: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    used_by: list[str] = field(default_factory=list)  # container ids
    file_count: int | None = None
    size: int | None = None


@record
class LogLine:
    container_id: str
    time: str | None
    stream: str | None  # stdout | stderr
    message: str
    source: str  # evidence path of the log file it came from
    partial: bool = False


@record
class FileEntry:
    """A file in a (merged) container or image filesystem, with its layer provenance."""

    path: str
    type: str  # file|dir|symlink|char|block|fifo|socket|whiteout
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    mtime: float | None = None
    atime: float | None = None
    ctime: float | None = None
    inode: int | None = None
    nlink: int | None = None
    rdev: int | None = None
    link_target: str | None = None
    layer: str | None = None  # cache id of the providing layer
    layer_role: str | None = None  # image | init | rw
    layer_index: int | None = None
    created_by: str | None = None  # history step of the providing layer
    shadows: list[str] = field(default_factory=list)  # cache ids of lower layers it hides
    host_path: str | None = None  # evidence path of the bytes
    sha256: str | None = None


@record
class Change:
    """One entry of a container diff (against its image)."""

    change: str  # added | modified | deleted
    path: str
    type: str | None = None
    size: int | None = None
    mode: str | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: str | None = None
    ctime: str | None = None
    sha256: str | None = None
    layer: str | None = None  # layer holding the current version (rw) or the deleted original
    lower_layer: str | None = None  # layer of the lower (original) copy
    what_changed: list[str] = field(default_factory=list)  # content, size, mode, owner, mtime ...
    lower: dict[str, Any] | None = None  # metadata of the original
    engine_reports: bool = True  # False where `docker diff` would stay silent
    host_path: str | None = None


@record
class Attribution:
    """Where a host path inside a data root comes from."""

    host_path: str
    data_root: str | None
    driver: str | None = None
    layer: str | None = None  # cache / mount id
    layer_kind: str | None = None  # image | init | rw | unreferenced | volume | container-metadata
    container_path: str | None = None
    diff_id: str | None = None
    chain_id: str | None = None
    images: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    container_names: list[str] = field(default_factory=list)
    created_by: str | None = None
    notes: list[str] = field(default_factory=list)


@record
class Event:
    time: str
    source: str
    kind: str
    message: str
    subject: str | None = None


@record
class Finding:
    severity: str  # info | low | medium | high | critical
    title: str
    subject: str
    evidence: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


# ---- process memory (CRIU checkpoints) --------------------------------------------------------


@record
class Process:
    """One task of a checkpoint (``criu dump``), as CRIU saw it at dump time."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  # alive | stopped | zombie | dead | helper | thread | unknown:N
    comm: str | None = None
    exit_code: int | None = None  # zombies: exit status, or -signal when killed
    cmdline: list[str] | None = None  # read from the dumped memory (mm arg_start..arg_end)
    environ: list[str] | None = None  # read from the dumped memory (mm env_start..env_end)
    exe: str | None = None
    cwd: str | None = None
    root: str | None = None
    threads: list[int] = field(default_factory=list)
    uid: int | None = None
    gid: int | None = None
    euid: int | None = None
    egid: int | None = None
    groups: list[int] = field(default_factory=list)
    cap_eff: str | None = None  # hex, as /proc/PID/status CapEff
    child_subreaper: bool = False
    seccomp: str | None = None
    checkpoint: str | None = None  # evidence path of the checkpoint directory
    problems: list[str] = field(default_factory=list)


@record
class OpenFile:
    """A file descriptor of a checkpointed task and the file description behind it."""

    pid: int
    fd: int | None  # None for cwd/root/exe entries
    type: str  # reg | pipe | fifo | inetsk | unixsk | eventfd | tty | ... | cwd | root | exe
    target: str  # like the /proc/PID/fd link: path, pipe:[N], socket:[N], anon_inode:[eventfd]
    id: int | None = None  # CRIU file id
    flags: int | None = None  # open flags (O_*)
    pos: int | None = None
    size: int | None = None
    mode: int | None = None
    deleted: bool = False  # unlinked while open (CRIU ghost/remap file)
    content: bytes | None = None  # ghost file content saved in the checkpoint
    queued: bytes | None = None  # unread pipe/fifo data
    details: dict[str, Any] = field(default_factory=dict)


@record
class Socket:
    """A socket of a checkpoint, with its unread/unsent queues when CRIU saved them."""

    family: str  # unix | inet | inet6 | packet | netlink
    type: str  # stream | dgram | seqpacket | raw | packet
    proto: str | None  # tcp | udp | ... (inet), protocol number otherwise
    state: str  # LISTEN | ESTABLISHED | CLOSE ...
    src: str | None = None  # address or unix path
    src_port: int | None = None
    dst: str | None = None
    dst_port: int | None = None
    pids: list[int] = field(default_factory=list)
    fds: list[str] = field(default_factory=list)  # "pid:fd"
    ino: int | None = None
    id: int | None = None
    peer_ino: int | None = None  # unix peer
    recv_queue: int | None = None  # bytes queued for reading
    send_queue: int | None = None  # bytes queued for sending (TCP outq)
    inq: bytes | None = None
    outq: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)


@record
class MemoryMap:
    """A VMA of a checkpointed task and how much of it the checkpoint holds."""

    pid: int
    start: int
    end: int
    perms: str  # like /proc/PID/maps: rwxp / rwxs
    offset: int
    path: str | None = None  # backing file, [heap], [stack], [vdso], [vvar], [vsyscall]
    kind: list[str] = field(default_factory=list)  # CRIU VMA status names
    pages_present: int = 0  # pages stored in this checkpoint
    pages_parent: int = 0  # pages stored in a parent checkpoint
    pages_lazy: int = 0  # lazy pages not stored
