"""Read-only reader for bbolt database files (go.etcd.io/bbolt, formerly github.com/boltdb/bolt).

Docker keeps ``volumes/metadata.db`` (and swarm/network state) in bbolt, containerd its whole
metadata store (``io.containerd.metadata.v1.bolt/meta.db``) and snapshotter state.

Format facts (little-endian throughout; the same layout on every platform bbolt supports):

* The file is an array of pages of ``pageSize`` bytes; page *n* starts at ``n * pageSize``.
  Every page starts with a 16-byte header: ``id u64, flags u16, count u16, overflow u32``.
  Flags: branch 0x01, leaf 0x02, meta 0x04, freelist 0x10.  A page with ``overflow = k`` spans
  ``k + 1`` consecutive pages (the extra pages carry no header of their own).
* Pages 0 and 1 are meta pages.  After the header: ``magic u32 (0xED0CDAED), version u32 (2),
  pageSize u32, flags u32, root bucket {root pgid u64, sequence u64}, freelist pgid u64,
  pgid u64 (high-water mark: pages in use), txid u64, checksum u64``; the checksum is FNV-1a 64
  of the 56 meta bytes before it.  The writer alternates meta pages (txid % 2); the reader
  takes the valid one with the highest txid, the other if its checksum fails.
* Branch pages hold ``count`` elements ``{pos u32, ksize u32, pgid u64}`` after the header;
  leaf pages hold ``{flags u32, pos u32, ksize u32, vsize u32}``.  ``pos`` is relative to the
  element's own address; the key (then the value) follows at ``element + pos``.  Keys are
  sorted; a branch key is the first key of the child page.
* A leaf element with flag 0x01 is a nested bucket: its value starts with the bucket header
  ``{root pgid u64, sequence u64}``; when ``root == 0`` the bucket is *inline* and a complete
  leaf page (header + elements + data, page id 0) follows in the value itself.
* The freelist page lists free page ids (u64 each); ``count == 0xFFFF`` means the real count
  is the first u64 after the header.  Free pages keep whatever they last held.

Everything here treats the file as hostile: any inconsistency raises :class:`BoltError` with the
file offset of the offending structure.  In a sound file the pages and elements form a tree: every
page is referenced by exactly one element (or the meta), and the data of a page's elements follows
its element table in order without overlapping (bbolt writes it that way).  Both are enforced, so
a cycle, a page shared by two parents or elements aliasing the same bytes (which could nest inline
buckets exponentially) are reported instead of followed; reading everything once therefore costs
time linear in the file.  Tree and bucket depth are bounded, and nothing is read or allocated
beyond what the file holds (nor a page span beyond bbolt's own 2 GiB allocation limit).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from pensieve.records.core import record

MAGIC = 0xED0CDAED
VERSION = 2

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10

BUCKET_LEAF_FLAG = 0x01

PAGE_HEADER_SIZE = 16
BRANCH_ELEMENT_SIZE = 16
LEAF_ELEMENT_SIZE = 16
BUCKET_HEADER_SIZE = 16
META_SIZE = 64
META_CHECKSUMMED = 56  # bytes of the meta covered by its checksum
NO_FREELIST = 0xFFFFFFFFFFFFFFFF  # pgidNoFreelist (NoFreelistSync databases)

#: read the whole file into memory below this size; above it, seek/read page by page
MAX_IN_MEMORY = 256 << 20
#: B+tree depth (a real tree of 2**64 pages with fanout 2 is 64 deep)
MAX_TREE_DEPTH = 64
#: nested bucket depth
MAX_BUCKET_DEPTH = 64
#: bbolt's maxAllocSize: no page (with its overflow) can be larger
MAX_PAGE_SPAN = 0x7FFFFFFF
#: page sizes tried for meta page 1 when meta page 0 cannot be trusted
COMMON_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536, 2048, 1024, 512)

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF

_HDR = struct.Struct("<QHHI")
_META = struct.Struct("<IIIIQQQQQQ")
_BRANCH = struct.Struct("<IIQ")
_LEAF = struct.Struct("<IIII")
_BUCKET = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")


class BoltError(ValueError):
    """The bytes are not a readable bbolt database (or this part of it is corrupt)."""

    def __init__(self, message: str, offset: int | None = None):
        self.message = message
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at file offset {offset:#x})")


def fnv1a64(data: bytes | memoryview) -> int:
    h = _FNV_OFFSET
    for b in bytes(data):
        h = ((h ^ b) * _FNV_PRIME) & _MASK64
    return h


def _plausible_page_size(size: int) -> bool:
    return 512 <= size <= (1 << 24) and size & (size - 1) == 0


# ---- byte source ---------------------------------------------------------------------------


class _Source:
    """Bounded random access to the file: whole in memory when small, seek/read when large."""

    def __init__(self, src: bytes | bytearray | memoryview | BinaryIO):
        self._fh: BinaryIO | None = None
        if isinstance(src, (bytes, bytearray, memoryview)):
            self._buf: memoryview | None = memoryview(bytes(src))
            self.size = len(self._buf)
            return
        fh = src
        try:
            size = fh.seek(0, io.SEEK_END)
            fh.seek(0)
        except (OSError, ValueError, AttributeError):
            data = fh.read(MAX_IN_MEMORY + 1)
            if len(data) > MAX_IN_MEMORY:
                raise BoltError(f"unseekable input larger than {MAX_IN_MEMORY} bytes", 0) from None
            self._buf = memoryview(bytes(data))
            self.size = len(self._buf)
            return
        self.size = size
        if size <= MAX_IN_MEMORY:
            chunks = []
            remaining = size
            while remaining > 0:
                chunk = fh.read(remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            self._buf = memoryview(b"".join(chunks))
            self.size = len(self._buf)
        else:
            self._buf = None
            self._fh = fh

    def read(self, offset: int, size: int) -> memoryview:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise BoltError(f"truncated: {size} bytes needed, file ends at {self.size:#x}", offset)
        if self._buf is not None:
            return self._buf[offset : offset + size]
        assert self._fh is not None
        try:
            self._fh.seek(offset)
            data = self._fh.read(size)
        except (OSError, ValueError) as exc:
            raise BoltError(f"read failed: {exc}", offset) from exc
        if len(data) != size:
            raise BoltError(f"short read: {len(data)} of {size} bytes", offset)
        return memoryview(data)


# ---- records -------------------------------------------------------------------------------


@record
class Meta:
    """One of the two meta pages, parsed; ``error`` says why it is not valid."""

    page: int  # 0 or 1
    offset: int  # file offset of the page
    magic: int = 0
    version: int = 0
    page_size: int = 0
    flags: int = 0
    root: int = 0
    sequence: int = 0
    freelist: int = 0
    pgid: int = 0  # high-water mark
    txid: int = 0
    checksum: int = 0
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


@record
class _Page:
    id: int
    flags: int
    count: int
    overflow: int
    buf: memoryview  # the whole page span, header included
    base: int  # file offset of buf[0]


@record
class _Elem:
    flags: int  # leaf flags (0 for branch elements)
    key: memoryview
    value: memoryview  # empty for branch elements
    pgid: int  # child page of a branch element (0 for leaf elements)
    offset: int  # file offset of the element
    value_offset: int = 0  # file offset of the value (leaf elements)


def _parse_header(buf: memoryview, base: int) -> tuple[int, int, int, int]:
    if len(buf) < PAGE_HEADER_SIZE:
        raise BoltError("page shorter than its header", base)
    return _HDR.unpack_from(buf, 0)


def _element_error(
    page: _Page, i: int, pos: int, ksize: int, vsize: int | None, past_end: bool, offset: int
) -> BoltError:
    """Element I of PAGE (a leaf element when VSIZE is given) runs PAST_END of the page, or else
    overlaps the data of an earlier element."""
    if vsize is None:
        what, detail, data = f"branch element {i}", f" key (pos {pos}, ksize {ksize})", " key"
    else:
        what, detail, data = f"leaf element {i}", f" (pos {pos}, ksize {ksize}, vsize {vsize})", " data"
    if past_end:
        return BoltError(f"page {page.id}: {what}{detail} runs past the page end", offset)
    return BoltError(f"page {page.id}: {what}{data} overlaps earlier data", offset)


def _elements(page: _Page) -> list[_Elem]:
    """Bounds-checked elements of a branch or leaf page."""
    buf, base, count = page.buf, page.base, page.count
    end = PAGE_HEADER_SIZE + count * 16
    if end > len(buf):
        raise BoltError(f"page {page.id}: {count} elements do not fit in its {len(buf)} bytes", base)
    out: list[_Elem] = []
    size = len(buf)
    prev_end = end  # element data follows the element table, in element order, never overlapping
    if page.flags == BRANCH_PAGE:
        for i in range(count):
            at = PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE
            pos, ksize, pgid = _BRANCH.unpack_from(buf, at)
            start = at + pos
            if start + ksize > size or start < prev_end:
                raise _element_error(page, i, pos, ksize, None, start + ksize > size, base + at)
            prev_end = start + ksize
            out.append(_Elem(0, buf[start : start + ksize], buf[0:0], pgid, base + at))
    else:
        for i in range(count):
            at = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE
            flags, pos, ksize, vsize = _LEAF.unpack_from(buf, at)
            start = at + pos
            if start + ksize + vsize > size or start < prev_end:
                raise _element_error(page, i, pos, ksize, vsize, start + ksize + vsize > size, base + at)
            prev_end = start + ksize + vsize
            key = buf[start : start + ksize]
            value = buf[start + ksize : start + ksize + vsize]
            out.append(_Elem(flags, key, value, 0, base + at, base + start + ksize))
    return out


# ---- database ------------------------------------------------------------------------------


class BoltDB:
    """A bbolt database, read-only.

    ``BoltDB(data)`` takes bytes or a binary file object (read whole when up to
    :data:`MAX_IN_MEMORY` bytes, else page by page: keep the file open while using the db) or a
    filesystem path (opened here; use ``with`` or :meth:`close`).
    """

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike):
        self._owned: BinaryIO | None = None
        if isinstance(source, (str, os.PathLike)):
            self._owned = open(source, "rb")  # noqa: SIM115 - closed by close()
            source = self._owned
        try:
            self._src = _Source(source)
            self.file_size = self._src.size
            self.metas = self._read_metas()
            valid = [m for m in self.metas if m.valid]
            if not valid:
                reasons = "; ".join(f"meta {m.page}: {m.error}" for m in self.metas)
                raise BoltError(f"not a bbolt database: no valid meta page ({reasons})", 0)
            #: the meta page in effect (highest txid among the valid ones)
            self.meta: Meta = max(valid, key=lambda m: m.txid)
        except BaseException:
            self.close()
            raise
        self.page_size = self.meta.page_size
        self._parents: dict[int, int] = {}  # tree page -> file offset of the one reference to it
        self.root = Bucket._from_header(
            self, (), self.meta.root, self.meta.sequence, None, self.meta.offset + PAGE_HEADER_SIZE + 16
        )

    # -- lifecycle
    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> BoltDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.meta
        return f"<BoltDB page_size={m.page_size} txid={m.txid} pages={m.pgid} root={m.root}>"

    # -- meta
    def _parse_meta(self, page: int, offset: int, expect_page_size: int | None) -> Meta:
        try:
            raw = self._src.read(offset, PAGE_HEADER_SIZE + META_SIZE)
        except BoltError as exc:
            return Meta(page, offset, error=exc.message)
        _pid, flags, _count, _overflow = _HDR.unpack_from(raw, 0)
        fields = _META.unpack_from(raw, PAGE_HEADER_SIZE)
        meta = Meta(page, offset, *fields)
        body = raw[PAGE_HEADER_SIZE : PAGE_HEADER_SIZE + META_CHECKSUMMED]
        error = None
        if meta.magic != MAGIC:
            error = f"bad magic {meta.magic:#010x}"
        elif meta.version != VERSION:
            error = f"unsupported version {meta.version}"
        elif fnv1a64(body) != meta.checksum:
            error = "checksum mismatch"
        elif not _plausible_page_size(meta.page_size):
            error = f"implausible page size {meta.page_size}"
        elif expect_page_size is not None and meta.page_size != expect_page_size:
            error = f"page size {meta.page_size} but found at offset of page size {expect_page_size}"
        elif meta.pgid < 3 or not 2 <= meta.root < meta.pgid:
            error = f"root page {meta.root} outside the {meta.pgid} pages in use"
        elif meta.freelist != NO_FREELIST and not 2 <= meta.freelist < meta.pgid:
            error = f"freelist page {meta.freelist} outside the {meta.pgid} pages in use"
        if error is not None:
            return Meta(page, offset, *fields, error=error)
        return meta

    def _read_metas(self) -> list[Meta]:
        m0 = self._parse_meta(0, 0, None)
        candidates: list[int] = []
        if _plausible_page_size(m0.page_size):
            candidates.append(m0.page_size)
        candidates += [s for s in COMMON_PAGE_SIZES if s not in candidates]
        m1: Meta | None = None
        for size in candidates:
            m = self._parse_meta(1, size, size)
            if m.valid:
                m1 = m
                break
            if m1 is None:
                m1 = m
        assert m1 is not None
        if m0.valid and m1.valid and m0.page_size != m1.page_size:
            # both checksummed but disagreeing: trust the one that is at its own offset
            m0.error = f"page size {m0.page_size} differs from meta 1's"
        return [m0, m1]

    @property
    def truncated(self) -> bool:
        """The file is shorter than the pages the meta says are in use."""
        return self.file_size < self.meta.pgid * self.page_size

    # -- pages
    def _page(self, pgid: int, ref_offset: int | None) -> _Page:
        high = self.meta.pgid
        if not 2 <= pgid < high:
            raise BoltError(f"page id {pgid} out of range (pages in use: {high})", ref_offset)
        offset = pgid * self.page_size
        hdr = self._src.read(offset, PAGE_HEADER_SIZE)
        pid, flags, count, overflow = _HDR.unpack_from(hdr, 0)
        if pid != pgid:
            raise BoltError(f"page {pgid} carries id {pid}", offset)
        if pgid + overflow >= high:
            raise BoltError(f"page {pgid} overflow {overflow} runs past the pages in use ({high})", offset)
        if (overflow + 1) * self.page_size > MAX_PAGE_SPAN:
            raise BoltError(f"page {pgid} overflow {overflow} exceeds bbolt's maximum allocation", offset)
        buf = self._src.read(offset, (overflow + 1) * self.page_size)
        return _Page(pgid, flags, count, overflow, buf, offset)

    def freelist(self) -> list[int]:
        """Free page ids recorded by the effective meta (free pages keep their old contents)."""
        if self.meta.freelist == NO_FREELIST:
            return []
        page = self._page(self.meta.freelist, self.meta.offset + PAGE_HEADER_SIZE)
        if page.flags != FREELIST_PAGE:
            raise BoltError(f"freelist page {page.id} has flags {page.flags:#x}", page.base)
        start, count = PAGE_HEADER_SIZE, page.count
        if count == 0xFFFF:
            if len(page.buf) < PAGE_HEADER_SIZE + 8:
                raise BoltError("freelist page too short for its count", page.base)
            (count,) = _U64.unpack_from(page.buf, PAGE_HEADER_SIZE)
            start += 8
        if start + count * 8 > len(page.buf):
            raise BoltError(f"freelist count {count} does not fit its page", page.base)
        return sorted(struct.unpack_from(f"<{count}Q", page.buf, start))

    def _reach(self, pgid: int, ref_offset: int, path: tuple[bytes, ...]) -> None:
        """Record that tree page ``pgid`` is referenced from ``ref_offset``; a second, different
        reference means a cycle or a shared page."""
        first = self._parents.setdefault(pgid, ref_offset)
        if first != ref_offset:
            raise BoltError(
                f"bucket {_fmt_path(path)}: page {pgid} reached twice (referenced at {first:#x} "
                f"and {ref_offset:#x}): cycle or shared page",
                ref_offset,
            )

    # -- buckets
    def bucket(self, *path: bytes | str) -> Bucket | None:
        """The bucket at ``path`` (names as bytes or str); no path gives the root bucket."""
        b: Bucket | None = self.root
        for name in path:
            assert b is not None
            b = b.bucket(name)
            if b is None:
                return None
        return b

    def buckets(self) -> Iterator[tuple[bytes, Bucket]]:
        return self.root.buckets()

    def walk(self) -> Iterator[tuple[tuple[bytes, ...], bytes, bytes | None]]:
        return self.root.walk()


def _fmt_path(path: tuple[bytes, ...]) -> str:
    return "/" + "/".join(p.decode("utf-8", "backslashreplace") for p in path)


def _key(name: bytes | str) -> bytes:
    return name.encode() if isinstance(name, str) else bytes(name)


class Bucket:
    """A bucket: a sorted key space of plain values and nested buckets."""

    def __init__(self) -> None:  # pragma: no cover - use _from_header
        raise TypeError("buckets come from BoltDB.bucket()/Bucket.buckets()")

    @classmethod
    def _from_header(
        cls,
        db: BoltDB,
        path: tuple[bytes, ...],
        root: int,
        sequence: int,
        inline: _Page | None,
        ref_offset: int,
    ) -> Bucket:
        self = object.__new__(cls)
        self.db = db
        self.path = path
        self.root = root  # 0 for inline buckets
        self.sequence = sequence
        self._inline = inline
        self._ref_offset = ref_offset  # where the bucket header / meta pointing here lives
        if inline is None:
            db._reach(root, ref_offset, path)
        return self

    @property
    def inline(self) -> bool:
        return self._inline is not None

    @property
    def name(self) -> bytes:
        return self.path[-1] if self.path else b""

    def __repr__(self) -> str:
        where = "inline" if self.inline else f"root={self.root}"
        return f"<Bucket {_fmt_path(self.path)} {where} sequence={self.sequence}>"

    # -- tree access
    def _root_page(self) -> _Page:
        if self._inline is not None:
            return self._inline
        return self._tree_page(self.root, self._ref_offset)

    def _tree_page(self, pgid: int, ref_offset: int) -> _Page:
        self.db._reach(pgid, ref_offset, self.path)
        page = self.db._page(pgid, ref_offset)
        if page.flags not in (BRANCH_PAGE, LEAF_PAGE):
            raise BoltError(
                f"bucket {_fmt_path(self.path)}: page {pgid} has flags {page.flags:#x}, not branch or leaf",
                page.base,
            )
        return page

    def _leaf_elements(self) -> Iterator[_Elem]:
        """Every leaf element of the bucket's tree, in tree (= key) order."""
        root = self._root_page()
        if root.flags == LEAF_PAGE:
            yield from _elements(root)
            return
        # stack of (elements, next index, depth)
        stack: list[tuple[list[_Elem], int, int]] = [(_elements(root), 0, 1)]
        while stack:
            elems, i, depth = stack.pop()
            if i >= len(elems):
                continue
            stack.append((elems, i + 1, depth))
            e = elems[i]
            if depth >= MAX_TREE_DEPTH:
                raise BoltError(f"bucket {_fmt_path(self.path)}: tree deeper than {MAX_TREE_DEPTH}", e.offset)
            child = self._tree_page(e.pgid, e.offset)
            if child.flags == LEAF_PAGE:
                yield from _elements(child)
            else:
                stack.append((_elements(child), 0, depth + 1))

    def _find(self, key: bytes) -> _Elem | None:
        page = self._root_page()
        for _ in range(MAX_TREE_DEPTH):
            elems = _elements(page)
            if page.flags == LEAF_PAGE:
                lo, hi = 0, len(elems)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if bytes(elems[mid].key) < key:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < len(elems) and elems[lo].key == key:
                    return elems[lo]
                return None
            if not elems:
                return None
            # last element whose key <= key (the first one if all are greater)
            lo, hi = 0, len(elems)
            while lo < hi:
                mid = (lo + hi) // 2
                if bytes(elems[mid].key) <= key:
                    lo = mid + 1
                else:
                    hi = mid
            e = elems[max(lo - 1, 0)]
            page = self._tree_page(e.pgid, e.offset)
        raise BoltError(f"bucket {_fmt_path(self.path)}: tree deeper than {MAX_TREE_DEPTH}", page.base)

    def _child(self, e: _Elem) -> Bucket:
        key = bytes(e.key)
        path = self.path + (key,)
        if len(path) > MAX_BUCKET_DEPTH:
            raise BoltError(f"buckets nested deeper than {MAX_BUCKET_DEPTH}", e.offset)
        value = e.value
        if len(value) < BUCKET_HEADER_SIZE:
            raise BoltError(
                f"bucket {_fmt_path(path)}: value of {len(value)} bytes has no bucket header", e.offset
            )
        root, sequence = _BUCKET.unpack_from(value, 0)
        if root != 0:
            return Bucket._from_header(self.db, path, root, sequence, None, e.offset)
        # inline: a leaf page follows the header inside the value
        base = e.value_offset
        buf = value[BUCKET_HEADER_SIZE:]
        pid, flags, count, overflow = _parse_header(buf, base + BUCKET_HEADER_SIZE)
        if flags != LEAF_PAGE:
            raise BoltError(f"inline bucket {_fmt_path(path)} page has flags {flags:#x}, not leaf", base)
        page = _Page(pid, flags, count, overflow, buf, base + BUCKET_HEADER_SIZE)
        return Bucket._from_header(self.db, path, 0, sequence, page, e.offset)

    # -- public API
    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Plain key/value pairs (nested buckets left out), in key order."""
        for e in self._leaf_elements():
            if not e.flags & BUCKET_LEAF_FLAG:
                yield bytes(e.key), bytes(e.value)

    def keys(self) -> Iterator[bytes]:
        for k, _v in self.items():
            yield k

    def buckets(self) -> Iterator[tuple[bytes, Bucket]]:
        """Nested buckets, in key order."""
        for e in self._leaf_elements():
            if e.flags & BUCKET_LEAF_FLAG:
                yield bytes(e.key), self._child(e)

    def get(self, key: bytes | str) -> bytes | None:
        """The value of a plain key; None when missing or when the key names a bucket."""
        e = self._find(_key(key))
        if e is None or e.flags & BUCKET_LEAF_FLAG:
            return None
        return bytes(e.value)

    def bucket(self, name: bytes | str) -> Bucket | None:
        e = self._find(_key(name))
        if e is None or not e.flags & BUCKET_LEAF_FLAG:
            return None
        return self._child(e)

    def walk(self) -> Iterator[tuple[tuple[bytes, ...], bytes, bytes | None]]:
        """(bucket path, key, value) for every entry below here, depth first; value is None for a
        nested bucket, whose own entries follow it."""
        for e in self._leaf_elements():
            key = bytes(e.key)
            if e.flags & BUCKET_LEAF_FLAG:
                yield self.path, key, None
                yield from self._child(e).walk()
            else:
                yield self.path, key, bytes(e.value)
