"""The Sleuth Kit's body file (TSK 3.x), the input of ``mactime``.

One line per file, eleven fields separated by ``|`` (``fls -m`` writes them; the format is
described on The Sleuth Kit wiki's "Body file" page)::

    MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime

Times are whole seconds since the epoch (UTC), 0 for unknown; ``mode_as_string`` is as ``fls``
prints it: the name's type, ``/``, the inode's type and the nine permission letters
(``r/rrw-r--r--``).  ``mactime`` decodes ``%XX`` in every field, so a ``|``, ``%`` or control
character of a name is written that way.
"""

from __future__ import annotations

import stat

#: pensieve's file types (records' ``type``) -> TSK's one-letter types
TSK_TYPES = {
    "file": "r",
    "dir": "d",
    "symlink": "l",
    "char": "c",
    "block": "b",
    "fifo": "p",
    "socket": "s",
    "whiteout": "w",
}


def mode_string(kind: str | None, mode: int | None) -> str:
    """``r/rrw-r--r--`` for a regular file of mode 0644 (``-/----------`` when unknown)."""
    letter = TSK_TYPES.get(kind or "", "-")
    perms = stat.filemode(mode & 0o7777)[1:] if isinstance(mode, int) else "-" * 9
    return f"{letter}/{letter}{perms}"


def _field(text: str) -> str:
    """TEXT with ``%``, ``|`` and control characters as ``%XX`` (mactime decodes them)."""
    return "".join(
        f"%{ord(ch):02X}" if ch in "%|" or ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text
    )


def _seconds(ns: int | None) -> int:
    return ns // 1_000_000_000 if isinstance(ns, int) and ns > 0 else 0


def line(
    name: str,
    inode: int | None = None,
    mode: str = "-/----------",
    uid: int | None = None,
    gid: int | None = None,
    size: int | None = None,
    atime: int | None = None,
    mtime: int | None = None,
    ctime: int | None = None,
    crtime: int | None = None,
    md5: str = "0",
) -> str:
    """One body-file line (no newline); times in nanoseconds since the epoch, written as seconds."""
    inode, uid, gid, size = (n if isinstance(n, int) and n >= 0 else 0 for n in (inode, uid, gid, size))
    times = (_seconds(t) for t in (atime, mtime, ctime, crtime))
    return "|".join([md5, _field(name), str(inode), mode, str(uid), str(gid), str(size), *map(str, times)])
