"""pensieve.output.render tables: whole ids, paths and times, short or full ids, empty columns
left out, free text cut with an ellipsis, the width from COLUMNS, a single record wrapped;
machine formats untouched (whole ids)."""

from __future__ import annotations

import io
import json
import re

import pytest

from pensieve.output import columns
from pensieve.output.columns import ID, LONG, NUM, PATH, TEXT, TIME, Column
from pensieve.output.render import PIPE_WIDTH, emit, emit_one, fit_widths, table_width
from pensieve.records import FileEntry

HEX64 = "ab12cd34ef56" * 5 + "7890"
PATHS = [f"/var/lib/app/releases/{i}/" + "very-long-directory-name/" * 2 + "config.yaml" for i in range(3)]
MTIME = 1_700_000_000_500_000_000  # 2023-11-14 22:13:20.5 UTC
WHEN = "2023-11-14 22:13:20"


def _entries(n: int = 3) -> list[FileEntry]:
    return [
        FileEntry(
            path=PATHS[i % len(PATHS)],
            type="file",
            mode=0o644,
            uid=0,
            gid=0,
            size=10 * i,
            mtime=MTIME,
            layer=HEX64,
            layer_role="image",
            created_by="RUN apt-get update && apt-get install -y curl ca-certificates " * 3,
            shadows=["sha256:" + HEX64],
        )
        for i in range(n)
    ]


def _table(records, spec, width: int, monkeypatch, title: str | None = None) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    out = io.StringIO()
    emit(records, "table", spec, title=title, out=out)
    return out.getvalue()


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("width", [80, 120])
def test_no_id_path_or_time_is_split(monkeypatch, width):
    text = _table(_entries(), columns.file_entries(long=True), width, monkeypatch)
    body = _body(text)
    assert len(body) == 3  # one line a row: nothing wrapped
    for line, path in zip(body, PATHS, strict=True):
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert path in cells and WHEN in cells
        assert "image:" + HEX64[:12] in cells and HEX64[:12] in cells  # LAYER, SHADOWS
    assert "…" in text  # the history step is cut with an ellipsis


def test_free_text_is_cut_with_an_ellipsis_to_fit(monkeypatch):
    spec = [Column("ID", lambda r: r[0], ID), Column("TEXT", lambda r: r[1], TEXT)]
    rows = [(HEX64[:12], "word " * 40)]
    text = _table(rows, spec, 60, monkeypatch)
    assert all(len(line) <= 60 for line in text.splitlines())
    (line,) = _body(text)
    assert HEX64[:12] in line and line.rstrip("│ ").endswith("…")


def test_max_width_caps_free_text_whatever_the_width(monkeypatch):
    from pensieve.records import Container

    c = Container(engine="docker", id="sha256:" + HEX64, name="web", command=["sh", "-c", "x" * 100])
    text = _table([c], columns.containers(), 300, monkeypatch)
    (line,) = _body(text)
    assert "sh -c " + "x" * 33 + "…" in line and "x" * 35 not in line


def test_no_trunc_shows_64_hex_ids(monkeypatch):
    short = _table(_entries(1), columns.file_entries(long=True), 250, monkeypatch)
    assert HEX64 not in short and "image:" + HEX64[:12] in short
    full = _table(_entries(1), columns.file_entries(full_ids=True, long=True), 400, monkeypatch)
    assert "image:" + HEX64 in full
    assert "sha256:" not in full  # the algorithm prefix stays off, as docker --no-trunc shows ids


def test_columns_empty_in_every_row_are_left_out(monkeypatch):
    spec = [Column("A", lambda r: r["a"]), Column("PROBLEMS", lambda r: r["b"])]
    text = _table([{"a": "x", "b": []}, {"a": "y", "b": None}], spec, 80, monkeypatch)
    assert "PROBLEMS" not in text and "A" in text
    text = _table([{"a": "x", "b": ["oops"]}], spec, 80, monkeypatch)
    assert "PROBLEMS" in text and "oops" in text
    text = _table([], spec, 80, monkeypatch)  # no rows: the headers say what would be there
    assert "PROBLEMS" in text


def test_piped_width_is_columns_else_200(monkeypatch):
    pipe = io.StringIO()
    monkeypatch.delenv("COLUMNS", raising=False)
    assert table_width(pipe) == PIPE_WIDTH == 200
    monkeypatch.setenv("COLUMNS", "91")
    assert table_width(pipe) == 91
    monkeypatch.setenv("COLUMNS", "junk")
    assert table_width(pipe) == 200
    wide = [(HEX64[:12], "word " * 60)]
    spec = [Column("ID", lambda r: r[0], ID), Column("TEXT", lambda r: r[1], TEXT)]
    for width in (91, 150):
        text = _table(wide, spec, width, monkeypatch)
        assert max(len(line) for line in text.splitlines()) == width


def test_fit_widths_narrows_text_only():
    cols = [Column("I", str, ID), Column("T", str, TIME), Column("P", str, PATH), Column("X", str, TEXT)]
    widths = fit_widths(cols, [12, 19, 40, 80], 100)
    assert widths[:3] == [12, 19, 40] and sum(widths) + 3 * 4 + 1 == 100
    widths = fit_widths(cols, [12, 19, 90, 80], 100)  # whole cells wider than the width: text floors
    assert widths == [12, 19, 90, 12]
    assert fit_widths([Column("N", str, NUM)], [30], 10) == [30]


def test_a_single_record_wraps_its_values_without_losing_them(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    env = [f"VAR{i}=value-{i}" for i in range(30)]
    out = io.StringIO()
    emit_one({"env": env, "id": "sha256:" + HEX64, "path": "/srv/data/key"}, "table", out=out)
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert len(_body(text)) > 3  # wrapped, not cut
    flat = re.sub(r"[│\s]", "", text)
    assert all(v.replace(" ", "") in flat for v in env)
    assert "sha256:" + HEX64 in flat and "…" not in text
    assert columns.key_value()[1].kind == LONG


def test_cells_and_titles_are_escaped(monkeypatch):
    spec = [Column("PATH", lambda r: r, PATH)]
    text = _table(["/tmp/\x1b]0;owned\x07", "/tmp/[bold]x[/bold]"], spec, 120, monkeypatch, title="t\x1b[5m")
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07" in text and "t\\x1b[5m" in text
    assert "[bold]x[/bold]" in text  # no rich markup is interpreted


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_machine_formats_keep_whole_ids_whatever_the_columns(fmt, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    emit(_entries(2), fmt, columns.file_entries(long=True), out=out, record_type=FileEntry)
    text = out.getvalue()
    assert text.count(HEX64) >= 4 and "…" not in text
    if fmt == "json":
        assert json.loads(text)[0]["layer"] == HEX64


def test_narrowing_floors_name_the_column_kinds() -> None:
    """render keeps its floors by the kinds' text (columns is imported only for tables)."""
    from pensieve.output import columns, render

    assert set(render._FLOORS) == {columns.LONG, columns.TEXT}
