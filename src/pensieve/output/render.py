"""Output modules: the same records as a table for people, or JSON / JSONL / CSV for machines.

Tables use rich and are imported lazily so that machine formats start fast.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from pensieve.output.text import is_utf8_clean, json_safe, printable
from pensieve.records import record_fields, to_dict
from pensieve.times import iso_ns

Column = tuple[str, Callable[[Any], Any]]
FORMATS = ("table", "json", "jsonl", "csv")


def _default(obj: Any) -> Any:
    cls = type(obj)
    names = record_fields(cls)
    if names is not None:
        out = {n: getattr(obj, n) for n in names}  # the C encoder recurses into it
        for n in getattr(cls, "__record_times__", ()):  # Timestamp fields: RFC 3339, 9 digits
            if type(out[n]) is int:
                out[n] = iso_ns(out[n])
        return out
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    if isinstance(obj, set):
        return sorted(obj)
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """OBJ as JSON, valid UTF-8 whatever names it holds (pensieve.output.text.json_safe)."""
    text = json.dumps(to_dict(obj), indent=indent, default=_default, ensure_ascii=False)
    if is_utf8_clean(text):
        return text
    return json.dumps(json_safe(to_dict(obj)), indent=indent, default=_default, ensure_ascii=False)


def emit(
    records: Iterable[Any],
    fmt: str,
    columns: list[Column] | None = None,
    title: str | None = None,
    out: TextIO | None = None,
    record_type: type | None = None,
) -> int:
    """Write records in FMT; returns how many were written.  RECORD_TYPE (the records' class,
    when known) gives an empty CSV its header row."""
    out = out or sys.stdout
    n = 0
    if fmt == "json":
        # one write through the C encoder, which calls _default only for records (an indent
        # would switch json to its pure-Python encoder); pretty-print with jq to read by eye
        items = list(records)
        text = json.dumps(items, default=_default, ensure_ascii=False)
        if not is_utf8_clean(text):  # a name that is not UTF-8: escaped, raw kept in <key>_b64
            text = json.dumps(json_safe(to_dict(items)), default=_default, ensure_ascii=False)
        out.write(text)
        out.write("\n")
        return len(items)
    if fmt == "jsonl":
        for r in records:
            out.write(dumps(r, indent=None))
            out.write("\n")
            n += 1
        return n
    if fmt == "csv":
        return _csv(records, out, record_type)
    return _table(records, columns or [], title, out)


def _csv(records: Iterable[Any], out: TextIO, record_type: type | None) -> int:
    """CSV (RFC 4180, Python's excel dialect) with a header row: the first record's keys, else the
    field names of RECORD_TYPE; lists and dicts as JSON text in their cell."""
    writer = None
    n = 0
    for r in records:
        d = json_safe(to_dict(r))
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(d), extrasaction="ignore")
            writer.writeheader()
        writer.writerow(
            {k: json.dumps(v, default=_default) if isinstance(v, (list, dict)) else v for k, v in d.items()}
        )
        n += 1
    names = record_fields(record_type) if record_type is not None else None
    if writer is None and names:
        csv.writer(out).writerow(names)
    return n


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return printable(value)


def _table(records: Iterable[Any], columns: list[Column], title: str | None, out: TextIO) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=printable(title) if title else None, show_lines=False, header_style="bold", expand=False
    )
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    n = 0
    for r in records:
        table.add_row(*(escape(_cell(fn(r))) for _, fn in columns))
        n += 1
    console = Console(file=out, soft_wrap=False, width=None if out.isatty() else 200)
    console.print(table)
    return n


def emit_one(record: Any, fmt: str, fields: list[Column] | None = None, out: TextIO | None = None) -> None:
    """Write one record: a document for machines, a two-column key/value table for people."""
    out = out or sys.stdout
    if fmt in ("json", "jsonl"):
        out.write(dumps(record, indent=2 if fmt == "json" else None) + "\n")
        return
    if fmt == "csv":  # one row under the record's field names
        emit([record], fmt, out=out, record_type=type(record))
        return
    d = to_dict(record)
    rows = [(k, fn(record)) for k, fn in fields] if fields else list(d.items())
    emit(
        rows,
        "table",
        [("field", lambda r: r[0]), ("value", lambda r: r[1])],
        out=out,
    )
