"""The graph of the report: containers, images, layers, hashes and IPs, and what joins them.

Edges come from the keys of the case (a container's ``image_id``; the ``layers`` rows of each
image, and of a container whose image is not in the case), from the addresses in a container's
``networks`` (Docker's ``ip`` / ``ipv6``), and from every row of ``links``: a link of kind K and
value V between record A and record B is a node ``K:V`` joined to the nodes of A and B (a
record is found by its key columns: container, then image, then layer).  A ``process.talk``
link (the processes of two containers at the two ends of one connection) is no node: it is an
edge between the two containers, labelled with the processes (``tcp sh[7] -> httpd[1]``, client
first; every connection between the same two containers on one label).  A container's own
``rw`` and ``init`` layers are left out: each belongs to one container only and joins nothing.
"""

from __future__ import annotations

from typing import Any

from pensieve.report.data import CaseData

#: node kinds, in the order of the legend
KINDS = ("container", "image", "layer", "hash", "ip", "other")
_HASH_KINDS = {"sha256", "hash", "digest", "file-hash", "md5", "sha1"}
_IP_KINDS = {"ip", "ipv4", "ipv6", "address", "addr"}


class Graph:
    """Nodes (kind, label, title, page) and edges (node index, node index, kind[, label])."""

    def __init__(self) -> None:
        self.nodes: list[list[Any]] = []
        self.edges: set[tuple] = set()
        self.labels: dict[tuple[int, int, str], list[str]] = {}
        self._index: dict[tuple[str, str], int] = {}

    def node(self, kind: str, key: str, label: str, title: str = "", page: str | None = None) -> int:
        """The index of node (KIND, KEY), added when new."""
        at = self._index.get((kind, key))
        if at is None:
            at = self._index[(kind, key)] = len(self.nodes)
            self.nodes.append([kind, label, title or key, page or ""])
        return at

    def find(self, kind: str, key: str) -> int | None:
        return self._index.get((kind, key))

    def edge(self, a: int | None, b: int | None, kind: str, label: str | None = None) -> None:
        """An edge of KIND between A and B; edges of one kind between the same two nodes with a
        LABEL are one edge with all their labels."""
        if a is None or b is None or a == b:
            return
        key = (min(a, b), max(a, b), kind)
        if label is None:
            self.edges.add(key)
        elif label not in self.labels.setdefault(key, []):
            self.labels[key].append(label)

    def as_json(self) -> dict:
        labelled = [(*k, "; ".join(v)) for k, v in self.labels.items()]
        return {"kinds": list(KINDS), "nodes": self.nodes, "edges": sorted([*self.edges, *labelled])}


def _short(value: str | None, n: int = 12) -> str:
    v = value or "?"
    if v.startswith("sha256:"):
        v = v[7:]
    return v[:n]


def _link_kind(kind: str | None) -> str:
    k = (kind or "").lower()
    if k in _HASH_KINDS:
        return "hash"
    if k in _IP_KINDS:
        return "ip"
    return "other"


def build_graph(data: CaseData) -> Graph:
    """The graph of DATA (see the module docstring)."""
    g = Graph()
    containers: dict[tuple, int] = {}
    for c in data.containers:
        label = c.get("name") or _short(c["container_id"])
        containers[(c["source_id"], c["container_id"])] = g.node(
            "container",
            f"{c['source_id']}/{c['container_id']}",
            label,
            c["container_id"],
            f"containers/{c['page']}.html",
        )
    images: dict[tuple, int] = {}
    for i in data.images:
        tags = i.get("tags") if isinstance(i.get("tags"), list) else []
        label = str(tags[0]) if tags else _short(i["image_id"])
        images[(i["source_id"], i["image_id"])] = g.node(
            "image", f"{i['source_id']}/{i['image_id']}", label, i["image_id"] or ""
        )
    for c in data.containers:
        key = (c["source_id"], c.get("image_id"))
        if c.get("image_id") and key not in images:
            images[key] = g.node("image", f"{key[0]}/{key[1]}", c.get("image") or _short(key[1]), key[1])
        g.edge(containers[(c["source_id"], c["container_id"])], images.get(key), "runs")
    _layers(g, data, containers, images)
    _addresses(g, data, containers)
    for link in data.links:
        _link(g, link, containers, images)
    return g


def _layer_node(g: Graph, row: dict) -> int:
    lid = row.get("layer_id") or row.get("diff_id") or "?"
    label = _short(row.get("diff_id") or lid)
    return g.node("layer", f"{row.get('source_id')}/{lid}", label, row.get("diff_id") or lid)


def _layers(g: Graph, data: CaseData, containers: dict, images: dict) -> None:
    imaged = {
        (c["source_id"], c["container_id"])
        for c in data.containers
        if (c["source_id"], c.get("image_id")) in images
    }
    for row in data.layers:
        if row.get("owner") == "image":
            image = images.get((row.get("source_id"), row.get("image_id")))
            if image is not None:
                g.edge(image, _layer_node(g, row), "layer")
        elif row.get("role") == "image":
            key = (row.get("source_id"), row.get("container_id"))
            if key in containers and key not in imaged:
                g.edge(containers[key], _layer_node(g, row), "layer")


def _addresses(g: Graph, data: CaseData, containers: dict) -> None:
    for c in data.containers:
        nets = c.get("networks")
        if not isinstance(nets, dict):
            continue
        for net in nets.values():
            if not isinstance(net, dict):
                continue
            for field in ("ip", "ipv6"):
                ip = net.get(field)
                if isinstance(ip, str) and ip:
                    g.edge(containers[(c["source_id"], c["container_id"])], g.node("ip", ip, ip), "address")


def _ref_node(g: Graph, ref: Any, row: dict, containers: dict, images: dict) -> int | None:
    """The node of the record REF names ({"container_id": ...}, {"image_id": ...} ...)."""
    if not isinstance(ref, dict):
        return None
    sid = ref.get("source_id", row.get("source_id"))
    cid, iid, lid = ref.get("container_id"), ref.get("image_id"), ref.get("layer_id")
    if cid is not None:
        found = containers.get((sid, cid))
        if found is None:
            found = next((v for (s, c), v in containers.items() if c == cid), None)
        return found if found is not None else g.node("container", f"{sid}/{cid}", _short(str(cid)), str(cid))
    if iid is not None:
        found = images.get((sid, iid))
        return found if found is not None else g.node("image", f"{sid}/{iid}", _short(str(iid)), str(iid))
    if lid is not None:
        return _layer_node(g, {"source_id": sid, "layer_id": str(lid)})
    return None


def _talk_label(link: dict) -> str:
    """``tcp sh[7] -> httpd[1]``: the processes of a ``process.talk`` link, client first."""
    d = link.get("details") if isinstance(link.get("details"), dict) else {}
    a, b = d.get("a_processes") or "?", d.get("b_processes") or "?"
    proto = d.get("proto") or ""
    if d.get("server") == "a":
        return f"{proto} {b} -> {a}".strip()
    if d.get("server") == "b":
        return f"{proto} {a} -> {b}".strip()
    return f"{proto} {a} <-> {b}".strip()


def _link(g: Graph, link: dict, containers: dict, images: dict) -> None:
    if link.get("kind") == "process.talk":
        ends = [_ref_node(g, ref, link, containers, images) for ref in (link.get("a"), link.get("b"))]
        g.edge(ends[0], ends[1], "process.talk", _talk_label(link))
        return
    kind = _link_kind(link.get("kind"))
    value = str(link.get("value") or "")
    label = _short(value, 16) if kind == "hash" else value[:40]
    key = value if kind in ("hash", "ip") else f"{link.get('kind')}:{value}"  # one node per address
    hub = g.node(kind, key, label, f"{link.get('kind')}: {value}")
    for ref in (link.get("a"), link.get("b")):
        g.edge(hub, _ref_node(g, ref, link, containers, images), str(link.get("kind") or "link"))
