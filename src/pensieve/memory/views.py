"""Views of one CRIU checkpoint (a container's or a process tree's memory and state).

Every function takes a checkpoint directory (``criu dump -D DIR``; Docker keeps them under
``containers/<id>/checkpoints/<name>``, Podman exports carry one under ``checkpoint/``) or an
open :class:`~pensieve.formats.criu.Checkpoint`, reads it without CRIU and without writing, and
returns records: :func:`processes`, :func:`files`, :func:`sockets`, :func:`maps`; memory itself
through :func:`read_memory` (present pages, parent checkpoints of an incremental chain, gaps
reported), :func:`cmdline` and :func:`environ` (read from the dumped stack, like /proc does).

Corrupt or hostile images raise :class:`~pensieve.formats.criu.CriuImageError` (file and offset)
when the checkpoint as a whole is unusable; a problem with one task lands in its ``problems``.
"""

from __future__ import annotations

import os
import socket
import struct

from pensieve.formats.criu.checkpoint import (
    FD_TYPES,
    PAGE_SIZE,
    PE_LAZY,
    PE_PARENT,
    PE_PRESENT,
    TASK_STATES,
    Checkpoint,
)
from pensieve.formats.criu.images import CriuImageError
from pensieve.formats.procnet import TCP_STATES  # include/net/tcp_states.h: one table for both
from pensieve.records import MemoryMap, OpenFile, Process, Socket
from pensieve.records.memory import MemoryRead

__all__ = [
    "CriuImageError",
    "MemoryRead",
    "cmdline",
    "environ",
    "files",
    "maps",
    "open_checkpoint",
    "processes",
    "read_memory",
    "sockets",
]

SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 6: "dccp", 10: "packet"}
IP_PROTOS = {0: None, 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite", 255: "raw"}
FAMILIES = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet"}
SECCOMP = {0: "disabled", 1: "strict", 2: "filter"}
REMAP_LINKED, REMAP_GHOST = 0, 1  # remap_type (2, procfs: a /proc file, not deleted)

# VMA status bits (criu/include/image.h)
VMA_STATUS = [
    (1 << 0, "regular"),
    (1 << 1, "stack"),
    (1 << 2, "vsyscall"),
    (1 << 3, "vdso"),
    (1 << 5, "heap"),
    (1 << 6, "file-private"),
    (1 << 7, "file-shared"),
    (1 << 8, "anon-shared"),
    (1 << 9, "anon-private"),
    (1 << 10, "sysvipc"),
    (1 << 11, "socket"),
    (1 << 12, "vvar"),
    (1 << 13, "aio-ring"),
    (1 << 14, "memfd"),
    (1 << 15, "shadow-stack"),
    (1 << 17, "uprobes"),
    (1 << 31, "unsupported"),
]
_SPECIAL_PATHS = [("heap", "[heap]"), ("vdso", "[vdso]"), ("vvar", "[vvar]"), ("vsyscall", "[vsyscall]")]
MAP_SHARED = 0x1

_ANON = {
    "eventfd": "anon_inode:[eventfd]",
    "eventpoll": "anon_inode:[eventpoll]",
    "signalfd": "anon_inode:[signalfd]",
    "timerfd": "anon_inode:[timerfd]",
    "inotify": "anon_inode:inotify",
    "fanotify": "anon_inode:[fanotify]",
    "bpfmap": "anon_inode:bpf-map",
    "pidfd": "anon_inode:[pidfd]",
}


def open_checkpoint(
    path: str | os.PathLike | Checkpoint, boundary: str | os.PathLike | None = None
) -> Checkpoint:
    """A Checkpoint for PATH (an already open one is returned as is)."""
    if isinstance(path, Checkpoint):
        return path
    return Checkpoint(path, boundary)


# ---- helpers ------------------------------------------------------------------------------


def _ip(words: list[int], family: int) -> str | None:
    if not words:
        return None
    raw = b"".join(struct.pack("<I", w & 0xFFFFFFFF) for w in words)
    try:
        if family == 10 and len(raw) == 16:
            return socket.inet_ntop(socket.AF_INET6, raw)
        if len(raw) >= 4:
            return socket.inet_ntop(socket.AF_INET, raw[:4])
    except (ValueError, OSError):
        pass
    return raw.hex()


def _unix_name(name: bytes | None) -> str | None:
    if not name:
        return None
    if name[:1] == b"\0":
        return "@" + name[1:].decode("utf-8", "backslashreplace")
    return name.rstrip(b"\0").decode("utf-8", "backslashreplace")


def _split0(data: bytes) -> list[str]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "backslashreplace") for p in parts]


def _reg_name(ckpt: Checkpoint, fid: int | None, light: bool = False) -> tuple[str | None, bool]:
    """(path, deleted) of regular file FID (LIGHT: from the names alone, Checkpoint.reg_files)."""
    if fid is None:
        return None, False
    f = (ckpt.reg_files() if light else ckpt.files()).get(fid)
    if f is None or "reg" not in f:
        return None, False
    name = f["reg"].get("name")
    remap = ckpt.remaps().get(fid)
    deleted = remap is not None and remap.get("remap_type", REMAP_LINKED) in (REMAP_LINKED, REMAP_GHOST)
    return name, deleted


def _describe(ckpt: Checkpoint, fid: int, ftype: int) -> dict:
    """target/type/flags/pos/... of file description FID (fdinfo type FTYPE when unknown)."""
    f = ckpt.files().get(fid)
    kind = FD_TYPES.get(f.get("type", ftype) if f else ftype, f"type{ftype}")
    out: dict = {"type": kind, "target": f"{kind}:[{fid}]", "details": {}}
    if f is None:
        out["details"]["missing"] = True
        return out
    if kind == "reg":
        reg = f.get("reg", {})
        name = reg.get("name", "")
        remap = ckpt.remaps().get(fid)
        out.update(flags=reg.get("flags"), pos=reg.get("pos"), size=reg.get("size"), mode=reg.get("mode"))
        if remap is not None and remap.get("remap_type", REMAP_LINKED) in (REMAP_LINKED, REMAP_GHOST):
            out["deleted"] = True
            name += " (deleted)"
            if remap.get("remap_type") == REMAP_GHOST:
                ghost = ckpt.ghost(remap.get("remap_id", 0))
                if ghost is not None:
                    out["content"] = ghost.get("extra")
                    out["mode"] = out.get("mode") or ghost.get("mode")
                    out["details"]["ghost"] = {
                        k: ghost[k] for k in ("uid", "gid", "mode", "size", "ino") if k in ghost
                    }
        out["target"] = name
    elif kind == "pipe":
        p = f.get("pipe", {})
        out.update(target=f"pipe:[{p.get('pipe_id')}]", flags=p.get("flags"))
        out["queued"] = ckpt.pipe_data().get(p.get("pipe_id"))
        out["details"]["pipe_id"] = p.get("pipe_id")
    elif kind == "fifo":
        p = f.get("fifo", {})
        path, _ = _reg_name(ckpt, p.get("regf_id"))
        out["target"] = path or f"fifo:[{p.get('pipe_id')}]"
        out["queued"] = ckpt.pipe_data(fifo=True).get(p.get("pipe_id"))
        out["details"]["pipe_id"] = p.get("pipe_id")
    elif kind in ("inetsk", "unixsk", "netlinksk"):
        sub = f.get({"inetsk": "isk", "unixsk": "usk", "netlinksk": "nlsk"}[kind], {})
        out.update(target=f"socket:[{sub.get('ino')}]", flags=sub.get("flags"))
    elif kind == "packetsk":
        out["target"] = f"socket:[packet {f.get('psk', {}).get('id')}]"
    elif kind == "eventfd":
        e = f.get("efd", {})
        out.update(target=_ANON["eventfd"], flags=e.get("flags"))
        out["details"]["counter"] = e.get("counter")
    elif kind == "tty":
        t = f.get("tty", {})
        info = {e.get("id"): e for e in ckpt.try_entries("tty-info.img")}.get(t.get("tty_info_id"), {})
        index = info.get("pty", {}).get("index")
        out.update(flags=t.get("flags"))
        out["target"] = f"/dev/pts/{index}" if index is not None else f"tty:[{t.get('tty_info_id')}]"
        out["details"]["tty"] = {k: info[k] for k in ("type", "sid", "pgrp", "rdev") if k in info}
    elif kind == "memfd":
        m = f.get("memfd", {})
        inode = {e.get("inode_id"): e for e in ckpt.try_entries("memfd.img")}.get(m.get("inode_id"), {})
        out.update(
            target=f"/memfd:{inode.get('name', '')} (deleted)",
            flags=m.get("flags"),
            pos=m.get("pos"),
            size=inode.get("size"),
        )
    elif kind in _ANON:
        out["target"] = _ANON[kind]
    elif kind == "ns":
        out["target"] = f"ns:[{f.get('nsf', {}).get('ns_id')}]"
    return out


def _fd_table(ckpt: Checkpoint) -> dict[int, list[tuple[int, int]]]:
    """file id -> [(pid, fd)] over every task with files."""
    table: dict[int, list[tuple[int, int]]] = {}
    for t in ckpt.tasks():
        try:
            for e in ckpt.fdinfo(t.pid):
                table.setdefault(e.get("id", 0), []).append((t.pid, e.get("fd", -1)))
        except CriuImageError:
            continue
    return table


# ---- views --------------------------------------------------------------------------------


def read_memory(path, pid: int, start: int, length: int) -> MemoryRead:
    """LENGTH bytes of PID's memory from address START (pagemap + pages + parent chain)."""
    ckpt = open_checkpoint(path)
    data, gaps = ckpt.read_memory(pid, start, length)
    return MemoryRead(pid, start, data, gaps)


#: what the views read of the big per-task images (protobuf field filters, see
#: ``Checkpoint.entry``): core_entry tc / thread_core, mm_entry without its VMAs
_CORE_PS = {
    3: {1: None, 2: None, 6: None, 11: None, 18: None},  # tc: state, exit code, comm, seccomp, subreaper
    5: {10: None, 11: None},  # thread_core: creds, seccomp_mode
}
_CORE_STATE = {3: {1: None}}  # tc.task_state
_MM_STRINGS = {8: None, 9: None, 10: None, 11: None, 12: None}  # arg / env bounds, exe_file_id
_MM_EXE = {12: None}


def _thread_cores(ckpt: Checkpoint, pid: int, threads: list[int]) -> None:
    """Read the other threads' cores as Checkpoint.tasks does: a corrupt one is a problem."""
    for tid in threads:
        if tid != pid:
            ckpt.thread_core(tid)


def _mm_strings(
    ckpt: Checkpoint, pid: int, lo_key: str, hi_key: str, mm: dict | None | bool = False
) -> tuple[list[str] | None, str | None]:
    if mm is False:
        mm = ckpt.mm(pid)
    if mm is None:
        return None, None
    lo, hi = mm.get(lo_key, 0), mm.get(hi_key, 0)
    if not lo or hi <= lo:
        return None, None
    if hi - lo > 16 << 20:
        return None, f"{lo_key}..{hi_key} spans {hi - lo} bytes: not read"
    data, gaps = ckpt.read_memory(pid, lo, hi - lo)
    problem = f"{lo_key}..{hi_key}: {len(gaps)} gap(s) not in the checkpoint" if gaps else None
    return _split0(data), problem


def cmdline(path, pid: int) -> list[str] | None:
    """argv of PID as its memory held it at dump time (None when not dumped)."""
    return _mm_strings(open_checkpoint(path), pid, "mm_arg_start", "mm_arg_end")[0]


def environ(path, pid: int) -> list[str] | None:
    """Environment of PID as its memory held it at dump time (None when not dumped)."""
    return _mm_strings(open_checkpoint(path), pid, "mm_env_start", "mm_env_end")[0]


def processes(path) -> list[Process]:
    """Every task of the checkpoint, in pstree order."""
    ckpt = open_checkpoint(path)
    out = []
    # every core first (a corrupt one stops the view before anything else is read, as it did)
    tree = [(e, ckpt.entry(f"core-{e.get('pid', 0)}.img", _CORE_PS) or {}) for e in ckpt.pstree()]
    for e, _ in tree:
        _thread_cores(ckpt, e.get("pid", 0), e.get("threads", []))
    for e, core in tree:
        pid = e.get("pid", 0)
        threads = list(e.get("threads", []))
        tc = core.get("tc", {})
        state_no = tc.get("task_state")
        state = TASK_STATES.get(state_no, f"unknown:{state_no}")
        p = Process(
            pid=pid,
            ppid=e.get("ppid", 0),
            pgid=e.get("pgid", 0),
            sid=e.get("sid", 0),
            state=state,
            comm=tc.get("comm"),
            threads=threads,
            child_subreaper=bool(tc.get("child_subreaper")),
            checkpoint=ckpt.path,
        )
        if not core:
            p.problems.append(f"core-{pid}.img missing")
        if state == "zombie":
            status = tc.get("exit_code", 0)
            # a wait status: exit code in bits 8-15, or the killing signal in bits 0-6
            p.exit_code = status >> 8 if not status & 0x7F else -(status & 0x7F)
        else:
            try:
                _fill_process(ckpt, pid, core, p)
            except CriuImageError as exc:
                p.problems.append(str(exc))
        out.append(p)
    return out


def _fill_process(ckpt: Checkpoint, pid: int, core: dict, p: Process) -> None:
    creds = core.get("thread_core", {}).get("creds")
    if creds is None:
        creds = ckpt.entry(f"creds-{pid}.img")
    if creds:
        p.uid, p.gid, p.euid, p.egid = (
            creds.get("uid"),
            creds.get("gid"),
            creds.get("euid"),
            creds.get("egid"),
        )
        p.groups = list(creds.get("groups", []))
        cap = creds.get("cap_eff", [])
        if cap:
            p.cap_eff = "".join(f"{w:08x}" for w in reversed(cap))
    mode = core.get("thread_core", {}).get("seccomp_mode")
    if mode is None:
        mode = core.get("tc", {}).get("old_seccomp_mode")
    if mode is not None:
        p.seccomp = SECCOMP.get(mode, str(mode))
    mm = ckpt.entry(f"mm-{pid}.img", _MM_STRINGS)
    if mm is not None:
        p.exe, _ = _reg_name(ckpt, mm.get("exe_file_id"), light=True)
        p.cmdline, problem = _mm_strings(ckpt, pid, "mm_arg_start", "mm_arg_end", mm)
        if problem:
            p.problems.append(problem)
        p.environ, problem = _mm_strings(ckpt, pid, "mm_env_start", "mm_env_end", mm)
        if problem:
            p.problems.append(problem)
    fs = ckpt.fs(pid)
    if fs is not None:
        p.cwd, _ = _reg_name(ckpt, fs.get("cwd_id"), light=True)
        p.root, _ = _reg_name(ckpt, fs.get("root_id"), light=True)


def files(path) -> list[OpenFile]:
    """Open descriptors of every task (plus its cwd, root and exe), like /proc/PID/fd."""
    ckpt = open_checkpoint(path)
    out: list[OpenFile] = []
    seen_tables: set[int] = set()
    tree = ckpt.pstree()
    # every core first (a corrupt one stops the view before any output, as it always did)
    states = []
    for e in tree:
        core = ckpt.entry(f"core-{e.get('pid', 0)}.img", _CORE_STATE) or {}
        states.append((e.get("pid", 0), TASK_STATES.get(core.get("tc", {}).get("task_state"))))
    for e in tree:
        _thread_cores(ckpt, e.get("pid", 0), e.get("threads", []))
    for pid, state in states:
        if state == "zombie":
            continue
        for e in ckpt.fdinfo(pid):
            d = _describe(ckpt, e.get("id", 0), e.get("type", 0))
            of = OpenFile(pid=pid, fd=e.get("fd"), id=e.get("id"), **d)
            if of.flags is None:
                of.flags = e.get("flags")
            out.append(of)
        seen_tables.add(ckpt.ids(pid).get("files_id", -1))
        fs = ckpt.fs(pid) or {}
        mm = ckpt.entry(f"mm-{pid}.img", _MM_EXE) or {}
        for kind, fid in (
            ("cwd", fs.get("cwd_id")),
            ("root", fs.get("root_id")),
            ("exe", mm.get("exe_file_id")),
        ):
            if fid is None:
                continue
            name, deleted = _reg_name(ckpt, fid)
            out.append(
                OpenFile(pid=pid, fd=None, type=kind, target=name or f"file:[{fid}]", id=fid, deleted=deleted)
            )
    return out


def sockets(path) -> list[Socket]:
    """Every socket of the checkpoint with the tasks holding it and its saved queues."""
    ckpt = open_checkpoint(path)
    table = _fd_table(ckpt)
    queues = ckpt.sk_queues()
    unix_by_ino = {f["usk"].get("ino"): f["usk"] for f in ckpt.files().values() if "usk" in f}
    out = []
    for fid, f in sorted(ckpt.files().items()):
        holders = table.get(fid, [])
        pids = sorted({p for p, _ in holders})
        fds = [f"{p}:{fd}" for p, fd in sorted(holders)]
        if "isk" in f:
            s = f["isk"]
            fam = s.get("family", 0)
            proto = IP_PROTOS.get(s.get("proto", 0), str(s.get("proto")))
            sock = Socket(
                family=FAMILIES.get(fam, str(fam)),
                type=SOCK_TYPES.get(s.get("type", 0), str(s.get("type"))),
                proto=proto,
                state=TCP_STATES.get(s.get("state", 0), str(s.get("state"))),
                src=_ip(s.get("src_addr", []), fam),
                src_port=s.get("src_port"),
                dst=_ip(s.get("dst_addr", []), fam),
                dst_port=s.get("dst_port"),
                pids=pids,
                fds=fds,
                ino=s.get("ino"),
                id=fid,
            )
            if sock.state == "LISTEN":
                sock.details["backlog"] = s.get("backlog")
            if proto == "tcp" and sock.state not in ("LISTEN", "CLOSE"):
                try:
                    stream = ckpt.tcp_stream(s.get("ino", 0))
                except CriuImageError as exc:
                    stream = None
                    sock.details["problem"] = str(exc)
                if stream is not None:
                    sock.inq = stream["extra"]["inq"]
                    sock.outq = stream["extra"]["outq"]
                    sock.recv_queue, sock.send_queue = len(sock.inq), len(sock.outq)
                    sock.details["unsent"] = stream.get("unsq_len")
            out.append(sock)
        elif "usk" in f:
            s = f["usk"]
            peer = unix_by_ino.get(s.get("peer")) if s.get("peer") else None
            data = queues.get(fid)
            sock = Socket(
                family="unix",
                type=SOCK_TYPES.get(s.get("type", 0), str(s.get("type"))),
                proto=None,
                state=TCP_STATES.get(s.get("state", 0), str(s.get("state"))),
                src=_unix_name(s.get("name")),
                dst=_unix_name(peer.get("name")) if peer else None,
                pids=pids,
                fds=fds,
                ino=s.get("ino"),
                id=fid,
                peer_ino=s.get("peer") or None,
            )
            if data is not None:
                sock.inq = b"".join(data)
                sock.recv_queue = len(sock.inq)
                sock.details["messages"] = len(data)
            if s.get("deleted"):
                sock.details["deleted"] = True
            out.append(sock)
        elif "psk" in f:
            s = f["psk"]
            out.append(
                Socket(
                    family="packet",
                    type=SOCK_TYPES.get(s.get("type", 0), str(s.get("type"))),
                    proto=str(s.get("protocol")),
                    state="-",
                    pids=pids,
                    fds=fds,
                    id=fid,
                    details={"ifindex": s.get("ifindex")},
                )
            )
        elif "nlsk" in f:
            s = f["nlsk"]
            out.append(
                Socket(
                    family="netlink",
                    type="raw",
                    proto=str(s.get("protocol")),
                    state=TCP_STATES.get(s.get("state", 0), str(s.get("state"))),
                    pids=pids,
                    fds=fds,
                    ino=s.get("ino"),
                    id=fid,
                    details={"portid": s.get("portid")},
                )
            )
    return out


def maps(path, pid: int | None = None) -> list[MemoryMap]:
    """VMAs of every task (or of PID) with the pages the checkpoint (chain) holds for them."""
    ckpt = open_checkpoint(path)
    # one process: its own images only (a scan of a big tree asks for a few of them)
    pids = [t.pid for t in ckpt.tasks()] if pid is None else [pid]
    return _maps(ckpt, pids)


def _maps(ckpt: Checkpoint, pids: list[int], light: bool = False) -> list[MemoryMap]:
    """maps() of PIDS (LIGHT: file names from Checkpoint.reg_files, for naming hits).  A process
    whose mm or pagemap image is unreadable is a problem of the checkpoint; the others are listed."""
    out = []
    for task_pid in pids:
        try:
            out += task_maps(ckpt, task_pid, light)
        except CriuImageError as exc:
            ckpt.note(f"pid {task_pid}: mappings not listed: {exc}")
    return out


def task_maps(ckpt: Checkpoint, task_pid: int, light: bool = False) -> list[MemoryMap]:
    """The mappings of one process (CriuImageError when its mm or pagemap image is unreadable)."""
    out: list[MemoryMap] = []
    mm = ckpt.mm(task_pid)
    if mm is None:
        return out
    pm = ckpt.pagemap(task_pid)
    if pm is None:
        ckpt.note(
            f"pid {task_pid}: mm-{task_pid}.img without pagemap-{task_pid}.img: no pages in the checkpoint"
        )
    runs = pm[1] if pm else []
    for v in mm.get("vmas", []):
        start, end, prot, status = (
            v.get("start", 0),
            v.get("end", 0),
            v.get("prot", 0),
            v.get("status", 0),
        )
        perms = ("r" if prot & 1 else "-") + ("w" if prot & 2 else "-") + ("x" if prot & 4 else "-")
        perms += "s" if v.get("flags", 0) & MAP_SHARED else "p"
        kind = [name for bit, name in VMA_STATUS if status & bit]
        path_ = next((p for k, p in _SPECIAL_PATHS if k in kind), None)
        if path_ is None and ("file-private" in kind or "file-shared" in kind):
            path_, deleted = _reg_name(ckpt, v.get("shmid"), light)
            if path_ and deleted:
                path_ += " (deleted)"
        if path_ is None and ("stack" in kind or start <= mm.get("mm_start_stack", -1) < end):
            path_ = "[stack]"
        m = MemoryMap(
            pid=task_pid,
            start=start,
            end=end,
            perms=perms,
            offset=v.get("pgoff", 0),
            path=path_,
            kind=kind,
        )
        for r in runs:
            lo, hi = max(start, r.vaddr), min(end, r.vaddr + r.nr_pages * PAGE_SIZE)
            if lo >= hi:
                continue
            n = (hi - lo) // PAGE_SIZE
            if r.flags & PE_PRESENT:
                m.pages_present += n
            elif r.flags & PE_PARENT:
                m.pages_parent += n
            elif r.flags & PE_LAZY:
                m.pages_lazy += n
        out.append(m)
    return out
