"""Processes, open files, sockets and memory maps of a checkpointed container (CRIU)."""

from __future__ import annotations

from typing import Any

from pensieve.records.core import field, record


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
