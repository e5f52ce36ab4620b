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
``net.peer`` [``address:port``]
    a socket of one place (``a``) connected to an address and port another place of the same host
    listens on (``b``, the LISTEN socket): a process of one container talking to another;
    loopback counts only between containers of one pod (they share a network namespace);
``volume.shared`` [the volume's name]
    two containers using the same volume (``volumes.used_by``).

``details`` holds what helps reading the link (sizes, the volume's path, socket states).
"""

from __future__ import annotations

from collections.abc import Iterator

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


#: the sockets of the case that have both ends, with their place and a ref
_SOCKETS = (
    f"SELECT t.*, {_PLACE.format(alt='t.checkpoint_name')} AS place, n.name AS container_name, "
    f"{_ref('checkpoint_name', 'ino', 'state', 'src', 'src_port', 'dst', 'dst_port')} AS ref "
    f"FROM sockets t {_NAMES} WHERE t.family IN ('inet', 'inet6') AND t.src IS NOT NULL"
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
        "WHERE a.state <> 'LISTEN' AND b.state <> 'LISTEN' AND a.dst_port > 0"
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
