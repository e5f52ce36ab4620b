"""One validator module per file type, registered in one table.

Each module has ``validate(ctx, offset) -> Verdict | None``: it parses the structure at OFFSET
through ``ctx.src`` (never past ``ctx.bound``), and says how long the file is and how far it
validated (:class:`pensieve.disk.carve.base.Verdict`), or None when it is not that type at all.
A binary type also has ``SIGNATURE = (magic, offset of the magic in the file)``, searched at any
offset of the image; text types are probed at block starts by their first byte (``TEXT_FIRST``).
"""

from __future__ import annotations

from collections.abc import Callable

from pensieve.disk.carve.base import Context, Verdict
from pensieve.disk.carve.validators import elf, gzip, jpeg, json, log, pdf, png, script, sqlite, tar, zip

Validator = Callable[[Context, int], Verdict | None]

#: carving type -> its validator module, in the order of pensieve.disk.carve.base.TYPES
MODULES = {
    "elf": elf,
    "script": script,
    "gzip": gzip,
    "zip": zip,
    "tar": tar,
    "pdf": pdf,
    "jpeg": jpeg,
    "png": png,
    "sqlite": sqlite,
    "json": json,
    "log": log,
}

#: carving type -> validator
VALIDATORS: dict[str, Validator] = {t: m.validate for t, m in MODULES.items()}

#: (type, magic, offset of the magic in the file) searched at any offset
MAGICS: list[tuple[str, bytes, int]] = [
    (t, m.SIGNATURE[0], m.SIGNATURE[1]) for t, m in MODULES.items() if hasattr(m, "SIGNATURE")
]

#: the types that are text: probed at block starts, by their first byte
TEXT_TYPES = ("script", "json", "log")

#: text types probed at block starts: first byte -> types
TEXT_FIRST: dict[int, tuple[str, ...]] = {
    ord("#"): ("script",),
    ord("{"): ("json",),
    ord("["): ("json", "log"),
}
for _c in b"0123456789":
    TEXT_FIRST[_c] = ("log",)
for _c in b"JFMASONDIWEt<":
    TEXT_FIRST[_c] = ("log",)
for _c in b"abcdefghijklmnopqrsuvwxyzBCGHKLPQRTUVXYZ":  # access logs start with a host name
    TEXT_FIRST.setdefault(_c, ("log",))
