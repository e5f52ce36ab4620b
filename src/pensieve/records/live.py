"""What a live host shows through ``/proc`` and the cgroup filesystem, container-aware.

A live process is attributed to a container by its cgroup path (the one link from a host PID to a
container that a process cannot shed: proc(5) ``/proc/PID/cgroup``); every id is given twice where
a namespace changes it: the host PID and the PID in each nested PID namespace (``NSpid`` of
``/proc/PID/status``), the host uid and the uid inside the user namespace (``uid_map``).

References: proc(5), proc_pid_status(5), cgroups(7), user_namespaces(7), capabilities(7).
"""

from __future__ import annotations

from typing import Any

from pensieve.records.core import Problem, Timestamp, field, record


@record
class Owner:
    """The container a cgroup path belongs to, as the path spells it (live/attribution.py)."""

    kind: str  # container | conmon | sandbox-unknown | host | unknown
    engine: str | None = None  # docker | containerd | podman | crio | kubernetes (CRI, runtime unknown)
    container_id: str | None = None
    pod_uid: str | None = None  # kubepods...pod<uid>: the Kubernetes pod uid
    qos: str | None = None  # guaranteed | burstable | besteffort
    namespace: str | None = None  # /<parent>/<id>: containerd's namespace (ctr run) or a custom cgroup parent
    unit: str | None = None  # systemd: the scope or service the path ends in


@record
class LiveProcess:
    """One process of a live host, with its container and namespace context."""

    pid: int  # the host's pid (the reader's PID namespace)
    ppid: int | None = None
    nspids: list[int] = field(default_factory=list)  # NSpid: host pid first, innermost last
    comm: str | None = None
    state: str | None = None  # R S D Z T t X I as /proc/PID/stat says
    kernel_thread: bool = False  # PF_KTHREAD: no exe, no cmdline, and that is normal
    cmdline: list[str] = field(default_factory=list)
    exe: str | None = None  # readlink /proc/PID/exe (" (deleted)" removed; see exe_deleted)
    exe_sha256: str | None = None  # of the bytes behind /proc/PID/exe (deleted or memfd too)
    exe_size: int | None = None
    exe_deleted: bool = False
    exe_memfd: bool = False
    start_time: Timestamp | None = None
    uids: list[int] = field(default_factory=list)  # real, effective, saved, filesystem (host ids)
    gids: list[int] = field(default_factory=list)
    ns_uids: list[int | None] = field(default_factory=list)  # the same through uid_map (None: unmapped)
    ns_gids: list[int | None] = field(default_factory=list)
    user: str | None = None  # the host's name for the real uid (the root's /etc/passwd)
    namespaces: dict[str, int] = field(default_factory=dict)  # ns name -> inode of /proc/PID/ns/NAME
    host_namespaces: list[str] = field(default_factory=list)  # names shared with pid 1
    cap_eff: str | None = None  # hex, as /proc/PID/status says
    cap_prm: str | None = None
    cap_bnd: str | None = None
    caps_eff: list[str] = field(default_factory=list)  # decoded (capabilities(7) names)
    caps_prm: list[str] = field(default_factory=list)
    caps_bnd: list[str] = field(default_factory=list)
    seccomp: str | None = None  # disabled | strict | filter
    no_new_privs: bool | None = None
    cgroup: str | None = None  # the v2 path (or the v1 path of the pids/memory/cpu hierarchy)
    cgroups: dict[str, str] = field(default_factory=dict)  # hierarchy controllers ("" for v2) -> path
    owner: Owner | None = None
    container_id: str | None = None  # from the cgroup path
    container_name: str | None = None  # from the engine's records when the data root is readable
    engine: str | None = None
    pod: str | None = None  # namespace/name
    image: str | None = None
    known: bool | None = None  # the engine's records have this container (None: no engine data read)
    problems: list[Problem] = field(default_factory=list)


@record
class LiveSocket:
    """One socket of a live host, read once per network namespace, joined to its processes."""

    netns: int | None  # inode of the network namespace
    protocol: str  # tcp | tcp6 | udp | udp6 | unix | raw | raw6 | packet
    state: str | None = None  # LISTEN | ESTABLISHED ... (tcp), UNCONN/ESTAB (udp, unix)
    local: str | None = None  # address (or unix path)
    local_port: int | None = None
    remote: str | None = None
    remote_port: int | None = None
    recv_queue: int | None = None
    send_queue: int | None = None
    inode: int | None = None
    uid: int | None = None
    pids: list[int] = field(default_factory=list)
    fds: list[str] = field(default_factory=list)  # "pid:fd"
    container_id: str | None = None
    container_name: str | None = None
    engine: str | None = None
    pod: str | None = None
    # unix: the connected peer (sock_diag UNIX_DIAG_PEER, as ss -xp), which may sit in another
    # network namespace (a socket path bind-mounted into two containers); None: not connected,
    # or not read (a problem says so)
    peer_inode: int | None = None
    peer_pids: list[int] = field(default_factory=list)
    peer_fds: list[str] = field(default_factory=list)  # "pid:fd" holding the peer
    peer_container_id: str | None = None
    peer_container_name: str | None = None
    marks: list[str] = field(default_factory=list)  # undeclared-listener | external-peer ...
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@record
class CgroupUsage:
    """A container's resource use, from its cgroup (v1 or v2)."""

    container_id: str | None
    cgroup: str
    version: int  # 1 | 2
    container_name: str | None = None
    engine: str | None = None
    pod: str | None = None
    memory_current: int | None = None
    memory_peak: int | None = None
    memory_limit: int | None = None  # None: unlimited ("max")
    oom_events: int | None = None
    oom_kills: int | None = None
    cpu_usage_usec: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_usec: int | None = None
    cpu_quota: str | None = None  # cpu.max as written ("max 100000", "50000 100000")
    pids_current: int | None = None
    pids_limit: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    processes: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@record
class LiveEvent:
    """One change ``live watch`` saw between two polls."""

    time: Timestamp
    kind: str  # process-started | process-exited | connection-opened | connection-closed | listener-...
    container_id: str | None = None
    container_name: str | None = None
    engine: str | None = None
    pod: str | None = None
    pid: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
