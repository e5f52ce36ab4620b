"""Spools: anonymous temporary files holding decompressed evidence, under one budget.

A compressed tar cannot be read at random offsets, so :class:`~pensieve.evidence.tar.TarEvidence`
decompresses it once into a spool: a file in the system temp directory (``TMPDIR``, never next
to the evidence), unlinked at creation so it goes with the process.  A small compressed layer
can claim gigabytes, so every spool of the process draws on one **budget** of bytes:

* the default is ``min(free space of the temp dir / 2, 16 GiB)``, taken when the first spool
  is made;
* ``PENSIEVE_MAX_SPOOL`` (``512M``, ``4GiB``, ``1000000``) in the environment overrides it;
* :func:`set_budget` (the CLI's global ``--max-spool SIZE``) overrides both.

The bytes held by live spools count against it; closing a spool gives its bytes back.  Going
over raises :class:`SpoolTooLarge` ("too large to spool (N bytes > budget B)"), an
EvidenceError: the layer or member is a problem, the rest of the evidence is read.  A full temp
dir (ENOSPC) is reported the same way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from typing import BinaryIO

from pensieve.errors import EvidenceError

__all__ = ["SpoolTooLarge", "budget", "in_use", "parse_size", "set_budget", "spool"]

#: the default budget never exceeds this
DEFAULT_CAP = 16 << 30
ENV = "PENSIEVE_MAX_SPOOL"

_explicit: int | None = None
_default: int | None = None
_in_use = 0

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class SpoolTooLarge(EvidenceError):
    """Spooling would go over the budget (or the temp dir is full)."""


def parse_size(text: str) -> int:
    """Bytes in TEXT: ``1000``, ``64k``, ``512M``, ``2G``, ``4GiB``, ``1.5g`` (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 512M, 4G)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def set_budget(nbytes: int | None) -> None:
    """Set the spool budget of this process in bytes (None: back to the env / default)."""
    global _explicit
    if nbytes is not None and nbytes < 0:
        raise ValueError("the spool budget cannot be negative")
    _explicit = nbytes


def budget() -> int:
    """The spool budget in bytes now in force."""
    global _default
    if _explicit is not None:
        return _explicit
    env = os.environ.get(ENV)
    if env:
        try:
            return parse_size(env)
        except ValueError:
            pass  # a bad value falls back to the default
    if _default is None:
        try:
            free = shutil.disk_usage(tempfile.gettempdir()).free
        except OSError:
            free = 2 * DEFAULT_CAP
        _default = min(free // 2, DEFAULT_CAP)
    return _default


def in_use() -> int:
    """Bytes held by the live spools of this process."""
    return _in_use


class _Spool:
    """A temp file whose bytes are accounted against the budget until it is closed."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.file: BinaryIO = tempfile.TemporaryFile(prefix="pensieve-spool-")  # noqa: SIM115
        self.size = 0

    def write(self, block: bytes) -> None:
        global _in_use
        limit = budget()
        if _in_use + len(block) > limit:
            others = _in_use - self.size
            held = f" + {others} held by other spools" if others else ""
            raise SpoolTooLarge(
                f"{self.what}: too large to spool ({self.size + len(block)} bytes{held} > budget "
                f"{limit} bytes; raise it with --max-spool or {ENV})"
            )
        try:
            self.file.write(block)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise SpoolTooLarge(
                    f"{self.what}: too large to spool: the temp dir {tempfile.gettempdir()} is full "
                    f"after {self.size} bytes (point TMPDIR at a larger disk)"
                ) from None
            raise
        self.size += len(block)
        _in_use += len(block)

    def close(self) -> None:
        global _in_use
        if self.file is not None:
            self.file.close()
            _in_use -= self.size
            self.size = 0


class Spooled:
    """What :func:`spool` made: ``file`` (read it with pread on ``fileno()``), ``size``,
    ``sha256`` (hex, of every byte spooled), ``error`` (why it stopped early, with ``partial``)."""

    def __init__(self, sp: _Spool, sha256: str, error: EvidenceError | None) -> None:
        self._spool = sp
        self.file = sp.file
        self.size = sp.size
        self.sha256 = sha256
        self.error = error

    def close(self) -> None:
        self._spool.close()


def spool(blocks: Iterable[bytes], what: str, partial: bool = False) -> Spooled:
    """Write BLOCKS into a new spool.  An EvidenceError from BLOCKS (a corrupt stream) or the
    budget is raised, the spool removed; with PARTIAL it is kept in ``error`` and what came before
    stays readable."""
    sp = _Spool(what)
    sha = hashlib.sha256()
    error: EvidenceError | None = None
    try:
        for block in blocks:
            sp.write(block)
            sha.update(block)
    except EvidenceError as exc:
        if not partial:
            sp.close()
            raise
        error = exc
    except BaseException:
        sp.close()
        raise
    sp.file.flush()
    return Spooled(sp, sha.hexdigest(), error)
