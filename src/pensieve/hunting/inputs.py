"""Reading the analyst's rule files and IOC lists: inputs, not evidence, but read the way the
evidence layer reads (:mod:`pensieve.evidence.directory`): ``O_RDONLY | O_NOFOLLOW | O_NOATIME``
(``O_NOATIME`` dropped where the kernel refuses it to a caller who does not own the file), a regular
file only (a symlink, a FIFO or a device is refused: no surprise of what is read, no hang on a
FIFO), and at most :data:`MAX_INPUT` bytes.

Directories of rules are walked without following symlinks (:func:`os.walk` default), and a
symlink met below them is refused like a named one.
"""

from __future__ import annotations

import errno
import os
import stat

#: the largest rule file or IOC list read (a rule set of many MiB is a mistake, not a rule set)
MAX_INPUT = 64 << 20


class InputError(OSError):
    """A rule file or IOC list that cannot be read as one (its strerror says why)."""


def _open(path: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    noatime = getattr(os, "O_NOATIME", 0)
    try:
        return os.open(path, flags | noatime)
    except PermissionError:
        if not noatime:
            raise
        return os.open(path, flags)  # EPERM: O_NOATIME is only for the file's owner (or root)


def read_input(path: str, limit: int = MAX_INPUT) -> bytes:
    """The bytes of the regular file PATH (InputError for a symlink, a non-regular file, or one
    larger than LIMIT)."""
    try:
        fd = _open(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(errno.ELOOP, "a symlink: give the file it points to") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(errno.EINVAL, "not a regular file")
        if st.st_size > limit:
            raise InputError(errno.EFBIG, f"{st.st_size} bytes, over the limit of {limit}")
        chunks: list[bytes] = []
        total = 0
        while block := os.read(fd, 1 << 20):
            total += len(block)
            if total > limit:
                raise InputError(errno.EFBIG, f"over the limit of {limit} bytes")
            chunks.append(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str, errors: str = "surrogateescape") -> str:
    """PATH (:func:`read_input`) as UTF-8 text."""
    return read_input(path).decode("utf-8", errors)
