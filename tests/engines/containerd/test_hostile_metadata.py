"""Hostile meta.db / snapshotter metadata.db: a generator of in-place mutations of real files.

Every leaf element of the real containerd 1.6 databases (the capture's, and the bbolt fixture's
tests/fixtures/bolt/containerd-meta.db.gz) is mutated the ways a crash or an attacker would: a
byte of its value flipped, its value truncated (vsize shrunk, the page stays well-formed), a
value turned into a bucket and a bucket into a value (the leaf flag toggled), and a few
type confusions inside the OCI spec JSON.  Each reading must end, within a time bound, with
records and problems, never an exception; truncating a typed value must be a problem naming it.
"""

from __future__ import annotations

import gzip
import lzma
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, time_bound

from pensieve.engines.containerd import ContainerdMetadata
from pensieve.engines.containerd.metadata import META_DB
from pensieve.evidence import DirectoryEvidence
from pensieve.formats import bolt
from pensieve.formats.bolt import BoltDB

TARBALL = FIXTURE_ROOT / "containerd" / "containerd-1.6-root.tar.xz"
OVERLAY_DB = "io.containerd.snapshotter.v1.overlayfs/metadata.db"
#: keys whose values have a fixed encoding: truncating them must be reported
TIME_KEYS = {b"createdat", b"updatedat"}
#: keys whose values shortened to nothing or half must be reported (an empty Any is valid: no options)
TYPED_KEYS = TIME_KEYS | {b"spec", b"size"}
PER_KEY = 3  # elements mutated per distinct key name (all of them would take minutes)
MAX_ELEMENTS = 80  # per file, spread evenly over the sampled ones (the bolt fixture has 200 namespaces)


def captured_files() -> dict[str, bytes]:
    """meta.db and the overlayfs metadata.db from the capture tarball (regular files: no root)."""
    out = {}
    with lzma.open(TARBALL) as xz, tarfile.open(fileobj=xz) as tar:
        for name in (META_DB, OVERLAY_DB):
            out[name] = tar.extractfile(f"root/{name}").read()
    return out


def bolt_fixture_files() -> dict[str, bytes]:
    bolt_dir = FIXTURE_ROOT / "bolt"
    return {
        META_DB: gzip.decompress((bolt_dir / "containerd-meta.db.gz").read_bytes()),
        OVERLAY_DB: gzip.decompress((bolt_dir / "containerd-overlayfs-metadata.db.gz").read_bytes()),
    }


def elements(data: bytes) -> list[tuple[tuple[bytes, ...], bolt._Elem]]:
    """(bucket path, leaf element) of every entry, via the reader's own tree walk."""
    db = BoltDB(data)
    out = []

    def visit(bucket, depth=0):
        for e in bucket._leaf_elements():
            out.append((bucket.path, e))
            if e.flags & bolt.BUCKET_LEAF_FLAG:
                visit(bucket._child(e), depth + 1)

    visit(db.root)
    return out


def sample(elems):
    seen: dict[bytes, int] = {}
    picked = []
    for path, e in elems:
        key = bytes(e.key)
        if seen.setdefault(key, 0) < PER_KEY:
            seen[key] += 1
            picked.append((path, e))
    step = max(1, -(-len(picked) // MAX_ELEMENTS))
    return picked[::step]


def mutations(data: bytes) -> Iterator[tuple[str, bytes, bool]]:
    """(description, mutated file, whether a problem is required)."""
    for path, e in sample(elements(data)):
        key = bytes(e.key)
        name = f"{b'/'.join(path).decode(errors='replace')}/{key.decode(errors='replace')}"
        vsize_at = e.offset + 12
        (vsize,) = struct.unpack_from("<I", data, vsize_at)
        is_bucket = bool(e.flags & bolt.BUCKET_LEAF_FLAG)
        for label, new in (("empty", 0), ("half", vsize // 2), ("minus one", max(vsize - 1, 0))):
            if new != vsize:
                buf = bytearray(data)
                struct.pack_into("<I", buf, vsize_at, new)
                must = not is_bucket and (key in TIME_KEYS or key in TYPED_KEYS and label != "minus one")
                yield f"{name}: value truncated ({label})", bytes(buf), must
        for where in {0, vsize // 2, vsize - 1} if vsize else ():
            buf = bytearray(data)
            buf[e.value_offset + where] ^= 0xFF
            yield f"{name}: value byte {where} flipped", bytes(buf), False
        buf = bytearray(data)
        struct.pack_into("<I", buf, e.offset, e.flags ^ bolt.BUCKET_LEAF_FLAG)
        yield f"{name}: leaf flag toggled", bytes(buf), False


SPEC_SWAPS = [  # same length, so the protobuf Any around the JSON stays well-formed
    (b'"noNewPrivileges":true', b'"noNewPrivileges":1234'),
    (b'"args":["sleep"', b'"args":[{"a":1}'),
    (b'"cwd":"/"', b'"cwd":0.5'),
    (b'"env":[', b'"env":7'),
    (b'"namespaces":[{"type":"pid"}', b'"namespaces":[{"type":12345}'),
    (b'"ociVersion":"', b'"ociVersion":['),
]


def run(tmp: Path, files: dict[str, bytes]) -> ContainerdMetadata:
    for rel, data in files.items():
        target = tmp / "root" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    with time_bound(5.0), ContainerdMetadata(DirectoryEvidence(str(tmp)), "/root") as meta:
        for ns in meta.namespaces:  # every record readable as built
            for c in ns.containers:
                assert isinstance(c.id, str) and isinstance(c.labels, dict)
        return meta


@pytest.mark.parametrize("which", ["capture", "bolt-fixture"])
@pytest.mark.parametrize("db_name", [META_DB, OVERLAY_DB])
def test_mutated_databases_yield_problems_not_crashes(tmp_path, which, db_name):
    files = captured_files() if which == "capture" else bolt_fixture_files()
    baseline = run(tmp_path, files)
    assert baseline.namespaces and not [p for p in baseline.problems if "unreadable" in p.message]
    count = 0
    for description, mutated, must in mutations(files[db_name]):
        meta = run(tmp_path, files | {db_name: mutated})
        count += 1
        if must:
            assert meta.problems, description
    assert count > 50


def test_spec_type_confusions_are_problems_naming_the_field(tmp_path):
    files = captured_files()
    meta_db = files[META_DB]
    for old, new in SPEC_SWAPS:
        assert old in meta_db, old
        meta = run(tmp_path, files | {META_DB: meta_db.replace(old, new)})
        spec_problems = [p for p in meta.problems if "/spec" in p.source]
        assert spec_problems, new
        # the other containers and every image survive
        assert sum(len(ns.containers) for ns in meta.namespaces) == 6
        assert all(ns.images for ns in meta.namespaces)


def test_truncated_and_missing_files(tmp_path):
    files = captured_files()
    meta_db = files[META_DB]
    for cut in (0, 100, 4096, len(meta_db) // 2):
        meta = run(tmp_path, files | {META_DB: meta_db[:cut]})
        assert meta.problems
    meta = run(tmp_path, {META_DB: meta_db, OVERLAY_DB: b"not a bolt file"})
    assert any(OVERLAY_DB in p.source for p in meta.problems)
    assert all(s.id is None for ns in meta.namespaces for s in ns.snapshots)
