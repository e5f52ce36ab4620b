"""Table columns per record type: which fields a person sees, in what order, and how each cell
may be laid out.  Machine formats (JSON, JSONL, CSV) ignore these and write every field.

A spec is a list of :class:`Column`; commands name the spec of the records they print
(``columns.containers(full_ids)``).  A column's ``kind`` tells :mod:`pensieve.output.render`
how it may be fitted into the width: ``id``, ``path``, ``time`` and ``num`` cells are never
wrapped, split or cut; ``text`` cells are cut with an ellipsis to fit (and to ``max_width``
whatever the width); a ``long`` cell (the value of a single record's field/value table) wraps
onto as many lines as it needs.  Ids are shown as Docker prints them -- twelve hex digits
without the ``sha256:`` prefix -- and whole with ``full_ids`` (``--no-trunc``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

ID, PATH, TIME, NUM, TEXT, LONG = "id", "path", "time", "num", "text", "long"
#: the kinds of cell that are never cut, wrapped or narrowed
WHOLE = frozenset({ID, PATH, TIME, NUM})


class Column(NamedTuple):
    """One table column: its header, the cell of a record, and how the cell may be laid out."""

    header: str
    value: Callable[[Any], Any]
    kind: str = TEXT
    max_width: int | None = None


# ---- cells ---------------------------------------------------------------------------------


def short_id(value: str | None, n: int = 12) -> str:
    """An id as Docker prints it: the first N hex digits, without the ``sha256:`` prefix."""
    if not value:
        return ""
    return value.split(":", 1)[-1][:n]


def id_formatter(full_ids: bool, n: int = 12) -> Callable[[str | None], str]:
    """``short_id`` (N digits), or the whole id without its prefix when FULL_IDS (``--no-trunc``)."""
    if full_ids:
        return lambda value: (value or "").split(":", 1)[-1]
    return lambda value: short_id(value, n)


def clock(t: int | str | None, sep: str = "T") -> str:
    """A record time (int ns; text from a reader not yet converted) to the second, RFC 3339 with
    SEP between date and time (``2024-05-01T12:00:00``), "" for none."""
    from pensieve.times import iso_ns

    text = (iso_ns(t) if isinstance(t, int) else t) or ""
    return text[:19].replace("T", sep, 1) if sep != "T" else text[:19]


def first_and_more(items: list[str]) -> str:
    """``a +2`` for three items."""
    return "" if not items else items[0] + (f" +{len(items) - 1}" if len(items) > 1 else "")


def kind_counts(problems) -> str:
    """``content 2, mode`` from problems with a ``kind``."""
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return ", ".join(f"{k} {n}" if n > 1 else k for k, n in counts.items())


def _hex(n: int | None) -> str:
    return "" if n is None else f"{n:#x}"


# ---- inventory -----------------------------------------------------------------------------


def roots(engines: bool = False) -> list[Column]:
    """``roots``: rows are dicts (path, layout, drivers, found; with ENGINES also engine and hints:
    a source holding containerd roots)."""
    if engines:
        return [
            Column("ENGINE", lambda r: r["engine"]),
            Column("ROOT", lambda r: r["path"], PATH),
            Column("LAYOUT", lambda r: r["layout"]),
            Column("DRIVERS", lambda r: r["drivers"]),
            Column("HINTS", lambda r: r["hints"], TEXT, 50),
            Column("FOUND BY", lambda r: r["found"]),
        ]
    return [
        Column("DATA ROOT", lambda r: r["path"], PATH),
        Column("LAYOUT", lambda r: r["layout"]),
        Column("DRIVERS", lambda r: r["drivers"]),
        Column("FOUND BY", lambda r: r["found"]),
    ]


def _state(c) -> str:
    s = c.state
    if s == "exited" and c.exit_code is not None:
        s = f"exited ({c.exit_code})"
    if c.oom_killed:
        s += " OOM-killed"
    return s


def containers(full_ids: bool = False) -> list[Column]:
    """``containers``: pensieve.records.Container."""
    ident = id_formatter(full_ids)
    return [
        Column("CONTAINER", lambda c: ident(c.id), ID),
        Column("NAME", lambda c: c.name, PATH),
        Column("IMAGE", lambda c: c.image or ident(c.image_id), PATH),
        Column("STATE", _state),
        Column("CREATED", lambda c: clock(c.created), TIME),
        Column("COMMAND", lambda c: " ".join(c.command), TEXT, 40),
        Column("RISKS", lambda c: c.risks),
        Column("PROBLEMS", lambda c: [p.message for p in c.problems]),
    ]


def images(full_ids: bool = False, build_steps: frozenset[str] | set[str] = frozenset()) -> list[Column]:
    """``images``: pensieve.records.Image; BUILD_STEPS are the ids of images that are another
    image's parent (shown ``<none> (build step)`` when untagged)."""
    ident = id_formatter(full_ids)
    return [
        Column("IMAGE ID", lambda i: ident(i.id), ID),
        Column("NAMESPACE", lambda i: i.namespace),  # containerd; dropped when no image has one
        Column(
            "TAGS", lambda i: i.tags or ("<none> (build step)" if i.id in build_steps else "<none>"), PATH
        ),
        Column("CREATED", lambda i: clock(i.created), TIME),
        Column("LAYERS", lambda i: len(i.diff_ids), NUM),
        Column("SIZE", lambda i: i.size, NUM),
        Column("CMD", lambda i: " ".join((i.entrypoint or []) + (i.cmd or [])), TEXT, 40),
    ]


def history(full_ids: bool = False) -> list[Column]:
    """``history``: pensieve.records.HistoryStep."""
    ident = id_formatter(full_ids)
    return [
        Column("CREATED", lambda s: clock(s.created), TIME),
        Column("CREATED BY", lambda s: s.created_by or (f"({s.comment})" if s.comment else ""), TEXT, 70),
        Column("LAYER", lambda s: "(empty)" if s.empty_layer else ident(s.cache_id), ID),
        Column("DIFF ID", lambda s: ident(s.diff_id), ID),
        Column("SIZE", lambda s: s.size, NUM),
    ]


def volumes(full_ids: bool = False) -> list[Column]:
    """``volumes``: pensieve.records.Volume (anonymous volumes are named by a 64-hex id)."""
    ident = id_formatter(full_ids)
    return [
        Column("VOLUME", lambda v: v.name if not v.anonymous else ident(v.name), ID),
        Column("DRIVER", lambda v: v.driver),
        Column("CREATED", lambda v: clock(v.created), TIME),
        Column("FILES", lambda v: v.file_count, NUM),
        Column("BYTES", lambda v: v.size, NUM),
        Column("USED BY", lambda v: [ident(c) for c in v.used_by], ID),
        Column("LABELS", lambda v: [f"{k}={x}" for k, x in v.labels.items()]),
    ]


def _pod_container(c, ident: Callable[[str | None], str]) -> str:
    state = f"exited ({c.exit_code})" if c.state == "exited" and c.exit_code is not None else c.state
    attempt = f"#{c.attempt}" if c.attempt is not None else ""  # CRI restart count; Podman has none
    return f"{c.name or '?'}{attempt} {ident(c.id)} {state}"


def _pod_name(p) -> str:
    """A Kubernetes pod as NAMESPACE/NAME; a Podman pod (no Kubernetes namespace) by its name."""
    if p.engine == "podman" and not p.namespace:
        return p.name or "?"
    return f"{p.namespace or '?'}/{p.name or '?'}"


def pods(full_ids: bool = False) -> list[Column]:
    """``pods``: pensieve.records.kubernetes.Pod, one line per container of the pod."""
    ident = id_formatter(full_ids)

    def members(p) -> list[str]:
        return [_pod_container(c, ident) for c in p.containers]

    return [
        Column("ENGINE", lambda p: p.engine),
        Column("POD", _pod_name, PATH),
        Column("UID", lambda p: p.uid, ID),
        Column("STATE", lambda p: p.state),
        Column("CREATED", lambda p: clock(p.created), TIME),
        Column("SANDBOX", lambda p: ident(p.sandbox_id), ID),
        Column("CONTAINERS (NAME#ATTEMPT ID STATE)", members),
    ]


# ---- filesystems ---------------------------------------------------------------------------


def _mode(e) -> str:
    return oct(e.mode & 0o7777) if e.mode is not None else ""


def file_entries(full_ids: bool = False, long: bool = False, sha256: bool = False) -> list[Column]:
    """``fs ls`` / ``fs find``: pensieve.records.FileEntry; LONG adds the history step and the
    shadowed layers, SHA256 the content hash."""
    ident = id_formatter(full_ids)
    cols = [
        Column("TYPE", lambda e: e.type),
        Column("MODE", _mode, NUM),
        Column("UID:GID", lambda e: f"{e.uid}:{e.gid}", NUM),
        Column("SIZE", lambda e: e.size, NUM),
        Column("MTIME", lambda e: clock(e.mtime, " "), TIME),
        Column("PATH", lambda e: e.path + (f" -> {e.link_target}" if e.link_target else ""), PATH),
        Column("LAYER", lambda e: f"{e.layer_role}:{ident(e.layer)}", ID),
    ]
    if long:
        cols.append(Column("CREATED BY", lambda e: e.created_by or "", TEXT, 50))
        cols.append(Column("SHADOWS", lambda e: [ident(s) for s in e.shadows], ID))
    if sha256:
        cols.append(Column("SHA256", lambda e: e.sha256, ID))
    return cols


def changes(full_ids: bool = False, engine: bool = True) -> list[Column]:
    """pensieve.records.Change: a container's (``diff``: ENGINE marks with ``*`` what
    ``docker diff`` does not list, and WHAT says what changed) or a checkpoint archive's
    (``mem changes``, ENGINE false) filesystem changes."""
    digest = id_formatter(full_ids, 16)
    if engine:
        change: Callable[[Any], str] = lambda c: c.change if c.engine_reports else c.change + "*"  # noqa: E731
    else:
        change = lambda c: c.change  # noqa: E731
    cols = [
        Column("CHANGE", change),
        Column("TYPE", lambda c: c.type),
        Column("PATH", lambda c: c.path, PATH),
        Column("SIZE", lambda c: c.size, NUM),
        Column("MODE", lambda c: c.mode, NUM),
        Column("MTIME", lambda c: clock(c.mtime), TIME),
        Column("SHA256", lambda c: digest(c.sha256), ID),
    ]
    if engine:
        cols.insert(3, Column("WHAT", lambda c: c.what_changed))
    return cols


def key_value() -> list[Column]:
    """A single record as a field/value table (``fs stat``, ``whence``, ``mem info``): rows are
    (field, value) pairs and the value wraps."""
    return [Column("field", lambda r: r[0], PATH), Column("value", lambda r: r[1], LONG)]


# ---- verify and compare --------------------------------------------------------------------


def findings() -> list[Column]:
    """``verify --findings``: pensieve.records.Finding."""
    return [
        Column("SEVERITY", lambda f: f.severity),
        Column("TITLE", lambda f: f.title),
        Column("SUBJECT", lambda f: f.subject, PATH),
    ]


def image_verdicts(full_ids: bool = False) -> list[Column]:
    """``verify --images``: pensieve.images.verify_layers.ImageVerdict."""
    ident = id_formatter(full_ids)
    return [
        Column("STATUS", lambda i: i.status),
        Column("IMAGE ID", lambda i: ident(i.id), ID),
        Column("TAGS", lambda i: i.tags, PATH),
        Column("PROBLEMS", lambda i: [f"{p.kind}: {p.detail}" for p in i.problems]),
    ]


def layer_problems(full_ids: bool = False) -> list[Column]:
    """``verify -v``: rows are (LayerVerdict, its problem) pairs, one per differing path."""
    ident = id_formatter(full_ids)
    return [
        Column("LAYER", lambda r: ident(r[0].chain_id), ID),
        Column("STATUS", lambda r: r[0].status),
        Column("PATH", lambda r: r[1].path or "(layer)", PATH),
        Column("KIND", lambda r: r[1].kind),
        Column("EXPECTED", lambda r: r[1].expected),
        Column("ACTUAL", lambda r: r[1].actual),
    ]


def layer_verdicts(full_ids: bool = False) -> list[Column]:
    """``verify``: pensieve.images.verify_layers.LayerVerdict."""
    ident = id_formatter(full_ids)
    return [
        Column("STATUS", lambda v: v.status),
        Column("CHAIN ID", lambda v: ident(v.chain_id), ID),
        Column("DIFF ID", lambda v: ident(v.diff_id), ID),
        Column("ENTRIES", lambda v: v.entries, NUM),
        Column("MIB", lambda v: round((v.stream_size or 0) / 1048576, 1), NUM),
        Column("PROBLEMS", lambda v: kind_counts(v.problems)),
        Column("IMAGES", lambda v: first_and_more(v.images), PATH),
        Column("CONTAINERS", lambda v: first_and_more(v.containers), PATH),
        Column("REASON", lambda v: v.reason),
    ]


_LAYER_STATUS = {"shared": "shared", "only-a": "only in A", "only-b": "only in B"}


def layer_matches(full_ids: bool = False) -> list[Column]:
    """``compare``: pensieve.images.compare.LayerMatch."""
    ident = id_formatter(full_ids)
    return [
        Column("LAYER", lambda m: _LAYER_STATUS[m.status]),
        Column("DIFF ID", lambda m: ident(m.diff_id), ID),
        Column("A", lambda m: "" if m.index_a is None else f"#{m.index_a} {ident(m.layer_a)}", ID),
        Column("B", lambda m: "" if m.index_b is None else f"#{m.index_b} {ident(m.layer_b)}", ID),
        Column("CREATED BY", lambda m: m.created_by or "", TEXT, 60),
    ]


def _side(d: dict | None, ident: Callable[[str | None], str]) -> str:
    """One side of a differing file: type, mode, owner, size, sha256, link target, layer."""
    if not d:
        return ""
    bits = [d["type"], d["mode"] or "", f"{d['uid']}:{d['gid']}"]
    if d.get("size") is not None:
        bits.append(str(d["size"]))
    if d.get("sha256"):
        bits.append(d["sha256"][:12])
    if d.get("link_target"):
        bits.append("-> " + d["link_target"])
    bits.append("layer " + ident(d.get("diff_id") or d.get("layer")))
    return " ".join(bits)


def file_differences(full_ids: bool = False) -> list[Column]:
    """``compare``: pensieve.images.compare.FileDifference."""
    ident = id_formatter(full_ids)
    return [
        Column("CHANGE", lambda f: f.change),
        Column("PATH", lambda f: f.path, PATH),
        Column("WHAT", lambda f: f.what),
        Column("A", lambda f: _side(f.a, ident)),
        Column("B", lambda f: _side(f.b, ident)),
    ]


# ---- memory (CRIU checkpoints) -------------------------------------------------------------


def _uid(p) -> str:
    return "" if p.uid is None else f"{p.uid}" + (f"/{p.euid}" if p.euid != p.uid else "")


def processes() -> list[Column]:
    """``mem ps``: pensieve.records.Process."""
    return [
        Column("PID", lambda p: p.pid, NUM),
        Column("PPID", lambda p: p.ppid, NUM),
        Column("STATE", lambda p: p.state + (f" ({p.exit_code})" if p.exit_code is not None else "")),
        Column("UID", _uid, NUM),
        Column("COMM", lambda p: p.comm, PATH),
        Column("EXE", lambda p: p.exe, PATH),
        Column("CMDLINE", lambda p: " ".join(p.cmdline or []), TEXT, 120),
    ]


def _file_note(f) -> str:
    notes = []
    if f.deleted:
        notes.append("deleted" + (f", {len(f.content)} bytes kept" if f.content is not None else ""))
    if f.queued:
        notes.append(f"{len(f.queued)} bytes unread")
    return "; ".join(notes)


def open_files() -> list[Column]:
    """``mem files``: pensieve.records.OpenFile."""
    return [
        Column("PID", lambda f: f.pid, NUM),
        Column("FD", lambda f: f.type if f.fd is None else f.fd, NUM),
        Column("TYPE", lambda f: f.type),
        Column("TARGET", lambda f: f.target, PATH),
        Column("POS", lambda f: f.pos, NUM),
        Column("FLAGS", lambda f: "" if f.flags is None else oct(f.flags), NUM),
        Column("NOTE", _file_note),
    ]


def _endpoint(addr: str | None, port: int | None) -> str:
    if addr is None and not port:
        return ""
    if port is None:
        return addr or ""
    return f"[{addr}]:{port}" if addr and ":" in addr else f"{addr}:{port}"


def sockets() -> list[Column]:
    """``mem sockets``: pensieve.records.Socket."""
    return [
        Column("PROTO", lambda s: s.proto or s.family),
        Column("TYPE", lambda s: s.type),
        Column("STATE", lambda s: s.state),
        Column("LOCAL", lambda s: _endpoint(s.src, s.src_port), PATH),
        Column(
            "PEER",
            lambda s: _endpoint(s.dst, s.dst_port) or (f"ino {s.peer_ino}" if s.peer_ino else ""),
            PATH,
        ),
        Column("RECV-Q", lambda s: s.recv_queue, NUM),
        Column("SEND-Q", lambda s: s.send_queue, NUM),
        Column("PIDS", lambda s: s.pids, NUM),
        Column("FDS", lambda s: s.fds, NUM),
    ]


def memory_maps() -> list[Column]:
    """``mem maps``: pensieve.records.MemoryMap."""
    return [
        Column("PID", lambda m: m.pid, NUM),
        Column("START", lambda m: _hex(m.start), ID),
        Column("END", lambda m: _hex(m.end), ID),
        Column("PERMS", lambda m: m.perms),
        Column("OFFSET", lambda m: _hex(m.offset), ID),
        Column("PATH", lambda m: m.path, PATH),
        Column("PRESENT", lambda m: m.pages_present, NUM),
        Column("PARENT", lambda m: m.pages_parent, NUM),
        Column("LAZY", lambda m: m.pages_lazy, NUM),
    ]


def environment() -> list[Column]:
    """``mem env`` as a table: rows are (pid, comm, variable) triples."""
    return [
        Column("PID", lambda r: r[0], NUM),
        Column("COMM", lambda r: r[1], PATH),
        Column("VARIABLE", lambda r: r[2]),
    ]


def command_lines() -> list[Column]:
    """``mem cmdline``: rows are dicts (pid, comm, cmdline)."""
    return [
        Column("PID", lambda r: r["pid"], NUM),
        Column("COMM", lambda r: r["comm"], PATH),
        Column("CMDLINE", lambda r: r["cmdline"]),
    ]


def dumped_regions() -> list[Column]:
    """``mem dump``: pensieve.memory.scan.DumpedRegion."""
    return [
        Column("START", lambda r: _hex(r.start), ID),
        Column("END", lambda r: _hex(r.end), ID),
        Column("PERMS", lambda r: r.perms),
        Column("MAPPING", lambda r: r.mapping, PATH),
        Column("PRESENT", lambda r: r.present_pages, NUM),
        Column("PARENT", lambda r: r.parent_pages, NUM),
        Column("LAZY", lambda r: r.lazy_pages, NUM),
        Column("MISSING", lambda r: r.missing_pages, NUM),
        Column("FILE", lambda r: os.path.basename(r.file), PATH),
    ]


def memory_hits(yara: bool = False) -> list[Column]:
    """``mem search`` / ``mem yara`` (YARA adds the rule): pensieve.memory.scan.MemoryHit."""
    cols = [
        Column("PID", lambda h: h.pid, NUM),
        Column("COMM", lambda h: h.comm, PATH),
        Column("ADDRESS", lambda h: _hex(h.address), ID),
        Column("MAPPING", lambda h: h.mapping, PATH),
        Column("PERMS", lambda h: h.perms),
        Column("MATCH", lambda h: h.pattern),
        Column("CONTEXT", lambda h: h.context),
    ]
    if yara:
        cols.insert(5, Column("RULE", lambda h: h.rule))
    return cols


def memory_changes() -> list[Column]:
    """``mem diff``: pensieve.memory.scan.MemoryChange."""
    return [
        Column("KIND", lambda c: c.kind),
        Column("CHANGE", lambda c: c.change),
        Column("PID", lambda c: c.pid, NUM),
        Column("SUBJECT", lambda c: c.subject, PATH),
        Column("FIELDS", lambda c: c.fields),
    ]


# ---- disks ---------------------------------------------------------------------------------


def recovered_files(full_ids: bool = False) -> list[Column]:
    """``recover``: pensieve.disk.recover.RecoveredFile."""
    ident, digest = id_formatter(full_ids), id_formatter(full_ids, 16)
    return [
        Column("PATH", lambda f: f.path, PATH),
        Column("INODE", lambda f: f.inode, NUM),
        Column("TYPE", lambda f: f.type),
        Column("SIZE", lambda f: "?" if f.size is None else f.size, NUM),
        Column("RECOVERED", lambda f: f.bytes_recovered, NUM),
        Column("CONFIDENCE", lambda f: f.confidence),
        Column("METHOD", lambda f: f.method),
        Column("DELETED", lambda f: clock(f.dtime, " "), TIME),
        Column("CONTAINER", lambda f: f.container_name or ident(f.container), ID),
        Column("IN CONTAINER", lambda f: f.container_path or "", PATH),
        Column("SHA256", lambda f: digest(f.sha256), ID),
    ]


def _carve_owner(f) -> str:
    if f.path:
        return f.path + (f" (inode {f.inode})" if f.inode else "")
    return "unattributed"


def _carve_type(f) -> str:
    subtype = f.validation.get("subtype")
    return f.type + (f" ({subtype})" if subtype else "")


def carved_files(full_ids: bool = False) -> list[Column]:
    """``carve``: pensieve.disk.carve.CarvedFile."""
    ident, digest = id_formatter(full_ids), id_formatter(full_ids, 16)
    return [
        Column("offset", lambda f: f.offset, NUM),
        Column("length", lambda f: f.length, NUM),
        Column("type", _carve_type),
        Column("confidence", lambda f: f.confidence),
        Column("sha256", lambda f: digest(f.sha256), ID),
        Column("owner", _carve_owner, PATH),
        Column("container", lambda f: ident(f.container), ID),
        Column("note", lambda f: f.validation.get("failed", "")),
        Column("duplicate of", lambda f: f.duplicate_of or "", PATH),
        Column("output", lambda f: f.output or "", PATH),
    ]


# ---- live net ------------------------------------------------------------------------------


def _endpoint(address: str | None, port: int | None) -> str:
    """ADDRESS:PORT as ss(8) prints it ([v6]:port; a unix path alone; * for none)."""
    if address is None:
        return "*"
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _socket_owner(s, ident: Callable[[str | None], str]) -> str:
    name = s.container_name or ident(s.container_id) or "(host)"
    return f"{s.pod}/{name}" if s.pod else name


def _unix_peer(s, ident: Callable[[str | None], str]) -> str:
    """A unix socket's peer as ``ss -xp`` puts it (its inode), with who holds it and their container."""
    if not s.peer_inode:
        return ""
    text = f"*{s.peer_inode}"
    if s.peer_fds:
        text += " " + ",".join(s.peer_fds)
    if s.peer_container_id:
        text += f" ({s.peer_container_name or ident(s.peer_container_id)})"
    return text


def live_sockets(full_ids: bool = False) -> list[Column]:
    """``live net``: pensieve.records.live.LiveSocket (REMOTE of a unix socket: its peer)."""
    ident = id_formatter(full_ids)
    return [
        Column("CONTAINER", lambda s: _socket_owner(s, ident), ID),
        Column("PROTO", lambda s: s.protocol),
        Column("STATE", lambda s: s.state or ""),
        Column("LOCAL", lambda s: _endpoint(s.local, s.local_port), PATH),
        Column(
            "REMOTE",
            lambda s: _unix_peer(s, ident) if s.protocol == "unix" else _endpoint(s.remote, s.remote_port),
            PATH,
        ),
        Column("RECV-Q", lambda s: "" if s.recv_queue is None else s.recv_queue, NUM),
        Column("SEND-Q", lambda s: "" if s.send_queue is None else s.send_queue, NUM),
        Column("PIDS", lambda s: ",".join(s.fds)),
        Column("MARKS", lambda s: ",".join(s.marks)),
    ]


# ---- live ps (pensieve.records.live.LiveProcess) -------------------------------------------


def live_container(p, ident: Callable[[str | None], str] = short_id) -> str:
    """Who a live process belongs to: ``host``; a container's name (or id) with its pod; ``id
    (no engine record)`` for a container the engines' records lack, ``id (engine data not read)``
    when none were read; ``[conmon]`` for an engine's monitor beside its container."""
    owner = p.owner
    if p.container_id is None:
        if owner is not None and owner.kind == "sandbox-unknown":
            return f"kubernetes pod {owner.pod_uid} (sandbox)"
        return "host" if owner is None or owner.kind == "host" else owner.kind
    text = p.container_name or ident(p.container_id)
    if p.pod:
        text += f" (pod {p.pod})"
    if p.known is False:
        text += " (no engine record)"
    elif p.known is None:
        text += f" ({p.engine or 'engine'}; engine data not read)"
    if owner is not None and owner.kind == "conmon":
        text += " [conmon]"
    return text


def _live_id(name: str | None, host_id: int | None, ns_id: int | None) -> str:
    host = name or ("" if host_id is None else str(host_id))
    if ns_id is None and host_id is not None:
        return f"{host}\u2192unmapped"
    return host if ns_id == host_id or ns_id is None else f"{host}\u2192{ns_id}"


def live_user(p) -> str:
    """``root``, ``1000``, or ``100000→0`` (the host's real uid, then the id inside the user
    namespace when it differs)."""
    if not p.uids:
        return ""
    return _live_id(p.user, p.uids[0], p.ns_uids[0] if p.ns_uids else p.uids[0])


def live_exe(p) -> str:
    """The executable, marked ``(deleted)`` or ``(memfd)``; "" for a kernel thread."""
    if p.exe is None:
        return ""
    if p.exe_memfd:  # the kernel calls every memfd deleted: it never had a name in a filesystem
        return p.exe + " (memfd)"
    return p.exe + (" (deleted)" if p.exe_deleted else "")


def live_cmdline(p) -> str:
    """The arguments joined by spaces; ``[comm]`` for a process without any (a kernel thread)."""
    return " ".join(p.cmdline) if p.cmdline else f"[{p.comm or '?'}]"


def live_processes(full_ids: bool = False) -> list[Column]:
    """``live ps``: pensieve.records.live.LiveProcess, rows grouped by container."""
    from pensieve.live.capabilities import summary

    ident, digest = id_formatter(full_ids), id_formatter(full_ids, 16)
    return [
        Column("CONTAINER", lambda p: live_container(p, ident), ID),
        Column("PID", lambda p: p.pid, NUM),
        Column("NSPID", lambda p: p.nspids[-1] if len(p.nspids) > 1 else "", NUM),
        Column("PPID", lambda p: "" if p.ppid is None else p.ppid, NUM),
        Column("USER", live_user, ID),
        Column("CAPS", lambda p: summary(p.cap_eff)),
        Column("SECCOMP", lambda p: p.seccomp or ""),
        Column("EXE", live_exe, PATH),
        Column("SHA256", lambda p: digest(p.exe_sha256), ID),
        Column("CMDLINE", live_cmdline, TEXT, 80),
    ]


# ---- live cgroups --------------------------------------------------------------------------


def human_size(n: int | None) -> str:
    """N bytes in binary units, as ``docker stats`` prints them (``64MiB``, ``1.5GiB``); "" for
    unknown."""
    if n is None:
        return ""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{n}B" if unit == "B" else f"{value:.1f}".removesuffix(".0") + unit


def _of(used: str, limit: int | None, unit=human_size) -> str:
    """``USED / LIMIT``, ``USED / max`` when unlimited."""
    return f"{used} / {'max' if limit is None else unit(limit)}"


def _cpu_seconds(usec: int | None) -> str:
    return "" if usec is None else f"{usec / 1_000_000:.2f}s"


def _throttled(u) -> str:
    if u.cpu_throttled_periods is None:
        return ""
    text = f"{u.cpu_throttled_periods}/{u.cpu_periods or 0}"
    return text + (f" ({_cpu_seconds(u.cpu_throttled_usec)})" if u.cpu_throttled_usec else "")


def _oom(u) -> str:
    if u.oom_events is None and u.oom_kills is None:
        return ""
    return f"{u.oom_events or 0} ({u.oom_kills or 0} killed)"


def live_cgroups(full_ids: bool = False) -> list[Column]:
    """``live cgroups``: pensieve.records.live.CgroupUsage (sizes in binary units; the machine
    formats keep bytes and microseconds)."""
    ident = id_formatter(full_ids)
    return [
        Column("CONTAINER", lambda u: ident(u.container_id), ID),
        Column("NAME", lambda u: u.container_name or "", PATH),
        Column("POD", lambda u: u.pod or "", PATH),
        Column("V", lambda u: u.version, NUM),
        Column("MEM / LIMIT", lambda u: _of(human_size(u.memory_current) or "?", u.memory_limit), NUM),
        Column("PEAK", lambda u: human_size(u.memory_peak), NUM),
        Column("OOM", _oom),
        Column("CPU", lambda u: _cpu_seconds(u.cpu_usage_usec), NUM),
        Column("QUOTA", lambda u: u.cpu_quota or ""),
        Column("THROTTLED", _throttled),
        Column(
            "PIDS",
            lambda u: _of(str(u.pids_current if u.pids_current is not None else "?"), u.pids_limit, str),
        ),
        Column(
            "IO R/W",
            lambda u: f"{human_size(u.io_read_bytes) or '?'} / {human_size(u.io_write_bytes) or '?'}",
        ),
        Column("PROBLEMS", lambda u: [p.message for p in u.problems]),
    ]
