"""Progress of a fleet triage on stderr: one rich bar per phase (units done, failed, total).

:class:`PhaseBars` takes the events :class:`pensieve.fleet.distributed.FleetRun` reports:
``{"phase": P, "event": "submitted"}`` when a unit of phase P is sent, ``{"phase": P, "event":
"unit", "status": "done" | "failed"}`` when its answer is written, ``{"phase": "analyses",
"event": "task", ...}`` for each case analysis run at the end.

References:
  rich.progress: https://rich.readthedocs.io/en/stable/progress.html
"""

from __future__ import annotations

from typing import Any

#: the phases, in the order their bars are shown
PHASES = ("sources", "containers", "layers", "carve", "client", "analyses")


class PhaseBars:
    """One bar per phase; a context manager (the bars are drawn between enter and exit; on a
    console that is not a terminal rich draws them once, at the end)."""

    def __init__(self, console=None, dashboard: str | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console if console is not None else Console(stderr=True)
        self.dashboard = dashboard
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.fields[done]} done, {task.fields[failed]} failed / {task.total:.0f}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.bars: dict[str, Any] = {}
        self.counts: dict[str, list[int]] = {}

    def __enter__(self) -> PhaseBars:
        if self.dashboard:
            self.console.print(f"dask dashboard: {self.dashboard}")
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _bar(self, phase: str):
        if phase not in self.bars:
            self._add(phase)
        return self.bars[phase]

    def _add(self, phase: str) -> None:
        self.counts[phase] = [0, 0, 0]  # done, failed, total
        self.bars[phase] = self.progress.add_task(phase, total=0, done=0, failed=0)

    def __call__(self, event: dict) -> None:
        phase, kind = event.get("phase"), event.get("event")
        if phase is None:
            return
        bar = self._bar(phase)
        done, failed, total = self.counts[phase]
        if kind == "total":
            total = max(total, int(event.get("total") or 0))
        elif kind == "submitted":
            total += phase != "sources"  # the sources' total is known from the start
        elif kind == "unit" or (kind == "task" and phase == "analyses"):
            if phase == "analyses":
                total += 1
            done += event.get("status") != "failed"
            failed += event.get("status") == "failed"
        else:
            return
        self.counts[phase] = [done, failed, total]
        self.progress.update(bar, completed=done + failed, total=total, done=done, failed=failed)
