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
  matched against the sha256 the diff computes anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pensieve.hunting.iocs import Indicator
from pensieve.hunting.rules import RuleSet
from pensieve.records import Problem

DEFAULT_MAX_SIZE = 64 << 20
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
    """The factories for a ContentScanner: YARA when RULES, hashes when md5/sha1 IOCs."""
    out: list[Callable[[str], Any]] = []
    if rules is not None and len(rules):
        out.append(lambda host_path: YaraMatcher(rules, host_path, max_size, problems))
    wanted: dict[str, dict[str, Indicator]] = {}
    for ind in iocs:
        if ind.type in ("md5", "sha1"):
            wanted.setdefault(ind.type, {})[ind.value] = ind
    if wanted:
        out.append(lambda _host_path: HashMatcher(wanted))
    return out
