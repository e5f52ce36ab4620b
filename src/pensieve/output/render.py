"""Output modules: the same records as a table for people, or JSON / JSONL / CSV for machines.

* Tables use rich (imported lazily so that machine formats start fast) and take their columns
  from :mod:`pensieve.output.columns`.  Every cell and title goes through
  :func:`pensieve.output.text.printable`; a column empty in every row is left out; no cell is
  wrapped or split: free text is cut with an ellipsis to fit, ids, paths, times and numbers are
  kept whole (a table whose whole cells alone are wider than the width is wider); the value
  column of a single record (:func:`emit_one`) wraps instead.  The width is ``COLUMNS`` when
  set, else the terminal's, else (piped, no ``COLUMNS``) 200.
* JSON is one document, JSONL one object a line, CSV a header row and one row a record: every
  field, ids whole, whatever the columns say.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from pensieve.output.text import is_utf8_clean, json_safe, printable
from pensieve.records import record_fields, to_dict
from pensieve.times import iso_ns

if TYPE_CHECKING:  # columns and csv are imported by the formats that use them (start-up time)
    from pensieve.output.columns import Column

FORMATS = ("table", "json", "jsonl", "csv")
#: the width of a table written to a pipe or a file when COLUMNS is not set
PIPE_WIDTH = 200


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
    columns: Sequence[Column] | None = None,
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
    import csv

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


def _clip(text: str, width: int | None) -> str:
    """TEXT cut to WIDTH characters, the last one an ellipsis, when longer."""
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "\u2026"


def table_width(out: TextIO) -> int | None:
    """The width of a table on OUT: ``COLUMNS`` when set; None (the terminal's) on a terminal;
    else (piped) PIPE_WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty else PIPE_WIDTH


#: how far a wrapping value and free text may be narrowed to fit (ids, paths, times, numbers:
#: never; a word shorter than this, such as a status, is never cut); keys: columns.LONG, TEXT
_FLOORS = {"long": 20, "text": 12}


def _chrome(n: int) -> int:
    """The characters rich's box takes around N columns: ``| cell `` per column and the last ``|``."""
    return 3 * n + 1


def fit_widths(columns: Sequence[Column], natural: list[int], width: int | None) -> list[int]:
    """Column widths (cell text, no padding) for a table WIDTH wide: the wrapping value, then the
    widest free-text columns are narrowed, each down to its floor (_FLOORS); ids, paths, times
    and numbers keep their width (the table is wider than WIDTH when what cannot narrow is)."""
    widths = list(natural)
    if width is None:
        return widths
    excess = sum(widths) + _chrome(len(widths)) - width
    for kind, floor in _FLOORS.items():
        while excess > 0:
            candidates = [i for i, c in enumerate(columns) if c.kind == kind and widths[i] > floor]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            runner_up = max((widths[i] for i in candidates if i != widest), default=floor)
            step = max(1, min(excess, widths[widest] - max(floor, runner_up)))
            widths[widest] -= step
            excess -= step
    return widths


def _table(records: Iterable[Any], columns: Sequence[Column], title: str | None, out: TextIO) -> int:
    """A rich table of RECORDS: columns empty in every row left out, free text cut with an
    ellipsis to fit the width, ids, paths, times and numbers whole on one line, a ``long``
    value wrapped."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from pensieve.output.columns import LONG, TEXT, Column

    columns = [c if isinstance(c, Column) else Column(*c) for c in columns]
    rows = [[_clip(_cell(c.value(r)), c.max_width) for c in columns] for r in records]
    keep = [i for i in range(len(columns)) if not rows or any(row[i] for row in rows)]
    shown = [columns[i] for i in keep]
    natural = [max([len(c.header)] + [len(row[i]) for row in rows]) for c, i in zip(shown, keep, strict=True)]
    width = table_width(out)
    if width is None:  # a terminal: its width
        width = Console(file=out).width
    widths = fit_widths(shown, natural, width)
    console = Console(
        file=out,
        soft_wrap=False,
        width=max(width, sum(widths) + _chrome(len(widths))),
        emoji=False,
        markup=False,
        highlight=False,
    )
    table = Table(
        title=Text(printable(title)) if title else None, show_lines=False, header_style="bold", expand=False
    )
    for c, w in zip(shown, widths, strict=True):
        if c.kind == LONG:  # wraps between words, a word longer than the column folded
            table.add_column(Text(c.header), overflow="fold", max_width=w)
        else:
            table.add_column(Text(c.header), no_wrap=True, overflow="ellipsis", min_width=w, max_width=w)
    cut = [(i, w if c.kind == TEXT else None) for c, i, w in zip(shown, keep, widths, strict=True)]
    for row in rows:
        table.add_row(*(Text(_clip(row[i], w)) for i, w in cut))
    console.print(table)
    return len(rows)


def emit_one(record: Any, fmt: str, fields: list[Column] | None = None, out: TextIO | None = None) -> None:
    """Write one record: a document for machines, a two-column field/value table for people
    (the value column wraps to the width instead of being cut)."""
    out = out or sys.stdout
    if fmt in ("json", "jsonl"):
        out.write(dumps(record, indent=2 if fmt == "json" else None) + "\n")
        return
    if fmt == "csv":  # one row under the record's field names
        emit([record], fmt, out=out, record_type=type(record))
        return
    from pensieve.output.columns import key_value

    d = to_dict(record)
    rows = [(c[0], c[1](record)) for c in fields] if fields else list(d.items())
    emit(rows, "table", key_value(), out=out)
