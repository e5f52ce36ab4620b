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
