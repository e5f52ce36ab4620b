"""``process.talk`` links against a real capture: three Docker containers on the host network,
each checkpointed by CRIU 4.2 with its connections established (tests/fixtures/links,
fixtures/capture/links_capture.sh).  ``client`` talks to ``server`` over loopback TCP (a shell on
the socket), connected UDP and a unix stream socket in a shared volume; ``idle`` only talks to
itself.  The expected links are derived from what ``ss`` and /proc said at capture time (host
pids mapped to the container's pids through NSpid), not written down by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli, unpack

from pensieve.case.store import CaseStore
from pensieve.case.triage import triage

LINKS = FIXTURE_ROOT / "links"
EXPECTED = json.loads((LINKS / "expected.json").read_text())
CONTAINERS = EXPECTED["containers"]
BY_HOST_PID = {p["host_pid"]: p for p in EXPECTED["processes"]}
_INET = re.compile(r"^(\S+)\s+\d+\s+\d+\s+(\S+):(\d+)\s+(\S+):(\d+)\s+users:\((.*)\)\s*$")
_UNIX = re.compile(r"^u_str\s+(\S+)\s+\d+\s+\d+\s+(\S+)\s+(\d+)\s+\S+\s+(\d+)\s+users:\((.*)\)\s*$")
_USER = re.compile(r'\("([^"]+)",pid=(\d+),fd=(\d+)\)')


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("links")
    root = unpack(LINKS / "data-root.tar.xz", base / "root")
    path = base / "case.duckdb"
    summary = triage([str(root)], str(path))
    assert summary.failed == 0, summary
    return path


def _query(case: Path, sql: str) -> list[tuple]:
    store = CaseStore(str(case), read_only=True)
    try:
        return store.query(sql)[1]
    finally:
        store.close()


def _end_of_users(users: str) -> tuple[str, tuple[int, ...], tuple[str, ...]]:
    """(container, its pids, their comms) of an ``ss -p`` users field, from /proc at capture time."""
    held = {int(pid) for _c, pid, _fd in _USER.findall(users)}
    (container,) = {BY_HOST_PID[p]["container"] for p in held}
    ns = sorted((BY_HOST_PID[p]["nspid"][-1], BY_HOST_PID[p]["comm"]) for p in held)
    return container, tuple(p for p, _c in ns), tuple(c for _p, c in ns)


def _expected_talks() -> set[frozenset]:
    """Every connection of the capture whose two ends are in two containers, as a pair of ends
    (container, proto, own address, pids, comms)."""
    ends: dict[tuple, tuple] = {}
    for proto in ("tcp", "udp"):
        for line in EXPECTED["ss"][proto].splitlines():
            m = _INET.match(line)
            if m and m.group(1) == "ESTAB":
                local, peer = f"{m.group(2)}:{m.group(3)}", f"{m.group(4)}:{m.group(5)}"
                ends[(proto, local, peer)] = (proto, local, *_end_of_users(m.group(6)))
    unix = {}
    for line in EXPECTED["ss"]["unix"].splitlines():
        m = _UNIX.match(line)
        if m and m.group(1) == "ESTAB":
            unix[int(m.group(3))] = (int(m.group(4)), ("unix", int(m.group(3)), *_end_of_users(m.group(5))))
    out = set()
    for (proto, local, peer), end in ends.items():
        other = ends.get((proto, peer, local))
        if other and other[2] != end[2]:
            out.add(frozenset((end, other)))
    for peer, end in unix.values():
        if peer in unix and unix[peer][1][2] != end[2]:
            out.add(frozenset((end, unix[peer][1])))
    return out


def _talks(case: Path) -> list[tuple[str, dict, dict, dict]]:
    rows = _query(case, "SELECT value, a, b, details FROM links WHERE kind = 'process.talk'")
    return [(v, json.loads(a), json.loads(b), json.loads(d)) for v, a, b, d in rows]


def _end_of_ref(ref: dict) -> tuple:
    proto = "unix" if ref["family"] == "unix" else ref["proto"]
    own = ref["ino"] if proto == "unix" else f"{ref['src']}:{ref['src_port']}"
    procs = sorted((p["pid"], p["comm"]) for p in ref["processes"])
    return (proto, own, ref["container"], tuple(p for p, _c in procs), tuple(c for _p, c in procs))


def test_the_capture_has_the_three_connections_between_client_and_server():
    expected = _expected_talks()
    assert len(expected) == 3  # tcp (the shell), udp, unix: what the script set up
    assert {frozenset(e[2] for e in pair) for pair in expected} == {frozenset(("client", "server"))}


def test_each_connection_between_two_containers_is_one_link_naming_both_ends(case):
    talks = _talks(case)
    assert {frozenset((_end_of_ref(a), _end_of_ref(b))) for _v, a, b, _d in talks} == _expected_talks()
    for _v, a, b, _d in talks:
        for ref in (a, b):
            assert ref["container_id"] == CONTAINERS[ref["container"]]["id"]
            assert ref["pids"] == [p["pid"] for p in ref["processes"]]


def test_the_shells_connection_names_sh_and_the_ports_the_script_chose(case):
    port = EXPECTED["ports"]["tcp"]
    (tcp,) = [t for t in _talks(case) if t[0].startswith("tcp ")]
    value, a, b, details = tcp
    by_name = {a["container"]: a, b["container"]: b}
    assert by_name["server"]["src_port"] == port and by_name["client"]["dst_port"] == port
    shell = next(p for p in EXPECTED["processes"] if p["comm"] == "sh")
    assert by_name["client"]["pids"] == [shell["nspid"][-1]]
    assert [p["cmdline"] for p in by_name["client"]["processes"]] == [shell["cmdline"]]
    server_side = "a" if a["container"] == "server" else "b"
    assert details["server"] == server_side  # server holds the listener on that port
    assert details["shell"] == ["b" if server_side == "a" else "a"]
    assert "sh[" in details["label"] and "links_helper[" in details["label"]


def test_the_unix_link_names_the_volumes_socket(case):
    (unix,) = [t for t in _talks(case) if t[0].startswith("unix ")]
    assert EXPECTED["unix_path"] in unix[0]
    assert {unix[1]["container"], unix[2]["container"]} == {"client", "server"}


def test_each_link_refers_to_two_socket_rows_of_the_case(case):
    for _v, a, b, _d in _talks(case):
        for ref in (a, b):
            (n,) = _query(
                case,
                f"SELECT count(*) FROM sockets WHERE source_id = {ref['source_id']} "
                f"AND container_id = '{ref['container_id']}' "
                f"AND checkpoint_name = '{ref['checkpoint_name']}' "
                f"AND ino = {ref['ino']}",
            )[0]
            assert n == 1


def test_a_container_talking_only_to_itself_has_no_such_link(case):
    idle = CONTAINERS["idle"]["id"]
    (own,) = _query(
        case, f"SELECT count(*) FROM sockets WHERE container_id = '{idle}' AND state = 'ESTABLISHED'"
    )[0]
    assert own == 2  # both ends of its loopback connection are in the case ...
    talks = _query(
        case,
        "SELECT count(*) FROM links WHERE kind = 'process.talk' "
        f"AND (a->>'container_id' = '{idle}' OR b->>'container_id' = '{idle}')",
    )
    assert talks == [(0,)]  # ... and tie it to no one


def _tuples(ss: str) -> set[tuple[str, str]]:
    return {
        (f"{m.group(2)}:{m.group(3)}", f"{m.group(4)}:{m.group(5)}")
        for m in map(_INET.match, ss.splitlines())
        if m and m.group(1) == "ESTAB"
    }


def test_the_same_loopback_tuples_in_two_network_namespaces_link_nothing(case):
    lone = {n: CONTAINERS[n]["id"] for n in ("lone1", "lone2")}
    assert {CONTAINERS[n]["network_mode"] for n in lone} == {"none"}
    tuples = _tuples(EXPECTED["ss"]["lone1"])
    assert tuples == _tuples(EXPECTED["ss"]["lone2"]) and len(tuples) == 2  # ss in each namespace
    for cid in lone.values():  # the case holds both ends in each ...
        got = _query(
            case,
            f"SELECT src || ':' || src_port, dst || ':' || dst_port FROM sockets "
            f"WHERE container_id = '{cid}' AND state = 'ESTABLISHED'",
        )
        assert set(got) == tuples
    # ... and each end of lone1 "matches" the opposite end of lone2: only the namespaces differ
    linked = _query(
        case,
        "SELECT kind FROM links WHERE kind IN ('process.talk', 'socket.pair', 'net.peer') AND ("
        + " OR ".join(f"a->>'container_id' = '{c}' OR b->>'container_id' = '{c}'" for c in lone.values())
        + ")",
    )
    assert linked == []


def test_the_shell_at_one_end_is_a_critical_finding_resting_on_both_sockets(case):
    rows = _query(
        case,
        "SELECT severity, title, evidence, container_id FROM findings WHERE producer = 'links.processes'",
    )
    shell = next(p for p in EXPECTED["processes"] if p["comm"] == "sh")
    assert len(rows) == 1
    severity, title, evidence, container_id = rows[0]
    assert severity == "critical" and container_id == CONTAINERS["client"]["id"]
    assert f"sh[{shell['nspid'][-1]}]" in title and "server" in title
    tables = sorted(e["table"] for e in json.loads(evidence))
    assert tables == ["processes", "sockets", "sockets"]


def test_pensieve_links_lists_them_with_the_process_names(case):
    code, out, _err = run_cli("links", case, "--json", "--kind", "process.")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 3 and {r["kind"] for r in rows} == {"process.talk"}
    code, out, _err = run_cli("links", case, "--kind", "process.talk", "--container", "idle")
    assert code == 0 and "process.talk" not in out


# ---- the report's graph: container <-> container edges labelled with the processes -----------

DATA_RE = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def report(case, tmp_path_factory) -> Path:
    from pensieve.report import build

    out = tmp_path_factory.mktemp("links-report") / "rep"
    build(str(case), str(out))
    return out


def _graph(report: Path) -> dict:
    return json.loads(DATA_RE.findall((report / "graph.html").read_text())[0])


def test_the_graph_joins_client_and_server_by_one_edge_labelled_with_the_processes(report):
    graph = _graph(report)
    nodes = graph["nodes"]
    index = {nd[2]: i for i, nd in enumerate(nodes) if nd[0] == "container"}  # title: the full id
    client, server, idle = (index[CONTAINERS[n]["id"]] for n in ("client", "server", "idle"))
    talks = [e for e in graph["edges"] if e[2] == "process.talk"]
    assert len(talks) == 1  # three connections, one pair of containers: one edge
    (edge,) = talks
    assert {edge[0], edge[1]} == {client, server}
    shell = next(p for p in EXPECTED["processes"] if p["comm"] == "sh")
    labels = edge[3].split("; ")
    assert f"tcp sh[{shell['nspid'][-1]}] -> links_helper[1]" in labels  # client first, to the server
    assert {lb.split()[0] for lb in labels} == {"tcp", "udp", "unix"}
    assert not any(idle in e[:2] for e in talks)
    assert not any(nd[1].startswith("process.talk") or "process.talk" in nd[2] for nd in nodes)  # no hub


def test_the_graph_draws_the_label_in_a_browser(report, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary (Debian package chromium)")
    top = report.as_uri() + "/"
    outside: list[str] = []
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            pg = browser.new_page(viewport={"width": 1300, "height": 900})
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            def route(r):
                if r.request.url.startswith(top):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            pg.route("**/*", route)
            pg.goto((report / "graph.html").as_uri())
            pg.wait_for_selector("body[data-graph-ready='1']", timeout=30_000)
            label = pg.locator("text.edge-label")
            assert label.count() == 1 and "sh[" in label.text_content()
            assert label.get_attribute("x") is not None  # placed by the layout
            nodes = _graph(report)["nodes"]
            client = next(i for i, nd in enumerate(nodes) if nd[2] == CONTAINERS["client"]["id"])
            pg.dispatch_event(f"#g-node-{client}", "click")
            text = pg.locator("#g-panel").inner_text()
            talk = r"container server \(process\.talk: [^)]*tcp sh\[\d+\] -> links_helper\[1\]"
            assert re.search(talk, text), text
            assert "hl" in (label.get_attribute("class") or "")
            pg.screenshot(path=str(tmp_path / "graph-process-talk.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert not outside, outside
