"""Findings: what the records of a case say about a breach, each with a severity, a one-line
rationale, the records it rests on and, where one fits, its MITRE ATT&CK technique.

Each heuristic is a case analysis (:mod:`pensieve.case.analyses`) over the tables triage filled:

* container settings -- privileged, host namespaces, a container-engine socket or the host's
  ``/`` bind-mounted, dangerous capabilities (``containers``);
* what a container changed -- new executables (ELF or script, or any file given an exec bit),
  worse under ``/tmp``, ``/dev/shm``, ``/var/tmp``, ``/run`` or a hidden directory; system
  binaries and libraries modified; setuid/setgid bits or file capabilities added; persistence
  (cron, systemd units, shell start-up files, ``authorized_keys``, ``ld.so.preload``); accounts
  (``/etc/passwd``, ``shadow``, ``group``, ``sudoers``) (``changes``);
* what ran -- a shell whose standard input or output is a network socket (a reverse or bind
  shell), an executable that was deleted or lives only in memory (memfd), a listener the image
  does not declare (``processes``, ``files``, ``sockets`` of checkpoints; ``live_processes`` and
  ``live_sockets`` of a collect bundle's live snapshot, times from the process start times);
* integrity -- layers whose content no longer matches their digest (``integrity``);
* deletion -- files of a container's RW layer deleted and brought back from the journal
  (``recovered``).

Severities: ``critical`` (the breach itself shows: tampered image, a shell on a socket),
``high`` (a likely foothold or persistence), ``medium`` (risky, often legitimate), ``low``,
``info``.  A finding's ``evidence`` lists its records as ``{"table": ..., <identifying
columns>}``; its key columns say which host, container, image and layer it is about.

References: MITRE ATT&CK for Containers, https://attack.mitre.org/matrices/enterprise/containers/
(technique ids T1611, T1610, T1525, T1053.003, T1543.002, T1546.004, T1098.004, T1574.006,
T1136.001, T1548.001, T1548.003, T1554, T1105, T1564.001, T1059.004, T1620, T1070.004, T1571,
T1552.007).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from pensieve.case.analyses import analysis
from pensieve.case.store import CaseStore

Rows = Iterator[tuple[str, list[dict]]]

SEVERITIES = ("critical", "high", "medium", "low", "info")
KEYS = ("source_id", "host", "engine", "container_id", "pod", "image_id", "layer_id")
COLS = ", ".join(KEYS)


def _cols(alias: str) -> str:
    """The key columns of table ALIAS, for a SELECT."""
    return ", ".join(f"{alias}.{k}" for k in KEYS)


#: where a dropped tool usually lands
STAGING = ("/tmp/", "/dev/shm/", "/var/tmp/", "/run/")
SYSTEM_DIRS = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")
SHELLS = ("sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "busybox")
DANGEROUS_CAPS = ("SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH", "SYS_RAWIO", "BPF")

#: (path test, title, severity, technique, rationale) of persistence and account files
PERSISTENCE: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "path = '/etc/crontab' OR path LIKE '/etc/cron.%/%' OR path LIKE '/var/spool/cron/%'"
        " OR path LIKE '/etc/crontabs/%'",
        "cron job added or changed",
        "high",
        "T1053.003",
        "a scheduled job runs a command again and again: a common way to keep a foothold",
    ),
    (
        "path LIKE '/etc/systemd/system/%' OR path LIKE '/lib/systemd/system/%'"
        " OR path LIKE '/usr/lib/systemd/system/%' OR path LIKE '/etc/init.d/%'",
        "service unit added or changed",
        "high",
        "T1543.002",
        "a service unit starts a program at every boot of the system",
    ),
    (
        "path IN ('/etc/profile', '/etc/bash.bashrc', '/etc/bashrc', '/etc/zshrc', '/etc/environment')"
        " OR path LIKE '/etc/profile.d/%'"
        " OR regexp_matches(path, '/\\.(bashrc|bash_profile|profile|zshrc|bash_login)$')",
        "shell start-up file changed",
        "medium",
        "T1546.004",
        "a shell start-up file runs its commands in every new shell",
    ),
    (
        "regexp_matches(path, '/\\.ssh/authorized_keys2?$')",
        "SSH authorized key added or changed",
        "high",
        "T1098.004",
        "a new authorized key lets its owner log in without a password",
    ),
    (
        "path = '/etc/ld.so.preload'",
        "ld.so.preload changed",
        "high",
        "T1574.006",
        "every dynamically linked program loads the libraries /etc/ld.so.preload names",
    ),
    (
        "path IN ('/etc/passwd', '/etc/shadow', '/etc/group', '/etc/gshadow')",
        "account database changed",
        "high",
        "T1136.001",
        "a change to the account files can add a user or give one a new password or uid 0",
    ),
    (
        "path = '/etc/sudoers' OR path LIKE '/etc/sudoers.d/%'",
        "sudo rules changed",
        "high",
        "T1548.003",
        "sudo rules decide who may run what as root",
    ),
)


def finding(
    severity: str,
    title: str,
    rationale: str,
    evidence: list[dict],
    techniques: tuple[str, ...] = (),
    keys: dict[str, Any] | None = None,
    subject: str | None = None,
    time: int | None = None,
    details: dict | None = None,
) -> dict:
    """A ``findings`` row; its id is a hash of what it says and rests on (stable across runs)."""
    row: dict[str, Any] = {k: v for k, v in (keys or {}).items() if k in KEYS}
    ident = json.dumps([title, subject, evidence], sort_keys=True, default=str)
    row.update(
        finding_id=hashlib.sha256(ident.encode()).hexdigest()[:16],
        severity=severity,
        title=title,
        rationale=rationale,
        techniques=list(techniques),
        subject=subject,
        evidence=evidence,
        details=details or {},
        time=time,
    )
    return row


def _dicts(store: CaseStore, sql: str) -> list[dict]:
    names, rows, _times = store.select(sql)
    return [dict(zip(names, r, strict=True)) for r in rows]


def _keys(row: dict) -> dict:
    return {k: row.get(k) for k in KEYS}


def _container_ref(row: dict) -> dict:
    return {"table": "containers", "source_id": row["source_id"], "container_id": row["container_id"]}


def _change_ref(row: dict) -> dict:
    return {
        "table": "changes",
        "source_id": row["source_id"],
        "container_id": row["container_id"],
        "path": row["path"],
        "change": row["change"],
    }


def _who(row: dict) -> str:
    return row.get("name") or (row.get("container_id") or "")[:12]


# ---- container settings ------------------------------------------------------------------------


def _setting_findings(c: dict) -> Iterator[dict]:
    """The risky settings of one container row."""
    name, ev = _who(c), [_container_ref(c)]
    when = c.get("created")
    if c.get("privileged"):
        yield finding(
            "high", "privileged container", f"{name} runs privileged: every device and capability of "
            "the host, no seccomp or AppArmor: escaping to the host is a step away", ev, ("T1611",), _keys(c),
            c["container_id"], when,
        )  # fmt: skip
    for m in json.loads(c.get("mounts") or "[]"):
        src = (m.get("source") or "").rstrip("/") or ("/" if m.get("source") else "")
        dest = m.get("destination")
        if m.get("type") == "bind" and src.endswith((".sock", "/docker.sock")) and "sock" in src:
            yield finding(
                "high", "container engine socket mounted", f"{name} has {src} at {dest}: whoever "
                "controls it can start a privileged container on the host", ev, ("T1611", "T1552.007"),
                _keys(c), c["container_id"], when, {"mount": m},
            )  # fmt: skip
        elif m.get("type") == "bind" and src == "/":
            yield finding(
                "high", "host root mounted", f"{name} has the host's / at {dest}"
                + ("" if not m.get("rw", True) else " read-write"), ev, ("T1611",), _keys(c),
                c["container_id"],
                when, {"mount": m},
            )  # fmt: skip
    for mode, label in (("pid_mode", "pid"), ("ipc_mode", "ipc")):
        if c.get(mode) == "host":
            yield finding(
                "medium", f"host {label} namespace", f"{name} shares the host's {label} namespace",
                ev, ("T1611",), _keys(c), c["container_id"], when,
            )  # fmt: skip
    caps = [
        cap
        for cap in json.loads(c.get("cap_add") or "[]")
        if cap.upper().removeprefix("CAP_") in DANGEROUS_CAPS
    ]
    if caps and not c.get("privileged"):
        yield finding(
            "medium", "dangerous capabilities added", f"{name} was given {', '.join(caps)}", ev, ("T1611",),
            _keys(c), c["container_id"], when, {"cap_add": caps},
        )  # fmt: skip


@analysis("findings.settings", ("findings",), order=10)
def settings(store: CaseStore) -> Rows:
    """Risky container settings."""
    rows = _dicts(store, "SELECT * FROM containers")
    yield "findings", [f for c in rows for f in _setting_findings(c)]


# ---- filesystem changes ------------------------------------------------------------------------


def _mode(text: str | None) -> int | None:
    """A mode as the diff writes it (``0o4755``), as a number."""
    try:
        return int(text, 8) if text else None
    except ValueError:
        return None


def _lower_mode(row: dict) -> int | None:
    lower = json.loads(row.get("lower") or "null") or {}
    return _mode(lower.get("mode"))


def _executable(row: dict) -> bool:
    mode = _mode(row.get("mode"))
    if row.get("file_kind") in ("elf", "script"):
        return True
    return row.get("file_kind") not in (None, "empty") and mode is not None and bool(mode & 0o111)


def _staged(path: str) -> bool:
    return path.startswith(STAGING) or any(
        p.startswith(".") and p not in (".", "..") for p in path.split("/")[:-1]
    )


def _executable_finding(row: dict) -> dict | None:
    path, kind = row["path"], row.get("file_kind") or "file"
    if row["change"] == "added" or (
        row["change"] == "modified" and "content" in (row.get("what_changed") or "")
    ):
        where = "a staging or hidden directory" if _staged(path) else "the container's filesystem"
        severity = "high" if _staged(path) or kind == "elf" else "medium"
        techniques = ("T1105", "T1564.001") if _staged(path) else ("T1105",)
        return finding(
            severity, f"new executable {path}", f"an executable ({kind}) appeared in {where} after the "
            "container started: tools dropped by an intruder look like this", [_change_ref(row)], techniques,
            _keys(row), path, row.get("mtime"), {"sha256": row.get("sha256"), "file_kind": kind},
        )  # fmt: skip
    return None


def _mode_findings(row: dict) -> Iterator[dict]:
    mode, before = _mode(row.get("mode")) or 0, _lower_mode(row) or 0
    added = mode & 0o6000 & ~before
    if row.get("type") == "file" and added:
        bits = " and ".join(b for b, m in (("setuid", 0o4000), ("setgid", 0o2000)) if added & m)
        yield finding(
            "high", f"{bits} bit set on {row['path']}", f"{row['path']} became {bits} "
            f"({row.get('mode')}): it runs with its owner's rights whoever starts it", [_change_ref(row)],
            ("T1548.001",), _keys(row), row["path"], row.get("ctime") or row.get("mtime"),
        )  # fmt: skip
    if "capabilities" in (row.get("what_changed") or ""):
        yield finding(
            "high", f"file capabilities changed on {row['path']}", "file capabilities give a program "
            "root powers without setuid", [_change_ref(row)], ("T1548.001",), _keys(row), row["path"],
            row.get("ctime"),
        )  # fmt: skip


def _change_findings(row: dict) -> Iterator[dict]:
    path = row["path"]
    if row.get("type") == "file" and row["change"] != "deleted" and _executable(row):
        if path.startswith(SYSTEM_DIRS) and row["change"] == "modified":
            yield finding(
                "high", f"system binary or library modified: {path}", "a program or library the system "
                "runs was replaced inside the container", [_change_ref(row)], ("T1554",), _keys(row), path,
                row.get("mtime"), {"sha256": row.get("sha256")},
            )  # fmt: skip
        else:
            f = _executable_finding(row)
            if f is not None:
                yield f
    yield from _mode_findings(row)


@analysis("findings.changes", ("findings",), order=10)
def changes(store: CaseStore) -> Rows:
    """New executables, modified system files, setuid and capabilities (changes)."""
    rows = _dicts(
        store,
        f"SELECT {COLS}, change, path, type, mode, what_changed, lower, sha256, mtime, ctime, file_kind"
        " FROM changes WHERE engine_reports OR"
        " engine_reports IS NULL",
    )
    yield "findings", [f for r in rows for f in _change_findings(r)]


def _accounts(lines: list[str]) -> list[tuple[str, str]]:
    """(name, uid) of the passwd(5) lines among LINES."""
    out = []
    for line in lines:
        parts = line.split(":")
        if len(parts) >= 7 and parts[0] and not line.startswith("#"):
            out.append((parts[0], parts[2]))
    return out


def _persistence_rows(r: dict, title: str, severity: str, technique: str, rationale: str) -> list[dict]:
    added = json.loads(r.get("added_lines") or "null") or []
    details = {"sha256": r.get("sha256"), "change": r["change"], "added_lines": added}
    accounts = _accounts(added) if r["path"] == "/etc/passwd" else []
    if accounts:
        return [
            finding(
                "critical" if uid == "0" else "high",
                f"account {name} added to /etc/passwd (uid {uid})",
                f"a new account {name} with uid {uid}" + (": a second root" if uid == "0" else ""),
                [_change_ref(r)],
                (technique,),
                _keys(r),
                r["path"],
                r.get("mtime"),
                details,
            )
            for name, uid in accounts
        ]
    shown = f": {added[0][:80]}" if added else ""
    ref = [_change_ref(r)]
    return [
        finding(
            severity,
            f"{title}: {r['path']}",
            rationale + shown,
            ref,
            (technique,),
            _keys(r),
            r["path"],
            r.get("mtime"),
            details,
        )  # fmt: skip
    ]


@analysis("findings.persistence", ("findings",), order=10)
def persistence(store: CaseStore) -> Rows:
    """Persistence and account files written (changes), naming the lines added."""
    out: list[dict] = []
    for test, title, severity, technique, rationale in PERSISTENCE:
        rows = _dicts(
            store,
            f"SELECT {COLS}, change, path, mtime, sha256, added_lines"
            f" FROM changes WHERE type = 'file' AND change IN ('added', 'modified') AND ({test})",
        )
        for r in rows:
            out += _persistence_rows(r, title, severity, technique, rationale)
    yield "findings", out


# ---- processes of checkpoints ------------------------------------------------------------------


def _peers(store: CaseStore, source_id: int, pid: int) -> list[str]:
    """``address:port`` of the far end of each inet socket on PID's standard input or output."""
    rows = _dicts(
        store,
        f"SELECT dst, dst_port, fds FROM sockets WHERE source_id = {int(source_id)}"
        " AND family IN ('inet', 'inet6')",
    )
    mine = {f"{pid}:0", f"{pid}:1"}
    return [
        f"{r['dst']}:{r['dst_port']}"
        for r in rows
        if mine & set(json.loads(r["fds"] or "[]")) and r["dst_port"]
    ]


@analysis("findings.processes", ("findings",), order=10)
def processes(store: CaseStore) -> Rows:
    """Shells on sockets, deleted or in-memory executables (checkpoints, live snapshots)."""
    shells = ", ".join(f"'{s}'" for s in SHELLS)
    on_socket = _dicts(
        store,
        f"SELECT {_cols('p')}, p.pid, p.comm, p.cmdline, p.checkpoint,"
        " list(DISTINCT f.fd ORDER BY f.fd) AS fds, list(DISTINCT f.target) AS targets"
        " FROM processes p JOIN files f ON f.source_id = p.source_id AND f.pid = p.pid"
        f" WHERE f.fd IN (0, 1) AND f.type = 'inetsk' AND (p.comm IN ({shells}))"
        " AND (p.comm <> 'busybox' OR p.cmdline IS NULL OR json_extract_string(p.cmdline, '$[1]') IN"
        f" ({shells}) OR json_extract_string(p.cmdline, '$[0]') LIKE '%sh')"
        " GROUP BY ALL",
    )
    out = []
    for r in on_socket:
        peers = _peers(store, r["source_id"], r["pid"])
        ref = {
            "table": "processes",
            "source_id": r["source_id"],
            "pid": r["pid"],
            "checkpoint": r["checkpoint"],
        }
        out.append(
            finding(
                "critical",
                f"shell on a network socket (pid {r['pid']}{', to ' + peers[0] if peers else ''})",
                "a shell whose standard input/output (fd " + ", ".join(map(str, r["fds"])) + ") is a TCP "
                "socket"
                + (f" connected to {', '.join(peers)}" if peers else "")
                + ": a reverse or bind shell",
                [ref],
                ("T1059.004",),
                _keys(r),
                f"pid {r['pid']}",
                None,
                {"cmdline": r.get("cmdline"), "sockets": r.get("targets"), "peers": peers},
            )  # fmt: skip
        )
    deleted = _dicts(
        store,
        f"SELECT {_cols('p')}, p.pid, p.comm, f.target, p.checkpoint"
        " FROM processes p JOIN files f ON f.source_id = p.source_id AND f.pid = p.pid"
        " WHERE f.type = 'exe' AND (f.deleted OR f.target LIKE '%(deleted)%' OR f.target LIKE '%memfd:%')",
    )
    for r in deleted:
        ref = {
            "table": "processes",
            "source_id": r["source_id"],
            "pid": r["pid"],
            "checkpoint": r["checkpoint"],
        }
        memfd = "memfd:" in (r["target"] or "")
        out.append(
            finding(
                "high",
                f"{'in-memory' if memfd else 'deleted'} executable running (pid {r['pid']})",
                f"{r['comm']} runs from {r['target']}: its file is gone from the disk, as malware that hides "
                "itself leaves it",
                [ref],
                ("T1620",) if memfd else ("T1070.004",),
                _keys(r),
                f"pid {r['pid']}",
            )  # fmt: skip
        )
    yield "findings", out + _live_shells(store) + _live_executables(store)


# ---- the live snapshot of collect bundles -----------------------------------------------------

#: the protocols of live_sockets that reach the network
INET = ("tcp", "tcp6", "udp", "udp6")


def _live_ref(r: dict) -> dict:
    return {"table": "live_processes", "source_id": r["source_id"], "pid": r["pid"]}


def _is_shell(comm: str | None, cmdline: list) -> bool:
    """Whether a process named COMM running CMDLINE is a shell (busybox only as ``sh``/``ash``)."""
    if comm not in SHELLS:
        return False
    if comm != "busybox":
        return True
    words = [str(w).rsplit("/", 1)[-1] for w in cmdline[:2]]
    return not words or any(w in SHELLS and w != "busybox" for w in words)


def _live_shells(store: CaseStore) -> list[dict]:
    """Shells of live snapshots whose fd 0 or 1 is a network socket (live_sockets ``fds``)."""
    shells = ", ".join(f"'{s}'" for s in SHELLS)
    procs = _dicts(
        store,
        f"SELECT {COLS}, pid, comm, cmdline, exe, start_time, container_name FROM live_processes"
        f" WHERE comm IN ({shells})",
    )
    sockets = _dicts(
        store,
        "SELECT source_id, protocol, state, local, local_port, remote, remote_port, fds FROM live_sockets"
        " WHERE protocol IN (" + ", ".join(f"'{p}'" for p in INET) + ")",
    )
    by_fd: dict[tuple[int, str], list[dict]] = {}
    for sock in sockets:
        for fd in json.loads(sock["fds"] or "[]"):
            by_fd.setdefault((sock["source_id"], str(fd)), []).append(sock)
    out = []
    for r in procs:
        cmdline = json.loads(r["cmdline"] or "[]")
        if not _is_shell(r["comm"], cmdline):
            continue
        fds = [fd for fd in (0, 1) if (r["source_id"], f"{r['pid']}:{fd}") in by_fd]
        if not fds:
            continue
        socks = [s for fd in fds for s in by_fd[(r["source_id"], f"{r['pid']}:{fd}")]]
        peers = sorted({f"{s['remote']}:{s['remote_port']}" for s in socks if s["remote_port"]})
        out.append(
            finding(
                "critical",
                f"shell on a network socket (pid {r['pid']}{', to ' + peers[0] if peers else ''})",
                f"a running shell ({r['comm']}) whose standard input/output (fd "
                f"{', '.join(map(str, fds))}) is a {socks[0]['protocol']} socket"
                + (f" connected to {', '.join(peers)}" if peers else "")
                + ": a reverse or bind shell (live snapshot)",
                [_live_ref(r)],
                ("T1059.004",),
                _keys(r),
                f"pid {r['pid']}",
                r["start_time"],
                {"cmdline": cmdline, "peers": peers, "exe": r["exe"]},
            )  # fmt: skip
        )
    return out


def _live_executables(store: CaseStore) -> list[dict]:
    """Processes of live snapshots running a deleted or memfd executable."""
    rows = _dicts(
        store,
        f"SELECT {COLS}, pid, comm, exe, exe_sha256, exe_deleted, exe_memfd, start_time FROM live_processes"
        " WHERE exe_deleted OR exe_memfd",
    )
    out = []
    for r in rows:
        memfd = bool(r["exe_memfd"])
        out.append(
            finding(
                "high",
                f"{'in-memory' if memfd else 'deleted'} executable running (pid {r['pid']})",
                f"{r['comm']} runs from {r['exe']}"
                + (
                    " (a memfd: it never was a file on disk, as reflectively loaded code runs)"
                    if memfd
                    else " (deleted): its file is gone from the disk, as malware that hides itself leaves it"
                ),
                [_live_ref(r)],
                ("T1620",) if memfd else ("T1070.004",),
                _keys(r),
                f"pid {r['pid']}",
                r["start_time"],
                {"exe": r["exe"], "exe_sha256": r["exe_sha256"]},
            )  # fmt: skip
        )
    return out


def _live_listeners(store: CaseStore) -> list[dict]:
    """Listeners of live snapshots that ``live net`` marked ``undeclared-listener`` (a port the
    container's image and settings do not publish or expose)."""
    rows = _dicts(
        store,
        f"SELECT {COLS}, protocol, local, local_port, pids, marks FROM live_sockets"
        " WHERE list_contains(CAST(marks AS VARCHAR[]), 'undeclared-listener')",
    )
    out = []
    for r in rows:
        where = f"{r['local']}:{r['local_port']}"
        ref = {
            "table": "live_sockets",
            "source_id": r["source_id"],
            "protocol": r["protocol"],
            "local": r["local"],
            "local_port": r["local_port"],
        }
        out.append(
            finding(
                "medium",
                f"undeclared listener {where} ({r['protocol']})",
                "a running process listens on a port neither the image nor the container declares "
                "(live snapshot)",
                [ref],
                ("T1571",),
                _keys(r),
                where,
                None,
                {"pids": json.loads(r["pids"] or "[]")},
            )  # fmt: skip
        )
    return out


@analysis("findings.listeners", ("findings",), order=10)
def listeners(store: CaseStore) -> Rows:
    """Listening sockets the container's image or settings do not declare (checkpoints, live
    snapshots)."""
    rows = _dicts(
        store,
        f"SELECT {_cols('s')}, s.src, s.src_port, s.proto, s.pids,"
        " c.exposed_ports AS c_ports, i.exposed_ports AS i_ports"
        " FROM sockets s LEFT JOIN containers c ON c.container_id = s.container_id"
        " LEFT JOIN images i ON i.image_id = coalesce(s.image_id, c.image_id)"
        " WHERE s.state = 'LISTEN' AND s.family IN ('inet', 'inet6')",
    )
    out = []
    for r in rows:
        if r["container_id"] is None:
            continue  # a bare checkpoint: nothing declared to compare with
        declared = {
            str(p).split("/")[0] for p in json.loads(r["c_ports"] or "[]") + json.loads(r["i_ports"] or "[]")
        }
        if str(r["src_port"]) in declared:
            continue
        ref = {"table": "sockets", "source_id": r["source_id"], "src": r["src"], "src_port": r["src_port"]}
        out.append(
            finding(
                "medium",
                f"undeclared listener {r['src']}:{r['src_port']}",
                "a process listens on a port neither the image nor the container declares",
                [ref],
                ("T1571",),
                _keys(r),
                f"{r['src']}:{r['src_port']}",
                None,
                {"pids": json.loads(r["pids"] or "[]")},
            )  # fmt: skip
        )
    yield "findings", out + _live_listeners(store)


# ---- integrity and deletion --------------------------------------------------------------------


@analysis("findings.integrity", ("findings",), order=10)
def integrity(store: CaseStore) -> Rows:
    """Layers whose content does not match their digest (integrity)."""
    rows = _dicts(store, "SELECT * FROM integrity WHERE status = 'tampered'")
    out = []
    for r in rows:
        ref = {"table": "integrity", "source_id": r["source_id"], "chain_id": r["chain_id"]}
        problems = json.loads(r.get("problems") or "[]")
        paths = [p.get("path") for p in problems if p.get("path")][:20]
        out.append(
            finding(
                "critical",
                f"tampered layer {r['chain_id'][:19]}",
                "the layer's files no longer rebuild its "
                "recorded digest: someone changed an image layer on the host",
                [ref],
                ("T1525",),
                _keys(r),
                r["chain_id"],
                None,
                {"paths": paths, "images": json.loads(r.get("images") or "[]")},
            )  # fmt: skip
        )
    yield "findings", out


@analysis("findings.deleted", ("findings",), order=10)
def deleted(store: CaseStore) -> Rows:
    """Files deleted from a container's RW layer that the disk still remembers (recovered): medium
    for a container that still exists, low for one removed with its layer."""
    rows = _dicts(
        store,
        "SELECT * FROM recovered WHERE type = 'file' AND layer_kind LIKE 'rw%'"
        " AND container_path IS NOT NULL AND container_path <> '/'",
    )
    out = []
    for r in rows:
        ref = {"table": "recovered", "source_id": r["source_id"], "inode": r["inode"], "path": r["path"]}
        shown = r["container_path"]
        removed = "removed" in r["layer_kind"]
        out.append(
            finding(
                "low" if removed else "medium",
                f"file deleted from a {'removed ' if removed else ''}container: {shown}",
                "a file written in the container and deleted again: an intruder cleaning up leaves this"
                + (" (the whole container was removed since)" if removed else ""),
                [ref],
                ("T1070.004",),
                _keys(r),
                shown,
                r.get("dtime") or r.get("deleted_before"),
                {"sha256": r.get("sha256"), "confidence": r.get("confidence")},
            )  # fmt: skip
        )
    yield "findings", out
