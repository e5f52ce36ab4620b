"""Processes, open files, sockets and memory maps of a checkpointed container (CRIU); what a
checkpoint source says about itself; memory reads, dumps, search hits and checkpoint diffs."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import Timestamp, field, record


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


@record
class CheckpointInfo:
    """What a checkpoint source says about itself and the container it was taken from."""

    kind: str  # criu | docker | podman | cri-o | containerd | archive
    source: str  # what was opened (directory, archive, data root)
    checkpoint: str  # where the CRIU images are (a directory, or ARCHIVE:checkpoint)
    name: str | None = None  # the checkpoint's name (docker checkpoint create C NAME)
    engine: str | None = None  # Docker | Podman | CRI-O | containerd
    container_id: str | None = None
    container_name: str | None = None
    image: str | None = None
    image_id: str | None = None
    runtime: str | None = None
    created: Timestamp | None = None  # container creation time
    checkpointed: Timestamp | None = None  # when the checkpoint was taken, when the source says
    pod: str | None = None  # Kubernetes pod name
    namespace: str | None = None  # Kubernetes namespace
    pod_uid: str | None = None
    k8s_container: str | None = None  # Kubernetes container name
    hostname: str | None = None
    command: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    annotations: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    network: object = None  # network.status as the engine wrote it
    compression: str | None = None
    members: list[str] = field(default_factory=list)  # top-level archive entries
    criu_images_version: int | None = None
    tasks: int | None = None
    rootfs_changes: int | None = None
    problems: list[str] = field(default_factory=list)


@record
class MemoryRead:
    """Bytes of a task's memory; gaps (not in the checkpoint) are zero-filled and listed."""

    pid: int
    start: int
    data: bytes
    gaps: list[dict] = field(default_factory=list)  # {"start", "end", "reason"}

    @property
    def complete(self) -> bool:
        return not self.gaps


@record
class DumpedRegion:
    """One file written by ``mem dump``: a range of a process's memory at its own addresses."""

    pid: int
    start: int
    end: int
    file: str
    perms: str | None = None
    mapping: str | None = None
    present_pages: int = 0  # in this checkpoint
    parent_pages: int = 0  # read from a parent checkpoint
    lazy_pages: int = 0  # PE_LAZY: left to the lazy-pages server, not in the evidence (zeros)
    missing_pages: int = 0  # no pagemap entry, or a parent page with no parent (zeros)
    bytes_written: int = 0  # dumped bytes (the file is sparse: gaps are holes)
    gaps: list[dict] = field(default_factory=list)  # {"start", "end", "reason"}


@record
class MemoryHit:
    """A match in a process's memory (``mem search``, ``mem yara``)."""

    pid: int
    address: int
    length: int
    pattern: str  # the pattern's label, or RULE:$string for YARA
    comm: str | None = None
    mapping: str | None = None  # backing file, [heap], [stack] ... or [anon]
    map_start: int | None = None
    perms: str | None = None
    map_offset: int | None = None  # address - map_start
    context: str | None = None  # printable bytes around the hit ('.' for others)
    context_hex: str | None = None
    rule: str | None = None  # YARA rule
    tags: list[str] = field(default_factory=list)  # YARA tags
    meta: dict = field(default_factory=dict)  # YARA meta


@record
class MemoryChange:
    """One difference between two checkpoints of the same process tree (``mem diff``)."""

    kind: str  # process | socket | file | memory
    change: str  # appeared | vanished | changed | opened | closed | grew | shrank
    subject: str
    pid: int | None = None
    fields: list[str] = field(default_factory=list)  # what changed
    before: object = None
    after: object = None
