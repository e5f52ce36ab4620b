"""Links across containers and hosts: shared hashes, addresses, images, tampered layers, volumes,
connections -- and none for what is unique to one place."""

from __future__ import annotations

import json
import shutil

import pytest

from pensieve.case.analyses import run_analyses
from pensieve.case.links import EMPTY_SHA256
from pensieve.case.store import CaseStore
from pensieve.case.triage import triage

SHARED, UNIQUE = "ab" * 32, "cd" * 32


@pytest.fixture(scope="module")
def triaged(overlay2_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("links-case") / "case.duckdb"
    triage([str(overlay2_root)], str(path))
    return path


@pytest.fixture
def store(triaged, tmp_path):
    copy = tmp_path / "case.duckdb"
    shutil.copy(triaged, copy)
    s = CaseStore(str(copy))
    yield s
    s.close()


def _containers(store) -> dict[str, tuple]:
    rows = store.select("SELECT name, source_id, host, container_id FROM containers ORDER BY name")[1]
    return {r[0]: r[1:] for r in rows}


def _links(store, kind: str) -> list[tuple]:
    return store.select(f"SELECT value, a_table, a, b_table, b FROM links WHERE kind = '{kind}'")[1]


def test_a_hash_in_two_containers_links_them_a_unique_one_does_not(store):
    c = _containers(store)
    rows = []
    for name, path, sha in (
        ("c-oom", "/x/drop", SHARED),
        ("c-paused", "/y/drop", SHARED),
        ("c-paused", "/z/one", UNIQUE),
        ("c-oom", "/e", EMPTY_SHA256),
        ("c-paused", "/e", EMPTY_SHA256),
    ):
        sid, host, cid = c[name]
        rows.append(
            {
                "source_id": sid,
                "host": host,
                "container_id": cid,
                "path": path,
                "change": "added",
                "sha256": sha,
            }
        )
    store.insert("changes", rows)
    store.insert(
        "recovered", [{"source_id": 9, "host": "other-host", "path": "/var/lib/x", "sha256": SHARED}]
    )
    run_analyses(store)
    links = _links(store, "file.sha256")
    assert {v for v, *_ in links} == {SHARED}  # the fixture's own hashes are each in one container
    paths = {frozenset((json.loads(a)["path"], json.loads(b)["path"])) for _v, _at, a, _bt, b in links}
    assert paths == {
        frozenset(p) for p in (("/x/drop", "/y/drop"), ("/x/drop", "/var/lib/x"), ("/y/drop", "/var/lib/x"))
    }
    got = {(at, bt) for _v, at, _a, bt, _b in links}
    assert ("changes", "recovered") in got or ("recovered", "changes") in got  # across hosts


def test_shared_image_volume_and_tampered_layer(store):
    c = _containers(store)
    run_analyses(store)
    per_image = store.select("SELECT count(*) FROM containers WHERE image_id IS NOT NULL GROUP BY image_id")[
        1
    ]
    assert len(_links(store, "image.shared")) == sum(n * (n - 1) // 2 for (n,) in per_image) > 0
    sid, host, oom = c["c-oom"]
    paused = c["c-paused"][2]
    store.insert(
        "volumes", [{"source_id": sid, "host": host, "name": "shared-vol", "used_by": [oom, paused]}]
    )
    (chain,) = store.select(f"SELECT chain_id FROM layers WHERE container_id = '{oom}' AND position = 1")[1][
        0
    ]
    store.insert("integrity", [{"source_id": sid, "host": host, "chain_id": chain, "status": "tampered"}])
    run_analyses(store)
    (vol,) = _links(store, "volume.shared")
    assert vol[0] == "shared-vol" and {json.loads(vol[2])["container"], json.loads(vol[4])["container"]} == {
        "c-oom",
        "c-paused",
    }
    tampered = _links(store, "layer.tampered")
    (users,) = store.select(
        f"SELECT count(DISTINCT container_id) FROM layers WHERE chain_id = '{chain}' AND owner = 'container'"
    )[1][0]
    assert len(tampered) == users * (users - 1) // 2 and users >= 2
    assert {v for v, *_ in tampered} == {chain}


def test_sockets_pairs_peers_and_addresses(store):
    c = _containers(store)
    sid, host, web = c["c-running"]
    cli = c["c-priv"][2]

    def sock(cid, state, src, sport, dst, dport):
        return {
            "source_id": sid,
            "host": host,
            "container_id": cid,
            "family": "inet",
            "type": "stream",
            "proto": "tcp",
            "state": state,
            "src": src,
            "src_port": sport,
            "dst": dst,
            "dst_port": dport,
        }

    store.insert(
        "sockets",
        [
            sock(web, "LISTEN", "0.0.0.0", 80, "0.0.0.0", 0),
            sock(web, "ESTABLISHED", "172.17.0.2", 80, "172.17.0.3", 40000),
            sock(cli, "ESTABLISHED", "172.17.0.3", 40000, "172.17.0.2", 80),
            sock(cli, "ESTABLISHED", "172.17.0.3", 40001, "203.0.113.9", 443),
            sock(cli, "ESTABLISHED", "127.0.0.1", 40002, "127.0.0.1", 80),  # another netns: no link
        ],
    )
    store.insert(
        "logs", [{"source_id": sid, "host": host, "container_id": web, "message": "to 203.0.113.9 ok"}]
    )
    run_analyses(store)
    (pair,) = _links(store, "socket.pair")
    assert pair[0] in ("172.17.0.2:80 <-> 172.17.0.3:40000", "172.17.0.3:40000 <-> 172.17.0.2:80")
    (peer,) = _links(store, "net.peer")
    assert peer[0] == "172.17.0.2:80" and json.loads(peer[2])["container_id"] == cli
    assert json.loads(peer[4])["state"] == "LISTEN"
    ips = {v for v, *_ in _links(store, "net.ip")}
    assert {"172.17.0.2", "172.17.0.3", "203.0.113.9"} <= ips
    assert not any(ip.startswith("127.") or ip == "0.0.0.0" for ip in ips)


def _record_pairs(store) -> set[tuple]:
    """The file.sha256 links as one row per pair of *records* in two places (the self-join the
    analysis made before it grouped by value and place): the reference where no place holds a
    content twice."""
    from pensieve.case import links as L

    hashed = f"t.sha256 IS NOT NULL AND t.sha256 <> '{EMPTY_SHA256}'"
    size = "json_object('size', t.size)"
    members = [
        L._member(
            "changes",
            "t.sha256",
            L._ref("layer_id", "path", "change"),
            f"{hashed} AND t.change <> 'deleted'",
            size,
        ),
        L._member("recovered", "t.sha256", L._ref("path", "inode", "method"), hashed, size),
        L._member(
            "carved", "t.sha256", L._ref("path", "offset", "method"), hashed, "json_object('size', t.length)"
        ),
    ]
    union = " UNION ALL ".join(f"({m})" for m in members)
    rows = store.select(
        f"WITH m AS (SELECT * FROM ({union}) WHERE value IS NOT NULL) "
        "SELECT a.source_id, a.host, a.container_id, a.value, a.tbl, a.ref, b.tbl, b.ref, "
        "CASE WHEN a.info IS NULL AND b.info IS NULL THEN NULL "
        "ELSE json_object('a', a.info, 'b', b.info) END "
        "FROM m a JOIN m b ON a.value = b.value AND a.place < b.place"
    )[1]
    return {tuple(str(x) for x in r) for r in rows}


def _sha_links(store) -> set[tuple]:
    rows = store.select(
        "SELECT source_id, host, container_id, value, a_table, a, b_table, b, details FROM links "
        "WHERE kind = 'file.sha256'"
    )[1]
    return {tuple(str(x) for x in r) for r in rows}


def _change(c, name: str, path: str, sha: str) -> dict:
    sid, host, cid = c[name]
    return {
        "source_id": sid,
        "host": host,
        "container_id": cid,
        "path": path,
        "change": "added",
        "sha256": sha,
        "size": 3,
    }


def test_sha256_links_are_the_pairs_of_records_when_each_place_holds_a_content_once(store):
    c = _containers(store)
    names = sorted(c)[:3]
    store.insert("changes", [_change(c, n, f"/{n}/drop", SHARED) for n in names])
    store.insert(
        "recovered", [{"source_id": 9, "host": "other-host", "path": "/var/lib/x", "sha256": SHARED}]
    )
    run_analyses(store)
    got = _sha_links(store)
    assert len(got) == 6  # 4 places: 3 containers and the other host
    assert got == _record_pairs(store)


def test_a_content_held_many_times_in_a_place_is_one_link_per_pair_of_places(store):
    c = _containers(store)
    a, b, third = sorted(c)[:3]
    rows = [_change(c, a, f"/a/{i:04d}", SHARED) for i in range(300)]
    rows += [_change(c, b, f"/b/{i:04d}", SHARED) for i in range(200)] + [_change(c, third, "/c/0", SHARED)]
    store.insert("changes", rows)
    run_analyses(store)
    assert len(_record_pairs(store)) == 300 * 200 + 300 + 200  # what the self-join made
    links = store.select(
        f"SELECT a, b, details FROM links WHERE kind = 'file.sha256' AND value = '{SHARED}'"
    )[1]
    assert len(links) == 3
    by_place = {}
    for ra, rb, details in links:
        d = json.loads(details)
        for ref, info in ((json.loads(ra), d["a"]), (json.loads(rb), d["b"])):
            by_place.setdefault(ref["container_id"], set()).add((ref["path"], info.get("files")))
    # each place stands for itself by its first record (by ref), with how many it holds
    assert by_place[c[a][2]] == {("/a/0000", 300)}
    assert by_place[c[b][2]] == {("/b/0000", 200)}
    assert by_place[c[third][2]] == {("/c/0", None)}


def test_live_sockets_of_two_containers_on_one_connection_name_their_processes(store):
    """``process.talk`` over a live snapshot (rows hand-made here, as in test_live_snapshot.py: the
    real captures of this suite are checkpoints): TCP by the 4-tuple, loopback only within one
    ``netns``; unix by ``peer_inode`` (the column the live views add; created here when missing)."""
    c = _containers(store)
    sid, host, web = c["c-running"]
    cli = c["c-priv"][2]
    keys = {"source_id": sid, "host": host}

    def sock(cid, netns, proto, state, local, lport, remote, rport, inode, pid, fd):
        return {**keys, "container_id": cid, "netns": netns, "protocol": proto, "state": state,
                "local": local, "local_port": lport, "remote": remote, "remote_port": rport,
                "inode": inode, "pids": [pid], "fds": [f"{pid}:{fd}"]}  # fmt: skip

    store.insert(
        "live_processes",
        [
            {**keys, "container_id": web, "pid": 100, "comm": "nginx", "cmdline": ["nginx"]},
            {**keys, "container_id": cli, "pid": 200, "comm": "sh", "cmdline": ["sh", "-i"]},
            {**keys, "container_id": cli, "pid": 300, "comm": "curl", "cmdline": ["curl", "x"]},
        ],
    )
    store.insert(
        "live_sockets",
        [
            sock(web, 1, "tcp", "LISTEN", "127.0.0.1", 80, "0.0.0.0", 0, 10, 100, 3),
            sock(web, 1, "tcp", "ESTABLISHED", "127.0.0.1", 80, "127.0.0.1", 40000, 11, 100, 4),
            sock(cli, 1, "tcp", "ESTABLISHED", "127.0.0.1", 40000, "127.0.0.1", 80, 12, 200, 0),
            # the same tuples in another namespace: not this connection
            sock(cli, 2, "tcp", "ESTABLISHED", "127.0.0.1", 40000, "127.0.0.1", 80, 13, 300, 5),
            sock(web, 1, "unix", "ESTAB", "/run/app.sock", None, None, None, 20, 100, 6),
            sock(cli, 1, "unix", "ESTAB", None, None, None, None, 21, 300, 7),
        ],
    )
    store.db.execute("ALTER TABLE live_sockets ADD COLUMN IF NOT EXISTS peer_inode BIGINT")
    store.db.execute("UPDATE live_sockets SET peer_inode = 41 - inode WHERE inode IN (20, 21)")
    run_analyses(store)
    talks = store.select(
        "SELECT value, a, b, details FROM links WHERE kind = 'process.talk' AND a_table = 'live_sockets'"
    )[1]
    ends = {
        v.split()[0]: {json.loads(a)["container"]: json.loads(a), json.loads(b)["container"]: json.loads(b)}
        for v, a, b, _d in talks
    }
    assert len(talks) == 2 and sorted(ends) == ["tcp", "unix"]  # not the other namespace's tuple
    assert ends["tcp"]["c-priv"]["pids"] == [200] and ends["tcp"]["c-priv"]["inode"] == 12
    assert ends["tcp"]["c-running"]["processes"][0]["comm"] == "nginx"
    assert [p["comm"] for p in ends["unix"]["c-priv"]["processes"]] == ["curl"]
    (tcp,) = [json.loads(d) for v, _a, _b, d in talks if v.startswith("tcp")]
    assert tcp["shell"] and tcp["label"].count("sh[200]") == 1
    shells = store.select(
        "SELECT severity, title FROM findings "
        "WHERE producer = 'links.processes' AND title LIKE 'shell in c-priv%'"
    )[1]
    assert [s for s, _t in shells] == ["critical"]  # fd 0 of sh is the socket
