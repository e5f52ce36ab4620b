"""Content matchers for :class:`pensieve.case.content.ContentScanner`: YARA and hash IOCs.

A factory ``make(host_path)`` gives a fresh matcher per file; the scanner feeds it the blocks
it reads (the evidence layer opened the file: matchers never open a path) and ``finish()``
answers the matches, stored with the change in ``changes.matches``:

* ``{"type": "yara", "rule", "namespace", "tags", "meta", "strings": [[id, offset, length]...]}``
  -- YARA needs the whole file at once: blocks are kept up to ``max_size`` bytes (64 MiB by
  default); a larger file is not scanned, and says so: a ``{"type": "unscanned"}`` entry and a
  problem;
* ``{"type": "ioc", "indicator": "md5" | "sha1", "value", "id", "name"}`` -- md5 and sha1 are
  computed over the same blocks, and only when such indicators were given (sha256 IOCs are
  matched against the sha256 the diff computes anyway);
* ``{"type": "ioc", "indicator": "domain" | "ipv4" | "ipv6" | "url", ..., "seen": "content"}`` --
  the network indicators found in the file's bytes (a domain or address as a whole word, case
  ignored; a URL as given), over the first :data:`TEXT_LIMIT` bytes (or ``max_size`` when
  smaller): one pass of one regular expression per block, with the tail of the block before so
  that a value across two blocks is found.

:class:`FileScan` runs every matcher (and a sha256 for sha256 IOCs) over one file's blocks, for the
hunting tasks that read files themselves (layers, recovered and carved files, rescans).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from pensieve.hunting.iocs import Indicator
from pensieve.hunting.rules import RuleSet
from pensieve.records import Problem

DEFAULT_MAX_SIZE = 64 << 20
#: bytes of a file searched for network indicators (domains, addresses, URLs)
TEXT_LIMIT = 16 << 20
#: indicator types looked for in file contents as text
TEXT_TYPES = ("domain", "ipv4", "ipv6", "url")
#: string instances kept per rule match (the rest are counted)
MAX_STRINGS = 20


def yara_entry(hit: dict) -> dict:
    """A ``changes.matches`` entry of one rule match (string instances capped)."""
    strings = hit["strings"]
    entry = {"type": "yara", **{k: hit[k] for k in ("rule", "namespace", "tags", "meta", "engine")}}
    entry["strings"] = strings[:MAX_STRINGS]
    if len(strings) > MAX_STRINGS:
        entry["more_strings"] = len(strings) - MAX_STRINGS
    return entry


class YaraMatcher:
    """One file's blocks, kept for one YARA scan at the end (none past MAX_SIZE)."""

    def __init__(self, rules: RuleSet, host_path: str, max_size: int, problems: list[Problem]) -> None:
        self.rules, self.host_path, self.max_size, self.problems = rules, host_path, max_size, problems
        self.blocks: list[bytes] = []
        self.size = 0

    def feed(self, block: bytes) -> None:
        self.size += len(block)
        if self.size > self.max_size:
            self.blocks = []
        else:
            self.blocks.append(block)

    def finish(self) -> list[dict]:
        if self.size > self.max_size:
            why = f"not scanned with YARA: {self.size} bytes, over the limit of {self.max_size}"
            self.problems.append(Problem(self.host_path, why))
            return [{"type": "unscanned", "reason": why, "size": self.size}]
        data = self.blocks[0] if len(self.blocks) == 1 else b"".join(self.blocks)
        self.blocks = []
        return [yara_entry(h) for h in self.rules.scan(data)]


class HashMatcher:
    """md5 and sha1 of one file over the blocks it is fed, checked against the IOCs."""

    def __init__(self, wanted: dict[str, dict[str, Indicator]]) -> None:
        self.wanted = wanted
        self.hashes = {name: hashlib.new(name) for name in wanted}

    def feed(self, block: bytes) -> None:
        for h in self.hashes.values():
            h.update(block)

    def finish(self) -> list[dict]:
        out = []
        for name, h in self.hashes.items():
            ind = self.wanted[name].get(h.hexdigest())
            if ind is not None:
                out.append(ioc_entry(ind))
        return out


class TextPattern:
    """One regular expression over bytes for every network indicator: a domain or an address as a
    whole word (``(?<![\\w.-])`` before, ``(?![\\w-])`` after, case ignored), a URL as given."""

    def __init__(self, iocs: list[Indicator]) -> None:
        self.by_value = {i.value.lower(): i for i in iocs if i.type in TEXT_TYPES and i.value}
        words = sorted((v for v, i in self.by_value.items() if i.type != "url"), key=len, reverse=True)
        urls = sorted((v for v, i in self.by_value.items() if i.type == "url"), key=len, reverse=True)
        alts = []
        if urls:
            alts.append(b"(?:" + b"|".join(re.escape(v.encode()) for v in urls) + b")")
        if words:
            word = b"|".join(re.escape(v.encode()) for v in words)
            alts.append(rb"(?<![\w.-])(?:" + word + rb")(?![\w-])")
        self.regex = re.compile(b"|".join(alts), re.I) if alts else None
        self.longest = max((len(v.encode()) for v in self.by_value), default=0)

    def __bool__(self) -> bool:
        return self.regex is not None

    def search(self, data: bytes, final: bool = True) -> set[str]:
        """The indicator values in DATA; unless FINAL, not those touching its end (the next block
        may go on with a word character: ``evil.com`` then ``x``)."""
        if self.regex is None:
            return set()
        end = len(data) if final else len(data) - 1
        return {m.group().decode("latin-1").lower() for m in self.regex.finditer(data) if m.end() <= end}


class TextMatcher:
    """The network indicators in one file's first LIMIT bytes (values across blocks included)."""

    def __init__(self, pattern: TextPattern, limit: int) -> None:
        self.pattern, self.limit = pattern, limit
        self.tail = b""
        self.seen = 0
        self.found: set[str] = set()

    def feed(self, block: bytes) -> None:
        if self.seen >= self.limit:
            return
        block = block[: self.limit - self.seen]
        self.seen += len(block)
        data = self.tail + block
        self.found |= self.pattern.search(data, final=False)
        self.tail = data[-(self.pattern.longest + 1) :]

    def finish(self) -> list[dict]:
        self.found |= self.pattern.search(self.tail)
        return [
            {**ioc_entry(self.pattern.by_value[v]), "seen": "content"}
            for v in sorted(self.found)
            if v in self.pattern.by_value
        ]


class FileScan:
    """Every matcher of FACTORIES over one file's blocks, and its sha256 when sha256 IOCs are
    wanted: ``feed(block)`` as it is read, ``finish()`` for the matches entries."""

    def __init__(self, factories: list[Callable[[str], Any]], path: str, want_sha: dict[str, Indicator]):
        self.consumers = [make(path) for make in factories]
        self.want_sha = want_sha
        self.sha = hashlib.sha256() if want_sha else None

    def feed(self, block: bytes) -> None:
        for c in self.consumers:
            c.feed(block)
        if self.sha is not None:
            self.sha.update(block)

    def finish(self) -> list[dict]:
        found = [m for c in self.consumers for m in c.finish()]
        if self.sha is not None and self.sha.hexdigest() in self.want_sha:
            found.append(ioc_entry(self.want_sha[self.sha.hexdigest()]))
        return found


def ioc_entry(ind: Indicator) -> dict:
    """A ``changes.matches`` entry of one indicator hit."""
    return {
        "type": "ioc",
        "indicator": ind.type,
        "value": ind.value,
        "id": ind.id,
        "name": ind.name,
        "list": ind.source,
    }


def matcher_factories(
    rules: RuleSet | None, iocs: list[Indicator], problems: list[Problem], max_size: int = DEFAULT_MAX_SIZE
) -> list[Callable[[str], Any]]:
    """The factories for a ContentScanner: YARA when RULES, hashes when md5/sha1 IOCs, a text
    search when network IOCs (domains, addresses, URLs)."""
    out: list[Callable[[str], Any]] = []
    if rules is not None and len(rules):
        out.append(lambda host_path: YaraMatcher(rules, host_path, max_size, problems))
    wanted: dict[str, dict[str, Indicator]] = {}
    for ind in iocs:
        if ind.type in ("md5", "sha1"):
            wanted.setdefault(ind.type, {})[ind.value] = ind
    if wanted:
        out.append(lambda _host_path: HashMatcher(wanted))
    pattern = TextPattern(iocs)
    if pattern:
        limit = min(TEXT_LIMIT, max_size)
        out.append(lambda _host_path: TextMatcher(pattern, limit))
    return out
