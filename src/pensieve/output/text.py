"""Text from the evidence made safe for the two places pensieve writes it: a terminal, and JSON.

Names in evidence are written by whoever controlled the host: a file called ``ESC]0;owned BEL``
retitles the analyst's terminal, ``ESC[2J`` clears it, and a name that is not UTF-8 (Linux names
are bytes; pensieve holds them as ``str`` with the undecodable bytes surrogate-escaped, PEP 383)
would make a JSON document invalid.

* :func:`printable` is used for every line people read (tables, the plain ``diff --engine-view``
  and ``logs`` lines, error and warning messages): C0 controls (U+0000-U+001F, tab and newline
  included: a cell or line is one line), DEL (U+007F) and C1 controls (U+0080-U+009F) become
  ``\\xNN``; an undecodable byte (a lone surrogate U+DC80-U+DCFF) becomes ``\\xNN`` of that byte.
* :func:`json_safe` shapes machine output (JSON, JSONL, CSV): a string holding undecodable bytes
  is written with each such byte as the four characters ``\\xNN`` (so the document stays valid
  UTF-8), and, in an object, a sibling key ``<key>_b64`` is added holding the base64 (RFC 4648)
  of the raw bytes of the value (of each item, for a list of strings) so that the exact name is
  recoverable.  ``<key>_b64`` is present only when the value is not valid UTF-8.  CSV has no
  room for the extra key: it carries the escaped text only.
"""

from __future__ import annotations

import re
from typing import Any

# C0, DEL, C1 and lone surrogates (undecodable bytes, PEP 383); compiled at their first use
# (re's own cache), not at import: most runs never meet such text (start-up time)
_UNSAFE = "[\x00-\x1f\x7f-\x9f\udc80-\udcff]"
_SURROGATE = "[\udc80-\udcff]"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"


def printable(text: Any) -> str:
    """TEXT with control characters and undecodable bytes as ``\\xNN``: safe on a terminal."""
    text = text if isinstance(text, str) else str(text)
    if text.isprintable() and text.isascii():
        return text
    return re.sub(_UNSAFE, _escape, text)


def _surrogate_escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()) - 0xDC00:02x}"


def has_raw_bytes(text: str) -> bool:
    """Whether TEXT holds undecodable bytes (surrogate-escaped): it cannot be written as UTF-8."""
    return not text.isascii() and re.search(_SURROGATE, text) is not None


def escape_raw_bytes(text: str) -> str:
    """TEXT with each undecodable byte as ``\\xNN``: valid UTF-8, control characters untouched."""
    return re.sub(_SURROGATE, _surrogate_escape, text)


def raw_b64(text: str) -> str:
    """Base64 of the bytes TEXT was decoded from (UTF-8 with surrogateescape)."""
    import base64

    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def json_safe(value: Any) -> Any:
    """VALUE (JSON-ready builtins) with undecodable bytes escaped and ``<key>_b64`` added beside
    each string that held them (see the module docstring).  Values without any are returned as
    they are (the same objects)."""
    if isinstance(value, str):
        return escape_raw_bytes(value) if has_raw_bytes(value) else value
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            out[key] = json_safe(item)
            raw = _raw_of(item)
            if raw is not None:
                out[f"{key}_b64"] = raw
        return out
    return value


def _raw_of(item: Any) -> Any:
    """The ``_b64`` companion of ITEM: base64 of a raw string, or of each string of a list."""
    if isinstance(item, str):
        return raw_b64(item) if has_raw_bytes(item) else None
    if isinstance(item, list) and any(isinstance(v, str) and has_raw_bytes(v) for v in item):
        return [raw_b64(v) if isinstance(v, str) else None for v in item]
    return None


def is_utf8_clean(text: str) -> bool:
    """Whether TEXT (a whole JSON document, say) can be written as UTF-8 as it is."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
