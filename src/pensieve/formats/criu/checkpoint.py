"""A CRIU checkpoint directory (``criu dump -D DIR``), read without CRIU.

Which images describe what (CRIU 3.x and 4.x):

* ``inventory.img`` -- image version, root task ids; ``pstree.img`` -- pid, ppid, pgid, sid,
  threads of every task.
* ``core-<tid>.img`` -- per thread: ``tc`` (task_state, exit_code, comm, blocked signals ...) in
  the main thread's core, ``thread_core`` (creds since CRIU 3.x; older dumps have
  ``creds-<pid>.img``), ``ids`` (namespace and resource ids).
* ``ids-<pid>.img`` -- ``files_id``, ``fs_id``, ``vm_id`` ...; ``fs-<pid>.img`` -- cwd/root file ids;
  ``mm-<pid>.img`` -- VMAs, argument/environment bounds, exe file id.
* ``fdinfo-<n>.img`` -- (fd, file id, type, flags) per descriptor, keyed by ``files_id`` when the
  inventory says ``fdinfo_per_id`` (older dumps: by pid).
* files: CRIU 4.x writes every file description into ``files.img`` (``file_entry`` with a type
  and one sub-message); older CRIU wrote one image per kind (``reg-files.img``, ``inetsk.img``,
  ``unixsk.img``, ``pipes.img`` ...).  Both are read and merged by id.
* ``pagemap-<pid>.img`` + ``pages-<pages_id>.img`` -- memory; ``parent`` -- symlink to the
  previous (pre-)dump of an incremental chain.
* ``tcp-stream-<ino>.img``, ``sk-queues.img``, ``pipes-data.img``, ``fifo-data.img`` -- queued
  data; ``remap-fpath.img`` + ``ghost-file-<id>.img`` -- deleted-but-open files and their content.

Task states (``criu/include/pid.h``, ``compel/include/uapi/task-state.h``): 1 alive, 2 dead,
3 stopped, 4 helper, 5 thread, 6 zombie (compel's value).  CRIU writes a zombie's core with
TASK_DEAD (2) and its raw wait status as ``exit_code``; restore re-creates it as a zombie, so
pensieve names both 2 and 6 "zombie".
"""

from __future__ import annotations

import bisect
import io
import mmap
import os
import posixpath
import struct

from pensieve.evidence.base import Evidence, EvidenceError, NotFound
from pensieve.formats.criu.images import (
    IMG_COMMON,
    MAGIC_BY_NAME,
    MAX_IMAGE_SIZE,
    CriuImageError,
    Image,
    parse_first,
    parse_image,
    parse_partial,
)
from pensieve.formats.criu.schemas import SCHEMAS
from pensieve.formats.protobuf_schema import ProtobufError, decode
from pensieve.records.core import field, record

_U32 = struct.Struct("<I")

PAGE_SIZE = 4096

TASK_STATES = {0: "undef", 1: "alive", 2: "zombie", 3: "stopped", 4: "helper", 5: "thread", 6: "zombie"}

FD_TYPES = {
    0: "und",
    1: "reg",
    2: "pipe",
    3: "fifo",
    4: "inetsk",
    5: "unixsk",
    6: "eventfd",
    7: "eventpoll",
    8: "inotify",
    9: "signalfd",
    10: "packetsk",
    11: "tty",
    12: "fanotify",
    13: "netlinksk",
    14: "ns",
    15: "tunf",
    16: "ext",
    17: "timerfd",
    18: "memfd",
    19: "bpfmap",
    20: "pidfd",
    65534: "ctl_tty",
    65535: "autofs_pipe",
}
#: file_entry sub-message per fd type, and the pre-files.img image holding that kind
FILE_KINDS = {
    1: ("reg", "reg-files.img"),
    2: ("pipe", "pipes.img"),
    3: ("fifo", "fifo.img"),
    4: ("isk", "inetsk.img"),
    5: ("usk", "unixsk.img"),
    6: ("efd", "eventfd.img"),
    7: ("epfd", "eventpoll.img"),
    8: ("ify", "inotify.img"),
    9: ("sgfd", "signalfd.img"),
    10: ("psk", "packetsk.img"),
    11: ("tty", "tty.img"),
    12: ("ffy", "fanotify.img"),
    13: ("nlsk", "netlinksk.img"),
    14: ("nsf", "ns-files.img"),
    15: ("tunf", "tunfile.img"),
    16: ("ext", "ext-files.img"),
    17: ("tfd", "timerfd.img"),
    18: ("memfd", None),
    19: ("bpf", "bpfmap-file.img"),
    20: ("pidfd", None),
}

#: field filters (protobuf.decode ``only``) of a file's id and regular-file name
_REG_NAME = {1: None, 6: None}  # reg_file_entry: id, name
_FILE_NAME = {2: None, 3: _REG_NAME}  # file_entry: id, reg

PE_PARENT = 1 << 0
PE_LAZY = 1 << 1
PE_PRESENT = 1 << 2

#: parent chains longer than this are refused (a symlink loop otherwise)
MAX_PARENT_DEPTH = 64
#: read_memory refuses larger requests
MAX_READ = 256 << 20


_PAGEMAP_HEAD = struct.pack("<II", IMG_COMMON, MAGIC_BY_NAME["PAGEMAP"])
_M32, _M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def _fast_pagemap(data: bytes) -> tuple[int, list[tuple[int, int, int, int]]] | None:
    """(pages_id, [(vaddr, nr_pages, flags, entry offset)]) of a pagemap image written the usual
    way (pagemap_head, then entries holding only pagemap_entry's own varint fields), decoded
    without the generic decoder; None for anything else (the generic decoder then reads it and
    reports what is wrong).  The same values as parse_image + Checkpoint.pagemap's defaults."""
    if not data.startswith(_PAGEMAP_HEAD) or len(data) < 12:
        return None
    size = _U32.unpack_from(data, 8)[0]
    pos = 12 + size
    if pos > len(data):
        return None
    try:
        pages_id = decode(data, "pagemap_head", SCHEMAS, 12, pos).get("pages_id", 0)
    except ProtobufError:
        return None
    out = []
    n = len(data)
    while pos < n:
        entry_at = pos
        if n - pos < 4:
            return None
        p = pos + 4
        q = p + _U32.unpack_from(data, pos)[0]
        if q > n:
            return None
        # by field number: 1 vaddr, 2 compat_nr_pages, 3 in_parent, 4 flags, 5 nr_pages
        values: list[int | None] = [None, 0, None, None, None, None]
        while p < q:
            key = data[p]
            if key & 7 or not 8 <= key <= 40 or p + 1 >= q:
                return None
            v = data[p + 1]
            p += 2
            if v >= 0x80:
                v &= 0x7F
                shift = 7
                while True:
                    if p >= q or shift >= 70:
                        return None
                    b = data[p]
                    p += 1
                    v |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                v &= _M64
            values[key >> 3] = v
        _, vaddr, compat, in_parent, flags, nr = values
        if nr is None:
            nr = compat & _M32 if compat is not None else 0
        # images before the flags field: in_parent or present
        flags = flags & _M32 if flags is not None else PE_PARENT if in_parent else PE_PRESENT
        out.append((vaddr, nr, flags, entry_at))
        pos = q
    return pages_id, out


@record
class PageRun:
    vaddr: int
    nr_pages: int
    flags: int
    offset: int | None  # byte offset in the pages file when PE_PRESENT


@record
class Task:
    pid: int
    ppid: int
    pgid: int
    sid: int
    threads: list[int] = field(default_factory=list)
    core: dict = field(default_factory=dict)  # main thread core_entry
    thread_cores: dict[int, dict] = field(default_factory=dict)


class CheckpointStore:
    """Where a checkpoint's image files are: a directory of an evidence, or one inside an archive.

    ``path`` names the checkpoint for people; ``names()`` lists the image files; ``read`` returns
    a whole (small) image, ``pread`` a slice of a big one (pages), ``size`` a file's length,
    ``map`` a read-only memory map of one (scans of pages files); ``parent()`` the store of the
    ``parent`` checkpoint when the chain lives in the same place (CriuImageError when the link is
    refused); ``boundaries()`` the host paths no output may be written into.
    """

    path: str

    @property
    def key(self) -> str:
        """What tells two stores apart (a parent chain that comes back to one is a loop)."""
        return self.path

    def names(self) -> set[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def where(self, name: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, name: str, limit: int = MAX_IMAGE_SIZE) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def size(self, name: str) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def pread(self, name: str, offset: int, size: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def map(self, name: str) -> tuple[mmap.mmap, int, int] | None:
        """(mapping, base, size): file NAME is ``mapping[base : base + size]``, read-only; None
        when it cannot be mapped (empty, not a regular file): read it with ``pread`` then."""
        return None

    def parent(self) -> CheckpointStore | None:
        return None

    def boundaries(self) -> list[str]:
        return []


#: symlinks followed while resolving one path inside the evidence
_MAX_HOPS = 40


def _inside(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


def resolve_inside(evidence: Evidence, path: str, what: str = "path") -> str:
    """PATH (absolute, in EVIDENCE) with every symlink in it resolved inside the evidence: an
    absolute target is re-rooted at the evidence root, a ``..`` that would climb above the root
    is refused (CriuImageError), at most ``_MAX_HOPS`` links are followed.  Iterative, so a long
    chain or a loop of links ends with an error, never a recursion."""
    todo = [p for p in path.split("/") if p]
    todo.reverse()
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if not done:
                raise CriuImageError(f"{what} leads outside the evidence", path)
            done.pop()
            continue
        here = "/" + "/".join([*done, part])
        try:
            st = evidence.lstat(here)
        except NotFound:
            done.append(part)  # missing: the caller's own open says so
            continue
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot resolve {what}: {exc}", path) from None
        if not st.is_symlink:
            done.append(part)
            continue
        hops += 1
        if hops > _MAX_HOPS:
            raise CriuImageError(f"{what}: more than {_MAX_HOPS} symbolic links", path)
        try:
            target = evidence.readlink(here)
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot resolve {what}: {exc}", path) from None
        if target.startswith("/"):
            done = []
        todo.extend(reversed([p for p in target.split("/") if p]))
    return "/" + "/".join(done)


class EvidenceStore(CheckpointStore):
    """A checkpoint directory inside an :class:`~pensieve.evidence.base.Evidence`: a CRIU image
    directory given as SOURCE (``open_evidence(DIR)``, the checkpoint at ``/``) or a Docker
    checkpoint in a data root (``containers/<id>/checkpoints/NAME``).

    Every byte is read through the evidence (read-only, never through a final symlink, no
    atime where the kernel allows); pages files are memory-mapped from the file object the
    evidence opened when it has a real descriptor (directories), read with ``pread`` otherwise.
    The ``parent`` chain may not leave BOUNDARY (an evidence path, default: the evidence root).
    ``boundaries()`` are the evidence's and PROTECT (more host paths no output may touch).
    """

    def __init__(
        self,
        evidence: Evidence,
        directory: str = "/",
        boundary: str | None = None,
        label: str | None = None,
        protect: list[str] | None = None,
    ) -> None:
        self.evidence = evidence
        self.protect = list(protect or [])
        self.dir = resolve_inside(evidence, directory, "checkpoint directory")
        self.boundary = resolve_inside(evidence, boundary, "boundary") if boundary else "/"
        if not evidence.is_dir(self.dir):
            raise CriuImageError("not a checkpoint directory", label or directory)
        self.path = label or self._show(self.dir)

    @classmethod
    def on_host(cls, path: str | os.PathLike, boundary: str | os.PathLike | None = None) -> EvidenceStore:
        """The checkpoint directory PATH on this host, read as directory evidence rooted at
        BOUNDARY (default: the directory holding PATH, which its ``parent`` chain may not leave)."""
        from pensieve.evidence.directory import DirectoryEvidence

        real = os.path.realpath(path)
        if not os.path.isdir(real):
            raise CriuImageError("not a checkpoint directory", os.fspath(path))
        top = os.path.realpath(boundary) if boundary is not None else os.path.dirname(real)
        rel = os.path.relpath(real, top)
        if rel == ".." or rel.startswith("../"):
            raise CriuImageError(f"checkpoint is outside its boundary {top}", os.fspath(path))
        try:
            evidence = DirectoryEvidence(top)
        except EvidenceError as exc:
            raise CriuImageError(str(exc), os.fspath(path)) from None
        return cls(evidence, "/" if rel == "." else "/" + rel, label=os.fspath(path))

    @property
    def key(self) -> str:
        return f"{id(self.evidence)}:{self.dir}"

    def _show(self, path: str) -> str:
        host = self.evidence.host_path(path)
        return host if host is not None else f"{self.evidence.description}:{path}"

    def _at(self, name: str) -> str:
        return self.dir.rstrip("/") + "/" + name

    def boundaries(self) -> list[str]:
        return self.evidence.boundaries() + self.protect

    def names(self) -> set[str]:
        try:
            return set(self.evidence.listdir(self.dir))
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot list: {exc}", self.path) from None

    def where(self, name: str) -> str:
        return self._show(self._at(name))

    def read(self, name: str, limit: int = MAX_IMAGE_SIZE) -> bytes:
        path = self._at(name)
        try:
            st = self.evidence.lstat(path)
            if not st.is_file:
                raise CriuImageError(f"not a regular file ({st.kind})", self.where(name))
            if st.size > limit:
                raise CriuImageError(f"image larger than {limit} bytes ({st.size})", self.where(name))
            data = self.evidence.read_bytes(path, limit + 1)
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot read: {exc}", self.where(name)) from None
        if len(data) > limit:
            raise CriuImageError(f"image larger than {limit} bytes", self.where(name))
        return data

    def size(self, name: str) -> int:
        try:
            return self.evidence.lstat(self._at(name)).size
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot stat: {exc}", self.where(name)) from None

    def _open(self, name: str):
        try:
            return self.evidence.open(self._at(name))
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot open: {exc}", self.where(name)) from None

    def map(self, name: str) -> tuple[mmap.mmap, int, int] | None:
        try:
            fh = self._open(name)
        except CriuImageError:
            return None
        with fh:
            try:
                fd = fh.fileno()
                size = os.fstat(fd).st_size
                if size == 0:
                    return None
                return mmap.mmap(fd, size, access=mmap.ACCESS_READ), 0, size
            except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
                return None  # no descriptor of its own (disk images): pread then

    def pread(self, name: str, offset: int, size: int) -> bytes:
        with self._open(name) as fh:
            try:
                fd = fh.fileno()
            except (OSError, AttributeError, io.UnsupportedOperation):
                fd = None
            chunks = []
            try:
                if fd is None:
                    fh.seek(offset)
                while size > 0:
                    chunk = os.pread(fd, size, offset) if fd is not None else fh.read(size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    offset += len(chunk)
                    size -= len(chunk)
            except (EvidenceError, OSError) as exc:
                raise CriuImageError(f"cannot read: {exc}", self.where(name), offset) from None
            return b"".join(chunks)

    def parent(self) -> EvidenceStore | None:
        """The ``parent`` checkpoint: a symlink (relative, resolved inside the evidence) or a
        directory; refused when absolute, outside the boundary, or this checkpoint itself."""
        link = self._at("parent")
        where = self.where("parent")
        try:
            st = self.evidence.lstat(link)
            if st.is_symlink:
                target = self.evidence.readlink(link)
                if target.startswith("/"):
                    raise CriuImageError(f"parent link is absolute ({target!r}): refused", where)
                resolved = resolve_inside(self.evidence, posixpath.join(self.dir, target), "parent")
            elif st.is_dir:
                resolved = link
            else:
                raise CriuImageError("parent is neither a symlink nor a directory", where)
        except (EvidenceError, OSError) as exc:
            raise CriuImageError(f"cannot resolve parent: {exc}", where) from None
        except CriuImageError as exc:
            if exc.path == where:
                raise
            raise CriuImageError(f"{exc.message} ({self._show(self.boundary)})", where) from None
        if not _inside(resolved, self.boundary):
            raise CriuImageError(
                f"parent {self._show(resolved)} is outside the evidence ({self._show(self.boundary)})", where
            )
        if resolved == self.dir:
            raise CriuImageError("parent link points at its own checkpoint", where)
        if not self.evidence.is_dir(resolved):
            raise CriuImageError(f"parent {self._show(resolved)} is not a directory", where)
        return EvidenceStore(self.evidence, resolved, self.boundary, protect=self.protect)


class Checkpoint:
    """Lazy, read-only access to one checkpoint, through its :class:`CheckpointStore`.

    ``Checkpoint(store=EvidenceStore(evidence, directory, boundary))`` reads a checkpoint
    directory of an evidence; ``Checkpoint(PATH, BOUNDARY)`` is the same for a directory on this
    host (:meth:`EvidenceStore.on_host`: the evidence is BOUNDARY, default the directory holding
    PATH, and the ``parent`` chain may not leave it).
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        boundary: str | os.PathLike | None = None,
        store: CheckpointStore | None = None,
        _depth: int = 0,
        _seen: frozenset[str] = frozenset(),
    ):
        self._depth = _depth
        if store is None:
            if path is None:
                raise TypeError("Checkpoint needs a path or a store")
            store = EvidenceStore.on_host(path, boundary)
        self.store = store
        self.path = store.path
        self._seen = _seen | {store.key}
        self.protect: list[str] = []
        self._cache: dict[str, Image | None] = {}
        self._partial: dict[tuple, dict | list | None] = {}
        self._reg_files: dict[int, dict] | None = None
        self._bad_cores: set[str] = set()
        self.names = store.names()
        if "inventory.img" not in self.names:
            raise CriuImageError("no inventory.img: not a CRIU checkpoint", self.path)
        self.problems: list[str] = []
        self._tasks: list[Task] | None = None
        self._files: dict[int, dict] | None = None
        self._pagemaps: dict[int, tuple[int, list[PageRun]]] = {}
        self._parent: Checkpoint | None | bool = False
        self._parent_error: CriuImageError | None = None
        self._parent_refused = False

    def note(self, problem: str) -> None:
        """Record PROBLEM once (a view and a scan may both meet the same bad image)."""
        if problem not in self.problems:
            self.problems.append(problem)

    def boundaries(self) -> list[str]:
        """Host paths that are this checkpoint's evidence (no output may be written there): the
        store's, and ``protect`` (what the opener adds, e.g. the archive file it came from)."""
        return self.store.boundaries() + self.protect

    # ---- image access ----------------------------------------------------------------------

    def file(self, name: str) -> str:
        """Where image NAME is (a path, or ARCHIVE:MEMBER): for messages and directory reads."""
        return self.store.where(name)

    def image(self, name: str, required: bool = False) -> Image | None:
        """The decoded image NAME, or None when absent (CriuImageError when REQUIRED)."""
        if name in self._cache:
            img = self._cache[name]
        else:
            img = None
            if name in self.names:
                img = parse_image(self.store.read(name), self.file(name))
            self._cache[name] = img
        if img is None and required:
            raise CriuImageError(f"missing {name}", self.path)
        return img

    def entries(self, name: str) -> list[dict]:
        img = self.image(name)
        return img.entries if img is not None else []

    def entry(self, name: str, only: dict | None = None) -> dict | None:
        """The first entry of image NAME (None when absent or empty).  With the field filter ONLY
        (see :func:`~pensieve.formats.protobuf_schema.decode`; keep it a module constant: it is
        cached by identity) just those fields are decoded; a full decode already made serves as
        is (it holds them all)."""
        if only is None or name in self._cache:
            got = self.entries(name)
            return got[0] if got else None
        key = (name, id(only))
        if key in self._partial:
            return self._partial[key]
        got = None
        if name in self.names:
            got = parse_first(self.store.read(name), only, self.file(name))
        self._partial[key] = got
        return got

    def entries_only(self, name: str, only: dict) -> list[dict]:
        """Every entry of image NAME through the field filter ONLY (a module constant: cached by
        identity); a full decode already made serves as is."""
        if name in self._cache:
            return self.entries(name)
        key = (name, id(only), "all")
        if key not in self._partial:
            got = parse_partial(self.store.read(name), only, self.file(name)) if name in self.names else []
            self._partial[key] = got  # type: ignore[assignment]
        return self._partial[key]  # type: ignore[return-value]

    def try_entries(self, name: str) -> list[dict]:
        """Like entries() but a corrupt optional image becomes a problem, not an error."""
        try:
            return self.entries(name)
        except CriuImageError as exc:
            self.problems.append(str(exc))
            self._cache[name] = None
            return []

    # ---- inventory, tasks ------------------------------------------------------------------

    @property
    def inventory(self) -> dict:
        entries = self.image("inventory.img", required=True).entries
        if not entries:
            raise CriuImageError("empty inventory", self.file("inventory.img"))
        return entries[0]

    def tasks(self) -> list[Task]:
        if self._tasks is None:
            tasks = []
            for e in self.image("pstree.img", required=True).entries:
                pid = e.get("pid", 0)
                t = Task(pid, e.get("ppid", 0), e.get("pgid", 0), e.get("sid", 0), list(e.get("threads", [])))
                cores = self.entries(f"core-{pid}.img")
                t.core = cores[0] if cores else {}
                for tid in t.threads:
                    if tid == pid:
                        t.thread_cores[tid] = t.core
                        continue
                    c = self.thread_core(tid)
                    if c is not None:
                        t.thread_cores[tid] = c
                tasks.append(t)
            self._tasks = tasks
        return self._tasks

    def pstree(self) -> list[dict]:
        """pstree.img's entries (pid, ppid, pgid, sid, threads), cores not read."""
        return self.image("pstree.img", required=True).entries

    def thread_core(self, tid: int) -> dict | None:
        """The core of (non-main) thread TID, None when it has none; a corrupt one is a problem
        (recorded once), not an error."""
        name = f"core-{tid}.img"
        if name in self._bad_cores:
            return None
        try:
            c = self.entries(name)
        except CriuImageError as exc:
            self.problems.append(str(exc))
            self._bad_cores.add(name)
            return None
        return c[0] if c else None

    def task(self, pid: int) -> Task:
        for t in self.tasks():
            if t.pid == pid:
                return t
        raise KeyError(pid)

    def ids(self, pid: int) -> dict:
        got = self.entries(f"ids-{pid}.img")
        if got:
            return got[0]
        core = self.task(pid).core
        return core.get("ids", {})

    def mm(self, pid: int) -> dict | None:
        got = self.entries(f"mm-{pid}.img")
        return got[0] if got else None

    def fs(self, pid: int) -> dict | None:
        got = self.entries(f"fs-{pid}.img")
        return got[0] if got else None

    def creds(self, pid: int) -> dict | None:
        core = self.task(pid).core
        creds = core.get("thread_core", {}).get("creds")
        if creds is not None:
            return creds
        got = self.entries(f"creds-{pid}.img")
        return got[0] if got else None

    def fdinfo(self, pid: int) -> list[dict]:
        if self.inventory.get("fdinfo_per_id"):
            files_id = self.ids(pid).get("files_id")
            if files_id is None:
                return []
            return self.entries(f"fdinfo-{files_id}.img")
        return self.entries(f"fdinfo-{pid}.img")

    # ---- files -----------------------------------------------------------------------------

    def files(self) -> dict[int, dict]:
        """Every file description by id: ``{"type": n, "id": id, "<kind>": {...}}``."""
        if self._files is None:
            out: dict[int, dict] = {}
            for e in self.entries("files.img"):
                out[e.get("id", 0)] = e
            for ftype, (key, legacy) in FILE_KINDS.items():
                if legacy is None:
                    continue
                for e in self.entries(legacy):
                    fid = e.get("id", 0)
                    out.setdefault(fid, {"type": ftype, "id": fid, key: e})
            self._files = out
        return self._files

    def reg_files(self) -> dict[int, dict]:
        """Like :meth:`files` for naming regular files (a mapping's, a task's exe, cwd, root):
        the same entries by id, but of each only its id and ``reg.name`` are decoded."""
        if self._files is not None:
            return self._files
        if self._reg_files is None:
            out: dict[int, dict] = {}
            for e in self.entries_only("files.img", _FILE_NAME):
                out[e.get("id", 0)] = e
            for e in self.entries_only(FILE_KINDS[1][1], _REG_NAME):  # reg-files.img (CRIU < 4)
                fid = e.get("id", 0)
                out.setdefault(fid, {"type": 1, "id": fid, "reg": e})
            self._reg_files = out
        return self._reg_files

    def remaps(self) -> dict[int, dict]:
        return {e.get("orig_id"): e for e in self.entries("remap-fpath.img")}

    def ghost(self, remap_id: int) -> dict | None:
        name = f"ghost-file-{remap_id:x}.img"
        img = self.image(name)
        if img is None or not img.entries:
            return None
        head = dict(img.entries[0])
        if head.get("chunks"):
            size = head.get("size") or 0
            chunks = img.entries[1:]
            end = max([c.get("off", 0) + c.get("len", 0) for c in chunks] + [size])
            if end > MAX_READ:
                raise CriuImageError(f"ghost file of {end} bytes", self.file(name))
            data = bytearray(end)
            for c in chunks:
                off = c.get("off", 0)
                data[off : off + len(c["extra"])] = c["extra"]
            head["extra"] = bytes(data)
        return head

    # ---- memory ----------------------------------------------------------------------------

    def parent(self) -> Checkpoint | None:
        """The previous checkpoint of the chain (``parent``), kept inside the store's boundary;
        CriuImageError (every time it is asked) when the link is refused: absolute, outside the
        boundary, a loop, too deep."""
        if self._parent_error is not None:
            raise self._parent_error
        if self._parent is not False:
            return self._parent  # type: ignore[return-value]
        try:
            self._parent = self._open_parent()
        except CriuImageError as exc:
            self._parent_error = exc
            raise
        return self._parent

    def _open_parent(self) -> Checkpoint | None:
        if "parent" not in self.names:
            return None
        parent_store = self.store.parent()
        if parent_store is None:
            return None
        if self._depth >= MAX_PARENT_DEPTH:
            raise CriuImageError(f"parent chain deeper than {MAX_PARENT_DEPTH}", self.file("parent"))
        if parent_store.key in self._seen:
            raise CriuImageError(f"parent chain loops back to {parent_store.path}", self.file("parent"))
        return Checkpoint(store=parent_store, _depth=self._depth + 1, _seen=self._seen)

    def settle_chain(self) -> None:
        """Open the whole ``parent`` chain now.  A refused link becomes one problem of this
        checkpoint and ends the chain there for memory reads: the pages it would hold read as
        ``no-parent`` gaps (``parent()`` itself still says why it was refused)."""
        ck: Checkpoint | None = self
        while ck is not None:
            try:
                ck = ck.parent()
            except CriuImageError as exc:
                ck._parent_refused = True  # type: ignore[union-attr]
                self.problems.append(str(exc))
                return

    def pages_parent(self) -> Checkpoint | None:
        """The parent that holds PE_PARENT pages (None after a refusal :meth:`settle_chain` recorded)."""
        return None if self._parent_refused else self.parent()

    def pagemap(self, pid: int) -> tuple[int, list[PageRun]] | None:
        """(pages_id, runs sorted by address) of PID, or None when it has no pagemap."""
        if pid in self._pagemaps:
            return self._pagemaps[pid]
        name = f"pagemap-{pid}.img"
        fast = None
        if name not in self._cache and name in self.names:
            fast = _fast_pagemap(self.store.read(name))
        if fast is not None:
            pages_id, entries = fast
        else:
            img = self.image(name)
            if img is None:
                return None
            if not img.entries:
                raise CriuImageError("pagemap without a head", self.file(name))
            pages_id = img.entries[0].get("pages_id", 0)
            entries = []
            for e in img.entries[1:]:
                nr = e["nr_pages"] if "nr_pages" in e else e.get("compat_nr_pages", 0)
                if "flags" in e:
                    flags = e["flags"]
                else:  # images before the flags field: in_parent or present
                    flags = PE_PARENT if e.get("in_parent") else PE_PRESENT
                entries.append((e.get("vaddr", 0), nr, flags, e.get("_offset")))
        runs = []
        offset = 0
        for vaddr, nr, flags, entry_at in entries:
            if vaddr % PAGE_SIZE or nr <= 0 or vaddr + nr * PAGE_SIZE > 1 << 64:
                raise CriuImageError(
                    f"bad pagemap entry vaddr={vaddr:#x} nr_pages={nr}", self.file(name), entry_at
                )
            run = PageRun(vaddr, nr, flags, None)
            if flags & PE_PRESENT:
                run.offset = offset
                offset += nr * PAGE_SIZE
            runs.append(run)
        runs.sort(key=lambda r: r.vaddr)
        for a, b in zip(runs, runs[1:], strict=False):
            if a.vaddr + a.nr_pages * PAGE_SIZE > b.vaddr:
                raise CriuImageError(f"overlapping pagemap entries at {b.vaddr:#x}", self.file(name))
        pages_name = f"pages-{pages_id}.img"
        size = self.store.size(pages_name) if pages_name in self.names else 0
        if offset > size:
            self.problems.append(
                f"{self.file(pages_name)}: pagemap-{pid}.img expects {offset} bytes of pages, file has {size}"
            )
        self._pagemaps[pid] = (pages_id, runs)
        return self._pagemaps[pid]

    def read_pages(self, pages_id: int, offset: int, size: int) -> bytes:
        name = f"pages-{pages_id}.img"
        if name not in self.names:
            raise CriuImageError("missing pages image", self.file(name))
        data = self.store.pread(name, offset, size)
        if len(data) != size:
            raise CriuImageError(
                f"truncated pages: {size} bytes wanted, {len(data)} read", self.file(name), offset
            )
        return data

    def read_memory(self, pid: int, start: int, length: int) -> tuple[bytes, list[dict]]:
        """Bytes of PID's memory [START, START+LENGTH) with gaps zero-filled, and the gaps.

        A gap is ``{"start", "end", "reason"}``: ``not-dumped`` (no pagemap entry: a zero page or a
        clean file page CRIU restores from the file), ``lazy`` (PE_LAZY without PE_PRESENT: left
        to the lazy-pages daemon), ``no-parent`` (PE_PARENT but no usable parent checkpoint).
        """
        if length < 0 or start < 0 or start + length > 1 << 64:
            raise ValueError("bad address range")
        if length > MAX_READ:
            raise ValueError(f"refusing to read more than {MAX_READ} bytes at once")
        out = bytearray(length)
        gaps: list[dict] = []
        self._fill(pid, start, length, out, start, gaps)
        gaps.sort(key=lambda g: g["start"])
        merged: list[dict] = []
        for g in gaps:
            if merged and merged[-1]["end"] == g["start"] and merged[-1]["reason"] == g["reason"]:
                merged[-1]["end"] = g["end"]
            else:
                merged.append(g)
        return bytes(out), merged

    def _fill(self, pid: int, start: int, length: int, out: bytearray, base: int, gaps: list[dict]) -> None:
        pm = self.pagemap(pid)
        end = start + length
        if pm is None:
            gaps.append({"start": start, "end": end, "reason": "not-dumped"})
            return
        pages_id, runs = pm
        starts = [r.vaddr for r in runs]
        addr = start
        while addr < end:
            i = bisect.bisect_right(starts, addr) - 1
            run = runs[i] if i >= 0 else None
            if run is None or addr >= run.vaddr + run.nr_pages * PAGE_SIZE:
                nxt = starts[i + 1] if i + 1 < len(starts) else end
                stop = min(end, nxt)
                gaps.append({"start": addr, "end": stop, "reason": "not-dumped"})
                addr = stop
                continue
            stop = min(end, run.vaddr + run.nr_pages * PAGE_SIZE)
            if run.flags & PE_PRESENT:
                data = self.read_pages(pages_id, run.offset + (addr - run.vaddr), stop - addr)
                out[addr - base : stop - base] = data
            elif run.flags & PE_PARENT:
                parent = self.pages_parent()
                if parent is None:
                    gaps.append({"start": addr, "end": stop, "reason": "no-parent"})
                else:
                    parent._fill(pid, addr, stop - addr, out, base, gaps)
            else:
                gaps.append(
                    {"start": addr, "end": stop, "reason": "lazy" if run.flags & PE_LAZY else "not-dumped"}
                )
            addr = stop

    # ---- queued data ---------------------------------------------------------------------

    def tcp_stream(self, ino: int) -> dict | None:
        got = self.entries(f"tcp-stream-{ino:x}.img")
        return got[0] if got else None

    def sk_queues(self) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        for e in self.entries("sk-queues.img"):
            out.setdefault(e.get("id_for", 0), []).append(e.get("extra", b""))
        return out

    def pipe_data(self, fifo: bool = False) -> dict[int, bytes]:
        name = "fifo-data.img" if fifo else "pipes-data.img"
        return {e.get("pipe_id", 0): e.get("extra", b"") for e in self.entries(name)}
