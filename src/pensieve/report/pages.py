"""``pensieve report``: a case as a directory of static HTML pages, readable offline.

Pages (jinja2 templates of this package, autoescaped: every string of the evidence -- container
names, paths, log lines -- is attacker-controlled text and is only ever written escaped):

* ``index.html``: the sources and hosts, engines, containers by state, findings by severity,
  problems, the top findings, every container;
* ``findings.html``: every finding, most severe first, with its evidence;
* ``containers/<id>.html``: one per container -- identity, risky settings, layer chain, changes,
  processes, sockets, a logs excerpt, its events and findings;
* ``timeline.html``: the events, filterable by kind, text and time range, zoomable;
* ``graph.html``: containers, images, layers, hashes and IPs and the links between them.

The timeline and graph data are JSON inside ``<script type="application/json">`` (every ``<``,
``>`` and ``&`` written as a ``\\u`` escape, so no string can close the element), read by the
report's own scripts in ``assets/`` which only ever set text (``textContent``), never markup.
Every page carries a Content-Security-Policy allowing scripts, styles and images from the
report's own files only: no inline script runs, nothing is fetched from a network.

Everything is written through :class:`~pensieve.output.sink.OutputSink`: never into the
evidence (every ``sources.path`` of the case is a boundary), never over an earlier report, with
a manifest of every file and its sha256.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib import resources
from typing import Any

from markupsafe import Markup

from pensieve.output.sink import OutputSink
from pensieve.report.data import SEVERITIES, CaseData, by_container, load, severity_rank
from pensieve.report.graph import build_graph
from pensieve.times import iso_ns

ASSETS = ("report.css", "timeline.js", "graph.js", "page.js")
#: settings shown as risky when they have these values (besides the engine's own ``risks``)
_HOST_MODES = ("pid_mode", "ipc_mode", "network_mode")
_SENSITIVE_MOUNTS = (
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/root",
    "/var/run/docker.sock",
    "/run/docker.sock",
)


#: characters of JSON text written as \\u escapes inside a <script> element (JSON strings mean the same)
_SCRIPT_ESCAPES = (
    ("&", "\\u0026"),
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("'", "\\u0027"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def script_json(value: Any) -> Markup:
    """VALUE as JSON safe inside a ``<script>`` element: no ``<``, ``>``, ``&``, ``'`` or line
    separator appears literally, so no string of it can end the element or start markup."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    for ch, esc in _SCRIPT_ESCAPES:
        text = text.replace(ch, esc)
    return Markup(text)


def _iso(ns: Any) -> str:
    return (iso_ns(ns) or "") if isinstance(ns, int) else ""


def _short(value: Any, n: int = 12) -> str:
    v = "" if value is None else str(value)
    if v.startswith("sha256:"):
        v = v[7:]
    return v[:n]


def _pretty(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def _words(value: Any) -> str:
    """A list (a command, capabilities) as one line; anything else as text."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def environment():
    """The jinja2 environment of the report: package templates, autoescape on, the filters."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pensieve.report", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,  # a missing field of a nested value renders empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(iso=_iso, short=_short, pretty=_pretty, words=_words, sevclass=_sevclass)
    return env


def _sevclass(severity: Any) -> str:
    rank = severity_rank(str(severity) if severity else None)
    return f"sev-{SEVERITIES[rank]}" if rank < len(SEVERITIES) else "sev-other"


def risky_settings(c: dict) -> list[tuple[str, str]]:
    """(setting, value) of CONTAINER's settings that weaken its isolation."""
    out: list[tuple[str, str]] = []
    if c.get("privileged"):
        out.append(("privileged", "true"))
    if c.get("cap_add"):
        out.append(("cap_add", _words(c["cap_add"])))
    for mode in _HOST_MODES:
        if c.get(mode) == "host":
            out.append((mode, "host"))
    for opt in c.get("security_opt") or []:
        if "unconfined" in str(opt) or "no-new-privileges=false" in str(opt):
            out.append(("security_opt", str(opt)))
    for m in c.get("mounts") or []:
        if isinstance(m, dict) and (
            m.get("source") in _SENSITIVE_MOUNTS or m.get("host_path") in _SENSITIVE_MOUNTS
        ):
            rw = "rw" if m.get("rw", True) else "ro"
            out.append(("mount", f"{m.get('source')} -> {m.get('destination')} ({rw})"))
    for p in c.get("published_ports") or []:
        if isinstance(p, dict) and p.get("host_ip") in (None, "", "0.0.0.0", "::"):
            out.append(("published", f"{p.get('host_port')} -> {p.get('container_port')} (all addresses)"))
    return out


def _summary(data: CaseData) -> dict:
    sev = Counter((f.get("severity") or "unknown").lower() for f in data.findings)
    by_sev = [(s, sev.pop(s, 0)) for s in SEVERITIES] + sorted(sev.items())
    return {
        "hosts": sorted({str(s.get("host") or s.get("label") or s.get("path")) for s in data.sources}),
        "engines": sorted(Counter(c.get("engine") or "none" for c in data.containers).items()),
        "image_engines": sorted(Counter(i.get("engine") or "none" for i in data.images).items()),
        "states": sorted(Counter(c.get("state") or "unknown" for c in data.containers).items()),
        "severities": by_sev,
        "failed_tasks": [t for t in data.tasks if t.get("status") != "done"],
        "top": data.findings[:10],
    }


def _timeline_json(data: CaseData) -> dict:
    """The events as compact rows: [ms, iso time, kind index, description, message, path, host,
    container page] (ms as a float for placement; the ISO text keeps the nanoseconds)."""
    kinds = sorted({e.get("kind") or "" for e in data.events})
    index = {k: i for i, k in enumerate(kinds)}
    out = []
    for e in data.events:
        page = data.page_of(e.get("source_id"), e.get("container_id"))
        out.append(
            [
                e["time"] / 1e6,
                _iso(e["time"]),
                index[e.get("kind") or ""],
                e.get("timestamp_desc") or "",
                e.get("message") or "",
                e.get("path") or "",
                e.get("host") or "",
                f"containers/{page}.html" if page else "",
            ]
        )
    return {"kinds": kinds, "events": out, "derived": data.events_derived}


class Pages:
    """Renders each page of the report and writes it through the sink."""

    def __init__(self, data: CaseData, sink: OutputSink) -> None:
        self.data, self.sink = data, sink
        self.env = environment()
        self.written: list[str] = []
        self.findings_of = by_container(data.findings)

    def write(self, rel: str, template: str, **context: Any) -> None:
        root = "../" * rel.count("/")
        html = self.env.get_template(template).render(root=root, case=self.data.case, **context)
        self.sink.write(rel, html.encode("utf-8", "surrogateescape"))
        self.written.append(rel)

    def assets(self) -> None:
        static = resources.files("pensieve.report").joinpath("static")
        for name in ASSETS:
            self.sink.write(f"assets/{name}", static.joinpath(name).read_bytes())
            self.written.append(f"assets/{name}")

    def all(self) -> None:
        d = self.data
        self.assets()
        worst = {
            k: min((f.get("severity") for f in fs), key=lambda s: severity_rank(s))
            for k, fs in self.findings_of.items()
        }
        self.write("index.html", "index.html", d=d, s=_summary(d), worst=worst, findings_of=self.findings_of)
        self.write("findings.html", "findings.html", d=d, findings=d.findings, severities=SEVERITIES)
        self.containers()
        self.write("timeline.html", "timeline.html", d=d, data=script_json(_timeline_json(d)))
        self.write("graph.html", "graph.html", d=d, data=script_json(build_graph(d).as_json()))

    def containers(self) -> None:
        d = self.data
        chains: dict[tuple, list[dict]] = defaultdict(list)
        for row in d.layers:
            if row.get("owner") == "container":
                chains[(row.get("source_id"), row.get("container_id"))].append(row)
        done: set[str] = set()
        for c in d.containers:
            if c["page"] in done:
                continue
            done.add(c["page"])
            key = (c["source_id"], c["container_id"])
            self.write(
                f"containers/{c['page']}.html",
                "container.html",
                d=d,
                c=c,
                risky=risky_settings(c),
                layers=chains.get(key, []),
                rows=d.per_container.get(key, {}),
                totals=d.per_container_counts.get(key, {}),
                findings=self.findings_of.get(key, []),
            )


def build(case: str, out: str) -> list[str]:
    """The report of CASE written into the directory OUT; returns the files written (relative)."""
    data = load(case)
    boundaries = [s["path"] for s in data.sources if s.get("path")]
    with OutputSink(out, boundaries, kind="dir", mode=0o644) as sink:
        pages = Pages(data, sink)
        pages.all()
    return pages.written
