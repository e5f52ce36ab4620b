"""containerd's metadata store (``io.containerd.metadata.v1.bolt/meta.db``) and snapshotter state.

Bucket layout, schema v1 (containerd metadata/buckets.go)::

    v1/version                               schema version (varint)
    v1/<namespace>/labels/<k>                namespace labels
    v1/<namespace>/containers/<id>/          image, snapshotter, snapshotKey, sandboxid, spec (Any),
                                             createdat, updatedat, labels/, runtime/{name, options
                                             (Any)}, extensions/<name> (Any)
    v1/<namespace>/images/<name>/            createdat, updatedat, labels/, annotations/,
                                             target/{digest, mediatype, size}
    v1/<namespace>/content/blob/<digest>/    size, createdat, updatedat, labels/
    v1/<namespace>/leases/<id>/              createdat, labels/, content/, snapshots/<sn>/, ingests/
    v1/<namespace>/snapshots/<sn>/<key>/     name (the snapshotter's key), parent, labels/,
                                             createdat, updatedat, children/

The snapshotter keeps its own bolt file (``io.containerd.snapshotter.v1.<sn>/metadata.db``,
snapshots/storage/bolt.go): ``v1/snapshots/<snapshotter key>/{id, kind, parent, createdat,
updatedat, labels/, size, inodes}``; snapshot *id* lives in ``snapshots/<id>/fs`` (overlayfs) or
``snapshots/<id>`` (native).  Content blobs are ``io.containerd.content.v1.content/blobs/<alg>/<hex>``.

Everything is read as untrusted (see :mod:`.values`): a bad value is a Problem on its record and
in :attr:`ContainerdMetadata.problems`, never an exception that ends the listing.
"""

from __future__ import annotations

import re

from pensieve.engines.containerd.layout import CONTENT_DIR, META_DB, SNAPSHOTTER_DIR
from pensieve.engines.containerd.spec import ProtobufError, parse_spec, runtime_options
from pensieve.engines.containerd.values import SNAPSHOT_KINDS, BucketView, name_text
from pensieve.evidence.base import Evidence, EvidenceError, join
from pensieve.formats.bolt import MAX_IN_MEMORY, BoltDB, BoltError
from pensieve.records.containerd import (
    ContainerdContainer,
    ContainerdImage,
    ContainerdNamespace,
    ContentBlob,
    Lease,
    Runtime,
    Snapshot,
)
from pensieve.records.core import Problem

#: OCI digest grammar (image-spec descriptor.md): algorithm ":" encoded
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_SNAPSHOTTER_NAME = re.compile(r"[A-Za-z0-9._-]+")


class ContainerdMetadata:
    """Everything in one containerd root's metadata, read once: ``namespaces`` and ``problems``.

    ``ContainerdMetadata(evidence, "/var/lib/containerd")``; the root is an evidence path.
    """

    def __init__(self, evidence: Evidence, root_path: str) -> None:
        self.evidence = evidence
        self.root = root_path
        self.db_path = join(root_path, META_DB)
        self.problems: list[Problem] = []
        self.not_collected: set[str] = set()  # snapshot keys a collect bundle left out on purpose
        self.schema_version: int | None = None
        self.namespaces: list[ContainerdNamespace] = []
        self._snapshotters: dict[str, dict[str, BucketView] | None] = {}
        self._handles: list = []  # files of databases too large to hold in memory, read by offset
        db = self._open(self.db_path)
        if db is None:
            return
        top = BucketView(db.bucket(b"v1") if self._root_ok(db) else None, "/v1", self.db_path, self.problems)
        self.schema_version = top.varint(b"version")
        for name, view in top.sub_views():
            self.namespaces.append(self._namespace(name, view))

    # ---- files
    def close(self) -> None:
        for fh in self._handles:
            fh.close()
        self._handles.clear()

    def __enter__(self) -> ContainerdMetadata:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, path: str) -> BoltDB | None:
        """The bolt file at PATH (read whole when small, else by offset from a kept handle)."""
        try:
            fh = self.evidence.open(path)
        except (EvidenceError, OSError) as exc:
            self.problems.append(Problem(path, f"bolt database unreadable: {exc}"))
            return None
        try:
            db = BoltDB(fh)
        except (BoltError, OSError) as exc:
            fh.close()
            self.problems.append(Problem(path, f"bolt database unreadable: {exc}"))
            return None
        if db.file_size <= MAX_IN_MEMORY:
            fh.close()
        else:
            self._handles.append(fh)
        if db.truncated:
            self.problems.append(
                Problem(path, f"truncated: {db.file_size} bytes, the meta says {db.meta.pgid * db.page_size}")
            )
        return db

    def _root_ok(self, db: BoltDB) -> bool:
        try:
            db.bucket(b"v1")
        except BoltError as exc:
            self.problems.append(Problem(self.db_path, f"/v1 unreadable: {exc}"))
            return False
        return True

    # ---- lookups
    def namespace(self, name: str) -> ContainerdNamespace | None:
        return next((ns for ns in self.namespaces if ns.name == name), None)

    def containers(self) -> list[ContainerdContainer]:
        return [c for ns in self.namespaces for c in ns.containers]

    # ---- namespace
    def _namespace(self, name: str, view: BucketView) -> ContainerdNamespace:
        ns = ContainerdNamespace(name=name, labels=view.labels())
        ns.containers = [self._container(name, i, v) for i, v in view.child(b"containers").sub_views()]
        ns.images = [self._image(name, i, v) for i, v in view.child(b"images").sub_views()]
        blobs = view.child(b"content").child(b"blob")
        ns.content = [self._blob(name, d, v) for d, v in blobs.sub_views()]
        ns.leases = [self._lease(name, i, v) for i, v in view.child(b"leases").sub_views()]
        for sn, sn_view in view.child(b"snapshots").sub_views():
            ns.snapshots += [self._snapshot(name, sn, k, v) for k, v in sn_view.sub_views()]
        return ns

    def _collect(self, start: int, record) -> None:
        """Give RECORD the problems its bucket produced (they stay in self.problems too)."""
        record.problems = self.problems[start:]

    def _container(self, ns: str, cid: str, view: BucketView) -> ContainerdContainer:
        start = len(self.problems)
        view.subject = cid
        c = ContainerdContainer(namespace=ns, id=cid, source=f"{self.db_path}:{view.path}")
        c.image = view.text(b"image")
        c.snapshotter = view.text(b"snapshotter")
        c.snapshot_key = view.text(b"snapshotKey")
        c.sandbox_id = view.text(b"sandboxid")
        c.created, c.updated = view.time(b"createdat"), view.time(b"updatedat")
        c.labels = view.labels()
        c.runtime = self._runtime(view.child(b"runtime"))
        spec = view.any(b"spec")
        if spec is not None:
            c.spec = parse_spec(spec[1], spec[0], f"{self.db_path}:{view.path}/spec", self.problems, cid)
        ext = view.child(b"extensions")
        for key in ext.values:
            got = ext.any(key)
            if got is not None:
                c.extensions[name_text(key)] = got[0]
                c.extension_values[name_text(key)] = got[1]
        self._collect(start, c)
        return c

    def _runtime(self, view: BucketView) -> Runtime:
        rt = Runtime(name=view.text(b"name"))
        options = view.any(b"options")
        if options is not None:
            rt.options_type = options[0]
            try:
                rt.options = runtime_options(*options)
            except ProtobufError as exc:
                view.problem(f"runtime options do not decode as {options[0]}: {exc}", b"options")
        return rt

    def _image(self, ns: str, name: str, view: BucketView) -> ContainerdImage:
        start = len(self.problems)
        view.subject = name
        img = ContainerdImage(namespace=ns, name=name, source=f"{self.db_path}:{view.path}")
        img.created, img.updated = view.time(b"createdat"), view.time(b"updatedat")
        img.labels, img.annotations = view.labels(), view.labels(b"annotations")
        target = view.child(b"target")
        img.target_digest = target.text(b"digest")
        img.target_media_type = target.text(b"mediatype")
        img.target_size = target.varint(b"size")
        self._collect(start, img)
        return img

    def _blob(self, ns: str, digest: str, view: BucketView) -> ContentBlob:
        start = len(self.problems)
        view.subject = digest
        blob = ContentBlob(namespace=ns, digest=digest, source=f"{self.db_path}:{view.path}")
        blob.size = view.varint(b"size")
        blob.created, blob.updated = view.time(b"createdat"), view.time(b"updatedat")
        blob.labels = view.labels()
        if _DIGEST.fullmatch(digest):
            alg, hexpart = digest.split(":", 1)
            path = join(self.root, CONTENT_DIR, "blobs", alg, hexpart)
            if self.evidence.is_file(path):
                blob.path = path
            elif not self.evidence.not_collected(path):
                view.problem("content blob file missing: " + path)
        else:
            view.problem("not a digest: no blob file looked up")
        self._collect(start, blob)
        return blob

    def _lease(self, ns: str, lid: str, view: BucketView) -> Lease:
        start = len(self.problems)
        view.subject = lid
        lease = Lease(
            namespace=ns,
            id=lid,
            created=view.time(b"createdat"),
            labels=view.labels(),
            source=f"{self.db_path}:{view.path}",
        )
        for kind, sub in view.sub_views():
            if kind == "labels":
                continue
            lease.resources += [f"{kind}/{name_text(k)}" for k in sub.values]
            for sn, sn_view in sub.sub_views():  # snapshots/<snapshotter>/<key>
                lease.resources += [f"{kind}/{sn}/{name_text(k)}" for k in sn_view.values]
        self._collect(start, lease)
        return lease

    # ---- snapshots
    def _snapshot(self, ns: str, snapshotter: str, key: str, view: BucketView) -> Snapshot:
        start = len(self.problems)
        view.subject = key
        snap = Snapshot(namespace=ns, snapshotter=snapshotter, key=key, source=f"{self.db_path}:{view.path}")
        snap.backing_key = view.text(b"name")
        snap.parent = view.text(b"parent")
        snap.labels = view.labels()
        snap.created, snap.updated = view.time(b"createdat"), view.time(b"updatedat")
        if snap.backing_key is not None:
            self._join_snapshotter(snap)
        else:
            view.problem("no snapshotter key (name)")
        self._collect(start, snap)
        return snap

    def _snapshotter_state(self, snapshotter: str) -> dict[str, BucketView] | None:
        """snapshotter key -> its bucket in the snapshotter's metadata.db (None: not readable)."""
        if snapshotter in self._snapshotters:
            return self._snapshotters[snapshotter]
        state = None
        if _SNAPSHOTTER_NAME.fullmatch(snapshotter):
            path = join(self.root, SNAPSHOTTER_DIR + snapshotter, "metadata.db")
            if self.evidence.is_file(path):
                db = self._open(path)
                if db is not None:
                    try:
                        top = db.bucket(b"v1", b"snapshots")
                    except BoltError as exc:
                        self.problems.append(Problem(path, f"/v1/snapshots unreadable: {exc}"))
                        top = None
                    state = dict(BucketView(top, "/v1/snapshots", path, self.problems).sub_views())
        self._snapshotters[snapshotter] = state
        return state

    def _join_snapshotter(self, snap: Snapshot) -> None:
        state = self._snapshotter_state(snap.snapshotter)
        if state is None:
            return
        view = state.get(snap.backing_key or "")
        if view is None:
            self.problems.append(
                Problem(
                    self.db_path,
                    f"snapshot {snap.namespace}/{snap.key}: "
                    f"{snap.backing_key!r} not in the {snap.snapshotter} snapshotter",
                    snap.key,
                )
            )
            return
        view.subject = snap.key
        sid = view.uvarint(b"id")
        kind = view.raw(b"kind")
        if kind is not None:
            if len(kind) == 1 and kind[0] in SNAPSHOT_KINDS:
                snap.kind = SNAPSHOT_KINDS[kind[0]]
            else:
                view.problem(f"unknown snapshot kind {kind.hex()}", b"kind")
        snap.size, snap.inodes = view.varint(b"size"), view.varint(b"inodes")
        if sid is None:
            return
        snap.id = str(sid)
        base = join(self.root, SNAPSHOTTER_DIR + snap.snapshotter, "snapshots", snap.id)
        path = base if snap.snapshotter == "native" else join(base, "fs")
        if self.evidence.is_dir(path):
            snap.path = path
        elif self.evidence.not_collected(path):
            self.not_collected.add(snap.key)
        else:
            view.problem(f"snapshot directory missing: {path}")
