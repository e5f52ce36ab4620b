"""One progress facility for every long command: rich's progress bar on stderr, shown only when
stderr is a terminal (never in pipes, files or tests), removed when the work is done.

>>> with progress("carving", total=size) as update:
...     update(done)                 # absolute count of what is done
...     update(done, phase="journal") # the phase shown beside the bar may change
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Update = Callable[..., None]


def _noop(done: int, total: int | None = None, phase: str | None = None) -> None:
    return None


@contextmanager
def progress(label: str, total: int | None = None, enabled: bool = True, stream=None) -> Iterator[Update]:
    """A callable ``update(done, total=None, phase=None)``; a no-op unless STREAM (stderr) is a
    terminal and ENABLED."""
    stream = stream or sys.stderr
    if not enabled or not getattr(stream, "isatty", lambda: False)():
        yield _noop
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        DownloadColumn() if label in ("carving", "verify") else TextColumn(""),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=True,
    )
    task = bar.add_task(label, total=total)

    def update(done: int, total: int | None = None, phase: str | None = None) -> None:
        kwargs: dict = {"completed": done}
        if total is not None:
            kwargs["total"] = total
        if phase is not None:
            kwargs["description"] = f"{label}: {phase}"
        bar.update(task, **kwargs)

    with bar:
        yield update
