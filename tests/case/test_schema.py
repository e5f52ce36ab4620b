"""The case's tables come from the record declarations: every field a column, typed, keys first."""

from __future__ import annotations

from pensieve.case.schema import KEY_NAMES, TABLES, columns, create_statements, describe, sql_type
from pensieve.case.store import record_row
from pensieve.records import Change, Container, LogLine


def test_sql_types_follow_the_annotations():
    assert sql_type("str") == "VARCHAR"
    assert sql_type("int | None") == "BIGINT"
    assert sql_type("Timestamp | None") == "TIMESTAMP_NS"
    assert sql_type("bool") == "BOOLEAN"
    assert sql_type("list[str]") == "JSON"
    assert sql_type("dict[str, Any]") == "JSON"
    assert sql_type("str | int") == "JSON"


def test_every_record_field_is_a_column_or_fills_a_key():
    for t in TABLES:
        if t.record is None:
            continue
        names = [n for n, _typ in columns(t)]
        assert len(names) == len(set(names)), t.name
        renamed = dict(t.renames)
        for field in t.record.__record_fields__:
            if field in t.omit:
                continue
            assert renamed.get(field, field) in names, (t.name, field)


def test_key_columns_lead_every_evidence_table():
    for t in TABLES:
        names = [n for n, _typ in columns(t)]
        if t.keyed:
            assert tuple(names[: len(KEY_NAMES)]) == KEY_NAMES, t.name
        else:
            assert not set(KEY_NAMES[2:]) & set(names), t.name


def test_the_issue_tables_are_all_there():
    wanted = {"containers", "images", "layers", "changes", "processes", "sockets", "logs", "recovered"}
    wanted |= {"carved", "findings", "events", "problems", "sources"}
    assert wanted <= {t.name for t in TABLES}
    assert len(create_statements()) == len(TABLES)
    assert all(d["columns"] for d in describe())


def test_record_row_fills_keys_from_renamed_fields():
    t = next(t for t in TABLES if t.name == "containers")
    c = Container(id="abc", engine="podman", name="web", pod_name="p1")
    row = record_row(t, c, {"source_id": 1, "host": "h"})
    assert row["container_id"] == "abc" and row["pod_name"] == "p1" and row["engine"] == "podman"
    assert "id" not in row and "layers" not in row and "problems" not in row


def test_record_row_keeps_the_context_key_when_the_record_has_none():
    t = next(t for t in TABLES if t.name == "changes")
    ch = Change(change="added", path="/x", layer=None)
    row = record_row(t, ch, {"layer_id": "L", "container_id": "c"})
    assert row["layer_id"] == "L"
    line = LogLine(container_id="c2", time=1, stream="stdout", message="m", source="/f")
    row = record_row(next(t for t in TABLES if t.name == "logs"), line, {"container_id": "c"})
    assert row["container_id"] == "c2"
