"""Hunting: YARA rules and IOC lists over what triage reads (``pensieve triage --yara --ioc``).

:func:`load_hunting` reads the rules (:mod:`~pensieve.hunting.rules`) and indicators
(:mod:`~pensieve.hunting.iocs`) once; triage hands the :class:`Hunting` to every source:

* the diff task's :class:`~pensieve.case.content.ContentScanner` gets the matchers
  (:mod:`~pensieve.hunting.matchers`): each added or modified file is scanned as it is read;
* extra tasks (:mod:`~pensieve.hunting.tasks`): the image layers of a host, each checkpointed
  process's memory;
* the case keeps the indicators; the analysis ``findings.rules``
  (:mod:`~pensieve.hunting.findings`) turns matches and indicator hits into findings.

* image archives: every layer (a tar member, read through its nested TarEvidence);
* disk images: the content of every recovered and carved file.

Every task keeps :attr:`Hunting.digest` (the rules' sources, the indicators, the size bound) in its
task row: a triage with other rules runs it again (and rescans the files of diffs done with other
rules or none), one with the same rules reuses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pensieve.hunting.iocs import Indicator, load_iocs
from pensieve.hunting.matchers import DEFAULT_MAX_SIZE, TEXT_TYPES, matcher_factories
from pensieve.hunting.rules import RuleError, RuleSet, load_rules
from pensieve.records import Problem

#: indicator types matched against file contents (hashes over the bytes, network ones in the text)
CONTENT_TYPES = ("md5", "sha1", "sha256", *TEXT_TYPES)

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

    def reads_content(self) -> bool:
        """Whether anything here matches file contents (rules, hashes, network indicators)."""
        return self.rules is not None or any(i.type in CONTENT_TYPES for i in self.iocs)

    def tasks(self, ctx) -> list:
        """The hunting tasks for the source of CTX (a triage Context), each keeping this digest."""
        from pensieve.case.triage import Task
        from pensieve.hunting import tasks

        kind, host = ctx.source.kind, ctx.host
        out: list = []
        if kind == "checkpoint":
            if self.rules is not None:
                out.append(
                    Task("yara-memory", None, "yara memory", lambda: tasks.checkpoint_memory(ctx, self))
                )
            return self._stamped(out)
        if not self.reads_content():
            return out
        if kind in ("host", "archive", "disk") and host is not None:
            out.append(Task("yara-layers", None, "yara image layers", lambda: tasks.image_layers(ctx, self)))
        if kind in ("host", "disk") and host is not None:
            out += self._rescans(ctx, host)
        if kind == "disk":
            if ctx.source.opened.evidence.fs_type.startswith("ext"):
                out.append(
                    Task("yara-recovered", None, "yara recovered", lambda: tasks.recovered_files(ctx, self))
                )
            out.append(Task("yara-carved", None, "yara carved", lambda: tasks.carved_files(ctx, self)))
        return self._stamped(out)

    def _stamped(self, tasks: list) -> list:
        return [t._replace(params=self.digest) for t in tasks]

    def _rescans(self, ctx, host) -> list:
        """A rescan of each container whose diff is in the case with other rules (or none)."""
        from pensieve.case.triage import Task
        from pensieve.hunting import tasks

        out = []
        for c in host.containers():
            done, params = ctx.store.task_params(ctx.source_id, "diff", c.id) if ctx.store else (False, None)
            if done and params != self.digest:
                label = f"yara rescan {c.name or c.id[:12]}"
                out.append(Task("yara-changes", c.id, label, lambda c=c: tasks.changed_files(ctx, self, c)))
        return out

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
