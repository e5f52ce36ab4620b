"""YARA rules from files and directories, compiled with yara-x, else yara-python.

Every file given, and every ``*.yar`` / ``*.yara`` below a directory given (recursively, in name
order), is one namespace (its path), so two files may use the same rule name.  Each file is
compiled with yara-x (https://virustotal.github.io/yara-x/, faster and the default); a file that
yara-x refuses but yara-python (libyara 4.5) accepts -- a module yara-x does not have (``magic``),
syntax yara-x is stricter about -- is compiled with yara-python instead, and a note says which
file and why.  A file that neither compiles is a :class:`RuleError` naming the file and line of
yara-x's first error.

:class:`RuleSet` scans a buffer with both engines' rules and answers plain dicts (rule,
namespace, tags, meta, strings with offsets); :meth:`RuleSet.match` answers yara-python-style
match objects, so :func:`pensieve.memory.scan.yara_scan` runs a RuleSet over checkpoint memory.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from pensieve.errors import UsageError

RULE_SUFFIXES = (".yar", ".yara")

#: where yara-x's error text says the error is (`` --> FILE:LINE:COLUMN``)
_X_WHERE = re.compile(r"-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")
#: where yara-python's error text says it is (``FILE(LINE): message``)
_PY_WHERE = re.compile(r"^(?P<file>.*)\((?P<line>\d+)\):\s*(?P<msg>.*)$", re.S)


class RuleError(UsageError):
    """A rule file that does not compile (or cannot be read), with its file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.reason = path, line, message
        where = f"{path}:{line}" if line else path
        super().__init__(f"YARA rule {where}: {message}")


def rule_files(paths: Iterable[str]) -> list[str]:
    """Every rule file of PATHS: files as given, ``*.yar``/``*.yara`` below directories."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for top, dirs, files in os.walk(path):
                dirs.sort()
                found += [os.path.join(top, f) for f in files if f.lower().endswith(RULE_SUFFIXES)]
            if not found:
                raise RuleError(path, None, "no *.yar or *.yara file in this directory")
            out += sorted(found)
        elif os.path.isfile(path) or os.path.islink(path):
            out.append(path)  # a symlink is refused when read (pensieve.hunting.inputs)
        else:
            raise RuleError(path, None, "no such file or directory")
    return out


def _first_error_line(text: str) -> tuple[int | None, str]:
    """(line, first line of the message) of a yara-x compile error."""
    where = _X_WHERE.search(text)
    head = text.strip().splitlines()[0] if text.strip() else text
    return (int(where["line"]) if where else None), head


def _python_error(path: str, exc: Exception) -> RuleError:
    m = _PY_WHERE.match(str(exc))
    if m:
        return RuleError(path, int(m["line"]), m["msg"])
    return RuleError(path, None, str(exc))


def _read(path: str) -> str:
    from pensieve.hunting.inputs import read_text

    try:
        return read_text(path)
    except OSError as exc:
        raise RuleError(path, None, f"cannot read: {exc.strerror or exc}") from None


class RuleSet:
    """Compiled rules of one or more files: yara-x where it can, yara-python for the rest."""

    def __init__(self, files: list[str], sources: dict[str, str] | None = None) -> None:
        """Compile FILES (paths) and SOURCES (namespace -> rule text, e.g. made from IOCs)."""
        import yara_x

        self.files = files
        self.notes: list[str] = []
        self.engines: dict[str, str] = {}  # namespace -> yara-x | yara-python
        digest = hashlib.sha256()
        compiler = yara_x.Compiler()
        fallback: dict[str, str] = {}
        items = [(f, _read(f)) for f in files] + list((sources or {}).items())
        self.texts = items  # (namespace, rule text): what a Dask worker compiles again
        for origin, text in items:
            digest.update(origin.encode() + b"\0" + text.encode("utf-8", "surrogateescape") + b"\0")
            compiler.new_namespace(origin)
            try:
                compiler.add_source(text, origin=origin)
                self.engines[origin] = "yara-x"
            except yara_x.CompileError as exc:
                line, head = _first_error_line(str(exc))
                self._fallback(origin, text, line, head)
                fallback[origin] = text
                self.engines[origin] = "yara-python"
        self.digest = digest.hexdigest()
        self.x_rules = compiler.build() if any(e == "yara-x" for e in self.engines.values()) else None
        self.x_scanner = yara_x.Scanner(self.x_rules) if self.x_rules is not None else None
        self.py_rules = self._compile_python(fallback) if fallback else None

    def _fallback(self, origin: str, text: str, line: int | None, head: str) -> None:
        """Check that yara-python takes ORIGIN, which yara-x refused (RuleError when it does not)."""
        try:
            import yara
        except ImportError:
            raise RuleError(origin, line, head) from None
        try:
            yara.compile(source=text)
        except Exception:  # noqa: BLE001 - yara.SyntaxError / yara.Error: report yara-x's words
            raise RuleError(origin, line, head) from None
        where = f"{origin}:{line}" if line else origin
        self.notes.append(f"{where}: yara-x refused it ({head}); compiled with yara-python")

    @staticmethod
    def _compile_python(sources: dict[str, str]) -> Any:
        import yara

        try:
            return yara.compile(sources=sources)
        except Exception as exc:  # noqa: BLE001 - yara.SyntaxError names the namespace
            raise _python_error(next(iter(sources)), exc) from None

    def __len__(self) -> int:
        return len(self.engines)

    def scan(self, data: bytes) -> list[dict]:
        """Every rule matching DATA: rule, namespace, tags, meta, strings (id, offset, length)."""
        out: list[dict] = []
        if self.x_scanner is not None:
            for r in self.x_scanner.scan(data).matching_rules:
                strings = [[p.identifier, m.offset, m.length] for p in r.patterns for m in p.matches]
                out.append(
                    {
                        "rule": r.identifier,
                        "namespace": r.namespace,
                        "tags": list(r.tags),
                        "meta": {k: v for k, v in r.metadata},
                        "strings": strings,
                        "engine": "yara-x",
                    }
                )
        if self.py_rules is not None:
            for m in self.py_rules.match(data=data):
                strings = [[s.identifier, i.offset, i.matched_length] for s in m.strings for i in s.instances]
                out.append(
                    {
                        "rule": m.rule,
                        "namespace": m.namespace,
                        "tags": list(m.tags),
                        "meta": dict(m.meta),
                        "strings": strings,
                        "engine": "yara-python",
                    }
                )
        return out

    def match(self, data: bytes) -> list[SimpleNamespace]:
        """:meth:`scan` as yara-python's ``Rules.match`` answers (rule, tags, meta, strings with
        instances), for :func:`pensieve.memory.scan.yara_scan`."""
        out = []
        for hit in self.scan(data):
            by_id: dict[str, list] = {}
            for ident, offset, length in hit["strings"]:
                by_id.setdefault(ident, []).append(SimpleNamespace(offset=offset, matched_length=length))
            strings = [SimpleNamespace(identifier=i, instances=v) for i, v in by_id.items()]
            out.append(SimpleNamespace(rule=hit["rule"], tags=hit["tags"], meta=hit["meta"], strings=strings))
        return out


def load_rules(paths: Iterable[str], sources: dict[str, str] | None = None) -> RuleSet:
    """The rules of PATHS (files and directories) and SOURCES, compiled (RuleError when not)."""
    return RuleSet(rule_files(paths), sources)
