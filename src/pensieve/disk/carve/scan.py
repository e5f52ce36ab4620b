"""The carving engine: which byte ranges of an image to scan, finding signatures in them, handing
each hit to its validator (:mod:`pensieve.disk.carve.validators`), and what becomes of a carved
file (duplicate check against the allocated files, block-owner attribution, output).  See
:mod:`pensieve.disk.carve` for what is scanned and how."""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pensieve.disk.carve.base import (
    ALIASES,
    CHUNK,
    COMPLETE,
    EXTENSIONS,
    HEADER_ONLY,
    MAX_LENGTH,
    TYPES,
    BufferImage,
    Context,
    Source,
)
from pensieve.disk.carve.validators import MAGICS, TEXT_FIRST, VALIDATORS
from pensieve.evidence.base import Evidence
from pensieve.evidence.disk import DiskImageEvidence
from pensieve.evidence.disk_images import DiskImage
from pensieve.formats.ext4 import Ext4
from pensieve.output.sink import OutputSink
from pensieve.records import Problem
from pensieve.records.disk import CarvedFile, CarveSummary

_OVERLAP = 1024


def normalise_types(types) -> tuple[str, ...]:
    """Type names (aliases accepted: jar, jpg, shell, python, text ...) -> TYPES members."""
    if not types:
        return TYPES
    out = []
    for t in types:
        for name in str(t).split(","):
            name = name.strip().lower()
            if not name:
                continue
            name = ALIASES.get(name, name)
            if name not in TYPES:
                raise ValueError(f"unknown carving type {name!r} (types: {', '.join(TYPES)})")
            if name not in out:
                out.append(name)
    return tuple(out)


# ---- the space to scan -------------------------------------------------------------------------


def free_ranges(read, fs_offset: int) -> tuple[list[tuple[int, int]], int, dict[str, Any]]:
    """Unallocated byte ranges (absolute, merged) of the ext2/3/4 filesystem at FS_OFFSET, from the
    block bitmap of every group; also the block size and a description."""
    fs = Ext4(read, fs_offset)
    bs = fs.block_size
    blocks, uninit = fs.free_runs()
    runs = [(fs_offset + b0 * bs, fs_offset + b1 * bs) for b0, b1 in blocks]
    info = {
        "offset": fs_offset,
        "block_size": bs,
        "blocks": fs.blocks_count,
        "groups": fs.groups,
        "uninit_groups": uninit,
        "free_blocks_superblock": fs.sb.free_blocks,
        "free_blocks_bitmaps": sum(e - s for s, e in runs) // bs,
    }
    return runs, bs, info


# ---- block owners (the journal-recovery hook) ----------------------------------------------------

BlockOwners = Callable[[int], "tuple[int, str | None] | None"]


def owners_from_map(block_map: Mapping[int, tuple[int, str | None]]) -> BlockOwners:
    """A block-owner lookup from a mapping {filesystem block: (inode, path or None)}."""
    return block_map.get


def journal_block_owners(evidence) -> BlockOwners | None:
    """Block owners from the ext4 journal of EVIDENCE's filesystem, when the journal-recovery
    module provides them: ``pensieve.disk.recover.block_owners(evidence)`` returning a mapping
    {block: (inode, path)} or a function block -> (inode, path) | None.  None when not available
    (every carved file is then unattributed)."""
    try:
        from pensieve.disk import recover  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not there (or not importable): no attribution
        return None
    fn = getattr(recover, "block_owners", None)
    if fn is None:
        return None
    owners = fn(evidence)
    if owners is None:
        return None
    return owners.get if isinstance(owners, Mapping) else owners


# ---- the carver --------------------------------------------------------------------------------


def _find_each(data: bytes, magics: list) -> Iterator[tuple[int, tuple[str, bytes, int]]]:
    """(offset, magic) of every occurrence of every magic at or after its own offset: one
    ``bytes.find`` pass per magic."""
    for m in magics:
        magic, moff = m[1], m[2]
        i = data.find(magic, moff)
        while i >= 0:
            yield i, m
            i = data.find(magic, i + 1)


def _hyperscan_each(data: bytes, magics: list) -> Iterator[tuple[int, tuple[str, bytes, int]]]:
    """The same as _find_each in one pass of Hyperscan's multi-literal matcher (when installed);
    References: Hyperscan developer reference, hs_compile_multi / hs_scan (block mode)."""
    key = tuple(magics)
    db = _HS_DBS.get(key)
    if db is None:
        db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
        exprs = [b"".join(b"\\x%02x" % c for c in m[1]) for m in magics]
        db.compile(expressions=exprs, ids=list(range(len(magics))), elements=len(magics))
        _HS_DBS[key] = db
    found: list[tuple[int, int]] = []

    def on_match(idx: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
        found.append((idx, to - len(magics[idx][1])))

    db.scan(data, match_event_handler=on_match)
    for idx, i in found:
        if i >= magics[idx][2]:
            yield i, magics[idx]


try:
    import hyperscan as _hyperscan

    _magic_offsets = _hyperscan_each
except ImportError:  # optional: the bytes.find passes give the same hits
    _magic_offsets = _find_each
_HS_DBS: dict[tuple, Any] = {}


class _Space:
    """A scan range [start, end) with the block grid files start on."""

    __slots__ = ("start", "end", "grid", "fs")

    def __init__(self, start: int, end: int, grid: int, fs: int | None) -> None:
        self.start, self.end, self.grid, self.fs = start, end, grid, fs


class Carver:
    """Carve an image: ``for f in Carver(img, ...).run(): ...``; ``.summary`` afterwards.

    IMG is an image object (``read(offset, size)``, ``get_size()``: pensieve's disk image classes,
    or :class:`BufferImage`).  FILESYSTEMS: ``[(offset, evidence or None)]`` of the ext
    filesystems to take allocation from (found from the image when None).  OWNERS: "journal" (the
    default: :func:`journal_block_owners` of each ext filesystem), None (no attribution), or a
    block-owner lookup / mapping {block: (inode, path)} (see :func:`owners_from_map`) for the
    filesystem at byte offset OWNERS_FS (any filesystem when None)."""

    def __init__(
        self,
        img,
        *,
        whole: bool = False,
        types=None,
        out_dir: str | None = None,
        owners: BlockOwners | Mapping | str | None = "journal",
        owners_fs: int | None = None,
        dedupe: bool = True,
        skip_duplicates: bool = False,
        filesystems: list | None = None,
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int = CHUNK,
        max_length: Mapping[str, int] | None = None,
    ) -> None:
        self.img = img
        self.src = Source(img)
        self.whole = whole
        self.types = normalise_types(types)
        self.out_dir = out_dir
        boundaries = img.boundaries() if isinstance(img, DiskImage) else []
        self.sink = OutputSink(out_dir, boundaries) if out_dir else None
        if isinstance(owners, Mapping):
            owners = owners_from_map(owners)
        self.owners = owners
        self.owners_fs = owners_fs
        self._owner_lookups: dict[int, BlockOwners | None] = {}
        self.dedupe = dedupe
        self.skip_duplicates = skip_duplicates
        self._covered_until = 0
        self.progress = progress
        self.chunk = max(chunk_size, 64 << 10)
        self.max_length = dict(MAX_LENGTH)
        self.max_length.update(max_length or {})
        name = img.describe() if isinstance(img, DiskImage) else "image"
        self.summary = CarveSummary(image=name, scope="whole" if whole else "unallocated")
        self._filesystems = filesystems
        self._alloc: dict[int, list[tuple[int, int]]] = {}  # fs offset -> free runs
        self._fs_bs: dict[int, int] = {}
        self._fs_ev: dict[int, Any] = {}
        self._dup_index: dict[int, dict[int, list[tuple[int, str]]]] = {}
        self._dup_hash: dict[tuple[int, int], str] = {}
        self._hosts: dict[int, Any] = {}

    # ---- spaces --------------------------------------------------------------------------
    def _find_filesystems(self) -> list[tuple[int, Any, int]]:
        """[(offset, evidence or None, length)] of the filesystems in the image."""
        if self._filesystems is not None:
            out = []
            for off, ev in self._filesystems:
                length = self.src.size - off
                part = ev.partition if isinstance(ev, (DiskImageEvidence, _PartitionOnly)) else None
                if part is not None:
                    length = part.length
                out.append((off, ev, length))
            return out
        out = []
        if isinstance(self.img, BufferImage):
            return out
        from pensieve.evidence.disk import list_partitions

        _vs, parts = list_partitions(self.img)
        if not parts:
            out.append((0, None, self.src.size))
        for p in parts:
            out.append((p.offset, None, p.length))
        return out

    def spaces(self) -> list[_Space]:
        size = self.src.size
        fss = self._find_filesystems()
        spaces: list[_Space] = []
        covered: list[tuple[int, int]] = []
        for off, ev, length in fss:
            end = min(size, off + length)
            head = self.src.read(off, 0x10100)
            from pensieve.evidence.disk import sniff_filesystem

            kind = sniff_filesystem(head)
            if kind != "ext2/3/4":
                covered.append((off, end))
                if kind is None and not any(head):
                    kind = "zero-filled"
                lone = self._filesystems is None and len(fss) == 1 and kind in (None, "zero-filled")
                if self.whole or lone:
                    if not self.whole:
                        self.summary.problems.append(
                            Problem(
                                self.summary.image, "no filesystem recognised: the whole image is scanned"
                            )
                        )
                    spaces.append(_Space(off, end, 512, None))
                else:
                    self.summary.problems.append(
                        Problem(
                            self.summary.image,
                            f"{kind or 'unknown data'} at offset {off}: allocation unknown, not scanned "
                            "(--all scans it)",
                        )
                    )
                continue
            try:
                runs, bs, info = free_ranges(self.src.read, off)
            except (ValueError, struct.error, OSError) as exc:
                self.summary.problems.append(
                    Problem(
                        self.summary.image,
                        f"ext filesystem at offset {off}: block bitmaps unreadable ({exc})",
                    )
                )
                covered.append((off, end))
                if self.whole:
                    spaces.append(_Space(off, end, 512, None))
                continue
            fs_end = min(end, off + info["blocks"] * bs)
            covered.append((off, fs_end))
            self._alloc[off] = runs
            self._fs_bs[off] = bs
            if isinstance(ev, Evidence):
                self._fs_ev[off] = ev
            self.summary.filesystems.append(info)
            if self.whole:
                spaces.append(_Space(off, fs_end, bs, off))
            else:
                spaces.extend(_Space(s, min(e, fs_end), bs, off) for s, e in runs if s < fs_end)
        # what no filesystem covers: partition gaps, the table, space after the last partition
        pos = 0
        for s, e in sorted(covered) + [(size, size)]:
            if s > pos:
                spaces.append(_Space(pos, s, 512, None))
            pos = max(pos, e)
        spaces.sort(key=lambda sp: sp.start)
        return spaces

    def _allocated(self, fs: int | None, offset: int) -> bool:
        if fs is None:
            return False
        runs = self._alloc.get(fs)
        if runs is None:
            return False
        i = bisect.bisect_right(runs, (offset, float("inf"))) - 1
        return not (i >= 0 and runs[i][0] <= offset < runs[i][1])

    # ---- scanning ------------------------------------------------------------------------
    def run(self) -> Iterator[CarvedFile]:
        """The carved files, in image order (``summary`` is complete when the iteration ends);
        the output sink, if any, is closed (its manifest written) at the end."""
        try:
            yield from self._scan()
        finally:
            if self.sink is not None:
                self.sink.close({"evidence": self.summary.image, "command": "carve"})
                self.sink = None

    def _scan(self) -> Iterator[CarvedFile]:
        t0 = time.perf_counter()
        spaces = self.spaces()
        total = sum(sp.end - sp.start for sp in spaces)
        self.summary.image_bytes = self.src.size
        self.summary.ranges = len(spaces)
        magics = [(t, m, mo) for t, m, mo in MAGICS if t in self.types]
        text_first = {b: tuple(t for t in ts if t in self.types) for b, ts in TEXT_FIRST.items()}
        text_first = {b: ts for b, ts in text_first.items() if ts}
        self._covered_until = 0
        done = 0
        last_report = 0.0
        for sp in spaces:
            cu = self._covered_until
            lo = max(sp.start, cu - cu % sp.grid if cu > sp.start else sp.start)
            while lo < sp.end:
                hi = min(lo + self.chunk, sp.end)
                yield from self._carve_hits(sp, self._hits(sp, lo, hi, magics, text_first))
                done += hi - lo
                self.summary.scanned_bytes += hi - lo
                lo = hi
                cu = self._covered_until
                if cu > lo:  # skip what a complete carve covers (its hits are inside it)
                    skip = min(sp.end, cu - (cu - (sp.fs or 0)) % sp.grid)
                    if skip > lo:
                        done += skip - lo
                        lo = skip
                if self.progress is not None and time.perf_counter() - last_report > 0.2:
                    last_report = time.perf_counter()
                    self.progress(done, total)
        if self.progress is not None:
            self.progress(total, total)
        self.summary.seconds = round(time.perf_counter() - t0, 3)

    def _hits(
        self, sp: _Space, lo: int, hi: int, magics: list, text_first: dict[int, tuple[str, ...]]
    ) -> list[tuple[int, str]]:
        """(offset, type) of every signature hit starting in [lo, hi) of SP, sorted: magics at any
        offset, text types at block starts."""
        data = self.src.read(lo, hi - lo + _OVERLAP)
        hits: list[tuple[int, str]] = []
        for i, (t, _magic, moff) in _magic_offsets(data, magics):
            start = lo + i - moff
            if sp.start <= start < hi:
                hits.append((start, t))
        if text_first:
            g = sp.grid
            first = (-(lo - (sp.fs or 0))) % g
            for i in range(first, hi - lo, g):
                ts = text_first.get(data[i])
                if ts is not None:
                    for t in ts:
                        hits.append((lo + i, t))
        hits.sort()
        return hits

    def _carve_hits(self, sp: _Space, hits: list[tuple[int, str]]) -> Iterator[CarvedFile]:
        for start, t in hits:
            self.summary.hits[t] = self.summary.hits.get(t, 0) + 1
            if start < self._covered_until:
                self.summary.inside_carved += 1
                continue
            found = self._carve_one(sp, start, t)
            if found is None:
                continue
            if found.confidence != HEADER_ONLY:
                self._covered_until = max(self._covered_until, start + found.length)
            if found.duplicate_of is None or not self.skip_duplicates:
                yield found

    def _carve_one(self, sp: _Space, start: int, t: str) -> CarvedFile | None:
        bound = min(self.src.size, start + self.max_length[t])
        ctx = Context(self.src, bound, sp.end, sp.grid)
        try:
            verdict = VALIDATORS[t](ctx, start)
        except (struct.error, ValueError, IndexError, OverflowError, MemoryError, RecursionError) as exc:
            verdict = None
            self.summary.problems.append(
                Problem(self.summary.image, f"{t} at {start}: validator failed: {exc}")
            )
        if verdict is None or verdict.length <= 0:
            self.summary.rejected[t] = self.summary.rejected.get(t, 0) + 1
            return None
        length = min(verdict.length, self.src.size - start)
        sha = hashlib.sha256()
        for _p, piece in self.src.pieces(start, start + length):
            sha.update(piece)
        digest = sha.hexdigest()
        fs = sp.fs
        bs = self._fs_bs.get(fs) if fs is not None else None
        rec = CarvedFile(
            path=None,
            container=None,
            layer=None,
            method="carve",
            confidence=verdict.confidence,
            sha256=digest,
            offset=start,
            length=length,
            type=verdict.type or t,
            validation=verdict.details,
            fs_offset=fs,
            block=(start - fs) // bs if bs else None,
            allocated=self.whole and self._allocated(fs, start),
        )
        if self.dedupe and fs is not None:
            dup = self._duplicate_of(fs, length, digest)
            if dup is not None:  # reported (unless skipped), never written a second time
                rec.duplicate_of = dup
                self.summary.duplicates.append(
                    {"offset": start, "type": t, "sha256": digest, "allocated_path": dup}
                )
                if not self.skip_duplicates:
                    self._attribute(rec)  # the deleted copy's own inode and path, when known
                return rec
        self._attribute(rec)
        if self.sink is not None:
            rec.output = self._write(rec)
        self.summary.carved[rec.type] = self.summary.carved.get(rec.type, 0) + 1
        self.summary.confidence[rec.confidence] = self.summary.confidence.get(rec.confidence, 0) + 1
        return rec

    # ---- duplicates of allocated files -------------------------------------------------------
    def _evidence(self, fs: int):
        ev = self._fs_ev.get(fs)
        if ev is None and fs not in self._fs_ev:
            from pensieve.evidence.disk import DiskImageEvidence

            try:
                ev = DiskImageEvidence(self.img, fs)
            except Exception as exc:  # noqa: BLE001 - any TSK failure: no dedupe for it, said once
                self.summary.problems.append(
                    Problem(
                        self.summary.image,
                        f"filesystem at {fs}: files not listed, no duplicate check ({exc})",
                    )
                )
                ev = None
            self._fs_ev[fs] = ev
        return ev

    def _size_index(self, fs: int) -> dict[int, list[tuple[int, str]]]:
        index = self._dup_index.get(fs)
        if index is not None:
            return index
        index = {}
        ev = self._evidence(fs)
        if ev is not None:
            for top, entries in ev.walk("/"):
                for e in entries:
                    st = e.stat
                    if st.is_file and st.size:
                        index.setdefault(st.size, []).append((st.ino, f"{top.rstrip('/')}/{e.name}"))
        self._dup_index[fs] = index
        return index

    def _duplicate_of(self, fs: int, length: int, digest: str) -> str | None:
        same = self._size_index(fs).get(length)
        if not same:
            return None
        ev = self._fs_ev.get(fs)
        for ino, path in same:
            key = (fs, ino)
            h = self._dup_hash.get(key)
            if h is None:
                try:
                    with ev.open(path) as fh:
                        h = hashlib.file_digest(fh, "sha256").hexdigest()
                except Exception:  # noqa: BLE001 - an unreadable allocated file is just not a match
                    h = ""
                self._dup_hash[key] = h
            if h == digest:
                return path
        return None

    # ---- attribution ---------------------------------------------------------------------
    def _owners_for(self, fs: int) -> BlockOwners | None:
        if fs in self._owner_lookups:
            return self._owner_lookups[fs]
        lookup = None
        if self.owners == "journal":
            ev = self._evidence(fs)
            if ev is not None:
                try:
                    lookup = journal_block_owners(ev)
                except Exception as exc:  # noqa: BLE001 - the journal is evidence too: said, not fatal
                    self.summary.problems.append(
                        Problem(
                            self.summary.image, f"filesystem at {fs}: journal block owners unreadable ({exc})"
                        )
                    )
        elif callable(self.owners) and (self.owners_fs is None or self.owners_fs == fs):
            lookup = self.owners
        self._owner_lookups[fs] = lookup
        return lookup

    def _attribute(self, rec: CarvedFile) -> None:
        if rec.block is None or rec.fs_offset is None or not self.owners:
            return
        owners = self._owners_for(rec.fs_offset)
        if owners is None:
            return
        bs = self._fs_bs[rec.fs_offset]
        first = owners(rec.block)
        if not first:
            return
        ino, path = first
        last_block = rec.block + max(0, rec.length - 1) // bs
        tail = owners(last_block) if last_block != rec.block else first
        rec.inode = ino
        rec.path = path
        rec.attribution = "block-owner"
        rec.validation["owner_covers_last_block"] = bool(tail and tail[0] == ino)
        if path:
            self._layer_of(rec)

    def _layer_of(self, rec: CarvedFile) -> None:
        ev = self._evidence(rec.fs_offset)
        if ev is None or "/" not in (rec.path or ""):
            return
        host = self._hosts.get(rec.fs_offset, False)
        if host is False:
            from pensieve.disk.recover import engines_host

            host = engines_host(ev)[0]  # every engine's roots; none on this filesystem: no layers
            self._hosts[rec.fs_offset] = host
        if host is None:
            return
        try:
            a = host.whence(rec.path)
        except Exception:  # noqa: BLE001 - a path outside any engine root
            return
        rec.layer = a.layer
        rec.container = a.containers[0] if a.containers else None

    # ---- output ----------------------------------------------------------------------------
    def _write(self, rec: CarvedFile) -> str:
        ext = "py" if rec.validation.get("subtype") == "python" else EXTENSIONS.get(rec.type, "bin")
        if rec.validation.get("subtype") == "jar":
            ext = "jar"
        name = f"{rec.offset:012d}.{ext}"
        if rec.confidence != COMPLETE:
            name = f"{rec.offset:012d}.{rec.confidence}.{ext}"
        self.sink.write(name, (piece for _p, piece in self.src.pieces(rec.offset, rec.offset + rec.length)))
        return os.path.join(self.out_dir, name)


def carve(source, **kwargs) -> tuple[list[CarvedFile], CarveSummary]:
    """Carve SOURCE (an image path or specification ``disk.img@2`` / ``@offset=N``, an image
    object, or bytes); keyword arguments as for :class:`Carver`.  Returns (files, summary)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        kwargs.setdefault("whole", True)
        c = Carver(BufferImage(bytes(source)), **kwargs)
        return list(c.run()), c.summary
    if isinstance(source, str):
        img, filesystems = open_for_carving(source)
        try:
            c = Carver(img, filesystems=filesystems, **kwargs)
            return list(c.run()), c.summary
        finally:
            img.close()
    c = Carver(source, **kwargs)
    return list(c.run()), c.summary


def open_for_carving(source: str):
    """(image object, filesystems or None) for SOURCE: ``disk.img@N`` / ``@offset=N`` restrict the
    scan to that partition or filesystem; a plain image is scanned partition by partition; a file
    that is not a disk image is scanned whole."""
    from pensieve.evidence.disk import list_partitions, open_image, split_spec

    base, number, offset = split_spec(source)
    img = open_image(base)
    try:
        if offset is not None:
            return img, [(offset, None)]
        if number is not None:
            _vs, parts = list_partitions(img)
            chosen = next((p for p in parts if p.number == number), None)
            if chosen is None:
                from pensieve.evidence.disk import ImageError

                raise ImageError(f"{base} has no partition {number}")
            return img, [(chosen.offset, _PartitionOnly(chosen))]
    except BaseException:
        img.close()
        raise
    return img, None


class _PartitionOnly:
    """Stands for a partition's evidence until it is needed (carries only its length)."""

    def __init__(self, partition) -> None:
        self.partition = partition
