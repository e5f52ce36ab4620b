"""Indicators of compromise: plain lists and STIX 2.1 indicator bundles.

A plain list has one indicator a line; ``#`` starts a comment (whole line, or after a space);
the type is sniffed from the value:

* 32 / 40 / 64 hex digits -- md5 / sha1 / sha256;
* an IPv4 or IPv6 address (:mod:`ipaddress`);
* ``SCHEME://...`` -- a URL (found as given in file contents, log lines, environments and
  command lines);
* ``re:PATTERN`` or ``/PATTERN/`` -- a regular expression (over log lines, change paths, and
  file contents through YARA);
* a name with a dot and a letter-only last label of two or more (``evil.example.com``) -- a
  domain; prefix ``domain:`` or ``name:`` (or ``file:``) to say which when a file name looks like
  a domain (``update.sh`` is a domain by shape but ``sh`` ... is read as a file name: see
  :data:`FILE_SUFFIXES`);
* anything else without ``/`` or spaces -- a file name (matched on the last component of a
  path); with ``/`` -- a full path.

STIX 2.1 (OASIS, https://docs.oasis-open.org/cti/stix/v2.1/stix-v2.1.html, section 4.7 Indicator
and 9 Patterning): every ``indicator`` object with ``pattern_type`` ``stix`` (or none) gives one
indicator per ``=`` comparison of its pattern on ``file:hashes.'SHA-256'`` / ``SHA-1`` / ``MD5``,
``file:name``, ``ipv4-addr:value``, ``ipv6-addr:value``, ``domain-name:value``, ``url:value`` (its
host, as a domain) and ``MATCHES`` on ``file:name`` (a regex); ``OR`` / ``AND`` between them are
read as alternatives (any comparison that matches is reported, with the indicator's id and name).
Comparisons on other objects are counted and noted, never an error.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

from pensieve.hunting.inputs import read_text
from pensieve.hunting.rules import RuleError

HASH_TYPES = {32: "md5", 40: "sha1", 64: "sha256"}
#: suffixes that make a dotted name a file name, not a domain
_SUFFIXES = (
    "sh py pl rb exe dll so elf bin txt log conf cfg json yaml yml xml php js jar war zip gz tgz tar "
    "xz bz2 7z rar deb rpm apk img iso ps1 bat cmd vbs out o a ko pyc class"
)
FILE_SUFFIXES = frozenset(_SUFFIXES.split())
#: explicit type prefixes of a plain line
PREFIXES = (
    ("re:", "regex"),
    ("domain:", "domain"),
    ("name:", "filename"),
    ("file:", "filename"),
    ("ip:", "ip"),
    ("path:", "path"),
)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^\s/]+", re.I)
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$", re.I)
_STIX_CMP = re.compile(
    r"(?P<obj>[a-z0-9-]+):(?P<prop>[A-Za-z0-9_.'\-]+)\s*(?P<op>=|MATCHES)\s*'(?P<val>(?:[^'\\]|\\.)*)'"
)


class Indicator(NamedTuple):
    """One indicator: its type, value (hashes lower case), where it came from, its STIX id/name."""

    type: str  # md5 | sha1 | sha256 | ipv4 | ipv6 | domain | url | filename | path | regex
    value: str
    source: str  # the list file (and line)
    id: str | None = None  # STIX indicator id
    name: str | None = None  # STIX indicator name, or the comment after a plain line

    def label(self) -> str:
        return self.name or self.id or f"{self.type} {self.value}"


def sniff(text: str) -> tuple[str, str] | None:
    """(type, value) of one plain indicator (None for an empty line)."""
    value = text.strip()
    if not value:
        return None
    for prefix, kind in PREFIXES:
        if value.lower().startswith(prefix):
            rest = value[len(prefix) :].strip()
            return (_ip_type(rest) or "ipv4", rest) if kind == "ip" else (kind, rest)
    if len(value) > 2 and value.startswith("/") and value.endswith("/"):
        return "regex", value[1:-1]
    if _URL.match(value):
        return "url", value
    if len(value) in HASH_TYPES and _HEX.match(value):
        return HASH_TYPES[len(value)], value.lower()
    ip = _ip_type(value)
    if ip:
        return ip, str(ipaddress.ip_address(value))
    if "/" in value:
        return "path", value
    if _DOMAIN.match(value) and value.rsplit(".", 1)[-1].lower() not in FILE_SUFFIXES:
        return "domain", value.rstrip(".").lower()
    return "filename", value


def _ip_type(value: str) -> str | None:
    try:
        return "ipv4" if ipaddress.ip_address(value).version == 4 else "ipv6"
    except ValueError:
        return None


def parse_text(text: str, source: str) -> list[Indicator]:
    """The indicators of a plain list (RuleError naming the line of a bad regex)."""
    out: list[Indicator] = []
    for n, line in enumerate(text.splitlines(), 1):
        body, comment = line, None
        if line.lstrip().startswith("#"):
            continue
        if " #" in line and not line.lstrip().startswith(("re:", "/")):
            body, comment = line.split(" #", 1)
            comment = comment.strip() or None
        found = sniff(body)
        if found is None:
            continue
        kind, value = found
        if kind == "regex":
            _check_regex(value, source, n)
        out.append(Indicator(kind, value, f"{source}:{n}", None, comment))
    return out


def _check_regex(value: str, source: str, line: int | None) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise RuleError(source, line, f"bad regular expression {value!r}: {exc}") from None


#: STIX object:property -> indicator type
STIX_PROPERTIES = {
    ("file", "hashes.'SHA-256'"): "sha256",
    ("file", "hashes.SHA256"): "sha256",
    ("file", "hashes.'SHA-1'"): "sha1",
    ("file", "hashes.SHA1"): "sha1",
    ("file", "hashes.MD5"): "md5",
    ("file", "hashes.'MD5'"): "md5",
    ("file", "name"): "filename",
    ("ipv4-addr", "value"): "ipv4",
    ("ipv6-addr", "value"): "ipv6",
    ("domain-name", "value"): "domain",
    ("url", "value"): "url",
}


def _stix_value(kind: str, op: str, raw: str) -> tuple[str, str] | None:
    value = raw.replace("\\'", "'").replace("\\\\", "\\")
    if op == "MATCHES":
        return ("regex", value) if kind == "filename" else None
    if kind in ("sha256", "sha1", "md5"):
        return kind, value.lower()
    if kind in ("ipv4", "ipv6"):
        return kind, value.split("/")[0] if value.endswith("/32") or "/" not in value else value
    if kind == "url":
        host = urlsplit(value).hostname
        return ("domain", host.lower()) if host else None
    if kind == "domain":
        return kind, value.rstrip(".").lower()
    return kind, value


def parse_stix(data: dict, source: str, notes: list[str]) -> list[Indicator]:
    """The indicators of a STIX 2.1 bundle (or a lone indicator object)."""
    objects = data.get("objects") if data.get("type") == "bundle" else [data]
    out: list[Indicator] = []
    skipped = 0
    for obj in objects or []:
        if not isinstance(obj, dict) or obj.get("type") != "indicator":
            continue
        if (obj.get("pattern_type") or "stix") != "stix" or not isinstance(obj.get("pattern"), str):
            skipped += 1
            continue
        for m in _STIX_CMP.finditer(obj["pattern"]):
            kind = STIX_PROPERTIES.get((m["obj"], m["prop"]))
            found = _stix_value(kind, m["op"], m["val"]) if kind else None
            if found is None:
                skipped += 1
                continue
            if found[0] == "regex":
                _check_regex(found[1], source, None)
            out.append(Indicator(found[0], found[1], source, obj.get("id"), obj.get("name")))
    if skipped:
        notes.append(f"{source}: {skipped} STIX indicator(s) or comparison(s) of kinds not matched here")
    return out


def load_iocs(paths: Iterable[str], notes: list[str] | None = None) -> list[Indicator]:
    """The indicators of every list file of PATHS (a JSON file is a STIX bundle)."""
    notes = notes if notes is not None else []
    out: list[Indicator] = []
    for path in paths:
        try:
            text = read_text(path, "replace")
        except OSError as exc:
            raise RuleError(path, None, f"cannot read IOC list: {exc.strerror or exc}") from None
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise RuleError(path, getattr(exc, "lineno", None), f"not a STIX bundle: {exc}") from None
            out += parse_stix(data, path, notes)
        else:
            out += parse_text(text, path)
    seen: set[tuple[str, str]] = set()
    unique = []
    for ind in out:
        if (ind.type, ind.value) not in seen:
            seen.add((ind.type, ind.value))
            unique.append(ind)
    return unique
