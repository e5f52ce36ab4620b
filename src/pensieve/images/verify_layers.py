"""Image integrity: rebuild every layer's tar stream from the host and check it against the
digests the engine recorded when the layer was pulled, built or loaded.

For each layer of ``image/<driver>/layerdb/sha256/<chain-id>/`` Docker keeps the layer's diff id
(``diff``: sha256 of the uncompressed layer tar), the storage driver's id for its contents
(``cache-id``) and a tar-split record (``tar-split.json.gz``: the raw tar headers and padding of
that tar, plus each file's size and CRC-64).  ``docker save`` / ``docker push`` rebuild the tar
from the record and the layer directory (moby ``layer.layerStore.assembleTarTo``; overlay2 reads
the ``diff`` directory directly), failing with ``file integrity checksum failed`` on a CRC
mismatch.  This module does the same rebuild, offline and read-only, streaming (at most three
1 MiB buffers per layer, never a whole file or layer in memory), and goes further than Docker:

* every file entry is checked against the host: content (CRC-64), size, type, mode, owner, link
  target, device numbers, xattrs (PAX ``SCHILY.xattr.*``: a ``setcap`` on a layer binary shows),
  and whether it is there at all;
* the layer directory is walked for entries the record does not know ("added");
* the rebuilt stream's sha256 is compared with the diff id, the chain id recomputed from the
  parent's chain id and the diff id, and image config digests (the image ids) recomputed.

A layer is ``ok`` (stream digest equals the diff id, no file differs), ``tampered`` (with the
differing paths and how they differ) or ``unverifiable`` (record missing, truncated or corrupt,
layer directory missing, unsupported driver, a foreign entry in layerdb), the reason given.  One
bad layer never stops the others.
"""

from __future__ import annotations

import contextvars
import hashlib
import operator
import os
import pickle
import posixpath
import queue
import re
import signal
import stat as statmod
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from pensieve.engines.docker import DockerHost
from pensieve.engines.docker.root import SUPPORTED_DRIVERS, DockerRoot
from pensieve.evidence import DirHandle, Evidence, EvidenceError, FileStat
from pensieve.evidence.base import _check_name, file_kind, normalize
from pensieve.evidence.directory import _FdDir
from pensieve.evidence.directory import _xattrs as _fd_xattrs
from pensieve.formats import untrusted_json
from pensieve.formats.tarsplit import (
    _KIND,
    FILE,
    SEGMENT,
    HeaderParser,
    TarHeader,
    TarSplitError,
    clean_name,
    crc64_bytes,
    crc64_iso,
    iter_entries,
)
from pensieve.records import Finding, Image
from pensieve.records.integrity import (
    FILE_KINDS,
    OK,
    TAMPERED,
    UNVERIFIABLE,
    ImageProblem,
    ImageVerdict,
    LayerProblem,
    LayerVerdict,
)

__all__ = [
    "DEFERRED",
    "FILE_KINDS",
    "LayerEntry",
    "OK",
    "TAMPERED",
    "UNVERIFIABLE",
    "ImageProblem",
    "ImageVerdict",
    "LayerProblem",
    "LayerVerdict",
    "LayerChecker",
    "findings",
    "hash_config",
    "config_diff_ids",
    "image_status",
    "rebuild_from_record",
    "rebuild_layer",
    "verify_docker",
    "verify_entry",
    "verify_host",
    "verify_image_ids",
    "verify_layer",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REMAP = re.compile(r"^(\d+)\.(\d+)$")  # userns-remap data root: <uid>.<gid>
_CHUNK = 1 << 20
#: xattrs the storage driver or the host sets by itself (never in a layer tar)
_HOST_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
_HOST_XATTRS = ("security.selinux",)
_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")

Sink = Callable[[memoryview | bytes], Any]


# ---- the walk over a host -------------------------------------------------------------------


def _layerdb_drivers(root: DockerRoot) -> list[str]:
    return [d for d in root.drivers() if root.evidence.is_dir(root.join("image", d, "layerdb", "sha256"))]


def _usage(host: DockerHost) -> tuple[dict[tuple, list[str]], dict[tuple, list[str]]]:
    """(data root, chain id) -> image names, -> container names."""
    images: dict[tuple, list[str]] = {}
    containers: dict[tuple, list[str]] = {}
    by_id: dict[tuple, list[str]] = {}
    for img in sorted(host.images(), key=lambda i: (not i.tags, i.tags[:1], i.id)):
        label = img.tags[0] if img.tags else img.id
        for chain in dict.fromkeys(img.chain_ids):
            images.setdefault((img.data_root, chain), []).append(label)
        by_id[(img.data_root, img.id)] = img.chain_ids
    try:
        cs = host.containers()
    except (EvidenceError, OSError):
        cs = []
    for c in sorted(cs, key=lambda c: (c.name or "", c.id)):
        for chain in dict.fromkeys(by_id.get((c.data_root, c.image_id), [])):
            containers.setdefault((c.data_root, chain), []).append(c.name or c.id)
    return images, containers


def verify_docker(
    host: DockerHost, image: Image | None = None, images: bool = True
) -> tuple[list[LayerVerdict], list[ImageVerdict]]:
    """DockerHost.verify_layers: the layers of the graph-driver data roots rebuilt from their
    tar-split records (image verdicts only when IMAGES), then the images of the data roots using
    the containerd image store, verified in their containerd (engines/containerd/verify.py: blobs
    against their digests, snapshots against their layer tars)."""
    layers = verify_host(host, image)
    verdicts = verify_image_ids(host, layers, image) if images else []
    stores = [s for s in host.containerd_stores() if image is None or image.data_root == s.root.path]
    if stores:
        usage = _usage(host)
        tags = {(i.data_root, i.config_path): i.tags for i in host.images()}
        for store in stores:
            got, imgs = store.verify(image)
            for v in got:
                v.images = usage[0].get((v.data_root, v.chain_id), [])
                v.containers = usage[1].get((v.data_root, v.chain_id), [])
            for iv in imgs:
                iv.tags = tags.get((iv.data_root, iv.config_path), iv.tags)
            layers += got
            verdicts += imgs
    return layers, verdicts


def verify_host(
    host: DockerHost,
    image_ref: str | Image | None = None,
    sink_for: Callable[[str], Sink | None] | None = None,
) -> list[LayerVerdict]:
    """Verify every image layer of every graph-driver data root in HOST (or only the layers of
    IMAGE_REF, a reference or one of HOST's images).

    SINK_FOR(chain_id) may return a callable that receives the rebuilt tar stream of that layer
    chunk by chunk (memoryviews valid only during the call), e.g. to export or compare it."""
    wanted: set[tuple[str | None, str]] | None = None
    if image_ref is not None:
        img = host.image(image_ref) if isinstance(image_ref, str) else image_ref  # LookupFailed when absent
        wanted = {(img.data_root, c) for c in img.chain_ids}
    images, containers = _usage(host)
    out: list[LayerVerdict] = []
    for root in host.roots:
        if getattr(root, "layout", None) != "v2":  # a Podman graphroot has no Docker layerdb
            continue
        for driver in _layerdb_drivers(root):
            base = root.join("image", driver, "layerdb", "sha256")
            try:
                entries = sorted(root.evidence.scandir(base), key=lambda e: e.name)
            except (EvidenceError, OSError):
                continue
            names = {e.name for e in entries}
            if wanted is not None:
                for data_root, chain in sorted(c for c in wanted if c[0] == root.path):
                    if chain.removeprefix("sha256:") not in names:
                        out.append(
                            LayerVerdict(
                                chain,
                                None,
                                UNVERIFIABLE,
                                reason="layer not in layerdb",
                                driver=driver,
                                data_root=data_root,
                            )
                        )
            for e in entries:
                chain = "sha256:" + e.name
                if wanted is not None and (root.path, chain) not in wanted:
                    continue
                entry = LayerEntry(root.path, driver, e.name, e.stat.is_dir, e.stat.kind)
                if sink_for is None and (deferred := DEFERRED.get()) is not None:
                    deferred.append(entry)  # verified later, on its own (verify_entry)
                    continue
                v = _verify_entry(root, entry, sink_for(chain) if sink_for else None)
                v.images = images.get((root.path, chain), [])
                v.containers = containers.get((root.path, chain), [])
                out.append(v)
    return out


class LayerEntry(NamedTuple):
    """One entry of a graph-driver layerdb (``<root>/image/<driver>/layerdb/sha256/<name>``), as
    :func:`verify_host` meets it: what :func:`verify_entry` needs to verify it on its own."""

    data_root: str
    driver: str
    name: str  # the chain id's hex digits (or whatever foreign name the directory holds)
    is_dir: bool
    kind: str  # the entry's file kind, for the verdict of a foreign entry


#: when set to a list, :func:`verify_host` appends each graph-driver layer to it (a LayerEntry)
#: instead of verifying it: a caller verifies them one by one, elsewhere (pensieve.fleet)
DEFERRED: contextvars.ContextVar[list[LayerEntry] | None] = contextvars.ContextVar(
    "pensieve_deferred_layers", default=None
)


def _verify_entry(root: DockerRoot, entry: LayerEntry, sink: Sink | None = None) -> LayerVerdict:
    chain = "sha256:" + entry.name
    if not entry.is_dir or not _HEX64.match(entry.name):
        return LayerVerdict(
            chain if _HEX64.match(entry.name) else entry.name,
            None,
            UNVERIFIABLE,
            reason=f"foreign {entry.kind} in layerdb/sha256: not a layer directory",
            driver=entry.driver,
            data_root=root.path,
        )
    return verify_layer(root, entry.driver, chain, sink)


#: the usage (:func:`_usage`) of each DockerHost verify_entry met, while it is open
_USAGE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def verify_entry(host: DockerHost, entry: LayerEntry) -> LayerVerdict:
    """The verdict of one layerdb ENTRY of HOST (a DockerHost, or a Host holding one), with the
    images and containers using it: what :func:`verify_host` says of that layer."""
    for h in _docker_hosts(host):
        for root in h.roots:
            if root.path == entry.data_root and getattr(root, "layout", None) == "v2":
                if h not in _USAGE:
                    _USAGE[h] = _usage(h)
                images, containers = _USAGE[h]
                v = _verify_entry(root, entry)
                key = (root.path, "sha256:" + entry.name)
                v.images = images.get(key, [])
                v.containers = containers.get(key, [])
                return v
    raise LookupError(f"no data root {entry.data_root} on {host.evidence.description}")


def _docker_hosts(host) -> list[DockerHost]:
    if isinstance(host, DockerHost):
        return [host]
    from pensieve.engines.discover import engine_hosts

    return [h for h in engine_hosts(host) if isinstance(h, DockerHost)]


def rebuild_layer(host: DockerHost, chain_id: str, write: Sink) -> LayerVerdict:
    """Rebuild one layer's tar stream into WRITE (e.g. a file's write) and verify it (a data
    root using the containerd image store: its layer blob, uncompressed, see
    engines/containerd/verify.export_layer)."""
    chain_id = chain_id if chain_id.startswith("sha256:") else "sha256:" + chain_id
    for root in host.roots:
        for driver in _layerdb_drivers(root) if root.layout == "v2" else []:
            if root.evidence.is_dir(root.join("image", driver, "layerdb", "sha256", chain_id[7:])):
                return verify_layer(root, driver, chain_id, write)
    for store in host.containerd_stores():
        try:
            return store.export_layer(chain_id, write)
        except LookupError:
            continue
    raise LookupError(f"no layer {chain_id} in {host.evidence.description}")


# ---- one layer ------------------------------------------------------------------------------


def _read_small(ev: Evidence, path: str) -> str | None:
    try:
        return ev.read_bytes(path, 4096).decode("utf-8", "replace").strip()
    except (EvidenceError, OSError):
        return None


def _ids_offset(root: DockerRoot) -> tuple[int, int]:
    """userns-remap roots (<data-root>/<uid>.<gid>) hold layer files owned by shifted ids."""
    m = _REMAP.match(posixpath.basename(root.path.rstrip("/")))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def verify_layer(root: DockerRoot, driver: str, chain_id: str, sink: Sink | None = None) -> LayerVerdict:
    """Rebuild and verify one layer of ROOT's layerdb for DRIVER."""
    ev = root.evidence
    meta = root.join("image", driver, "layerdb", "sha256", chain_id.removeprefix("sha256:"))
    v = LayerVerdict(chain_id, _read_small(ev, posixpath.join(meta, "diff")), UNVERIFIABLE)
    v.driver = driver
    v.data_root = root.path
    v.cache_id = _read_small(ev, posixpath.join(meta, "cache-id"))
    v.parent = _read_small(ev, posixpath.join(meta, "parent")) or None
    v.tar_split = posixpath.join(meta, "tar-split.json.gz")

    # the chain id is a function of the parent chain and the diff id (OCI image spec)
    if v.diff_id:
        want = (
            v.diff_id
            if not v.parent
            else "sha256:" + hashlib.sha256(f"{v.parent} {v.diff_id}".encode()).hexdigest()
        )
        if want != chain_id:
            v.problems.append(
                LayerProblem(
                    None, "chain-id", "chain id does not follow from parent and diff id", want, chain_id, meta
                )
            )
    if driver not in SUPPORTED_DRIVERS:
        v.reason = f"storage driver {driver}: layer contents not readable"
        return v
    if not v.cache_id:
        v.reason = "no cache-id in layerdb: the layer's directory is unknown"
        return v
    try:
        path, fmt = root.layer_path(driver, v.cache_id)
    except EvidenceError as exc:
        v.reason = str(exc)
        return v
    v.layer_path = path
    return rebuild_from_record(ev, v, fmt, _ids_offset(root), sink)


#: (uid, gid) of a record -> (uid, gid) on the host
OnDisk = Callable[[int, int], tuple[int, int]]


def _shifted(uoff: int, goff: int) -> OnDisk:
    return lambda uid, gid: (uid + uoff, gid + goff)


def rebuild_from_record(
    ev: Evidence,
    v: LayerVerdict,
    fmt: str,
    offset: tuple[int, int] | OnDisk = (0, 0),
    sink: Sink | None = None,
) -> LayerVerdict:
    """Rebuild the tar stream of the layer V describes from its directory (``v.layer_path``, of
    layout FMT: overlay | overlay-upper | aufs | snapshot) and its tar-split record
    (``v.tar_split``), hash it against ``v.diff_id`` and compare every entry; file owners on the
    host are the record's shifted by OFFSET (uid, gid).  Any engine keeping a vbatts/tar-split
    record per layer (Docker's layerdb, containers/storage's ``<id>.tar-split.gz``) goes through
    here; V comes back with its status, reason and problems."""
    path = v.layer_path or ""
    try:
        if not ev.lstat(path).is_dir:
            v.reason = f"layer contents are not a directory: {path}"
            return v
    except (EvidenceError, OSError):
        v.reason = f"layer directory missing: {path}"
        return v
    try:
        record = ev.open(v.tar_split or "")
    except (EvidenceError, OSError) as exc:
        v.reason = f"no readable tar-split record: {exc}"
        return v
    checker = LayerChecker(ev, path, fmt, offset, v.problems)
    try:
        return _rebuild(v, record, checker, sink)
    finally:
        checker.close()


def _rebuild(v: LayerVerdict, record, checker: LayerChecker, sink: Sink | None) -> LayerVerdict:
    out = _Stream(sink)
    write = out.write
    check = checker.entry
    payload_bytes = 0
    entries = 0
    end: list[bool] = []
    try:
        with record:
            try:
                for item in _parsed_items(record, end):
                    if item[0] == SEGMENT:
                        write(item[1])
                    else:
                        entries += 1
                        payload_bytes += check(item[1], item[2], item[3], item[4], out)
                v.end_marker = end[0]
            finally:
                v.entries = entries
                v.payload_bytes = payload_bytes
                try:
                    out.flush()  # all that was rebuilt reaches the sink, even when the record breaks off
                finally:
                    out.close()
    except TarSplitError as exc:
        v.reason = f"corrupt tar-split record: {exc}"
        return v
    except (EvidenceError, OSError) as exc:
        v.reason = f"cannot read the tar-split record: {exc}"
        return v
    v.computed_diff_id = "sha256:" + out.sha.hexdigest()
    v.stream_size = out.size
    if not v.diff_id:
        v.reason = "no diff id in layerdb: nothing to compare the rebuilt stream with"
        return v
    if v.computed_diff_id != v.diff_id and not v.end_marker:
        # a record cut short (even re-gzipped cleanly) cannot reproduce the stream; what it did
        # cover is still listed in problems (no walk: every file past the cut would look added)
        v.reason = "tar-split record ends before the end-of-archive marker (truncated)"
        return v
    checker.walk()
    if v.computed_diff_id != v.diff_id and not any(p.path is not None for p in v.problems):
        v.problems.append(
            LayerProblem(
                None,
                "digest",
                "the rebuilt stream does not hash to the diff id: record headers or diff file changed",
                v.diff_id,
                v.computed_diff_id,
                v.tar_split,
            )
        )
    v.status = TAMPERED if v.problems else OK
    return v


# ---- the record, parsed (in this process, or in a second one while this one checks files) -----

#: records (gzip) at least this big are parsed by a child process when there is a second CPU:
#: JSON, base64 and tar headers there, lstat/open/read/CRC/compare here (measured on 20,000
#: small files: the two halves cost about the same)
PIPELINE_MIN_RECORD = 256 << 10
_BATCH = 512  # items per message from the parsing process
_HEADER_FIELDS = TarHeader.__record_fields__  # type: ignore[attr-defined]
_header_tuple = operator.attrgetter(*_HEADER_FIELDS)

#: (SEGMENT, payload) | (FILE, name bytes, TarHeader, size, CRC-64 bytes or None)
Item = tuple


def _parse_record(record, end: list[bool]) -> Iterator[Item]:
    """The items of RECORD in stream order; END gets the end-of-archive flag when it is done.
    Raises what iter_entries and HeaderParser raise, where they raise it."""
    parser = HeaderParser()
    feed = parser.feed
    header = parser.header
    for entry in iter_entries(record):
        if entry.type == SEGMENT:
            payload = entry.payload
            if payload:
                feed(payload)
                yield (SEGMENT, payload)
        elif entry.type == FILE:
            yield (FILE, entry.name_bytes or b"", header(entry), entry.size, entry.payload)
    end.append(parser.finish())


def _parsed_items(record, end: list[bool]) -> Iterator[Item]:
    """_parse_record's items, from a forked child process for a big record on a machine with a
    second CPU (the same items, the same exception at the same place), else from this one."""
    size = getattr(record, "size", None)
    if size is None:
        try:
            size = os.fstat(record.fileno()).st_size
        except (AttributeError, OSError, ValueError):
            size = 0
    if size < PIPELINE_MIN_RECORD or not _can_fork():
        return _parse_record(record, end)
    return _forked_items(record, end)


def _can_fork() -> bool:
    """A second CPU, and no other thread in this process (a fork copies only the caller's)."""
    return _cpus() > 1 and hasattr(os, "fork") and threading.active_count() == 1


def _child(record, wfd: int) -> None:
    """The parsing process: batches of items (headers as field tuples) pickled into WFD, then
    ("end", flag) or ("raise", exception)."""
    with os.fdopen(wfd, "wb", buffering=1 << 20) as w:
        dump = pickle.dump
        batch: list = []
        add = batch.append
        end: list[bool] = []
        try:
            for item in _parse_record(record, end):
                if item[0] == FILE:
                    item = (FILE, item[1], _header_tuple(item[2]), item[3], item[4])
                add(item)
                if len(batch) >= _BATCH:
                    dump(batch, w, pickle.HIGHEST_PROTOCOL)
                    batch.clear()
            batch.append(("end", end[0]))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, raised there
            try:
                pickle.dumps(exc)
            except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
                exc = TarSplitError(str(exc))
            batch.append(("raise", exc))
        dump(batch, w, pickle.HIGHEST_PROTOCOL)


def _forked_items(record, end: list[bool]) -> Iterator[Item]:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse, send, leave without running the parent's cleanup
        code = 0
        try:
            os.close(rfd)
            _child(record, wfd)
        except BaseException:  # noqa: BLE001 - the parent sees the pipe close early
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    finished = False
    try:
        with os.fdopen(rfd, "rb", buffering=1 << 20) as r:
            load = pickle.load
            make = TarHeader
            while True:
                try:
                    batch = load(r)
                except EOFError:
                    raise TarSplitError("the parsing process stopped before the end of the record") from None
                for item in batch:
                    kind = item[0]
                    if kind == SEGMENT:
                        yield item
                    elif kind == FILE:
                        yield (FILE, item[1], make(*item[2]), item[3], item[4])
                    elif kind == "end":
                        end.append(item[1])
                        finished = True
                        return
                    else:
                        finished = True
                        raise item[1]
    finally:
        if not finished:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(pid, 0)


def _octal(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: hash full buffers of big files on a second thread (hashlib lets go of the GIL while it hashes)
_HASH_THREAD = _cpus() > 1
_BUFFERS = 3  # buffers of a stream with a hashing thread: one filling, the others being hashed
#: a full buffer made of at most this many pieces (reads, segments) is "bulk": big files.  Only
#: those go to the thread: while small files are read the caller's thread lets go of the GIL at
#: every system call, and a hashing thread waiting to take it back would slow each of them down
#: (measured: 20% slower on 20,000 small files, 25% faster on 32 MiB files)
_BULK_PIECES = 8


class _Stream:
    """The rebuilt tar stream: gathered in 1 MiB buffers that are hashed (and handed to the sink)
    when full, so that a layer of small files costs a hundred hash updates per 100 MiB, not two
    per file.  Full buffers of big files are hashed by a thread of the stream while the next one
    fills (more than one CPU); the sink is always called from the caller's thread, and the
    digest covers the buffers in stream order.  Memory: at most three buffers."""

    def __init__(self, sink: Sink | None) -> None:
        self.sha = hashlib.sha256()
        self.sink = sink
        self.view = memoryview(bytearray(_CHUNK))  # the buffer being filled
        self.pos = 0  # bytes of it not yet hashed
        self.size = 0  # bytes of the stream so far
        self.pieces = 0  # writes and reads into it
        self._thread: threading.Thread | None = None
        self._todo: queue.SimpleQueue = queue.SimpleQueue()  # (buffer, chunk to hash) | None
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # buffers hashed (None: it failed)
        self._spare: list[memoryview] = []
        self._buffers = 1
        self._busy = 0  # buffers handed to the thread and not yet back
        self._error: BaseException | None = None

    def _hash_loop(self) -> None:
        todo, done, update = self._todo, self._done, self.sha.update
        try:
            while (item := todo.get()) is not None:
                update(item[1])
                item[1].release()
                done.put(item[0])
        except BaseException as exc:  # handed to the caller's thread by close()
            self._error = exc
            done.put(None)

    def _back(self) -> memoryview:
        """One buffer back from the thread (waits for it)."""
        view = self._done.get()
        if view is None:
            self.close()  # raises the thread's error
        self._busy -= 1
        return view

    def flush(self) -> None:
        pos = self.pos
        if not pos:
            return
        self.pos = 0
        pieces = self.pieces
        self.pieces = 0
        chunk = self.view[:pos]
        if self.sink is not None:
            self.sink(chunk)
        if pos < _CHUNK or pieces > _BULK_PIECES or not _HASH_THREAD:
            while self._busy:  # what the thread holds comes first in the stream
                self._spare.append(self._back())
            self.sha.update(chunk)
            chunk.release()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._hash_loop, name="verify-sha256", daemon=True)
            self._thread.start()
        self._todo.put((self.view, chunk))
        self._busy += 1
        if self._spare:
            self.view = self._spare.pop()
        elif self._buffers < _BUFFERS:
            self._buffers += 1
            self.view = memoryview(bytearray(_CHUNK))
        else:
            self.view = self._back()

    def close(self) -> None:
        """Wait for the hashing thread: self.sha then covers all that was flushed."""
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
            self._busy = 0
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> None:
        n = len(data)
        pos = self.pos
        self.pieces += 1
        if pos + n <= _CHUNK:
            self.view[pos : pos + n] = data
            self.pos = pos + n
            self.size += n
            return
        src = memoryview(data)
        done = 0
        while done < n:
            if self.pos == _CHUNK:
                self.flush()
            take = min(n - done, _CHUNK - self.pos)
            self.view[self.pos : self.pos + take] = src[done : done + take]
            self.pos += take
            done += take
        src.release()
        self.size += n

    def read(self, size: int, fd: int = -1, readinto: Callable[[memoryview], int | None] | None = None):
        """Append a file read to its end (from FD, or by READINTO) and return (bytes, CRC-64).

        Asks for one byte more than the SIZE expected, so that a file of the expected size is
        read with one call (a regular file comes back short only at its end), a grown one shows.
        """
        got = 0
        value = 0
        view = self.view
        pos = self.pos
        try:
            while True:
                if pos == _CHUNK:
                    self.flush()  # the next buffer: another one when a thread hashes
                    view = self.view
                    pos = 0
                want = _CHUNK - pos
                left = size - got + 1
                if 0 < left < want:
                    want = left
                target = view[pos : pos + want]
                n = _readv(fd, (target,)) if readinto is None else readinto(target)
                if not n:
                    break
                value = _crc(target[:n], value)
                pos += n
                self.pos = pos
                self.pieces += 1
                got += n
                if got == size and n < want:
                    break  # short of the byte asked for beyond the expected size: at the end
        finally:
            self.size += got  # what reached the stream, also when a read fails half way
        return got, value


_readv = os.readv
_lstat = os.lstat
_fstat = os.fstat
_S_ISREG = statmod.S_ISREG
_FILE_FLAGS = frozenset(k for k, v in _KIND.items() if v == "file")  # typeflags of regular files
_crc = crc64_iso
_MAX_DIR_FDS = 64  # directory handles a checker keeps open (tar order visits a directory at a time)
LOOKUP_ERRORS = (EvidenceError, OSError, ValueError)


class LayerChecker:
    """Compares the record's file entries with the layer directory, and walks it afterwards.

    Everything goes through the Evidence contract.  Directories of the layer are reached with
    :meth:`Evidence.opendir` and then :meth:`DirHandle.opendir` one component at a time, never
    through a symlink (on a directory evidence each handle holds an O_NOATIME fd, and entries are
    stat()ed, opened and read relative to it); an entry whose parent is not reached that way
    (missing, another type, a symlink where a directory was) is looked up by path instead, as
    the interface resolves paths: every check is made and every difference reported either way."""

    def __init__(
        self, ev: Evidence, top: str, fmt: str, offset: tuple[int, int] | OnDisk, problems: list[LayerProblem]
    ):
        self.ev = ev
        # a record's (uid, gid) as the host keeps it: shifted by a constant OFFSET, or OFFSET itself
        # a function of them (a rootless Podman store's piecewise map: engines/podman/idmap.py)
        self.on_disk: OnDisk = offset if callable(offset) else _shifted(*offset)
        self.top = top
        self.overlay = fmt in ("overlay", "overlay-upper")  # whiteouts are char 0/0 devices
        self.diff_format = fmt in ("overlay", "overlay-upper", "aufs")  # holds only this layer
        self.problems = problems
        self.seen: set[str] = set()  # relative paths the record accounts for
        self.parents: set[str] = set()  # their ancestor directories
        self.opaque: set[str] = set()  # directories with an opaque marker in the record
        self.dirs: dict[str, DirHandle] = {}  # relative directory path -> open handle
        self.top_dir: DirHandle | None
        try:
            self.top_dir = ev.opendir(top)
        except LOOKUP_ERRORS:
            self.top_dir = None  # lookups by path report what is wrong
        self.above_top = DirHandle(ev, posixpath.dirname(top))  # for the layer root's own entry
        # regular files through _fd_file, unless a subclass reads payloads its own way
        self.fd_files = type(self)._payload is LayerChecker._payload

    def close(self) -> None:
        for handle in self.dirs.values():
            handle.close()
        self.dirs.clear()
        if self.top_dir is not None:
            self.top_dir.close()
            self.top_dir = None

    def _problem(self, rel: str, kind: str, detail: str, expected=None, actual=None, host=None) -> None:
        self.problems.append(LayerProblem(rel, kind, detail, expected, actual, host))

    def _host(self, rel: str) -> str:
        return self.top if not rel else self.top + "/" + rel

    def _note(self, rel: str) -> None:
        self.seen.add(rel)
        self._note_parents(rel.rpartition("/")[0])

    def _note_parents(self, rel: str) -> None:
        """REL and its ancestors hold entries of the record."""
        parents = self.parents
        while rel and rel not in parents:
            parents.add(rel)
            rel = rel.rpartition("/")[0]

    def _dir(self, rel: str) -> DirHandle | None:
        """A handle of the layer directory REL, reached component by component (None: not a
        directory there, or a symlink where one was expected)."""
        handle = self.dirs.get(rel)
        if handle is not None:
            return handle
        if not rel:
            return self.top_dir
        if len(self.dirs) >= _MAX_DIR_FDS:
            self.close_dirs()
        parent, _, name = rel.rpartition("/")
        above = self._dir(parent)
        if above is None:
            return None
        try:
            handle = above.opendir(name)
        except LOOKUP_ERRORS:
            return None
        self.dirs[rel] = handle
        return handle

    def close_dirs(self) -> None:
        for handle in self.dirs.values():
            handle.close()
        self.dirs.clear()

    def _where(self, parent: str) -> DirHandle:
        """Where entries of the layer directory PARENT are looked up by name: its handle, or,
        where a walk by handles does not reach it, a lookup by path."""
        handle = self.dirs.get(parent)
        if handle is None:
            handle = self._dir(parent)
            if handle is None:
                handle = DirHandle(self.ev, self._host(parent))
        return handle

    def entry(self, raw: bytes, hdr: TarHeader, size: int, crc: bytes | None, out: _Stream) -> int:
        """Check one file entry; append its payload to OUT; return the bytes appended."""
        if hdr.typeflag == b"g":
            return 0  # a global PAX header Go's reader handed out as a member: nothing on disk
        if raw.find(b"..") >= 0 and any(p == b".." for p in raw.split(b"/")):
            return self._climbs(raw)
        rel = clean_name(raw).decode("utf-8", "surrogateescape")
        parent, _, base = rel.rpartition("/")
        if base.startswith(".wh."):
            if self.overlay:
                return self._whiteout(rel, base, hdr)
            if not self.diff_format:
                return 0  # a snapshot holds the deletion itself: nothing to read
        self.seen.add(rel)
        if parent and parent not in self.parents:
            self._note_parents(parent)
        return self._check(rel, parent, base, hdr, size, crc, out)

    def _check(
        self, rel: str, parent: str, base: str, hdr: TarHeader, size: int, crc: bytes | None, out: _Stream
    ) -> int:
        """Look the entry REL up on the host and compare it with its header."""
        if base:
            where, name = self._where(parent), base
            if size and self.fd_files and type(where) is _FdDir and hdr.typeflag in _FILE_FLAGS:
                done = self._fd_file(rel, where, name, hdr, size, crc, out)
                if done is not None:
                    return done
        else:
            where, name = self.above_top, posixpath.basename(self.top)  # the layer root itself
        host = self._host(rel)
        try:
            st = where.lstat(name)
        except LOOKUP_ERRORS:
            self._problem(
                rel, "missing", f"{hdr.kind} in the record, absent from the layer directory", host=host
            )
            return 0
        kind = hdr.kind
        if kind == "hardlink":
            self._hardlink(rel, hdr, st, host)
            return 0
        if kind != st.kind:
            self._problem(rel, "type", f"recorded {kind}, host has {st.kind}", kind, st.kind, host)
            return self._payload(rel, where, name, size, crc, out)[0] if size and st.is_file else 0
        emitted = 0
        xattrs = None
        if kind == "file" and size:
            emitted, xattrs = self._payload(rel, where, name, size, crc, out)
        elif kind == "dir" and rel:
            handle = self._dir(rel)  # opened now for the entries below it, which come next
            if handle is not None:
                xattrs = handle.xattrs()
        elif kind == "file" and st.size:  # Docker reads nothing for a size-0 entry
            self._problem(rel, "size", "size differs", 0, st.size, host)
        elif kind == "symlink":
            self._symlink(rel, hdr, where, name, host)
        elif kind in ("char", "block"):
            self._device(rel, hdr, st, host)
        if rel:  # the layer root's own metadata is the driver's, not the tar's
            if xattrs is None:
                xattrs = where.xattrs(name)
            self._compare_metadata(rel, hdr, st.mode, st.uid, st.gid, xattrs, host)
        return emitted

    def _fd_file(
        self, rel: str, where: _FdDir, name: str, hdr: TarHeader, size: int, crc: bytes | None, out: _Stream
    ) -> int | None:
        """_check for a regular file entry with content in a directory held by fd: the same
        system calls (lstat, O_NOATIME open, fstat, read, flistxattr) and the same problems,
        without the per-call wrappers.  None (nothing read, nothing reported) when the host
        entry is anything but a regular file opened as one: the general path then decides."""
        dfd = where.fd
        try:
            st = _lstat(name, dir_fd=dfd)
            if not _S_ISREG(st.st_mode):
                return None
            fd = where.evidence._open_fd(_check_name(name), 0, dfd)
        except (OSError, ValueError, EvidenceError):
            return None
        try:
            if not _S_ISREG(_fstat(fd).st_mode):
                return None
            before = out.size
            try:
                got, value = out.read(size, fd)
            except OSError as exc:  # as _payload reports it, then the metadata as _check does
                self._problem(rel, "missing", f"unreadable: {exc}", host=self._host(rel))
                got, value, xattrs = out.size - before, None, None
            else:
                xattrs = _fd_xattrs(fd, follow=True)
        finally:
            os.close(fd)
        if value is not None:
            self._payload_result(rel, size, crc, got, value)
        else:
            xattrs = where.xattrs(name)
        self._compare_metadata(rel, hdr, st.st_mode, st.st_uid, st.st_gid, xattrs, self._host(rel))
        return got

    def _climbs(self, raw: bytes) -> int:
        self._problem(raw.decode("utf-8", "surrogateescape"), "record", "member name climbs out of the layer")
        return 0

    def _device(self, rel: str, hdr: TarHeader, st: FileStat, host: str) -> None:
        have = (os.major(st.rdev), os.minor(st.rdev))
        if have != (hdr.devmajor, hdr.devminor):
            self._problem(
                rel, "device", "device numbers differ", [hdr.devmajor, hdr.devminor], list(have), host
            )

    def _symlink(self, rel: str, hdr: TarHeader, where: DirHandle, name: str, host: str) -> None:
        try:
            target = where.readlink(name)
        except LOOKUP_ERRORS:
            target = None
        want = hdr.linkname.decode("utf-8", "surrogateescape")
        if target != want:
            self._problem(rel, "link", "symlink target differs", want, target, host)

    def _compare_metadata(
        self, rel: str, hdr: TarHeader, mode: int, uid: int, gid: int, xattrs: dict[str, bytes], host: str
    ) -> None:
        if not statmod.S_ISLNK(mode) and (hdr.mode & 0o7777) != (mode & 0o7777):
            self._problem(rel, "mode", "permission bits differ", _octal(hdr.mode), _octal(mode), host)
        want = self.on_disk(hdr.uid, hdr.gid)
        if want != (uid, gid):
            self._problem(rel, "owner", "owner differs", f"{want[0]}:{want[1]}", f"{uid}:{gid}", host)
        if not xattrs and not hdr.xattrs:
            return
        have = {
            k: v
            for k, v in xattrs.items()
            if not k.startswith(_HOST_XATTR_PREFIXES) and (k not in _HOST_XATTRS or k in hdr.xattrs)
        }
        if have != hdr.xattrs:
            changed = sorted(k for k in set(have) | set(hdr.xattrs) if have.get(k) != hdr.xattrs.get(k))
            self._problem(
                rel,
                "xattr",
                "extended attributes differ: " + ", ".join(changed),
                {k: hdr.xattrs[k].hex() for k in changed if k in hdr.xattrs},
                {k: have[k].hex() for k in changed if k in have},
                host,
            )

    def _payload(
        self, rel: str, where: DirHandle, name: str, size: int, crc: bytes | None, out: _Stream
    ) -> tuple[int, dict[str, bytes] | None]:
        """Stream the file (all of it, as Docker would) into OUT, checking size and CRC; the bytes
        appended and the file's xattrs, read while it is open (None when it could not be)."""
        before = out.size
        xattrs = None
        try:
            with where.open(name) as fh:
                got, value = out.read(size, readinto=fh.readinto)
                xattrs = where.file_xattrs(fh, name)
        except LOOKUP_ERRORS as exc:
            self._problem(rel, "missing", f"unreadable: {exc}", host=self._host(rel))
            return out.size - before, xattrs
        self._payload_result(rel, size, crc, got, value)
        return got, xattrs

    def _payload_result(self, rel: str, size: int, crc: bytes | None, got: int, value: int) -> None:
        if got != size:
            self._problem(rel, "size", "size differs", size, got, self._host(rel))
        elif crc is not None and crc64_bytes(value) != crc:
            self._problem(
                rel,
                "content",
                "CRC-64 of the content differs",
                crc.hex(),
                crc64_bytes(value).hex(),
                self._host(rel),
            )

    def _hardlink(self, rel: str, hdr: TarHeader, st: FileStat, host: str) -> None:
        target_rel = clean_name(hdr.linkname).decode("utf-8", "surrogateescape")
        try:
            target = self.ev.lstat(self._host(target_rel))
        except (EvidenceError, OSError):
            self._problem(rel, "link", f"hard link target {target_rel} is absent", target_rel, None, host)
            return
        if (target.ino, target.dev) != (st.ino, st.dev):
            self._problem(rel, "link", f"no longer a hard link of {target_rel}", target_rel, None, host)

    def _whiteout(self, rel: str, base: str, hdr: TarHeader) -> int:
        parent = posixpath.dirname(rel)
        if base == ".wh..wh..opq":
            self.opaque.add(parent)
            xattrs = self.ev.xattrs(self._host(parent))
            if not any(xattrs.get(k) == b"y" for k in _OPAQUE):
                self._problem(
                    parent, "xattr", "opaque-directory marker missing", "y", None, self._host(parent)
                )
            return 0
        if base.startswith(".wh..wh."):
            return 0  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.orph): not materialised by overlay
        target = posixpath.join(parent, base[4:])
        self._note(target)
        host = self._host(target)
        try:
            st = self.ev.lstat(host)
        except (EvidenceError, OSError):
            self._problem(
                target, "missing", "whiteout in the record, absent from the layer directory", host=host
            )
            return 0
        if not statmod.S_ISCHR(st.mode) or st.rdev != 0:
            self._problem(target, "type", "whiteout (char 0/0) in the record", "whiteout", st.kind, host)
        elif self.on_disk(hdr.uid, hdr.gid) != (st.uid, st.gid):
            want = "{}:{}".format(*self.on_disk(hdr.uid, hdr.gid))
            self._problem(target, "owner", "whiteout owner differs", want, f"{st.uid}:{st.gid}", host)
        return 0

    def walk(self) -> None:
        """Entries of the layer directory the record does not account for (diff layouts only):
        top-down, name-sorted, never through a symlink; an entry is stat()ed only when it is
        reported."""
        if not self.diff_format:
            return
        top = normalize(self.top)
        seen = self.seen
        parents = self.parents
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            where = self._dir(rel_dir)
            if where is None:
                continue
            try:
                listing = sorted(where.names())
            except LOOKUP_ERRORS:
                continue
            prefix = rel_dir + "/" if rel_dir else ""
            subdirs = []
            for name, is_dir in listing:
                rel = prefix + name
                if is_dir:
                    subdirs.append(rel)
                    if self.overlay and rel not in self.opaque and self._is_opaque(where.xattrs(name)):
                        detail = "opaque-directory marker not in the record"
                        self._problem(rel, "xattr", detail, None, "y", top + "/" + rel)
                    if rel in seen or rel in parents:
                        continue
                elif rel in seen:
                    continue
                try:
                    st = where.lstat(name)
                except LOOKUP_ERRORS:
                    continue  # vanished while listing (live host)
                self._added(rel, st.mode, st.size, st.uid, st.gid, st.rdev, top + "/" + rel)
            stack.extend(reversed(subdirs))

    @staticmethod
    def _is_opaque(xattrs: dict[str, bytes]) -> bool:
        """Whether a directory's xattrs carry an overlay opaque marker ("y")."""
        return any(xattrs.get(k) == b"y" for k in _OPAQUE)

    def _added(self, rel: str, mode: int, size: int, uid: int, gid: int, rdev: int, host: str) -> None:
        """An entry on the host the record does not hold (an overlay 0/0 char device: a whiteout)."""
        what = file_kind(mode)
        if self.overlay and statmod.S_ISCHR(mode) and rdev == 0:
            what = "whiteout"
        self._problem(
            rel,
            "added",
            f"{what} on the host, absent from the record",
            None,
            {"type": what, "size": size, "mode": _octal(mode), "owner": f"{uid}:{gid}"},
            host,
        )


# ---- images ---------------------------------------------------------------------------------


def hash_config(ev: Evidence, path: str) -> tuple[str, bytes]:
    """(sha256 of the image config at PATH, its first 64 MiB): the id it must equal."""
    h = hashlib.sha256()
    chunks: list[bytes] = []
    with ev.open(path) as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
            if sum(map(len, chunks)) < 64 << 20:
                chunks.append(block)
    return "sha256:" + h.hexdigest(), b"".join(chunks)


def config_diff_ids(data: bytes, path: str) -> list[str]:
    """The rootfs diff ids of an image config (OCI image-spec config.md); ValueError when it is
    not JSON, nested too deep, or holds them in a field of the wrong type."""
    typed: list = []
    diff_ids = untrusted_json.load(data, path, typed).obj("rootfs").list_of_str("diff_ids") or []
    if typed:
        raise ValueError(typed[0].message)
    return diff_ids


def verify_image_ids(
    host: DockerHost, layers: Iterable[LayerVerdict] | None = None, image_ref: str | Image | None = None
) -> list[ImageVerdict]:
    """Recompute every image id (sha256 of its config blob) and check its layer chain.

    With LAYERS (verify_host's verdicts) an image using a tampered layer is tampered, one using
    an unverifiable layer is unverifiable."""
    if isinstance(image_ref, str):
        only = host.image(image_ref).id
    else:
        only = image_ref.id if image_ref is not None else None
    by_layer = {(v.data_root, v.chain_id): v for v in layers or []}
    tags = {(i.data_root, i.id): i.tags for i in host.images()}
    out: list[ImageVerdict] = []
    for root in host.roots:
        if root.layout != "v2":
            continue
        for driver in root.drivers():
            content = root.join("image", driver, "imagedb", "content", "sha256")
            try:
                names = sorted(root.evidence.listdir(content))
            except (EvidenceError, OSError):
                continue
            layerdb = root.layers(driver)
            for name in names:
                image_id = "sha256:" + name
                if only is not None and image_id != only:
                    continue
                path = posixpath.join(content, name)
                iv = ImageVerdict(image_id, UNVERIFIABLE, tags.get((root.path, image_id), []))
                iv.config_path, iv.data_root, iv.driver = path, root.path, driver
                out.append(iv)
                try:
                    iv.computed_id, data = hash_config(root.evidence, path)
                    diff_ids = config_diff_ids(data, path)
                except (EvidenceError, OSError, ValueError) as exc:
                    iv.problems.append(ImageProblem("unreadable", f"image config unreadable: {exc}"))
                    continue
                if iv.computed_id != image_id:
                    iv.problems.append(
                        ImageProblem("config-digest", f"config hashes to {iv.computed_id}, not to its id")
                    )
                chain = None
                for d in diff_ids:
                    chain = (
                        d
                        if chain is None
                        else "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
                    )
                    iv.chain_ids.append(chain)
                    info = layerdb.get(chain)
                    if info is None:
                        iv.problems.append(
                            ImageProblem("missing-layer", f"layer {chain} not in layerdb", chain)
                        )
                        continue
                    if info.diff_id != d:
                        iv.problems.append(
                            ImageProblem(
                                "layer-diff-id", f"layerdb says diff id {info.diff_id}, config {d}", chain
                            )
                        )
                    lv = by_layer.get((root.path, chain))
                    if lv is not None and lv.status != OK:
                        kind = "layer-tampered" if lv.status == TAMPERED else "layer-unverifiable"
                        iv.problems.append(ImageProblem(kind, lv.reason or f"layer {lv.status}", chain))
                iv.status = image_status(iv.problems)
    return out


#: image problem kinds that keep an image from being checked; every other kind is tampering
_UNCHECKED_KINDS = ("layer-unverifiable", "missing-layer", "unreadable")


def image_status(problems: list[ImageProblem]) -> str:
    """An image's verdict from its problems (a host's or an archive's): ``tampered`` when one
    shows tampering (config digest, diff id, a tampered layer), ``unverifiable`` when one only
    keeps it from being checked (a missing or unverifiable layer, an unreadable config), else ``ok``."""
    if any(p.kind not in _UNCHECKED_KINDS for p in problems):
        return TAMPERED
    return UNVERIFIABLE if problems else OK


# ---- findings -------------------------------------------------------------------------------


def findings(layers: Iterable[LayerVerdict], images: Iterable[ImageVerdict] = ()) -> list[Finding]:
    """Tampered and unverifiable layers and images as findings, with evidence pointers."""
    out: list[Finding] = []
    for v in layers:
        if v.status == OK:
            continue
        users = {"images": v.images, "containers": v.containers}
        if v.status == TAMPERED:
            paths = [p for p in v.problems if p.path is not None]
            kinds = sorted({p.kind for p in v.problems})
            out.append(
                Finding(
                    severity="high",
                    title=f"image layer tampered on the host: {len(v.problems)} difference(s) "
                    f"({', '.join(kinds)})",
                    subject=v.chain_id,
                    evidence=[x for x in [v.tar_split, v.layer_path] if x]
                    + [p.host_path for p in paths if p.host_path][:100],
                    details={
                        "diff_id": v.diff_id,
                        "computed_diff_id": v.computed_diff_id,
                        "cache_id": v.cache_id,
                        "problems": [
                            {"path": p.path, "kind": p.kind, "detail": p.detail} for p in v.problems
                        ],
                        **users,
                    },
                )
            )
        else:
            out.append(
                Finding(
                    severity="medium",
                    title=f"image layer cannot be verified: {v.reason}",
                    subject=v.chain_id,
                    evidence=[x for x in [v.tar_split, v.layer_path] if x],
                    details={"diff_id": v.diff_id, "cache_id": v.cache_id, "reason": v.reason, **users},
                )
            )
    for iv in images:
        if iv.status == OK:
            continue
        out.append(
            Finding(
                severity="high" if iv.status == TAMPERED else "medium",
                title=f"image {iv.status}: " + "; ".join(sorted({p.kind for p in iv.problems})),
                subject=iv.id,
                evidence=[iv.config_path] if iv.config_path else [],
                details={
                    "tags": iv.tags,
                    "computed_id": iv.computed_id,
                    "problems": [
                        {"kind": p.kind, "detail": p.detail, "chain_id": p.chain_id} for p in iv.problems
                    ],
                },
            )
        )
    return out
