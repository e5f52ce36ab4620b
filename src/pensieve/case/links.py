"""Links: what ties records of different containers (and hosts) together, as rows of ``links``.

One case analysis per kind of link (``links.sha256``, ``links.ip`` ...), each an ``INSERT INTO
links ... SELECT`` run inside DuckDB (order 70: after the findings and the timeline).

**One row per pair.**  A link is two records, ``a`` and ``b``: ``a_table`` / ``b_table`` name their
tables, ``a`` / ``b`` are JSON objects of the columns that identify them (always ``source_id``,
``host`` and ``container_id`` and ``container`` -- its name -- where there is one, then the
table's own: a change's ``path``, a socket's addresses ...).  The key columns of the row are
``a``'s.  A value shared by N places gives N(N-1)/2 rows, each pair once, ``a`` the place that
sorts first (source id, then container or checkpoint).  Every link of one container::

    SELECT * FROM links WHERE a->>'container_id' = ? OR b->>'container_id' = ?

A *place* is a container (or a checkpoint without one, or the host itself for files recovered or
carved outside any container) of one source: records of the same place never link with each
other, records of two sources (hosts) do.

Kinds (``value`` in brackets):

``file.sha256`` [the sha256]
    the same content added or modified in two containers (``changes``), recovered (``recovered``)
    or carved (``carved``); the empty file's hash is left out (every place has one); one row
    per pair of places, not of files: a place holding the content several times stands for
    itself by its first record, and ``details`` says how many it holds (``files``);
``net.ip`` [the address]
    one address seen in two places: a socket's source or destination (``sockets``), a
    container's own address (``containers.networks``), an IPv4 address written in a container's
    environment or labels, or in a log line (``logs``); wildcard, loopback and link-local
    addresses are left out (every network namespace has its own);
``image.shared`` [the image id]
    two containers made from the same image;
``layer.tampered`` [the layer's chain id, else its cache id]
    two containers stacked on a layer that ``integrity`` found tampered with on their host;
``socket.pair`` [``src:port <-> dst:port``]
    the two ends of one connection, captured in checkpoints of two places of one host;
    loopback only between places sharing a network namespace (as for ``process.talk``);
``net.peer`` [``address:port``]
    a socket of one place (``a``) connected to an address and port another place of the same host
    listens on (``b``, the LISTEN socket): a process of one container talking to another;
    loopback counts only between containers of one pod (they share a network namespace);
``volume.shared`` [the volume's name]
    two containers using the same volume (``volumes.used_by``);
``process.talk`` [``tcp 127.0.0.1:47201 <- 127.0.0.1:37508``, ``unix PATH (INO <- INO)``]
    the processes of two containers at the two ends of one connection (producer
    ``links.processes``): two checkpoint ``sockets`` (or two ``live_sockets`` of a live
    snapshot) of two places of one host, not listening and held by a process, that are one
    connection -- TCP/UDP: each one's source address and port the other's destination;
    loopback only between places sharing a network namespace (both ``--network host``, one
    the other's ``container:`` network, one pod; live: the same ``netns``); unix: one's peer
    inode the other's inode (CRIU's ``peer``, ``peer_ino`` of the records; ``peer_inode`` of
    ``live_sockets`` where the case has that column).  ``a`` / ``b`` are the two socket rows
    with ``pids`` and ``processes`` (pid, comm, cmdline: the ``processes`` / ``live_processes``
    rows of the same source and checkpoint); ``details`` has ``proto``, both states,
    ``a_processes`` / ``b_processes`` (``comm[pid]``), ``label`` (the graph's edge label),
    ``server`` (the end that accepted: it listens on its port, or is bound to the path) and
    ``shell`` (the ends with a shell).  A shell at one end is also a ``findings`` row of the
    same producer: critical when the socket is its standard input or output (a shell driven
    from the other container), else high.  The arrow in the value points to the ``server``.

``details`` holds what helps reading the link (sizes, the volume's path, socket states).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from pensieve.case.analyses import analysis
from pensieve.case.schema import KEY_NAMES
from pensieve.case.store import CaseStore

ORDER = 70
#: sha256 of the empty file: every place holds one, so it links nothing
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: addresses every network namespace has of its own (SQL condition on ``ip``)
_LOCAL_ADDRESS = (
    "(ip IN ('', '0.0.0.0', '::', '::1', '255.255.255.255') OR ip LIKE '127.%' OR ip LIKE '169.254.%' "
    "OR lower(ip) LIKE 'fe80:%' OR lower(ip) LIKE '::ffff:127.%')"
)
_IPV4 = r"\b((?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3})\b"
#: the container names of the case, joined as ``n`` on (source_id, container_id) of ``t``
_NAMES = (
    "LEFT JOIN (SELECT source_id, container_id, any_value(name) AS name FROM containers "
    "GROUP BY source_id, container_id) n ON n.source_id = t.source_id AND n.container_id = t.container_id"
)
_KEYS = ", ".join(f"t.{k}" for k in KEY_NAMES)
#: the place of a row ``t``: its source and container (or checkpoint)
_PLACE = "t.source_id || '/' || coalesce(t.container_id, {alt}, '-')"


def _ref(*columns: str) -> str:
    """The JSON identifying a row ``t``: source, host, container (id and name), then COLUMNS."""
    own = ", ".join(f"'{c}', t.{c}" for c in columns)
    return (
        "json_object('source_id', t.source_id, 'host', t.host, 'container_id', t.container_id, "
        f"'container', n.name{', ' + own if own else ''})"
    )


def _member(
    table: str,
    value: str,
    ref: str,
    where: str = "TRUE",
    info: str = "NULL",
    alt: str = "NULL",
    name: str = "value",
) -> str:
    """A SELECT of the members of a group from TABLE ``t``: key columns, place (its container, else
    ALT), table, ref, VALUE (as NAME), INFO (JSON for ``details``)."""
    return (
        f"SELECT {_KEYS}, {_PLACE.format(alt=alt)} AS place, '{table}' AS tbl, {ref} AS ref, "
        f"{value} AS {name}, {info} AS info FROM {table} t {_NAMES} WHERE {where}"
    )


def _insert_pairs(store: CaseStore, producer: str, kind: str, members: list[str]) -> None:
    """One link per pair of MEMBERS (SELECTs of :func:`_member`) sharing a value, in two places."""
    keys = ", ".join(f'"{k}"' for k in KEY_NAMES)
    union = " UNION ALL ".join(f"({m})" for m in members)
    store.db.execute(
        f"INSERT INTO links ({keys}, producer, kind, value, a_table, a, b_table, b, details) "
        f"WITH m AS (SELECT * FROM ({union}) WHERE value IS NOT NULL) "
        f"SELECT {', '.join('a.' + k for k in KEY_NAMES)}, ?, ?, a.value, a.tbl, a.ref, b.tbl, b.ref, "
        "CASE WHEN a.info IS NULL AND b.info IS NULL THEN NULL "
        "ELSE json_object('a', a.info, 'b', b.info) END "
        "FROM m a JOIN m b ON a.value = b.value AND a.place < b.place",
        [producer, kind],
    )


def _insert_place_pairs(store: CaseStore, producer: str, kind: str, members: list[str]) -> None:
    """One link per pair of *places* holding a value (MEMBERS: SELECTs of :func:`_member`), each
    place standing for itself by its first record (by ref); ``details`` says how many records of
    the value the place holds (``files``) when more than one.

    Linear in the records: they are grouped by value, then by place, before any pairing, so a
    value held by N records in P places costs N to group and P(P-1)/2 rows to pair (a self-join
    of the records would cost N^2: 1,999 identical files in each of 16 copies of one host are
    32,000 records and 480 million pairs, for 1,128 pairs of places)."""
    keys = ", ".join(f'"{k}"' for k in KEY_NAMES)
    union = " UNION ALL ".join(f"({m})" for m in members)
    fields = ", ".join(f"{k} := {k}" for k in KEY_NAMES)
    pick = f"arg_min(struct_pack({fields}, tbl := tbl, ref := ref, info := info), CAST(ref AS VARCHAR))"
    info = (
        "CASE WHEN p.n > 1 THEN json_merge_patch(coalesce(p.r.info, '{}'), json_object('files', p.n)) "
        "ELSE p.r.info END"
    )
    store.db.execute(
        f"INSERT INTO links ({keys}, producer, kind, value, a_table, a, b_table, b, details) "
        f"WITH m AS (SELECT * FROM ({union}) WHERE value IS NOT NULL), "
        "shared AS (SELECT value FROM m GROUP BY value HAVING count(DISTINCT place) > 1), "
        f"p AS (SELECT value, place, {pick} AS r, count(*) AS n FROM m SEMI JOIN shared USING (value) "
        "GROUP BY value, place), "
        f"q AS (SELECT value, place, r, {info} AS info FROM p) "
        f"SELECT {', '.join('a.r.' + k for k in KEY_NAMES)}, ?, ?, "
        "a.value, a.r.tbl, a.r.ref, b.r.tbl, b.r.ref, "
        "CASE WHEN a.info IS NULL AND b.info IS NULL THEN NULL "
        "ELSE json_object('a', a.info, 'b', b.info) END "
        "FROM q a JOIN q b ON a.value = b.value AND a.place < b.place",
        [producer, kind],
    )


def _nothing() -> Iterator[tuple[str, list[dict]]]:
    """An analysis that wrote its rows itself yields none."""
    yield from ()


@analysis("links.sha256", ("links",), order=ORDER)
def same_file(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """``file.sha256``: one content in two places (changes, recovered files, carved files)."""
    hashed = f"t.sha256 IS NOT NULL AND t.sha256 <> '{EMPTY_SHA256}'"
    size = "json_object('size', t.size)"
    _insert_place_pairs(
        store,
        "links.sha256",
        "file.sha256",
        [
            _member(
                "changes",
                "t.sha256",
                _ref("layer_id", "path", "change"),
                f"{hashed} AND t.change <> 'deleted'",
                size,
            ),
            _member("recovered", "t.sha256", _ref("path", "inode", "method"), hashed, size),
            _member(
                "carved",
                "t.sha256",
                _ref("path", "offset", "method"),
                hashed,
                "json_object('size', t.length)",
            ),
        ],
    )
    return _nothing()


def _ip_members() -> list[str]:
    """SELECTs of every place's mention of an address: sockets, the container's own addresses,
    IPv4 addresses in its environment and labels, and in log lines."""
    socket_ref = _ref("checkpoint_name", "ino", "state", "src", "src_port", "dst", "dst_port")
    own_ip = 'regexp_extract_all(CAST(t.networks AS VARCHAR), \'"ipv?6?":"([^"]+)"\', 1)'
    written = f"regexp_extract_all(CAST(t.env AS VARCHAR) || ' ' || CAST(t.labels AS VARCHAR), '{_IPV4}', 1)"
    sources = [
        (
            "sockets",
            "unnest([t.src, t.dst])",
            socket_ref,
            "t.family IN ('inet', 'inet6')",
            "t.checkpoint_name",
        ),
        ("containers", f"unnest({own_ip})", _ref(), "t.networks IS NOT NULL", "NULL"),
        ("containers", f"unnest({written})", _ref(), "t.env IS NOT NULL OR t.labels IS NOT NULL", "NULL"),
        (
            "logs",
            f"unnest(regexp_extract_all(t.message, '{_IPV4}', 1))",
            _ref("source", "time", "stream"),
            "t.message IS NOT NULL",
            "NULL",
        ),
    ]
    out = []
    for table, values, ref, where, alt in sources:
        rows = _member(table, values, ref, where, alt=alt, name="ip")
        # one record per place and address (the first), with how many there are
        keys = ", ".join(KEY_NAMES)
        out.append(
            f"SELECT {keys}, place, tbl, arg_min(ref, CAST(ref AS VARCHAR)) AS ref, ip AS value, "
            f"json_object('mentions', count(*)) AS info FROM ({rows}) "
            f"WHERE ip IS NOT NULL AND NOT {_LOCAL_ADDRESS} "
            f"GROUP BY {keys}, place, tbl, ip"
        )
    return out


@analysis("links.ip", ("links",), order=ORDER)
def same_address(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """``net.ip``: one address in two places."""
    _insert_pairs(store, "links.ip", "net.ip", _ip_members())
    return _nothing()


@analysis("links.image", ("links",), order=ORDER)
def same_image(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """``image.shared``: two containers of one image."""
    _insert_pairs(
        store,
        "links.image",
        "image.shared",
        [_member("containers", "t.image_id", _ref("image"), "t.image_id IS NOT NULL")],
    )
    return _nothing()


@analysis("links.tampered", ("links",), order=ORDER)
def same_tampered_layer(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """``layer.tampered``: two containers on a layer found tampered with on their host."""
    on_tampered = (
        "t.owner = 'container' AND EXISTS (SELECT 1 FROM integrity i WHERE i.status = 'tampered' "
        "AND i.source_id = t.source_id "
        "AND (i.chain_id = t.chain_id OR coalesce(i.cache_id, i.layer_id) = t.layer_id))"
    )
    _insert_pairs(
        store,
        "links.tampered",
        "layer.tampered",
        [
            _member(
                "layers",
                "coalesce(t.chain_id, t.layer_id)",
                _ref("layer_id", "chain_id", "position"),
                on_tampered,
                "json_object('position', t.position, 'role', t.role)",
            )
        ],
    )
    return _nothing()


@analysis("links.volume", ("links",), order=ORDER)
def same_volume(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """``volume.shared``: two containers using one volume (``volumes.used_by``)."""
    users = (
        "SELECT v.source_id, v.name AS volume, v.driver, v.path, unnest(CAST(v.used_by AS VARCHAR[])) AS cid "
        "FROM volumes v WHERE v.used_by IS NOT NULL"
    )
    member = (
        f"SELECT {_KEYS}, t.source_id || '/' || t.container_id AS place, 'containers' AS tbl, "
        f"{_ref()} AS ref, "
        "u.volume AS value, json_object('driver', u.driver, 'path', u.path) AS info "
        f"FROM ({users}) u JOIN containers t ON t.source_id = u.source_id AND t.container_id = u.cid {_NAMES}"
    )
    _insert_pairs(store, "links.volume", "volume.shared", [member])
    return _nothing()


#: which places share a network namespace: a host-network container shares the host's, a
#: ``container:<id>`` one its target's, any other its own (SQL over ``containers`` ``c``)
_NETNS = (
    "CASE WHEN c.mode = 'host' THEN 'host' WHEN c.mode LIKE 'container:%' THEN substr(c.mode, 11) "
    "ELSE t.container_id END"
)
_LOOPBACK = "({col} LIKE '127.%' OR {col} = '::1' OR lower({col}) LIKE '::ffff:127.%')"
#: the network mode of each container, joined as ``c`` on (source_id, container_id) of ``t``
_MODES = (
    "LEFT JOIN (SELECT source_id, container_id, any_value(network_mode) AS mode FROM containers "
    "GROUP BY source_id, container_id) c ON c.source_id = t.source_id AND c.container_id = t.container_id"
)
#: two sockets ``a`` and ``b`` whose loopback addresses (if any) are in one network namespace
_SAME_LOOPBACK = (
    f"(NOT {_LOOPBACK.format(col='a.dst')} OR a.netns = b.netns OR (a.pod IS NOT NULL AND a.pod = b.pod))"
)
#: the sockets of the case that have both ends, with their place, network namespace and a ref
_SOCKETS = (
    f"SELECT t.*, {_PLACE.format(alt='t.checkpoint_name')} AS place, n.name AS container_name, "
    f"{_ref('checkpoint_name', 'ino', 'state', 'src', 'src_port', 'dst', 'dst_port')} AS ref, "
    f"{_NETNS} AS netns FROM sockets t {_NAMES} {_MODES} "
    "WHERE t.family IN ('inet', 'inet6') AND t.src IS NOT NULL"
)
_LINK_COLUMNS = (
    ", ".join(f'"{k}"' for k in KEY_NAMES) + ", producer, kind, value, a_table, a, b_table, b, details"
)


@analysis("links.sockets", ("links",), order=ORDER)
def connections(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """``socket.pair`` (both ends of a connection in two places of one host) and ``net.peer``
    (a socket of one place connected to what another place listens on)."""
    a_keys = ", ".join(f"a.{k}" for k in KEY_NAMES)
    store.db.execute(
        f"INSERT INTO links ({_LINK_COLUMNS}) WITH s AS ({_SOCKETS}) "
        f"SELECT {a_keys}, 'links.sockets', 'socket.pair', "
        "a.src || ':' || a.src_port || ' <-> ' || a.dst || ':' || a.dst_port, "
        "'sockets', a.ref, 'sockets', b.ref, "
        "json_object('a_state', a.state, 'b_state', b.state, 'proto', a.proto) "
        "FROM s a JOIN s b ON a.host = b.host AND a.place < b.place AND a.src = b.dst AND a.dst = b.src "
        "AND a.src_port = b.dst_port AND a.dst_port = b.src_port AND a.proto IS NOT DISTINCT FROM b.proto "
        f"AND {_SAME_LOOPBACK} WHERE a.state <> 'LISTEN' AND b.state <> 'LISTEN' AND a.dst_port > 0"
    )
    # the addresses of each place: its sockets' own and its container's (networks)
    addresses = (
        "SELECT DISTINCT place, src AS ip FROM s WHERE src NOT IN ('0.0.0.0', '::') "
        "UNION SELECT DISTINCT t.source_id || '/' || t.container_id, "
        'unnest(regexp_extract_all(CAST(t.networks AS VARCHAR), \'"ipv?6?":"([^"]+)"\', 1)) FROM containers t'
    )
    loopback = "(a.dst LIKE '127.%' OR a.dst = '::1')"
    store.db.execute(
        f"INSERT INTO links ({_LINK_COLUMNS}) WITH s AS ({_SOCKETS}), addr AS ({addresses}) "
        f"SELECT {a_keys}, 'links.sockets', 'net.peer', a.dst || ':' || a.dst_port, 'sockets', a.ref, "
        "'sockets', b.ref, json_object('a_state', a.state, 'proto', a.proto) "
        "FROM s a JOIN s b ON a.host = b.host AND a.place <> b.place AND b.state = 'LISTEN' "
        "AND b.src_port = a.dst_port AND a.proto IS NOT DISTINCT FROM b.proto "
        "AND (a.dst = b.src OR (b.src IN ('0.0.0.0', '::') "
        "AND EXISTS (SELECT 1 FROM addr WHERE addr.place = b.place AND addr.ip = a.dst))) "
        f"WHERE a.state <> 'LISTEN' AND a.dst IS NOT NULL "
        f"AND (NOT {loopback} OR (a.pod IS NOT NULL AND a.pod = b.pod))"
    )
    return _nothing()


# ---- process.talk: the processes at both ends of one connection, in two containers ------------

#: the two ends of each connection among checkpoint sockets: (rowid of a, rowid of b)
_CHECKPOINT_PAIRS = (
    "WITH s AS (SELECT t.rowid AS rid, coalesce(t.host, '') AS h, t.pod, t.family, t.type, t.proto, "
    "t.state, t.src, t.src_port, t.dst, t.dst_port, t.ino, t.peer_ino, "
    "t.source_id || '/' || coalesce(t.container_id, t.checkpoint_name) AS place, "
    f"{_NETNS} AS netns FROM sockets t {_MODES} "
    "WHERE coalesce(json_array_length(t.pids), 0) > 0 AND t.state <> 'LISTEN' "
    "AND coalesce(t.container_id, t.checkpoint_name) IS NOT NULL), "
    # each rule an equality join (hashed, not every pair compared), the pairs united
    "p AS (SELECT a.rid AS ar, b.rid AS br, a.place AS ap, b.place AS bp FROM s a JOIN s b "
    "ON a.h = b.h AND b.family = a.family AND a.proto = b.proto AND a.src = b.dst AND a.dst = b.src "
    "AND a.src_port = b.dst_port AND a.dst_port = b.src_port "
    "WHERE a.place < b.place AND a.family IN ('inet', 'inet6') "
    f"AND a.src_port > 0 AND a.dst_port > 0 AND {_SAME_LOOPBACK} "
    "UNION SELECT a.rid, b.rid, a.place, b.place FROM s a JOIN s b "
    "ON a.h = b.h AND a.type = b.type AND a.peer_ino = b.ino "
    "WHERE a.place < b.place AND a.family = 'unix' AND b.family = 'unix' "
    "UNION SELECT a.rid, b.rid, a.place, b.place FROM s a JOIN s b "
    "ON a.h = b.h AND a.type = b.type AND b.peer_ino = a.ino "
    "WHERE a.place < b.place AND a.family = 'unix' AND b.family = 'unix') "
    "SELECT ar, br FROM p ORDER BY ap, bp, ar, br"
)


def _live_pairs_sql(peer_column: bool) -> str:
    """The two ends of each connection among live-snapshot sockets: (rowid of a, rowid of b);
    unix sockets pair by ``peer_inode`` where the case has that column.  Each rule is an equality
    join (hashed), the pairs united."""
    pair = "SELECT a.rid AS ar, b.rid AS br, a.place AS ap, b.place AS bp FROM s a JOIN s b "
    unix = "".join(
        f"UNION {pair}ON a.h = b.h AND {cond} "
        "WHERE a.place < b.place AND a.protocol = 'unix' AND b.protocol = 'unix' "
        for cond in ("a.peer_inode = b.inode", "b.peer_inode = a.inode")
    )
    return (
        "WITH s AS (SELECT t.rowid AS rid, coalesce(t.host, '') AS h, t.*, "
        "t.source_id || '/' || t.container_id AS place "
        "FROM live_sockets t WHERE t.container_id IS NOT NULL "
        "AND coalesce(json_array_length(t.pids), 0) > 0 AND coalesce(t.state, '') <> 'LISTEN'), "
        f"p AS ({pair}"
        "ON a.h = b.h AND b.protocol = a.protocol AND a.local = b.remote AND a.remote = b.local "
        "AND a.local_port = b.remote_port AND a.remote_port = b.local_port "
        "WHERE a.place < b.place AND a.protocol IN ('tcp', 'tcp6', 'udp', 'udp6') "
        "AND a.local_port > 0 AND a.remote_port > 0 "
        f"AND (NOT {_LOOPBACK.format(col='a.remote')} OR a.netns = b.netns) "
        f"{unix if peer_column else ''}) "
        "SELECT ar, br FROM p ORDER BY ap, bp, ar, br"
    )


class _End:
    """One end of a connection: its socket row, the processes holding it, and how to name it."""

    def __init__(self, row: dict, table: str, procs: list[dict]) -> None:
        self.row, self.table, self.procs = row, table, procs

    @property
    def live(self) -> bool:
        return self.table == "live_sockets"

    def address(self) -> str:
        """``127.0.0.1:40000`` or a unix socket's path (its own, else its peer's)."""
        r = self.row
        if self.live:
            if r.get("protocol") == "unix":
                return r.get("local") or "-"
            return f"{r.get('local')}:{r.get('local_port')}"
        if r.get("family") == "unix":
            return r.get("src") or r.get("dst") or "-"
        return f"{r.get('src')}:{r.get('src_port')}"

    def proto(self) -> str:
        r = self.row
        if self.live:
            return str(r.get("protocol"))
        return "unix" if r.get("family") == "unix" else str(r.get("proto"))

    def names(self) -> str:
        """The processes as ``comm[pid]``, e.g. ``sh[7]``."""
        return ", ".join(f"{p.get('comm') or '?'}[{p['pid']}]" for p in self.procs) or "?"

    def shells(self) -> list[dict]:
        from pensieve.case.findings import _is_shell

        return [p for p in self.procs if _is_shell(p.get("comm"), p.get("cmdline") or [])]

    def ref(self, name: str | None) -> dict:
        """The socket row as evidence: keys, container name, its own columns, and its processes."""
        r = self.row
        own = (
            ("netns", "inode", "protocol", "state", "local", "local_port", "remote", "remote_port")
            if self.live
            else ("checkpoint_name", "ino", "family", "proto", "state", "src", "src_port", "dst", "dst_port")
        )
        out = {"source_id": r["source_id"], "host": r["host"], "container_id": r["container_id"]}
        out["container"] = name
        out.update({k: r.get(k) for k in own})
        out["pids"] = [p["pid"] for p in self.procs]
        out["processes"] = [
            {"pid": p["pid"], "comm": p.get("comm"), "cmdline": p.get("cmdline")} for p in self.procs
        ]
        return out


def _rows_by_rowid(store: CaseStore, table: str, rids: set[int]) -> dict[int, dict]:
    if not rids:
        return {}
    names, rows = store.query(
        f"SELECT rowid AS rid, * FROM {table} WHERE rowid IN ({', '.join(str(int(r)) for r in rids)})"
    )
    out = {}
    for row in rows:
        d = dict(zip(names, row, strict=True))
        for k in ("pids", "fds", "cmdline"):
            if isinstance(d.get(k), str):
                d[k] = json.loads(d[k])
        out[d["rid"]] = d
    return out


def _processes(store: CaseStore, live: bool, rows: Iterable[dict]) -> dict[tuple, dict]:
    """The processes the socket ROWS name, by (source, container, checkpoint, pid)."""
    wanted = {(r["source_id"], int(p)) for r in rows for p in r.get("pids") or []}
    if not wanted:
        return {}
    sources = ", ".join(str(int(s)) for s in {s for s, _p in wanted})
    columns = "NULL AS checkpoint_name" if live else "container_id, checkpoint_name"
    names, found = store.query(
        f"SELECT source_id, {columns}, pid, comm, cmdline FROM {'live_processes' if live else 'processes'} "
        f"WHERE source_id IN ({sources})"
    )
    out: dict[tuple, dict] = {}
    for row in found:
        d = dict(zip(names, row, strict=True))
        if (d["source_id"], d["pid"]) not in wanted:
            continue
        if isinstance(d.get("cmdline"), str):
            d["cmdline"] = json.loads(d["cmdline"])
        key = (d["source_id"], None if live else d.get("container_id"), d.get("checkpoint_name"), d["pid"])
        out[key] = d
    return out


def _ends(store: CaseStore, table: str, pairs: list[tuple[int, int]]) -> list[tuple[_End, _End]]:
    """Both ends of each pair of socket rowids of TABLE, with their processes."""
    live = table == "live_sockets"
    rows = _rows_by_rowid(store, table, {r for pair in pairs for r in pair})
    procs = _processes(store, live, rows.values())

    def end(rid: int) -> _End:
        r = rows[rid]
        ctr = None if live else r.get("container_id")
        ckpt = None if live else r.get("checkpoint_name")
        held = [
            procs.get((r["source_id"], ctr, ckpt, int(p))) or {"pid": int(p)} for p in r.get("pids") or []
        ]
        return _End(r, table, held)

    return [(end(a), end(b)) for a, b in pairs]


def _server(a: _End, b: _End, listening: set[tuple]) -> str | None:
    """Which end (``a`` / ``b``) accepted the connection: the one whose place listens on its port
    (inet), the one bound to the path (unix); None when neither tells."""
    for side, e in (("a", a), ("b", b)):
        r = e.row
        if e.proto() == "unix":
            if r.get("local") if e.live else r.get("src"):
                return side
        else:
            port = r.get("local_port") if e.live else r.get("src_port")
            if (r["source_id"], r.get("container_id"), e.proto(), port) in listening:
                return side
    return None


def _listening(store: CaseStore, table: str) -> set[tuple]:
    """(source, container, protocol, port) of every listening socket of TABLE."""
    if table == "live_sockets":
        sql = "SELECT source_id, container_id, protocol, local_port FROM live_sockets WHERE state = 'LISTEN'"
    else:
        sql = "SELECT source_id, container_id, proto, src_port FROM sockets WHERE state = 'LISTEN'"
    return {tuple(r) for r in store.query(sql)[1]}


def _names(store: CaseStore) -> dict[tuple, str]:
    rows = store.query("SELECT source_id, container_id, any_value(name) FROM containers GROUP BY ALL")[1]
    return {(s, c): n for s, c, n in rows}


def _talk_row(a: _End, b: _End, names: dict[tuple, str], server: str | None) -> dict:
    """The ``links`` row of one connection between A and B."""
    arrow = {"a": "<-", "b": "->"}.get(server or "", "<->")
    if a.proto() == "unix":  # the path is the listener's: the accepted end's own, the other's peer
        ino = "inode" if a.live else "ino"
        value = f"unix {a.address()} ({a.row.get(ino)} {arrow} {b.row.get(ino)})"
    else:
        value = f"{a.proto()} {a.address()} {arrow} {b.address()}"
    shell = [side for side, e in (("a", a), ("b", b)) if e.shells()]
    row = {k: a.row.get(k) for k in KEY_NAMES}
    row.update(
        producer="links.processes",
        kind="process.talk",
        value=value,
        a_table=a.table,
        a=a.ref(names.get((a.row["source_id"], a.row["container_id"]))),
        b_table=b.table,
        b=b.ref(names.get((b.row["source_id"], b.row["container_id"]))),
        details={
            "proto": a.proto(),
            "a_state": a.row.get("state"),
            "b_state": b.row.get("state"),
            "a_processes": a.names(),
            "b_processes": b.names(),
            "label": f"{a.names()} {arrow} {b.names()}",
            "server": server,
            "shell": shell,
        },
    )
    return row


def _std_fds(e: _End, pid: int) -> list[int]:
    """Which of PID's fds 0, 1, 2 are the socket of end E."""
    fds = {str(f) for f in e.row.get("fds") or []}
    return [fd for fd in (0, 1, 2) if f"{pid}:{fd}" in fds]


def _shell_findings(link: dict, a: _End, b: _End) -> list[dict]:
    """A finding for each shell at one end of LINK: critical when the socket is its stdin/stdout."""
    from pensieve.case.findings import finding

    out = []
    for e, other, ref, other_ref in ((a, b, link["a"], link["b"]), (b, a, link["b"], link["a"])):
        for p in e.shells():
            std = _std_fds(e, p["pid"])
            driven = bool({0, 1} & set(std))
            who, peer = (
                ref.get("container") or ref["container_id"],
                other_ref.get("container") or other_ref.get("container_id"),
            )
            proc_ref = {
                "table": "live_processes" if e.live else "processes",
                "source_id": ref["source_id"],
                "pid": p["pid"],
            }
            if not e.live:
                proc_ref.update(container_id=ref["container_id"], checkpoint_name=ref.get("checkpoint_name"))
            out.append(
                finding(
                    "critical" if driven else "high",
                    f"shell in {who} talks to {peer} ({p.get('comm')}[{p['pid']}] to {other.names()})",
                    f"{p.get('comm')} (pid {p['pid']}) in container {who} holds a {e.proto()} connection "
                    f"({link['value']}) whose other end is {other.names()} in container {peer}"
                    + (
                        f"; the socket is its fd {', '.join(map(str, std))}: "
                        "a shell driven from the other container"
                        if driven
                        else ""
                    ),
                    [{"table": a.table, **link["a"]}, {"table": b.table, **link["b"]}, proc_ref],
                    ("T1059.004",),
                    {k: e.row.get(k) for k in KEY_NAMES},
                    f"pid {p['pid']}",
                    None,
                    {"link": link["value"], "peer_container_id": other_ref.get("container_id")},
                )  # fmt: skip
            )
    return out


def _has_column(store: CaseStore, table: str, column: str) -> bool:
    rows = store.query(
        "SELECT 1 FROM information_schema.columns WHERE table_name = ? AND column_name = ?", [table, column]
    )[1]
    return bool(rows)


@analysis("links.processes", ("links", "findings"), order=ORDER)
def process_talk(store: CaseStore) -> Iterator[tuple[str, list[dict]]]:
    """``process.talk``: the processes of two containers at the two ends of one connection
    (checkpoint sockets, live-snapshot sockets), and a finding for each shell at one end."""
    names = _names(store)
    links, findings = [], []
    for table, sql in (
        ("sockets", _CHECKPOINT_PAIRS),
        ("live_sockets", _live_pairs_sql(_has_column(store, "live_sockets", "peer_inode"))),
    ):
        pairs = [(a, b) for a, b in store.query(sql)[1]]
        if not pairs:
            continue
        listening = _listening(store, table)
        for a, b in _ends(store, table, pairs):
            link = _talk_row(a, b, names, _server(a, b, listening))
            links.append(link)
            findings += _shell_findings(link, a, b)
    yield "links", links
    yield "findings", findings
