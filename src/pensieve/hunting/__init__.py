"""Hunting: YARA rules and IOC lists over what triage reads (``pensieve triage --yara --ioc``).

:func:`load_hunting` reads the rules (:mod:`~pensieve.hunting.rules`) and indicators
(:mod:`~pensieve.hunting.iocs`) once; triage hands the :class:`Hunting` to every source:

* the diff task's :class:`~pensieve.case.content.ContentScanner` gets the matchers
  (:mod:`~pensieve.hunting.matchers`): each added or modified file is scanned as it is read;
* extra tasks (:mod:`~pensieve.hunting.tasks`): the image layers of a host, each checkpointed
  process's memory;
* the case keeps the indicators; the analysis ``findings.rules``
  (:mod:`~pensieve.hunting.findings`) turns matches and indicator hits into findings.

Not covered: files recovered or carved from disk images (triage does not fill those tables
yet: their sha256 is matched against sha256 IOCs when they are there, their content is not
scanned); image archives (their layers are tar members, not directories).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pensieve.hunting.iocs import Indicator, load_iocs
from pensieve.hunting.matchers import DEFAULT_MAX_SIZE, matcher_factories
from pensieve.hunting.rules import RuleError, RuleSet, load_rules
from pensieve.records import Problem

__all__ = ["Hunting", "Indicator", "RuleError", "RuleSet", "load_hunting"]


class Hunting:
    """Rules and indicators for one triage run."""

    def __init__(
        self,
        rules: RuleSet | None,
        iocs: list[Indicator],
        max_size: int = DEFAULT_MAX_SIZE,
        notes: list[str] | None = None,
    ) -> None:
        self.rules = rules if rules is not None and len(rules) else None
        self.iocs = iocs
        self.max_size = max_size
        self.notes = (notes or []) + (rules.notes if rules is not None else [])
        digest = hashlib.sha256((rules.digest if rules is not None else "").encode())
        for ind in iocs:
            digest.update(f"{ind.type}\0{ind.value}\0".encode())
        digest.update(str(max_size).encode())
        self.digest = digest.hexdigest()[:16]

    def factories(self, problems: list[Problem]) -> list[Callable[[str], Any]]:
        """Matcher factories for a ContentScanner; what they cannot scan goes to PROBLEMS."""
        return matcher_factories(self.rules, self.iocs, problems, self.max_size)

    def matchers(self, ctx) -> list[Callable[[str], Any]]:
        """The factories of a triage Context (its problems get the unscanned files)."""
        return self.factories(ctx.problems)

    def tasks(self, ctx) -> list:
        """The hunting tasks for the source of CTX (a triage Context)."""
        from pensieve.case.triage import Task
        from pensieve.hunting import tasks

        kind = ctx.source.kind
        wants_layers = self.rules is not None or any(i.type in ("md5", "sha1", "sha256") for i in self.iocs)
        if kind == "host" and wants_layers:
            run = lambda: tasks.image_layers(ctx, self)  # noqa: E731
            return [Task("yara-layers", self.digest, "yara image layers", run)]
        if kind == "checkpoint" and self.rules is not None:
            run = lambda: tasks.checkpoint_memory(ctx, self)  # noqa: E731
            return [Task("yara-memory", self.digest, "yara memory", run)]
        return []

    def remember(self, store) -> None:
        """Keep the indicators in the case STORE (``findings.rules`` reads them)."""
        from pensieve.hunting.findings import remember

        remember(store, self.iocs)


def load_hunting(
    yara: list[str] | None = None, ioc: list[str] | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> Hunting | None:
    """Rules from the files and directories YARA, indicators from the lists IOC (None when
    neither is given); RuleError names the file and line of what does not compile or parse."""
    if not yara and not ioc:
        return None
    notes: list[str] = []
    iocs = load_iocs(ioc or [], notes)
    rules = load_rules(yara) if yara else None
    return Hunting(rules, iocs, max_size, notes)
