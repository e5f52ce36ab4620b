"""Findings of YARA rules and IOCs: the case analysis ``findings.rules`` and the rows the hunting
tasks write (image layers, checkpoint memory).

``findings.rules`` turns every ``changes.matches`` entry (a YARA rule, an md5/sha1 IOC) into a
finding, and matches the case's indicators (kept in the case by :func:`remember`) against what
the tables already hold: ``sha256`` of changes, recovered and carved files; file names and paths
of changes (names, paths, regexes); socket addresses (IPs, both ends: the remote one of a
connection included); log lines, containers' environments, commands and labels, and checkpointed
processes' command lines and environments (IPs, domains, URLs, regexes).  Domains, IPs and URLs in
the content of changed files are found by the diff as it reads them (``changes.matches``,
:mod:`~pensieve.hunting.matchers`).

Severity is ``high`` for a YARA or IOC hit; a rule's meta ``severity`` (critical | high | medium
| low | info) overrides it; its meta ``mitre`` / ``attack`` / ``mitre_attack`` (``T1105``, or several
split by commas or spaces) gives the ATT&CK techniques.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pensieve.case.analyses import analysis
from pensieve.case.findings import COLS, KEYS, SEVERITIES, _change_ref, _dicts, _keys, finding
from pensieve.case.store import CaseStore
from pensieve.hunting.iocs import Indicator

Rows = Iterator[tuple[str, list[dict]]]
META_KEY = "hunting.iocs"
#: indicator types looked for in text: log lines, environments, command lines, labels
TEXT_IOCS = ("ipv4", "ipv6", "domain", "url", "regex")
_TECHNIQUE = re.compile(r"\bT\d{4}(?:\.\d{3})?\b")


def rule_severity(meta: dict) -> str:
    sev = str(meta.get("severity") or "").strip().lower()
    return sev if sev in SEVERITIES else "high"


def rule_techniques(meta: dict) -> tuple[str, ...]:
    text = " ".join(str(meta.get(k) or "") for k in ("mitre", "attack", "mitre_attack", "technique"))
    return tuple(dict.fromkeys(_TECHNIQUE.findall(text)))


def rule_finding(
    hit: dict,
    where: str,
    ref: dict,
    keys: dict[str, Any],
    details: dict | None = None,
    time: int | None = None,
) -> dict:
    """The finding of YARA rule HIT (a :meth:`RuleSet.scan` dict or a matches entry) at WHERE."""
    meta = hit.get("meta") or {}
    why = f"YARA rule {hit['rule']} ({hit.get('namespace') or 'rules'}) matches {where}"
    if meta.get("description"):
        why += f": {meta['description']}"
    more = {
        "rule": hit["rule"],
        "namespace": hit.get("namespace"),
        "tags": hit.get("tags"),
        "meta": meta,
        "strings": (hit.get("strings") or [])[:20],
        **(details or {}),
    }
    return finding(
        rule_severity(meta),
        f"YARA {hit['rule']}: {where}",
        why,
        [ref],
        rule_techniques(meta),
        keys,
        where,
        time,
        more,
    )


def ioc_finding(
    ind: dict,
    what: str,
    where: str,
    ref: dict,
    keys: dict[str, Any],
    time: int | None = None,
    details: dict | None = None,
) -> dict:
    """The finding of indicator IND (an Indicator as a dict, or a matches entry, whose type is in
    ``indicator``) seen as WHAT at WHERE."""
    kind = ind["indicator"] if ind.get("type") == "ioc" else ind["type"]
    label = ind.get("name") or ind.get("id") or f"{kind} {ind['value']}"
    origin = ind.get("source") or ind.get("list")
    why = f"{what} matches indicator {label} ({kind} {ind['value']}, from {origin})"
    more = {
        "indicator": {"type": kind, **{k: ind.get(k) for k in ("value", "id", "name")}},
        **(details or {}),
    }
    return finding("high", f"IOC {kind} {ind['value']}: {where}", why, [ref], (), keys, where, time, more)


# ---- the indicators a case keeps --------------------------------------------------------------


def remember(store: CaseStore, iocs: list[Indicator]) -> None:
    """Add IOCS to the indicators the case keeps (its ``meta`` table), for every later analysis."""
    if not iocs:
        return
    known = {(i["type"], i["value"]): i for i in case_iocs(store)}
    for ind in iocs:
        known.setdefault((ind.type, ind.value), ind._asdict())
    text = json.dumps(list(known.values()))
    with store.transaction():
        store.query("DELETE FROM meta WHERE key = ?", [META_KEY])
        store.query("INSERT INTO meta VALUES (?, ?)", [META_KEY, text])


def case_iocs(store: CaseStore) -> list[dict]:
    _names, rows = store.query("SELECT value FROM meta WHERE key = ?", [META_KEY])
    return json.loads(rows[0][0]) if rows else []


# ---- the analysis -------------------------------------------------------------------------------


def _match_findings(store: CaseStore) -> list[dict]:
    rows = _dicts(
        store, f"SELECT {COLS}, change, path, mtime, sha256, matches FROM changes WHERE matches IS NOT NULL"
    )
    out = []
    for r in rows:
        for m in json.loads(r["matches"] or "[]"):
            if m.get("type") == "yara":
                out.append(
                    rule_finding(
                        m, r["path"], _change_ref(r), _keys(r), {"sha256": r["sha256"]}, r.get("mtime")
                    )
                )
            elif m.get("type") == "ioc":
                seen = "the content" if m.get("seen") == "content" else f"the {m['indicator']}"
                out.append(
                    ioc_finding(
                        m,
                        f"{seen} of {r['path']}",
                        r["path"],
                        _change_ref(r),
                        _keys(r),
                        r.get("mtime"),
                    )
                )
    return out


def _sha256_findings(store: CaseStore, wanted: dict[str, dict]) -> list[dict]:
    out: list[dict] = []
    if not wanted:
        return out
    values = ", ".join(f"'{v}'" for v in wanted)  # 64 hex digits each: checked when read
    sql = f"SELECT {COLS}, change, path, mtime, sha256 FROM changes WHERE sha256 IN ({values})"
    for r in _dicts(store, sql):
        out.append(
            ioc_finding(
                wanted[r["sha256"]],
                f"the sha256 of {r['path']}",
                r["path"],
                _change_ref(r),
                _keys(r),
                r.get("mtime"),
            )
        )
    for table in ("recovered", "carved"):
        for r in _dicts(store, f"SELECT * FROM {table} WHERE sha256 IN ({values})"):
            where = r.get("container_path") or r.get("path") or r.get("offset") or table
            ref = {"table": table, "source_id": r["source_id"], "path": r.get("path"), "sha256": r["sha256"]}
            out.append(
                ioc_finding(wanted[r["sha256"]], f"the sha256 of a {table} file", str(where), ref, _keys(r))
            )
    return out


def _name_findings(store: CaseStore, iocs: list[dict]) -> list[dict]:
    names = {i["value"]: i for i in iocs if i["type"] == "filename"}
    paths = {i["value"]: i for i in iocs if i["type"] == "path"}
    regexes = [(re.compile(i["value"]), i) for i in iocs if i["type"] == "regex"]
    if not (names or paths or regexes):
        return []
    out = []
    for r in _dicts(store, f"SELECT {COLS}, change, path, mtime FROM changes"):
        path = r["path"]
        hits = [names.get(path.rsplit("/", 1)[-1]), paths.get(path)]
        hits += [i for rx, i in regexes if rx.search(path)]
        for ind in filter(None, hits):
            out.append(
                ioc_finding(
                    ind, f"the path {path} ({r['change']})", path, _change_ref(r), _keys(r), r.get("mtime")
                )
            )
    return out


def _network_findings(store: CaseStore, iocs: list[dict]) -> list[dict]:
    ips = {i["value"]: i for i in iocs if i["type"] in ("ipv4", "ipv6")}
    out = []
    if ips:
        for r in _dicts(store, f"SELECT {COLS}, src, src_port, dst, dst_port, state, pids FROM sockets"):
            for side in ("src", "dst"):
                ind = ips.get(r[side] or "")
                if ind is None:
                    continue
                ref = {
                    "table": "sockets",
                    "source_id": r["source_id"],
                    "src": r["src"],
                    "src_port": r["src_port"],
                    "dst": r["dst"],
                    "dst_port": r["dst_port"],
                }
                where = f"{r[side]}:{r[f'{side}_port']}"
                out.append(
                    ioc_finding(
                        ind,
                        f"a socket's {side} address ({r['state']})",
                        where,
                        ref,
                        _keys(r),
                        None,
                        {"pids": json.loads(r["pids"] or "[]")},
                    )
                )
    return out + _log_findings(store, iocs)


def _log_pattern(ind: dict) -> re.Pattern:
    """A regex indicator as given; a URL as given (case ignored); an address or domain as a whole
    word (case ignored)."""
    if ind["type"] == "regex":
        return re.compile(ind["value"])
    if ind["type"] == "url":
        return re.compile(re.escape(ind["value"]), re.I)
    return re.compile(r"(?<![\w.-])" + re.escape(ind["value"]) + r"(?![\w-])", re.I)


def _log_findings(store: CaseStore, iocs: list[dict]) -> list[dict]:
    wanted = [i for i in iocs if i["type"] in TEXT_IOCS]
    if not wanted:
        return []
    tests = [(_log_pattern(i), i) for i in wanted]
    # a first pass in SQL keeps Python off the lines no indicator can match
    literal = [i["value"].lower() for i in wanted if i["type"] != "regex"]
    where = " OR ".join(["contains(lower(message), ?)"] * len(literal))
    if any(i["type"] == "regex" for i in wanted):
        where, literal = "TRUE", []
    sql = f"SELECT {COLS}, time, stream, message, source FROM logs WHERE {where}"
    names, rows = store.query(sql, literal)
    out = []
    for values in rows:
        r = dict(zip(names, values, strict=True))
        for rx, ind in tests:
            if rx.search(r["message"] or ""):
                ref = {
                    "table": "logs",
                    "source_id": r["source_id"],
                    "container_id": r["container_id"],
                    "source": r["source"],
                    "time": str(r["time"]),
                }
                out.append(
                    ioc_finding(
                        ind,
                        "a log line",
                        r["container_id"] or r["source"],
                        ref,
                        _keys(r),
                        None,
                        {"line": (r["message"] or "")[:500]},
                    )
                )
    return out


#: (table, columns holding text an indicator may be in, what a hit there is called)
_SETTINGS = (
    ("containers", ("env", "command", "entrypoint", "cmd", "labels"), "the {col} of container {who}"),
    ("processes", ("cmdline", "environ"), "the {col} of pid {who}"),
)


def _texts(value: str | None) -> list[str]:
    """The strings of a JSON column's text (a list, an object's keys=values, a string)."""
    if value is None:
        return []
    data = json.loads(value) if isinstance(value, str) else value
    if isinstance(data, dict):
        return [f"{k}={v}" for k, v in data.items()]
    if isinstance(data, list):
        return [str(v) for v in data]
    return [str(data)]


def _setting_findings(store: CaseStore, iocs: list[dict]) -> list[dict]:
    """Network indicators (and regexes) in the environment, command and labels of every container
    and in the command line and environment of every checkpointed process."""
    tests = [(_log_pattern(i), i) for i in iocs if i["type"] in TEXT_IOCS]
    if not tests:
        return []
    out = []
    for table, cols, what in _SETTINGS:
        who_col = "coalesce(name, container_id)" if table == "containers" else "pid"
        extra = ", checkpoint_name, pid" if table == "processes" else ""
        sql = f"SELECT {COLS}, {who_col} AS who{extra}, {', '.join(cols)} FROM {table}"
        for r in _dicts(store, sql):
            for col in cols:
                for text in _texts(r[col]):
                    for rx, ind in tests:
                        if rx.search(text):
                            out.append(_setting_finding(r, table, col, what, text, ind))
    return out


def _setting_finding(r: dict, table: str, col: str, what: str, text: str, ind: dict) -> dict:
    ref = {"table": table, "source_id": r["source_id"], "container_id": r["container_id"], "column": col}
    if table == "processes":
        ref.update(pid=r["pid"], checkpoint_name=r["checkpoint_name"])
    label = what.format(col=col, who=r["who"])
    where = f"{r['container_id'] or 'checkpoint'} {col}" if table == "containers" else f"pid {r['who']} {col}"
    return ioc_finding(ind, label, where, ref, _keys(r), None, {"text": text[:500]})


@analysis("findings.rules", ("findings",), order=10)
def rules(store: CaseStore) -> Rows:
    """YARA and IOC hits: changes.matches, and the case's indicators over its tables."""
    iocs = case_iocs(store)
    hex64 = re.compile(r"[0-9a-f]{64}")
    sha256 = {i["value"]: i for i in iocs if i["type"] == "sha256" and hex64.fullmatch(i["value"])}
    out = _match_findings(store) + _sha256_findings(store, sha256)
    out += _name_findings(store, iocs) + _network_findings(store, iocs) + _setting_findings(store, iocs)
    seen: set[str] = set()
    unique = [f for f in out if not (f["finding_id"] in seen or seen.add(f["finding_id"]))]
    yield "findings", unique


__all__ = ["KEYS", "case_iocs", "ioc_finding", "remember", "rule_finding", "rules"]
