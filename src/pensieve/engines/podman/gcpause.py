"""The cycle collector held off while a store's documents are decoded.

Decoding libpod's state builds ~100 container objects (dicts, lists, strings) per container and
keeps them all: every 700 allocations CPython's collector runs, and its older generations walk
every document already kept, none of which is garbage (JSON builds no cycles).  On a 300
container root that walking cost as much as the decoding itself (gc module documentation:
"collection ... can be disabled if the application does not create reference cycles").  Held
off only for the span of one read, and switched back on after it (exceptions included) when it
was on before; cycles made meanwhile are collected at the next run after it.
"""

from __future__ import annotations

import gc
from types import TracebackType


class PausedGC:
    """``with PausedGC(): ...``: no automatic collection inside; nests (the outermost restores)."""

    def __enter__(self) -> PausedGC:
        self._was_on = gc.isenabled()
        gc.disable()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._was_on:
            gc.enable()
