"""Working with checkpointed memory: dump it, search it, run YARA over it, diff two checkpoints.

Memory is reconstructed per process from ``pagemap-<pid>.img`` (which pages exist, where) and
the ``pages-<id>.img`` files, through the ``parent`` chain of an incremental dump.  Page flags
are honoured and reported: PE_PRESENT pages are in this checkpoint, PE_PARENT pages in a parent
(pre-)dump, PE_LAZY pages without PE_PRESENT were left to a lazy-pages server and are not in the
evidence; pages without a pagemap entry were not dumped (zero pages, clean file pages CRIU
restores from the file).

* :func:`dump` writes one process's memory (a range, the mappings containing an address or
  naming a file, or all of it) to sparse files named with their addresses, plus a manifest;
* :func:`search` finds strings, regexes and hex patterns, each hit with pid, address, mapping
  and context;
* :func:`yara_scan` runs compiled YARA rules (yara-python) over each process's memory;
* :func:`diff` compares two checkpoints: processes appeared / vanished / changed, sockets and
  files opened / closed, memory growth per process.

Scans read the dumped extents in windows of ``CHUNK`` bytes that overlap by ``overlap`` bytes,
so a match straddling a window edge is found once; a match longer than the overlap can be missed
(literal patterns set the overlap to their length, regexes and YARA to 64 KiB).
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Iterator

from pensieve.formats.criu.checkpoint import PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT, Checkpoint
from pensieve.formats.criu.images import CriuImageError
from pensieve.memory import views
from pensieve.output.sink import OutputSink
from pensieve.records import MemoryMap
from pensieve.records.memory import DumpedRegion, MemoryChange, MemoryHit

__all__ = [
    "DumpedRegion",
    "MemoryChange",
    "MemoryHit",
    "Pattern",
    "diff",
    "dump",
    "extents",
    "search",
    "yara_scan",
]

CHUNK = 16 << 20
REGEX_OVERLAP = 64 << 10


class Pattern:
    """A search pattern: a literal (bytes.find) or a compiled bytes regex."""

    def __init__(self, label: str, literal: bytes | None = None, regex: re.Pattern | None = None) -> None:
        if (literal is None) == (regex is None):
            raise ValueError("a pattern is a literal or a regex")
        if literal is not None and not literal:
            raise ValueError("empty pattern")
        self.label, self.literal, self.regex = label, literal, regex

    @classmethod
    def string(cls, text: str, ignore_case: bool = False, utf16: bool = False) -> list[Pattern]:
        out = []
        encodings = ["utf-8"] + (["utf-16-le"] if utf16 else [])
        for enc in encodings:
            raw = text.encode(enc)
            label = text if enc == "utf-8" else f"{text} (utf-16le)"
            if ignore_case:
                out.append(cls(label, regex=re.compile(re.escape(raw), re.IGNORECASE | re.DOTALL)))
            else:
                out.append(cls(label, literal=raw))
        return out

    @classmethod
    def hex(cls, text: str) -> Pattern:
        cleaned = re.sub(r"[\s:]", "", text.lower().removeprefix("0x"))
        try:
            raw = bytes.fromhex(cleaned)
        except ValueError:
            raise ValueError(f"not a hex string: {text!r}") from None
        return cls(f"hex:{cleaned}", literal=raw)

    @classmethod
    def compile(cls, text: str, ignore_case: bool = False) -> Pattern:
        try:
            rx = re.compile(
                text.encode("utf-8", "surrogateescape"), re.DOTALL | (re.IGNORECASE if ignore_case else 0)
            )
        except re.error as exc:
            raise ValueError(f"bad regex {text!r}: {exc}") from None
        return cls(f"re:{text}", regex=rx)

    def overlap(self) -> int:
        return len(self.literal) - 1 if self.literal is not None else REGEX_OVERLAP

    def find_in(self, buf, start: int, stop: int, report: int) -> Iterator[tuple[int, int]]:
        """(position, length) of the matches in the window ``buf[start:stop]`` that start before
        REPORT, positions into BUF: what :meth:`finditer` finds in a copy of the window, without
        the copy (BUF may be a memory map)."""
        if self.literal is not None:
            lit, n = self.literal, len(self.literal)
            find = buf.find
            i = find(lit, start, stop)
            while 0 <= i < report:
                yield i, n
                i = find(lit, i + 1, stop)
            return
        if start == 0 and stop == len(buf) and type(buf) is bytes:
            yield from self.finditer(buf, report)
            return
        # the window as a string of its own (a regex sees its edges as the string's start and end)
        with memoryview(buf) as whole, whole[start:stop] as view:
            prefix = self._prefix()
            if prefix is None:
                it = self.regex.finditer(view)
                try:
                    for m in it:
                        if m.start() + start >= report:
                            break
                        if m.end() > m.start():
                            yield start + m.start(), m.end() - m.start()
                finally:
                    it = m = None  # the scanner holds the view: let it go before the view is released
                return
            # every match starts with the literal PREFIX: find it at C speed, match only there
            match, find = self.regex.match, buf.find
            i = find(prefix, start, stop)
            while 0 <= i < report:
                m = match(view, i - start)
                if m is None:
                    i = find(prefix, i + 1, stop)
                    continue
                yield i, m.end() - m.start()
                i = find(prefix, start + m.end(), stop)
                m = None

    def _prefix(self) -> bytes | None:
        """The literal bytes every match of the regex starts with (3 or more), or None."""
        if self.literal is not None or self.regex.flags & re.IGNORECASE:
            return None
        cached = getattr(self, "_lead", False)
        if cached is not False:
            return cached
        lead = bytearray()
        try:
            from re import _constants, _parser

            for op, arg in _parser.parse(self.regex.pattern, self.regex.flags & ~re.DOTALL):
                if op is not _constants.LITERAL:
                    break
                lead.append(arg)
        except Exception:  # noqa: BLE001 - an internal parser we only read: no prefix then
            lead = bytearray()
        self._lead = bytes(lead) if len(lead) >= 3 else None
        return self._lead

    def finditer(self, data, end: int) -> Iterator[tuple[int, int]]:
        """(offset, length) of matches starting before END."""
        if self.literal is not None:
            lit, n = self.literal, len(self.literal)
            i = data.find(lit)
            while 0 <= i < end:
                yield i, n
                i = data.find(lit, i + 1)
        else:
            for m in self.regex.finditer(data):
                if m.start() >= end:
                    break
                if m.end() > m.start():
                    yield m.start(), m.end() - m.start()


# ---- extents and reads ------------------------------------------------------------------------


def extents(ck: Checkpoint, pid: int, parent_pages: bool = True) -> list[tuple[int, int, str]]:
    """(start, end, kind) of PID's pagemap, adjacent runs of one kind merged.

    kind: ``data`` (present here or in a parent), ``lazy`` (not in the evidence).  Without
    PARENT_PAGES (no usable parent checkpoint) PE_PARENT runs are left out: nothing to read."""
    pm = ck.pagemap(pid)
    if pm is None:
        return []
    out: list[tuple[int, int, str]] = []
    data_flags = PE_PRESENT | PE_PARENT if parent_pages else PE_PRESENT
    for r in pm[1]:
        kind = "data" if r.flags & data_flags else ("lazy" if r.flags & PE_LAZY else "none")
        if kind == "none":
            continue
        s, e = r.vaddr, r.vaddr + r.nr_pages * PAGE_SIZE
        if out and out[-1][1] == s and out[-1][2] == kind:
            out[-1] = (out[-1][0], e, kind)
        else:
            out.append((s, e, kind))
    return out


def _read(ck: Checkpoint, pid: int, start: int, length: int) -> tuple[bytes, list[dict]]:
    """Memory [START, START+LENGTH): one pread when a single present run holds it all."""
    pm = ck.pagemap(pid)
    if pm is not None:
        pages_id, runs = pm
        starts = getattr(ck, "_run_starts", {}).get(pid)
        if starts is None:
            starts = [r.vaddr for r in runs]
            if not hasattr(ck, "_run_starts"):
                ck._run_starts = {}
            ck._run_starts[pid] = starts
        i = bisect.bisect_right(starts, start) - 1
        if i >= 0 and runs[i].flags & PE_PRESENT:
            # consecutive present runs whose pages follow each other in the pages file: one pread
            first = r = runs[i]
            end = start + length
            while r.vaddr + r.nr_pages * PAGE_SIZE < end and i + 1 < len(runs):
                nxt = runs[i + 1]
                size = r.nr_pages * PAGE_SIZE
                if not (
                    nxt.flags & PE_PRESENT and nxt.vaddr == r.vaddr + size and nxt.offset == r.offset + size
                ):
                    break
                i, r = i + 1, nxt
            if end <= r.vaddr + r.nr_pages * PAGE_SIZE:
                return ck.read_pages(pages_id, first.offset + (start - first.vaddr), length), []
    return ck.read_memory(pid, start, length)


def _windows(ck: Checkpoint, pid: int, overlap: int, chunk: int = CHUNK, parent_pages: bool = True):
    """(address, data, report_end) windows over PID's dumped extents; report hits < report_end."""
    for pos, length, n in _window_spans(ck, pid, overlap, chunk, parent_pages):
        data, _gaps = _read(ck, pid, pos, length)
        yield pos, data, n


def _window_spans(ck: Checkpoint, pid: int, overlap: int, chunk: int, parent_pages: bool):
    """(address, length, report length) of every window over PID's dumped extents: CHUNK bytes
    apart, each OVERLAP bytes longer (not past its extent) so a hit across a seam is seen."""
    for s, e, kind in extents(ck, pid, parent_pages):
        if kind != "data":
            continue
        pos = s
        while pos < e:
            n = min(chunk, e - pos)
            yield pos, min(n + overlap, e - pos), n
            pos += n


def _segments(runs) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Present runs merged where they follow each other in memory and in the pages file:
    (starts, [(start, end, file offset)])."""
    segs: list[tuple[int, int, int]] = []
    for r in runs:
        if not r.flags & PE_PRESENT:
            continue
        s, e = r.vaddr, r.vaddr + r.nr_pages * PAGE_SIZE
        if segs:
            ls, le, lo = segs[-1]
            if le == s and lo + (le - ls) == r.offset:
                segs[-1] = (ls, e, lo)
                continue
        segs.append((s, e, r.offset))
    return [g[0] for g in segs], segs


def _mapped_windows(ck: Checkpoint, pid: int, overlap: int, chunk: int = CHUNK, parent_pages: bool = True):
    """The windows of :func:`_windows` (same addresses, lengths and report ends) without copying:
    (address, buf, start, stop, report) where the window is ``buf[start:stop]`` and hits are
    reported below REPORT.  BUF is a read-only map of the pages file when one present segment
    holds the whole window, else the window's bytes (read through the parent chain, gaps zeroed)."""
    pm = ck.pagemap(pid)
    if pm is None:
        return
    pages_id, runs = pm
    starts, segs = _segments(runs)
    name = f"pages-{pages_id}.img"
    mapped = None
    try:
        for pos, length, n in _window_spans(ck, pid, overlap, chunk, parent_pages):
            i = bisect.bisect_right(starts, pos) - 1
            if i >= 0 and pos + length <= segs[i][1]:
                if mapped is None:
                    mapped = (ck.store.map(name) if name in ck.names else None) or (None, 0, 0)
                mm, base, size = mapped
                off = segs[i][2] + (pos - segs[i][0])
                if mm is not None and off + length <= size:
                    yield pos, mm, base + off, base + off + length, base + off + n
                    continue
            data, _gaps = _read(ck, pid, pos, length)
            yield pos, data, 0, length, n
    finally:
        if mapped is not None and mapped[0] is not None:
            try:
                mapped[0].close()
            except BufferError:  # a view of it is still held somewhere: the collector unmaps it
                pass


class _MapIndex:
    """Find the VMA holding an address."""

    def __init__(self, maps: list[MemoryMap]) -> None:
        self.maps = sorted(maps, key=lambda m: m.start)
        self.starts = [m.start for m in self.maps]

    def span(self, addr: int) -> tuple[MemoryMap | None, int, int]:
        """(find(addr), lo, hi): find gives the same answer for every address in [lo, hi)."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            hi = self.maps[i].end
            if i + 1 < len(self.starts) and self.starts[i + 1] < hi:
                hi = self.starts[i + 1]
            return self.maps[i], self.starts[i], hi
        return None, 0, 0

    def find(self, addr: int) -> MemoryMap | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None


_PRINTABLE = bytes(b if 32 <= b < 127 else 46 for b in range(256))


def _printable(data: bytes) -> str:
    return data.translate(_PRINTABLE).decode("ascii")


_CORE_COMM = {3: {6: None}}  # core_entry tc.comm (protobuf field filter)


class _Target:
    """A process to scan; its comm and mappings are looked up on its first hit only."""

    def __init__(self, ck: Checkpoint, pid: int) -> None:
        self.ck, self.pid = ck, pid
        self._comm: str | None | bool = False
        self._idx: _MapIndex | None = None

    @property
    def comm(self) -> str | None:
        if self._comm is False:
            try:
                core = self.ck.entry(f"core-{self.pid}.img", _CORE_COMM)
                self._comm = core.get("tc", {}).get("comm") if core is not None else None
            except CriuImageError:
                self._comm = None
        return self._comm  # type: ignore[return-value]

    @property
    def idx(self) -> _MapIndex:
        if self._idx is None:
            self._idx = _MapIndex(views._maps(self.ck, [self.pid], light=True))
        return self._idx


def _targets(ck: Checkpoint, pids: Iterable[int] | None) -> list[tuple[_Target, None]]:
    """The processes with memory in the checkpoint (zombies have none), in pstree order.

    Only pstree.img and the pagemaps are read up front: a scan of hundreds of processes does not
    decode every core, mm and file image before its first byte."""
    order = [e.get("pid", 0) for e in ck.image("pstree.img", required=True).entries]
    live = [pid for pid in order if f"pagemap-{pid}.img" in ck.names]
    for pid in order:  # a task with mappings (mm) but no pagemap: its memory is lost, say so
        if f"mm-{pid}.img" in ck.names and f"pagemap-{pid}.img" not in ck.names:
            ck.note(f"pid {pid}: mm-{pid}.img without pagemap-{pid}.img: its memory is not in the checkpoint")
    if pids is not None:
        want = set(pids)
        missing = want - set(live)
        if missing:
            raise LookupError(f"no live process {', '.join(map(str, sorted(missing)))} in the checkpoint")
        live = [pid for pid in live if pid in want]
    return [(_Target(ck, pid), None) for pid in live]


def _hit(p: _Target, addr: int, length: int, label: str, window: bytes, off: int, ctx: int) -> MemoryHit:
    return _make_hit(p, addr, length, label, window[max(0, off - ctx) : off + length + ctx])


def _make_hit(p: _Target, addr: int, length: int, label: str, around: bytes) -> MemoryHit:
    m = p.idx.find(addr)
    return MemoryHit(
        pid=p.pid,
        address=addr,
        length=length,
        pattern=label,
        comm=p.comm,
        mapping=(m.path or "[anon]") if m else None,
        map_start=m.start if m else None,
        perms=m.perms if m else None,
        map_offset=addr - m.start if m else None,
        context=_printable(around),
        context_hex=around.hex(),
    )


# ---- search ---------------------------------------------------------------------------------------


def _has_parent(ck: Checkpoint) -> bool:
    """Whether PE_PARENT pages can be read: a refused parent link is a problem, not an error."""
    try:
        return ck.pages_parent() is not None
    except CriuImageError as exc:
        ck.note(str(exc))
        return False


def _each_task(ck: Checkpoint, pids: Iterable[int] | None, scan_task) -> Iterator[MemoryHit]:
    """``scan_task(target, parent_pages)`` for each live process (or each of PIDS).  A process
    whose images cannot be read (pagemap, pages, parent chain) is one problem of the checkpoint
    -- the hits it gave before stay -- and the others are still scanned."""
    parent_pages = _has_parent(ck)
    for p, _ in _targets(ck, pids):
        try:
            yield from scan_task(p, parent_pages)
        except CriuImageError as exc:
            ck.note(f"pid {p.pid}: memory not scanned to the end: {exc}")


def search(
    ck: Checkpoint,
    patterns: list[Pattern],
    pids: Iterable[int] | None = None,
    context: int = 32,
    max_hits: int | None = None,
) -> Iterator[MemoryHit]:
    """Every match of PATTERNS in the memory of each live process (or of PIDS), in address order
    per process and pattern."""
    if not patterns:
        return
    overlap = max(p.overlap() for p in patterns)

    def scan_task(p: _Target, parent_pages: bool) -> Iterator[MemoryHit]:
        return _search_task(p, patterns, overlap, context, parent_pages)

    for n, hit in enumerate(_each_task(ck, pids, scan_task), 1):
        yield hit
        if max_hits is not None and n >= max_hits:
            return


def _search_task(
    p: _Target, patterns: list[Pattern], overlap: int, context: int, parent_pages: bool
) -> Iterator[MemoryHit]:
    """The hits of PATTERNS in one process's memory."""
    printable = _PRINTABLE
    pid, comm, vma, span_lo, span_hi = p.pid, False, None, 0, 0
    mapping = m_start = perms = None
    for addr, buf, start, stop, report in _mapped_windows(p.ck, pid, overlap, parent_pages=parent_pages):
        for pat in patterns:
            label = pat.label
            for i, length in pat.find_in(buf, start, stop, report):
                # _make_hit, inlined: thousands of hits cost their record and little else
                lo, hi = i - context, i + length + context
                around = buf[lo if lo > start else start : hi if hi < stop else stop]
                a = addr + (i - start)
                if comm is False:
                    comm = p.comm
                if not span_lo <= a < span_hi:
                    vma, span_lo, span_hi = p.idx.span(a)
                    if vma is None:
                        mapping = m_start = perms = None
                    else:
                        mapping, m_start, perms = vma.path or "[anon]", vma.start, vma.perms
                yield MemoryHit(
                    pid,
                    a,
                    length,
                    label,
                    comm,
                    mapping,
                    m_start,
                    perms,
                    None if vma is None else a - m_start,
                    around.translate(printable).decode("ascii"),
                    around.hex(),
                )


# ---- yara -------------------------------------------------------------------------------------------


def compile_rules(files: list[str] | None = None, sources: list[str] | None = None):
    """Compile YARA rules from FILES and rule SOURCES (yara-python)."""
    import yara

    filepaths = {f"f{i}": path for i, path in enumerate(files or [])}
    srcs = {f"s{i}": text for i, text in enumerate(sources or [])}
    if filepaths and srcs:
        # yara.compile takes one kind at a time: read the files as sources
        for key, path in filepaths.items():
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                srcs[key] = fh.read()
        return yara.compile(sources=srcs)
    if filepaths:
        return yara.compile(filepaths=filepaths)
    return yara.compile(sources=srcs)


def yara_scan(
    ck: Checkpoint, rules, pids: Iterable[int] | None = None, context: int = 32, chunk: int = CHUNK
) -> Iterator[MemoryHit]:
    """YARA RULES (compiled) over each live process's reconstructed memory, one hit per string
    instance (a rule matching without strings: one hit at the window's start)."""

    def scan_task(p: _Target, parent_pages: bool) -> Iterator[MemoryHit]:
        return _yara_task(p, rules, context, chunk, parent_pages)

    yield from _each_task(ck, pids, scan_task)


def _yara_task(p: _Target, rules, context: int, chunk: int, parent_pages: bool) -> Iterator[MemoryHit]:
    seen: set[tuple[str, str, int]] = set()
    for addr, data, report in _windows(p.ck, p.pid, REGEX_OVERLAP, chunk, parent_pages):
        for m in rules.match(data=data):
            tags, meta = list(m.tags), dict(m.meta)
            instances = [(s.identifier, i.offset, i.matched_length) for s in m.strings for i in s.instances]
            if not instances:
                key = (m.rule, "", addr)
                if key not in seen:
                    seen.add(key)
                    h = _hit(p, addr, 0, m.rule, data, 0, context)
                    h.rule, h.tags, h.meta = m.rule, tags, meta
                    yield h
                continue
            for ident, off, length in instances:
                key = (m.rule, ident, addr + off)
                if off >= report or key in seen:
                    continue
                seen.add(key)
                h = _hit(p, addr + off, length, f"{m.rule}:{ident}", data, off, context)
                h.rule, h.tags, h.meta = m.rule, tags, meta
                yield h


# ---- dump -------------------------------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _page_counts(ck: Checkpoint, pid: int, start: int, end: int) -> dict[str, int]:
    counts = {"present": 0, "parent": 0, "lazy": 0}
    pm = ck.pagemap(pid)
    for r in pm[1] if pm else []:
        lo, hi = max(start, r.vaddr), min(end, r.vaddr + r.nr_pages * PAGE_SIZE)
        if lo >= hi:
            continue
        n = (hi - lo + PAGE_SIZE - 1) // PAGE_SIZE
        if r.flags & PE_PRESENT:
            counts["present"] += n
        elif r.flags & PE_PARENT:
            counts["parent"] += n
        elif r.flags & PE_LAZY:
            counts["lazy"] += n
    return counts


def _file_name(pid: int, start: int, end: int, perms: str | None, mapping: str | None) -> str:
    name = f"pid{pid}-{start:016x}-{end:016x}"
    if perms:
        name += f"-{perms}"
    if mapping:
        base = mapping.strip("[]").rsplit("/", 1)[-1].replace(" (deleted)", "-deleted")
        base = _SAFE.sub("_", base)[:60]
        if base:
            name += f"-{base}"
    return name + ".bin"


def parse_address(text: str) -> int:
    """An address: 0x-prefixed hex, or decimal."""
    return int(text.replace("_", ""), 0)


def _dump_plan(
    ck: Checkpoint, pid: int, ranges: list[tuple[int, int]] | None, mapping: str | None
) -> list[tuple[int, int, MemoryMap | None]]:
    """(start, end, mapping) of every region :func:`dump` writes."""
    procs = {p.pid: p for p in views.processes(ck)}
    if pid not in procs or procs[pid].state == "zombie":
        raise LookupError(f"no live process {pid} in the checkpoint")
    maps = views.task_maps(ck, pid)  # this process's images unreadable: the dump fails
    if ranges:
        idx = _MapIndex(maps)
        todo: list[tuple[int, int, MemoryMap | None]] = []
        for s, e in ranges:
            if e <= s:
                raise ValueError(f"empty range {s:#x}-{e:#x}")
            m = idx.find(s)
            todo.append((s, e, m if m is not None and m.end >= e else None))
        return todo
    if mapping is not None:
        try:
            addr = parse_address(mapping)
        except ValueError:
            addr = None
        chosen = [m for m in maps if addr is not None and m.start <= addr < m.end]
        if not chosen:
            chosen = [m for m in maps if m.path and mapping in m.path]
        if not chosen:
            raise LookupError(f"no mapping of process {pid} contains or names {mapping!r}")
        return [(m.start, m.end, m) for m in chosen]
    return [(m.start, m.end, m) for m in maps]


def dump(
    ck: Checkpoint,
    pid: int,
    out: str | OutputSink,
    ranges: list[tuple[int, int]] | None = None,
    mapping: str | None = None,
) -> list[DumpedRegion]:
    """Write PID's memory to OUT: the address RANGES, or the mappings containing the address
    (or whose path contains the text) MAPPING, or every mapping.  Each file is sparse and as long
    as its range: byte ``i`` is the memory at ``start + i``; gaps (not dumped, lazy, parent
    missing) stay holes and are listed.  A ``manifest.json`` lists every region.

    OUT is an :class:`~pensieve.output.sink.OutputSink` (the caller closes it), or a directory
    path: a sink is made for it with the checkpoint's boundaries (refused inside the evidence;
    nothing existing is overwritten) and closed here, which writes its manifest of hashes."""
    import json

    from pensieve.records import to_dict

    todo = _dump_plan(ck, pid, ranges, mapping)
    sink = out if isinstance(out, OutputSink) else OutputSink(out, ck.boundaries())
    outdir = out if isinstance(out, str) else sink.path
    regions: list[DumpedRegion] = []
    try:
        try:
            for s, e, m in todo:
                regions.append(_dump_region(ck, pid, s, e, m, sink, outdir))
            sink.write("manifest.json", json.dumps([to_dict(r) for r in regions], indent=1).encode())
        finally:
            if sink is not out:
                sink.close()
    except FileExistsError as exc:
        raise ValueError(f"{exc.filename or outdir} exists: pensieve never overwrites a file") from None
    return regions


def _dump_region(
    ck: Checkpoint, pid: int, s: int, e: int, m: MemoryMap | None, sink: OutputSink, outdir: str
) -> DumpedRegion:
    """Write [S, E) of PID's memory through SINK: data where the pagemap has it, holes elsewhere."""
    name = _file_name(pid, s, e, m.perms if m else None, m.path if m else None)
    region = DumpedRegion(
        pid=pid, start=s, end=e, file=os.path.join(outdir, name), perms=m.perms if m else None
    )
    region.mapping = (m.path or "[anon]") if m else None
    counts = _page_counts(ck, pid, s, e)
    region.present_pages, region.parent_pages, region.lazy_pages = (
        counts["present"],
        counts["parent"],
        counts["lazy"],
    )
    with sink.create(name) as fh:
        pos = s
        for xs, xe, kind in extents(ck, pid):
            lo, hi = max(s, xs), min(e, xe)
            if lo >= hi or kind != "data":
                continue
            fh.hole(lo - pos)
            pos = lo
            while pos < hi:
                n = min(CHUNK, hi - pos)
                data, gaps = _read(ck, pid, pos, n)
                region.gaps += gaps  # parent pages without a parent: zeros, listed
                fh.write(data)
                region.bytes_written += n - sum(g["end"] - g["start"] for g in gaps)
                pos += n
        fh.hole(e - pos)
    region.gaps = _gaps(ck, pid, s, e, region.gaps)
    missing = sum(g["end"] - g["start"] for g in region.gaps if g["reason"] != "lazy")
    region.missing_pages = (missing + PAGE_SIZE - 1) // PAGE_SIZE
    return region


def _gaps(ck: Checkpoint, pid: int, s: int, e: int, parent_gaps: list[dict]) -> list[dict]:
    """Every part of [S, E) with no bytes: not-dumped, lazy, and PARENT_GAPS (no-parent)."""
    gaps = list(parent_gaps)
    pos = s
    for xs, xe, kind in extents(ck, pid):
        if xe <= s or xs >= e:
            continue
        if xs > pos:
            gaps.append({"start": pos, "end": min(xs, e), "reason": "not-dumped"})
        if kind == "lazy":
            gaps.append({"start": max(xs, s), "end": min(xe, e), "reason": "lazy"})
        pos = max(pos, min(xe, e))
    if pos < e:
        gaps.append({"start": pos, "end": e, "reason": "not-dumped"})
    gaps.sort(key=lambda g: g["start"])
    return gaps


# ---- diff -------------------------------------------------------------------------------------------

_PROC_FIELDS = (
    "cmdline",
    "exe",
    "comm",
    "ppid",
    "state",
    "uid",
    "euid",
    "gid",
    "egid",
    "cap_eff",
    "cwd",
    "root",
)


def _proc_subject(p) -> str:
    args = " ".join(p.cmdline) if p.cmdline else (p.comm or "")
    return f"{p.pid} {args}"[:200]


def _sock_key(s) -> tuple:
    if s.family == "unix":
        return ("unix", s.type, s.ino)
    return (s.family, s.type, s.proto, s.src, s.src_port, s.dst, s.dst_port)


def _sock_subject(s) -> str:
    if s.family == "unix":
        return f"unix {s.type} {s.src or '-'} ino {s.ino}" + (f" peer {s.peer_ino}" if s.peer_ino else "")
    dst = f" -> {s.dst}:{s.dst_port}" if s.dst_port else ""
    return f"{s.proto or s.family} {s.state} {s.src}:{s.src_port}{dst}"


def _mem_size(maps: list[MemoryMap]) -> tuple[int, int]:
    vm = sum(m.end - m.start for m in maps)
    dumped = sum((m.pages_present + m.pages_parent) * PAGE_SIZE for m in maps)
    return vm, dumped


def diff(a: Checkpoint, b: Checkpoint) -> list[MemoryChange]:
    """What changed from checkpoint A to checkpoint B (the same tree, later): processes, then
    sockets, open files and memory sizes."""
    pa = {p.pid: p for p in views.processes(a)}
    pb = {p.pid: p for p in views.processes(b)}
    out = _diff_processes(pa, pb)
    out += _diff_sockets(views.sockets(a), views.sockets(b))
    out += _diff_files(views.files(a), views.files(b))
    out += _diff_memory(views.maps(a), views.maps(b), pb)
    return out


def _changed(kind: str, subject: str, pid: int | None, x, y, fields) -> MemoryChange | None:
    """A "changed" MemoryChange naming the FIELDS whose values differ from X to Y (None: none)."""
    changed = [f for f in fields if getattr(x, f) != getattr(y, f)]
    if not changed:
        return None
    before = {f: getattr(x, f) for f in changed}
    return MemoryChange(kind, "changed", subject, pid, changed, before, {f: getattr(y, f) for f in changed})


def _diff_processes(pa: dict, pb: dict) -> list[MemoryChange]:
    from pensieve.records import to_dict

    out: list[MemoryChange] = []
    for pid in sorted(pa.keys() | pb.keys()):
        x, y = pa.get(pid), pb.get(pid)
        if x is None:
            out.append(MemoryChange("process", "appeared", _proc_subject(y), pid, after=to_dict(y)))
        elif y is None:
            out.append(MemoryChange("process", "vanished", _proc_subject(x), pid, before=to_dict(x)))
        elif change := _changed("process", _proc_subject(y), pid, x, y, _PROC_FIELDS):
            out.append(change)
    return out


def _diff_sockets(a_sockets: list, b_sockets: list) -> list[MemoryChange]:
    out: list[MemoryChange] = []
    sa = {_sock_key(s): s for s in a_sockets}
    sb = {_sock_key(s): s for s in b_sockets}
    for key in sorted(sa.keys() | sb.keys(), key=repr):
        x, y = sa.get(key), sb.get(key)
        if x is None:
            out.append(
                MemoryChange(
                    "socket", "opened", _sock_subject(y), y.pids[0] if y.pids else None, after=_sock(y)
                )
            )
        elif y is None:
            out.append(
                MemoryChange(
                    "socket", "closed", _sock_subject(x), x.pids[0] if x.pids else None, before=_sock(x)
                )
            )
        elif change := _changed(
            "socket", _sock_subject(y), y.pids[0] if y.pids else None, x, y, ("state", "pids")
        ):
            out.append(change)
    return out


def _diff_files(a_files: list, b_files: list) -> list[MemoryChange]:
    out: list[MemoryChange] = []
    fa = {(f.pid, f.fd if f.fd is not None else f.type): f for f in a_files}
    fb = {(f.pid, f.fd if f.fd is not None else f.type): f for f in b_files}
    for key in sorted(fa.keys() | fb.keys(), key=repr):
        x, y = fa.get(key), fb.get(key)
        what = f"fd {key[1]}" if isinstance(key[1], int) else str(key[1])
        if x is None:
            out.append(MemoryChange("file", "opened", f"{key[0]} {what} {y.target}", key[0], after=_file(y)))
        elif y is None:
            out.append(MemoryChange("file", "closed", f"{key[0]} {what} {x.target}", key[0], before=_file(x)))
        elif (x.target, x.deleted) != (y.target, y.deleted):
            out.append(
                MemoryChange(
                    "file", "changed", f"{key[0]} {what} {y.target}", key[0], ["target"], _file(x), _file(y)
                )
            )
    return out


def _diff_memory(a_maps: list[MemoryMap], b_maps: list[MemoryMap], pb: dict) -> list[MemoryChange]:
    """Processes in both whose mapped or dumped memory grew or shrank (PB: B's processes)."""
    out: list[MemoryChange] = []
    ma: dict[int, list[MemoryMap]] = {}
    mb: dict[int, list[MemoryMap]] = {}
    for m in a_maps:
        ma.setdefault(m.pid, []).append(m)
    for m in b_maps:
        mb.setdefault(m.pid, []).append(m)
    for pid in sorted(ma.keys() & mb.keys()):
        (va, da), (vb, db) = _mem_size(ma[pid]), _mem_size(mb[pid])
        if (va, da) == (vb, db):
            continue
        grew = (vb - va) + (db - da) > 0
        fields = [
            f
            for f, d in (
                ("vm_bytes", vb - va),
                ("dumped_bytes", db - da),
                ("maps", len(mb[pid]) - len(ma[pid])),
            )
            if d
        ]
        out.append(
            MemoryChange(
                "memory",
                "grew" if grew else "shrank",
                f"{pid} {pb[pid].comm or ''} vm {vb - va:+d} B, dumped {db - da:+d} B",
                pid,
                fields,
                {"vm_bytes": va, "dumped_bytes": da, "maps": len(ma[pid])},
                {"vm_bytes": vb, "dumped_bytes": db, "maps": len(mb[pid])},
            )
        )
    return out


def _sock(s) -> dict:
    return {
        k: getattr(s, k)
        for k in (
            "family",
            "type",
            "proto",
            "state",
            "src",
            "src_port",
            "dst",
            "dst_port",
            "pids",
            "fds",
            "ino",
        )
    }


def _file(f) -> dict:
    d = {k: getattr(f, k) for k in ("pid", "fd", "type", "target", "pos", "deleted")}
    if f.content is not None:
        d["content_bytes"] = len(f.content)
    return d
