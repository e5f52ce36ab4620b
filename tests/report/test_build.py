"""``pensieve report``: built from a case triaged from the real overlay2 fixture plus synthetic
findings, events and links -- a page for every container, findings most severe first, every
evidence string escaped, refused inside the evidence, never over an earlier report."""

from __future__ import annotations

import hashlib
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli, tree_digest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_case import HOSTILE, HOSTILE_ID, HOSTILE_NAME, make_case

from pensieve.case.store import CaseStore
from pensieve.errors import UsageError
from pensieve.output.sink import MANIFEST
from pensieve.report import build
from pensieve.report.data import SEVERITIES, load
from pensieve.report.pages import script_json

DATA_RE = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def case(overlay2_root, tmp_path_factory) -> Path:
    return make_case(overlay2_root, tmp_path_factory.mktemp("case") / "case.duckdb")


@pytest.fixture(scope="module")
def report(case, overlay2_root, tmp_path_factory) -> tuple[Path, list[str], str]:
    tree_digest(overlay2_root)
    before = tree_digest(overlay2_root)
    out = tmp_path_factory.mktemp("report") / "rep"
    written = build(str(case), str(out))
    return out, written, before


def _html(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text("utf-8") for p in out.rglob("*.html")}


def test_the_pages_are_written_with_a_manifest(report):
    out, written, _b = report
    for name in ("index.html", "findings.html", "timeline.html", "graph.html", "assets/report.css"):
        assert name in written and (out / name).is_file()
    manifest = json.loads((out / MANIFEST).read_text())
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert set(listed) == set(written)
    for name, sha in listed.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha


def test_every_container_has_a_page(report, case):
    out, _w, _b = report
    data = load(str(case))
    assert len(data.containers) >= 12
    pages = {p.name for p in (out / "containers").iterdir()}
    assert pages == {f"{c['page']}.html" for c in data.containers}
    index = (out / "index.html").read_text()
    for c in data.containers:
        assert f'href="containers/{c["page"]}.html"' in index
        if c["container_id"] != HOSTILE_ID:
            page = (out / "containers" / f"{c['page']}.html").read_text()
            assert c["container_id"] in page and c["name"] in page
    hostile = next(c for c in data.containers if c["container_id"] == HOSTILE_ID)
    assert re.fullmatch(r"c-[0-9a-f]{16}", hostile["page"])  # never the id itself as a file name


def test_a_container_page_shows_its_layers_changes_and_findings(report, case, overlay2_root):
    from pensieve import api

    out, _w, _b = report
    host = api.open_host(str(overlay2_root))
    c = host.container("c-modified")
    page = (out / "containers" / f"{c.id}.html").read_text()
    for layer in c.layers:
        if layer.cache_id:
            assert layer.cache_id[:12] in page
    for ch in api.diff(host, "c-modified").changes:
        assert f">{ch.path}<" in page
    for h in ("Identity", "Risky settings", "Layer chain", "Changes", "Processes", "Sockets", "Logs"):
        assert f"<h2>{h}" in page


def test_findings_most_severe_first(report):
    out, _w, _b = report
    page = (out / "findings.html").read_text()
    order = re.findall(r'<article class="finding sev-(\w+)"', page)
    assert len(order) == 6
    assert order == sorted(order, key=SEVERITIES.index)
    assert order[0] == "critical"
    index = (out / "index.html").read_text()
    assert re.search(r'sev-critical">critical</span></th><td><a href="findings.html#sev-critical">1<', index)


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_hostile_strings_are_escaped_everywhere(report):
    out, _w, _b = report
    pages = _html(out)
    for name, text in pages.items():
        for h in HOSTILE:
            assert h not in text, (name, h)
        parser = _Tags()
        parser.feed(text)
        for tag, attrs in parser.tags:
            assert tag not in ("img", "iframe", "object", "embed"), (name, tag)
            assert tag != "svg" or attrs.get("id") in ("tl-track", "g-svg"), (name, attrs)
            assert not [a for a in attrs if a.startswith("on")], (name, tag, attrs)
            if tag == "script":
                assert attrs.get("type") == "application/json" or attrs.get("src", "").endswith(".js")
            for a in ("href", "src"):
                if a in attrs:
                    assert not re.match(r"[a-z]+:", attrs[a]), (name, attrs)  # relative: no scheme
    hostile_page = next(t for n, t in pages.items() if n.startswith("containers/c-"))
    assert "&lt;script&gt;alert(1);window.__pwned=1&lt;/script&gt;" in hostile_page
    assert "&#34;&gt;&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;" in hostile_page
    assert HOSTILE_NAME not in pages["index.html"]


def test_embedded_data_is_inert_and_exact(report):
    out, _w, _b = report
    for name in ("timeline.html", "graph.html"):
        text = (out / name).read_text()
        (blob,) = DATA_RE.findall(text)
        assert "<" not in blob and ">" not in blob
        doc = json.loads(blob)
        assert any(HOSTILE[2] in s for s in _strings(doc)), name
    timeline = json.loads(DATA_RE.findall((out / "timeline.html").read_text())[0])
    assert len(timeline["events"]) == 200 and not timeline["derived"]
    assert {"lifecycle", "file", "log", "build"} <= set(timeline["kinds"])
    assert all(re.fullmatch(r"(containers/[A-Za-z0-9_.-]+\.html)?", e[7]) for e in timeline["events"])
    graph = json.loads(DATA_RE.findall((out / "graph.html").read_text())[0])
    kinds = {n[0] for n in graph["nodes"]}
    assert {"container", "image", "layer", "hash", "ip"} <= kinds
    assert len([n for n in graph["nodes"] if n[0] == "ip"]) == 1  # the address of networks and of links


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20)
)
def test_script_json_never_closes_its_element(value):
    text = str(script_json(value))
    assert not re.search(r"[<>&'\u2028\u2029]", text)
    assert json.loads(text) == value


def test_the_evidence_is_untouched(report, overlay2_root):
    _out, _w, before = report
    assert tree_digest(overlay2_root) == before


def test_refused_inside_the_evidence(case, overlay2_root):
    for dest in (overlay2_root / "report", overlay2_root / "containers" / "r", overlay2_root.parent):
        with pytest.raises(UsageError, match="evidence"):
            build(str(case), str(dest))
        assert not (overlay2_root / "report").exists()


def test_never_overwrites_an_earlier_report(case, tmp_path):
    out = tmp_path / "rep"
    build(str(case), str(out))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match="never overwritten"):
        build(str(case), str(out))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    stray = tmp_path / "other"
    stray.mkdir()
    (stray / "index.html").write_text("mine")
    with pytest.raises(FileExistsError):
        build(str(case), str(stray))
    assert (stray / "index.html").read_text() == "mine"


def test_an_empty_case_still_renders(tmp_path):
    case = tmp_path / "empty.duckdb"
    CaseStore(str(case)).close()
    out = tmp_path / "rep"
    written = build(str(case), str(out))
    assert set(written) >= {"index.html", "findings.html", "timeline.html", "graph.html"}
    assert "no findings in this case yet" in (out / "index.html").read_text()
    assert not (out / "containers").exists()
    assert json.loads(DATA_RE.findall((out / "timeline.html").read_text())[0])["events"] == []


def test_without_events_the_timeline_is_derived(overlay2_root, tmp_path):
    from pensieve.case.store import CaseStore
    from pensieve.case.triage import triage

    case = tmp_path / "c.duckdb"
    triage([str(overlay2_root)], str(case))
    store = CaseStore(str(case))
    store.db.execute("DELETE FROM events")  # a case whose timeline analysis never ran
    store.close()
    out = tmp_path / "rep"
    build(str(case), str(out))
    timeline = json.loads(DATA_RE.findall((out / "timeline.html").read_text())[0])
    assert timeline["derived"] and {"container", "image"} <= set(timeline["kinds"])


def test_the_command(case, tmp_path):
    code, _out, err = run_cli("report", case, "--out", tmp_path / "r")
    assert code == 0, err
    assert (tmp_path / "r" / "index.html").is_file()
    assert oct(os.stat(tmp_path / "r" / "index.html").st_mode & 0o777) == "0o644"
    code, _out, err = run_cli("report", tmp_path / "nope.duckdb", "--out", tmp_path / "r2")
    assert code == 2 and "no case" in err
