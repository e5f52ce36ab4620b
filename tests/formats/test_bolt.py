"""The bbolt reader (pensieve.formats.bolt) and Docker's volumes/metadata.db.

Real files: Docker's volumes/metadata.db from the captured dockerd fixture, and containerd's
meta.db + overlayfs snapshotter metadata.db (tests/fixtures/bolt, see its README).  Corner cases
come from HAND-MADE files written by the tiny bbolt writer below (written for these tests from the
format facts, not by bbolt itself), and hostile inputs from mutating valid files.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import time
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, FIXTURES, load_json, time_bound
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pensieve import api
from pensieve.engines.docker.root import DockerRoot
from pensieve.engines.docker.volumes import list_volumes
from pensieve.evidence import DirectoryEvidence
from pensieve.formats import bolt
from pensieve.formats.bolt import BoltDB, BoltError

BOLT_FIXTURES = FIXTURE_ROOT / "bolt"
VOLUMES_EXPECTED = FIXTURES / "expected" / "volumes" / "inspect.json"

# ---- a tiny hand-made bbolt writer ---------------------------------------------------------

_HDR = struct.Struct("<QHHI")


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h


def leaf_page(items: list[tuple[int, bytes, bytes]], pgid: int = 0, overflow: int = 0) -> bytes:
    n = len(items)
    elems, data = b"", b""
    for i, (flags, k, v) in enumerate(items):
        pos = (16 + n * 16 + len(data)) - (16 + i * 16)
        elems += struct.pack("<IIII", flags, pos, len(k), len(v))
        data += k + v
    return _HDR.pack(pgid, bolt.LEAF_PAGE, n, overflow) + elems + data


def branch_page(items: list[tuple[bytes, int]], pgid: int = 0, overflow: int = 0) -> bytes:
    n = len(items)
    elems, data = b"", b""
    for i, (k, child) in enumerate(items):
        pos = (16 + n * 16 + len(data)) - (16 + i * 16)
        elems += struct.pack("<IIQ", pos, len(k), child)
        data += k
    return _HDR.pack(pgid, bolt.BRANCH_PAGE, n, overflow) + elems + data


class BoltWriter:
    """Writes a bbolt file from nested dicts ({key: bytes | dict}); dicts become buckets.

    Small buckets without sub-buckets are written inline (as bbolt does below pageSize/4);
    ``max_leaf``/``max_fanout`` force many leaves and deep branch levels."""

    def __init__(
        self,
        page_size: int = 4096,
        *,
        inline: bool = True,
        max_leaf: int = 1 << 30,
        max_fanout: int = 1 << 30,
    ):
        self.ps = page_size
        self.inline = inline
        self.max_leaf = max_leaf
        self.max_fanout = max_fanout
        self.pages: dict[int, bytes] = {}
        self.next = 3  # 0, 1: meta; 2: freelist
        self.sequences: dict[bytes, int] = {}

    def _alloc(self, build) -> int:
        size = len(build(0, 0))
        n = -(-size // self.ps)
        pgid = self.next
        self.next += n
        self.pages[pgid] = build(pgid, n - 1)
        return pgid

    def _chunks(self, items, elem_size, limit):
        chunk, size = [], 16
        for it in items:
            s = elem_size(it)
            if chunk and (size + s > self.ps or len(chunk) >= limit):
                yield chunk
                chunk, size = [], 16
            chunk.append(it)
            size += s
        if chunk:
            yield chunk

    def tree(self, items: list[tuple[int, bytes, bytes]]) -> int:
        level = []
        for chunk in self._chunks(items, lambda it: 16 + len(it[1]) + len(it[2]), self.max_leaf):
            level.append((chunk[0][1], self._alloc(lambda p, o, c=chunk: leaf_page(c, p, o))))
        while len(level) > 1:
            level = [
                (chunk[0][0], self._alloc(lambda p, o, c=chunk: branch_page(c, p, o)))
                for chunk in self._chunks(level, lambda it: 16 + len(it[0]), self.max_fanout)
            ]
        return level[0][1]

    def bucket_value(self, tree: dict, seq: int = 0) -> bytes:
        items = self.entries(tree)
        page = leaf_page(items)
        if self.inline and all(f == 0 for f, _, _ in items) and 16 + len(page) <= self.ps // 4:
            return struct.pack("<QQ", 0, seq) + page
        return struct.pack("<QQ", self.tree(items), seq)

    def entries(self, tree: dict) -> list[tuple[int, bytes, bytes]]:
        out = []
        for k in sorted(tree):
            v = tree[k]
            if isinstance(v, dict):
                out.append((bolt.BUCKET_LEAF_FLAG, k, self.bucket_value(v, seq=len(v))))
            else:
                out.append((0, k, v))
        return out

    def root(self, tree: dict) -> int:
        items = self.entries(tree)
        if not items:
            return self._alloc(lambda p, o: leaf_page([], p, o))
        return self.tree(items)

    def meta(self, page: int, root: int, txid: int, *, seq: int = 0) -> bytes:
        body = struct.pack("<IIIIQQQQQ", bolt.MAGIC, 2, self.ps, 0, root, seq, 2, self.next, txid)
        return _HDR.pack(page, bolt.META_PAGE, 0, 0) + body + struct.pack("<Q", _fnv1a64(body))

    def build(self, tree: dict, *, old_tree: dict | None = None) -> bytes:
        """meta 1 (txid 2) points at tree; meta 0 (txid 1) at old_tree (or the same tree)."""
        old_root = self.root(old_tree) if old_tree is not None else None
        new_root = self.root(tree)
        if old_root is None:
            old_root = new_root
        out = bytearray(self.next * self.ps)
        out[0 : self.ps] = self.meta(0, old_root, 1).ljust(self.ps, b"\0")
        out[self.ps : 2 * self.ps] = self.meta(1, new_root, 2).ljust(self.ps, b"\0")
        out[2 * self.ps : 2 * self.ps + 16] = _HDR.pack(2, bolt.FREELIST_PAGE, 0, 0)
        for pgid, data in self.pages.items():
            out[pgid * self.ps : pgid * self.ps + len(data)] = data
        return bytes(out)


def make(tree: dict, **kw) -> bytes:
    old = kw.pop("old_tree", None)
    return BoltWriter(**kw).build(tree, old_tree=old)


def dump(db: BoltDB) -> dict:
    """The whole database as nested dicts, via the public API only."""

    def rec(b):
        out = {k: v for k, v in b.items()}
        for k, child in b.buckets():
            assert k not in out
            out[k] = rec(child)
        return out

    return rec(db.root)


def exhaust(db: BoltDB) -> int:
    """Touch everything a caller could: walk, freelist, get/bucket lookups in every bucket."""
    n = 0
    looked_up: dict[tuple[bytes, ...], int] = {}
    for path, key, _value in db.walk():
        n += 1
        if looked_up.setdefault(path, 0) >= 8:
            continue  # a few lookups per bucket are enough; walk() already read every page
        looked_up[path] += 1
        b = db.bucket(*path)
        if b is not None:
            got = b.get(key)
            assert got is None or isinstance(got, bytes)
            b.bucket(key)
    db.freelist()
    return n


# a hand-made database with every structure: nested + inline buckets, overflow values,
# a bucket spread over many leaves under several branch levels
BIG = {
    b"alpha": {b"k1": b"v1", b"k2": b"v2"},  # inline
    b"beta": {
        b"nested": {b"deeper": {b"x": b"y"}, b"plain": b"p"},
        b"large": b"L" * 10000,  # overflow pages
        b"small": b"s",
    },
    b"many": {f"key-{i:05d}".encode(): f"value-{i}".encode() * (i % 7 + 1) for i in range(600)},
    b"empty": {},
}


@pytest.fixture(scope="module")
def big_file() -> bytes:
    return make(BIG, page_size=1024, max_fanout=4)


# ---- hand-made corner cases -----------------------------------------------------------------


def test_handmade_roundtrip(big_file):
    db = BoltDB(big_file)
    assert db.page_size == 1024 and db.meta.txid == 2 and db.meta.page == 1
    assert dump(db) == BIG
    assert [k for k, _ in db.buckets()] == sorted(BIG)


def test_handmade_structures_are_really_there(big_file):
    db = BoltDB(big_file)
    assert db.bucket("alpha").inline and db.bucket("empty").inline
    assert not db.bucket("beta").inline and not db.bucket("beta", "nested").inline
    assert db.bucket("beta", "nested", "deeper").inline
    many = db.bucket(b"many")
    root = db._page(many.root, None)
    assert root.flags == bolt.BRANCH_PAGE  # with max_fanout=4 and 600 keys: several levels
    child = db._page(bolt._elements(root)[0].pgid, None)
    assert child.flags == bolt.BRANCH_PAGE
    overflowed = [p for p in range(3, db.meta.pgid) if _is_page(db, p) and db._page(p, None).overflow]
    assert overflowed
    assert db.bucket("beta").get("large") == b"L" * 10000
    assert db.bucket("many").sequence == 600


def _is_page(db, pgid):
    try:
        db._page(pgid, None)
        return True
    except BoltError:
        return False  # continuation page of an overflow


def test_items_sorted_and_get(big_file):
    db = BoltDB(big_file)
    many = db.bucket("many")
    keys = [k for k, _ in many.items()]
    assert keys == sorted(BIG[b"many"]) and len(keys) == 600
    for k, v in BIG[b"many"].items():
        assert many.get(k) == v
    for missing in (b"", b"a", b"key-", b"key-00000x", b"key-00599\0", b"zzz"):
        assert many.get(missing) is None
    beta = db.bucket("beta")
    assert beta.get("nested") is None  # a bucket, not a value
    assert beta.bucket("small") is None  # a value, not a bucket
    assert [k for k, _ in beta.items()] == [b"large", b"small"]
    assert [k for k, _ in beta.buckets()] == [b"nested"]
    assert db.bucket("nope") is None and db.bucket("beta", "nope", "x") is None
    assert db.bucket() is db.root


def test_walk_order(big_file):
    db = BoltDB(big_file)
    rows = list(db.bucket("beta").walk())
    assert rows[:4] == [
        ((b"beta",), b"large", b"L" * 10000),
        ((b"beta",), b"nested", None),
        ((b"beta", b"nested"), b"deeper", None),
        ((b"beta", b"nested", b"deeper"), b"x", b"y"),
    ]
    assert exhaust(db) == len(list(db.walk()))


def test_page_sizes_and_no_inline():
    tree = {b"a": {b"b": {b"c": b"d" * 5000}}, b"z": {str(i).encode(): b"v" for i in range(300)}}
    for ps in (512, 4096, 16384, 65536):
        for inline in (True, False):
            assert dump(BoltDB(make(tree, page_size=ps, inline=inline))) == tree


def test_empty_database():
    db = BoltDB(make({}))
    assert dump(db) == {} and list(db.walk()) == [] and db.freelist() == []


def test_file_object_and_large_file_mode(big_file, monkeypatch, tmp_path):
    p = tmp_path / "x.db"
    p.write_bytes(big_file)
    with open(p, "rb") as fh:
        assert dump(BoltDB(fh)) == BIG
    with BoltDB(p) as db:
        assert dump(db) == BIG
    monkeypatch.setattr(bolt, "MAX_IN_MEMORY", 4096)
    with open(p, "rb") as fh:
        db = BoltDB(fh)
        assert db._src._buf is None  # page-by-page reads
        assert dump(db) == BIG


class _Unseekable(io.RawIOBase):
    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def seek(self, *a):
        raise OSError("not seekable")

    def readinto(self, b):
        chunk = self._data.read(min(len(b), 1000))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_unseekable_stream(big_file):
    assert dump(BoltDB(io.BufferedReader(_Unseekable(big_file)))) == BIG


# ---- meta pages -----------------------------------------------------------------------------


def test_newest_meta_wins_and_falls_back_on_bad_checksum():
    data = bytearray(make({b"b": {b"k": b"new"}}, old_tree={b"b": {b"k": b"old"}}))
    assert BoltDB(bytes(data)).bucket("b").get("k") == b"new"
    data[4096 + 16 + 48] ^= 0xFF  # meta 1 txid: checksum no longer matches
    db = BoltDB(bytes(data))
    assert db.meta.page == 0 and db.bucket("b").get("k") == b"old"
    assert db.metas[1].error == "checksum mismatch"


def test_meta0_corrupt_page_size_probed():
    data = bytearray(make({b"b": {b"k": b"v"}}, page_size=16384))
    data[16:80] = b"\0" * 64  # meta 0 gone entirely; meta 1 must be found at 16384
    db = BoltDB(bytes(data))
    assert db.meta.page == 1 and db.page_size == 16384 and db.bucket("b").get("k") == b"v"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: (
                d.__setitem__(slice(16, 20), b"\0\0\0\0") or d.__setitem__(slice(4112, 4116), b"\0\0\0\0")
            ),
            "bad magic",
        ),
        (lambda d: d.__setitem__(slice(0, len(d)), b"\0" * len(d)), "bad magic"),
        (
            lambda d: d.__setitem__(slice(20, 21), b"\x03") or d.__setitem__(slice(4116, 4117), b"\x03"),
            "version",
        ),
    ],
)
def test_no_valid_meta(mutate, message):
    data = bytearray(make({b"b": {b"k": b"v"}}))
    mutate(data)
    with pytest.raises(BoltError, match=message) as exc:
        BoltDB(bytes(data))
    assert exc.value.offset == 0


@pytest.mark.parametrize("cut", [0, 10, 79, 100, 4096, 4200, 8191, 8192 + 100, -1])
def test_truncated(cut):
    data = make({b"b": {str(i).encode(): b"v" * 50 for i in range(200)}})
    try:
        db = BoltDB(data[:cut])
        exhaust(db)
    except BoltError as exc:
        assert exc.offset is not None
    else:
        assert cut == -1 or cut >= len(data)  # only a file cut in its last page's padding reads


def test_truncated_data_page_says_where():
    data = make({b"b": {str(i).encode(): b"v" * 50 for i in range(200)}})
    db = BoltDB(data[: 4 * 4096 + 10])
    assert db.truncated
    with pytest.raises(BoltError, match="truncated") as exc:
        exhaust(db)
    assert exc.value.offset >= 4 * 4096


# ---- hostile structures ---------------------------------------------------------------------


def _set_meta_root(data: bytearray, root: int) -> None:
    for page in (0, 1):
        at = page * 4096 + 16
        struct.pack_into("<Q", data, at + 16, root)
        struct.pack_into("<Q", data, at + 56, _fnv1a64(bytes(data[at : at + 56])))


def _file_with_pages(pages: dict[int, bytes], root: int) -> bytes:
    w = BoltWriter()
    w.next = max(pages) + 1
    w.pages = pages
    data = bytearray(w.build({}))
    for pgid, page in pages.items():
        data[pgid * 4096 : pgid * 4096 + len(page)] = page
    _set_meta_root(data, root)
    return bytes(data)


def _bucket_value(root: int) -> bytes:
    return struct.pack("<QQ", root, 0)


def test_branch_cycle():
    # root branch 3 -> branch 4 -> branch 3 ...
    data = _file_with_pages({3: branch_page([(b"a", 4)], 3), 4: branch_page([(b"a", 3)], 4)}, 3)
    with pytest.raises(BoltError, match="reached twice"):
        list(BoltDB(data).root.items())
    with pytest.raises(BoltError, match="reached twice|deeper"):
        BoltDB(data).root.get(b"a")


def test_branch_self_loop_and_shared_child():
    data = _file_with_pages({3: branch_page([(b"a", 3)], 3)}, 3)
    with pytest.raises(BoltError, match="reached twice"):
        list(BoltDB(data).walk())
    shared = _file_with_pages(
        {3: branch_page([(b"a", 4), (b"b", 4)], 3), 4: leaf_page([(0, b"a", b"1")], 4)}, 3
    )
    with pytest.raises(BoltError, match="reached twice"):
        list(BoltDB(shared).root.items())


def test_page_id_out_of_range():
    data = _file_with_pages({3: branch_page([(b"a", 99999)], 3)}, 3)
    with pytest.raises(BoltError, match="out of range") as exc:
        list(BoltDB(data).walk())
    assert exc.value.offset == 3 * 4096 + 16  # the branch element that points there


def test_bucket_cycle_through_root():
    # bucket "loop" in the root bucket has the root page as its own root
    data = _file_with_pages({3: leaf_page([(1, b"loop", _bucket_value(3))], 3)}, 3)
    db = BoltDB(data)
    with pytest.raises(BoltError, match="reached twice"):
        list(db.walk())
    with pytest.raises(BoltError, match="reached twice"):
        db.bucket("loop")


def test_bucket_shared_by_two_keys():
    data = _file_with_pages(
        {
            3: leaf_page([(1, b"a", _bucket_value(4)), (1, b"b", _bucket_value(4))], 3),
            4: leaf_page([(0, b"k", b"v")], 4),
        },
        3,
    )
    with pytest.raises(BoltError, match="reached twice"):
        list(BoltDB(data).walk())


def test_bucket_nesting_too_deep():
    tree: dict = {b"v": b"leaf"}
    for i in range(bolt.MAX_BUCKET_DEPTH + 5):
        tree = {f"b{i}".encode(): tree, b"pad": b"x" * 2000}  # too big to inline
    data = make(tree)
    with pytest.raises(BoltError, match="nested deeper"):
        list(BoltDB(data).walk())


def test_tree_too_deep():
    # a chain of single-element branch pages deeper than MAX_TREE_DEPTH
    n = bolt.MAX_TREE_DEPTH + 3
    pages = {3 + i: branch_page([(b"a", 4 + i)], 3 + i) for i in range(n)}
    pages[3 + n] = leaf_page([(0, b"a", b"v")], 3 + n)
    data = _file_with_pages(pages, 3)
    with pytest.raises(BoltError, match="deeper"):
        list(BoltDB(data).root.items())
    with pytest.raises(BoltError, match="deeper"):
        BoltDB(data).root.get(b"a")


def test_element_past_page_end():
    page = bytearray(leaf_page([(0, b"key", b"value")], 3))
    struct.pack_into("<I", page, 16 + 12, 0xFFFFFFFF)  # vsize
    with pytest.raises(BoltError, match="runs past the page end") as exc:
        list(BoltDB(_file_with_pages({3: bytes(page)}, 3)).root.items())
    assert exc.value.offset == 3 * 4096 + 16
    page = bytearray(leaf_page([(0, b"key", b"value")], 3))
    struct.pack_into("<I", page, 16 + 8, 5000)  # ksize
    with pytest.raises(BoltError, match="runs past the page end"):
        list(BoltDB(_file_with_pages({3: bytes(page)}, 3)).root.items())


def test_absurd_count_and_overflow():
    page = bytearray(leaf_page([(0, b"k", b"v")], 3))
    struct.pack_into("<H", page, 10, 0xFFFF)
    with pytest.raises(BoltError, match="do not fit"):
        list(BoltDB(_file_with_pages({3: bytes(page)}, 3)).root.items())
    page = bytearray(leaf_page([(0, b"k", b"v")], 3))
    struct.pack_into("<I", page, 12, 0xFFFFFFFF)
    with pytest.raises(BoltError, match="overflow"):
        list(BoltDB(_file_with_pages({3: bytes(page)}, 3)).root.items())


def test_wrong_page_id_and_flags():
    with pytest.raises(BoltError, match="carries id 7"):
        list(BoltDB(_file_with_pages({3: leaf_page([(0, b"k", b"v")], 7)}, 3)).root.items())
    bad = bytearray(leaf_page([(0, b"k", b"v")], 3))
    struct.pack_into("<H", bad, 8, bolt.FREELIST_PAGE)
    with pytest.raises(BoltError, match="not branch or leaf"):
        list(BoltDB(_file_with_pages({3: bytes(bad)}, 3)).root.items())


def test_bad_inline_buckets():
    short = _file_with_pages({3: leaf_page([(1, b"b", b"\0" * 10)], 3)}, 3)
    with pytest.raises(BoltError, match="no bucket header"):
        list(BoltDB(short).walk())
    no_page = _file_with_pages({3: leaf_page([(1, b"b", b"\0" * 20)], 3)}, 3)
    with pytest.raises(BoltError, match="shorter than its header"):
        list(BoltDB(no_page).walk())
    branch_inline = _file_with_pages({3: leaf_page([(1, b"b", b"\0" * 16 + branch_page([(b"x", 3)]))], 3)}, 3)
    with pytest.raises(BoltError, match="not leaf"):
        list(BoltDB(branch_inline).walk())
    inner = bytearray(leaf_page([(0, b"k", b"v")]))
    struct.pack_into("<I", inner, 16 + 12, 100)  # vsize past the inline page (= the value's end)
    overrun = _file_with_pages(
        {3: leaf_page([(1, b"b", b"\0" * 16 + bytes(inner)), (0, b"z", b"z" * 200)], 3)}, 3
    )
    with pytest.raises(BoltError, match="runs past the page end"):
        list(BoltDB(overrun).walk())


def _aliased_leaf(k: int, key: bytes, value: bytes, flags: int, pgid: int = 0) -> bytes:
    """A leaf page whose k elements all point at the same key/value bytes."""
    data_at = 16 + k * 16
    elems = b"".join(
        struct.pack("<IIII", flags, data_at - (16 + i * 16), len(key), len(value)) for i in range(k)
    )
    return _HDR.pack(pgid, bolt.LEAF_PAGE, k, 0) + elems + key + value


def test_aliased_elements_cannot_nest_exponentially():
    # inline buckets whose k elements all alias one inner inline bucket: k**depth entries if followed
    value = b"\0" * 16 + leaf_page([(0, b"x", b"y")])
    for _ in range(25):
        value = b"\0" * 16 + _aliased_leaf(3, b"b", value, bolt.BUCKET_LEAF_FLAG)
    data = _file_with_pages({3: leaf_page([(1, b"top", value)], 3)}, 3)
    start = time.monotonic()
    with pytest.raises(BoltError, match="overlaps"):
        exhaust(BoltDB(data))
    assert time.monotonic() - start < 1


def test_shared_subtrees_cannot_nest_exponentially():
    # level i: a leaf with buckets a, b whose roots (two branch pages) both lead to level i + 1
    pages: dict[int, bytes] = {}
    depth = 40
    for i in range(depth):
        leaf, xa, xb = 3 + 3 * i, 4 + 3 * i, 5 + 3 * i
        nxt = 3 + 3 * (i + 1)
        pages[leaf] = leaf_page([(1, b"a", _bucket_value(xa)), (1, b"b", _bucket_value(xb))], leaf)
        pages[xa] = branch_page([(b"a", nxt)], xa)
        pages[xb] = branch_page([(b"a", nxt)], xb)
    pages[3 + 3 * depth] = leaf_page([(0, b"end", b"!")], 3 + 3 * depth)
    data = _file_with_pages(pages, 3)
    start = time.monotonic()
    with pytest.raises(BoltError, match="reached twice"):
        exhaust(BoltDB(data))
    assert time.monotonic() - start < 1


def test_reading_twice_is_fine(big_file):
    db = BoltDB(big_file)
    assert dump(db) == dump(db) == BIG
    assert db.bucket("beta", "nested").get("plain") == db.bucket("beta", "nested").get("plain") == b"p"


# ---- mutations: only BoltError (or clean results), quickly ----------------------------------


def _interesting_offsets(data: bytes, page_size: int) -> list[int]:
    """Page headers, element tables and every non-zero byte: where mutations matter."""
    out = set()
    for p in range(len(data) // page_size):
        base = p * page_size
        out.update(range(base, base + 128))
    out.update(i for i, b in enumerate(data) if b)
    return sorted(o for o in out if o < len(data))


def _mutation_test(data: bytes, page_size: int, examples: int = 200):
    offsets = _interesting_offsets(data, page_size)
    values = st.sampled_from([0, 1, 2, 3, 0x7F, 0x80, 0xFF])

    @settings(max_examples=examples, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
    @given(
        muts=st.lists(
            st.tuples(st.sampled_from(offsets), st.one_of(values, st.integers(0, 255))),
            min_size=1,
            max_size=6,
        ),
        wide=st.lists(
            st.tuples(
                st.sampled_from(offsets),
                st.sampled_from([2, 4, 8]),
                st.sampled_from([0, 1, 2, 3, 4, 0xFFFF, 0xFFFFFFFF, 2**63, 2**64 - 1]),
            ),
            max_size=2,
        ),
        cut=st.one_of(st.none(), st.integers(0, len(data))),
    )
    def check(muts, wide, cut):
        buf = bytearray(data)
        for off, val in muts:
            buf[off] = val
        for off, width, val in wide:
            if off + width <= len(buf):
                buf[off : off + width] = (val % (1 << (8 * width))).to_bytes(width, "little")
        if cut is not None:
            del buf[cut:]
        start = time.monotonic()
        with time_bound(10):  # a hang fails here instead of stalling the run
            try:
                exhaust(BoltDB(bytes(buf)))
            except BoltError:
                pass
        assert time.monotonic() - start < 2

    check()


def test_mutations_handmade():
    _mutation_test(make(BIG, page_size=1024, max_fanout=4), 1024)


def test_mutations_real_docker(overlay2_root):
    _mutation_test((overlay2_root / "volumes" / "metadata.db").read_bytes(), 4096)


def test_mutations_real_containerd():
    _mutation_test(gzip.decompress((BOLT_FIXTURES / "containerd-meta.db.gz").read_bytes()), 4096, 120)


# ---- real files: Docker volumes/metadata.db -------------------------------------------------


def test_real_docker_metadata_db(overlay2_root):
    want = {v["Name"]: v for v in load_json(VOLUMES_EXPECTED)}
    with open(overlay2_root / "volumes" / "metadata.db", "rb") as fh:
        db = BoltDB(fh)
    assert db.page_size == 4096 and db.metas[0].valid and db.metas[1].valid
    vols = db.bucket(b"volumes")
    assert vols is not None and vols.inline
    got = {k.decode(): json.loads(v) for k, v in vols.items()}
    assert sorted(got) == sorted(want)
    for name, meta in got.items():
        assert meta["Name"] == name
        assert meta["Driver"] == want[name]["Driver"]
        assert meta["Labels"] == want[name]["Labels"]
        assert meta["Options"] == (want[name]["Options"] or {})
    assert json.loads(vols.get("pvol"))["Labels"] == {"org.pensieve.role": "data"}
    assert db.freelist() == [3, 5]
    assert [p for p, _, _ in db.walk()] == [(), (b"volumes",), (b"volumes",)]


def test_docker_volumes_from_metadata_db(overlay2_root):
    host = api.open_docker(str(overlay2_root))
    vols = {v.name: v for v in host.volumes()}
    for want in load_json(VOLUMES_EXPECTED):
        v = vols[want["Name"]]
        assert v.driver == want["Driver"]
        assert v.labels == want["Labels"]
        assert v.options == (want["Options"] or {})
    assert not [p for p in host.problems if "metadata.db" in p.source]


def _volumes_root(tmp_path: Path, metadata: bytes | None) -> tuple[DockerRoot, Path]:
    root = tmp_path / "docker"
    (root / "volumes" / "kept" / "_data").mkdir(parents=True)
    (root / "volumes" / "kept" / "_data" / "f").write_text("x")
    (root / "volumes" / "kept" / "opts.json").write_text(
        json.dumps({"MountType": "tmpfs", "MountOpts": "size=1m", "MountDevice": "tmpfs"})
    )
    (root / "volumes" / "nodb" / "_data").mkdir(parents=True)
    if metadata is not None:
        (root / "volumes" / "metadata.db").write_bytes(metadata)
    return DockerRoot(DirectoryEvidence(str(tmp_path)), "/docker"), root


def _volume_json(name, driver="local", labels=None, options=None) -> bytes:
    return json.dumps({"Name": name, "Driver": driver, "Labels": labels, "Options": options}).encode()


def test_volume_only_in_metadata_db(tmp_path):
    db = make(
        {
            b"volumes": {
                b"kept": _volume_json("kept", labels={"l": "1"}, options={"type": "tmpfs", "extra": "e"}),
                b"gone": _volume_json("gone", labels={"why": "deleted"}),
                b"plugged": _volume_json("plugged", driver="rexray/ebs"),
                b"junk": b"{not json",
            }
        }
    )
    root, _ = _volumes_root(tmp_path, db)
    problems: list = []
    vols = {v.name: v for v in list_volumes(root, [], problems)}
    assert sorted(vols) == ["gone", "kept", "nodb", "plugged"]
    kept = vols["kept"]
    assert kept.labels == {"l": "1"} and kept.driver == "local" and kept.path
    assert kept.options == {"type": "tmpfs", "extra": "e", "o": "size=1m", "device": "tmpfs"}
    assert vols["nodb"].labels == {} and vols["nodb"].path
    gone = vols["gone"]
    assert gone.path is None and gone.labels == {"why": "deleted"} and gone.driver == "local"
    assert vols["plugged"].driver == "rexray/ebs" and vols["plugged"].path is None
    msgs = {(p.subject, p.message) for p in problems}
    assert ("gone", "volume in metadata.db but its directory is gone") in msgs
    assert not any(p.subject == "plugged" for p in problems)  # plugin data lives with the plugin
    assert any(p.subject == "junk" and "corrupt metadata.db entry" in p.message for p in problems)


@pytest.mark.parametrize("content", [b"", b"garbage" * 1000, None])
def test_corrupt_metadata_db_one_problem(tmp_path, content):
    if content is None:  # a valid file cut short: the volumes bucket's pages are gone
        content = make({b"volumes": {str(i).encode(): b"{}" * 300 for i in range(50)}})[: 3 * 4096 + 100]
    root, _ = _volumes_root(tmp_path, content)
    problems: list = []
    vols = list_volumes(root, [], problems)
    assert sorted(v.name for v in vols) == ["kept", "nodb"]
    assert len(problems) == 1 and "corrupt volume metadata.db" in problems[0].message
    assert problems[0].source == "/docker/volumes/metadata.db"


def test_no_metadata_db(tmp_path):
    root, _ = _volumes_root(tmp_path, None)
    problems: list = []
    assert sorted(v.name for v in list_volumes(root, [], problems)) == ["kept", "nodb"]
    assert problems == []


# ---- real files: containerd -----------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd_meta() -> BoltDB:
    return BoltDB(gzip.decompress((BOLT_FIXTURES / "containerd-meta.db.gz").read_bytes()))


@pytest.fixture(scope="module")
def ctr_expected() -> dict:
    return load_json(BOLT_FIXTURES / "containerd-expected.json")


def test_containerd_namespaces(containerd_meta, ctr_expected):
    v1 = containerd_meta.bucket("v1")
    assert [k.decode() for k, _ in v1.buckets()] == ctr_expected["namespaces"]
    for ns, labels in ctr_expected["namespace_labels"].items():
        got = {k.decode(): v.decode() for k, v in containerd_meta.bucket("v1", ns, "labels").items()}
        assert got == labels


def test_containerd_images_containers_content(containerd_meta, ctr_expected):
    ns = containerd_meta.bucket("v1", "pensieve")

    def names(bucket):
        return [k.decode() for k, _ in bucket.buckets()]

    assert names(ns.bucket("images")) == ctr_expected["images"]["pensieve"]
    assert names(ns.bucket("containers")) == ctr_expected["containers"]["pensieve"]
    assert names(ns.bucket("content").bucket("blob")) == ctr_expected["content"]["pensieve"]
    for name, target in ctr_expected["image_targets"].items():
        t = ns.bucket("images").bucket(name).bucket("target")
        assert t.inline
        assert {k: t.get(k).decode() for k in ("digest", "mediatype")} == target
    for name, labels in ctr_expected["image_labels"].items():
        lb = ns.bucket("images").bucket(name).bucket("labels")
        got = {k.decode(): v.decode() for k, v in lb.items() if k.startswith(b"org.pensieve.")}
        got = {k: v if len(v) < 100 else f"x*{len(v) - 1}+{v[-1]}" for k, v in got.items()}
        assert got == labels
    c1 = ns.bucket("containers").bucket("c1")
    want = ctr_expected["container_c1"]
    assert c1.get("image").decode() == want["Image"]
    assert c1.get("snapshotKey").decode() == want["SnapshotKey"]
    assert c1.get("snapshotter").decode() == want["Snapshotter"]
    assert c1.bucket("runtime").get("name").decode() == want["Runtime"]


def test_containerd_file_has_branch_and_overflow_pages(containerd_meta):
    db = containerd_meta
    kinds = set()
    for p in range(2, db.meta.pgid):
        if _is_page(db, p):
            page = db._page(p, None)
            kinds.add((page.flags, page.overflow > 0))
    assert (bolt.BRANCH_PAGE, False) in kinds and (bolt.LEAF_PAGE, True) in kinds
    assert db.freelist()  # ns-007's pages and older copies
    assert exhaust(db) > 400


def test_containerd_snapshotter_db(ctr_expected):
    db = BoltDB(gzip.decompress((BOLT_FIXTURES / "containerd-overlayfs-metadata.db.gz").read_bytes()))
    snaps = {k.decode().split("/", 2)[2]: b for k, b in db.bucket("v1", "snapshots").buckets()}
    want = ctr_expected["snapshots"]["pensieve"]
    assert sorted(snaps) == sorted(want)
    for key, info in want.items():
        parent = snaps[key].get("parent")
        assert (parent.decode().split("/", 2)[2] if parent else None) == info["parent"]
