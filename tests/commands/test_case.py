"""``pensieve triage``, ``query`` and ``case``: exit codes, formats, and where files may go."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest
from conftest import run_cli


@pytest.fixture(scope="module")
def case(overlay2_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-case") / "case.duckdb"
    code, _out, err = run_cli("triage", overlay2_root, "--case", path)
    assert code in (0, 5), err
    assert "tasks done" in err and "[1/" in err  # progress lines on stderr
    return path


def test_query_as_json_and_csv(case):
    code, out, _err = run_cli(
        "query", case, "SELECT name, state, created FROM containers ORDER BY name", "--json"
    )
    assert code == 0
    rows = json.loads(out)
    assert {"c-modified", "c-running"} <= {r["name"] for r in rows}
    assert all(r["created"].endswith("Z") and len(r["created"]) == 30 for r in rows)  # ns, UTC
    code, out, _err = run_cli("query", case, "SELECT change, path FROM changes LIMIT 5", "--csv")
    assert code == 0
    got = list(csv.DictReader(io.StringIO(out)))
    assert len(got) == 5 and set(got[0]) == {"change", "path"}


def test_query_table_and_bad_sql(case):
    code, out, _err = run_cli("query", case, "SELECT count(*) AS n FROM containers")
    assert code == 0 and "n" in out
    code, _out, err = run_cli("query", case, "SELECT nonsense FROM nowhere")
    assert code == 2 and "query failed" in err


def test_query_cannot_change_the_case(case):
    code, _out, err = run_cli("query", case, "DELETE FROM containers")
    assert code == 2
    code, out, _err = run_cli("query", case, "SELECT count(*) AS n FROM containers", "--json")
    assert json.loads(out)[0]["n"] > 0


def test_case_tables_lists_every_table():
    code, out, _err = run_cli("case", "tables", "--json")
    assert code == 0
    names = {t["table"] for t in json.loads(out)}
    assert {"containers", "changes", "findings", "events", "problems", "sources"} <= names


def test_export_parquet(case, tmp_path):
    dest = tmp_path / "pq"
    code, _out, err = run_cli("case", "export", case, "--parquet", dest)
    assert code == 0, err
    manifest = json.loads((dest / "pensieve-manifest.json").read_text())
    assert any(f["path"].endswith("containers.parquet") for f in manifest["files"])
    n = duckdb.sql(f"SELECT count(*) FROM '{dest}/containers.parquet'").fetchall()[0][0]
    code, out, _err = run_cli("query", case, "SELECT count(*) AS n FROM containers", "--json")
    assert n == json.loads(out)[0]["n"]
    code, _out, err = run_cli("case", "export", case, "--parquet", dest)
    assert code == 2  # never over an earlier export


def test_case_and_export_refused_inside_the_evidence(case, overlay2_root):
    code, _out, err = run_cli("triage", overlay2_root, "--case", overlay2_root / "case.duckdb")
    assert code == 2 and "inside the evidence" in err
    assert not (overlay2_root / "case.duckdb").exists()
    code, _out, err = run_cli("case", "export", case, "--parquet", overlay2_root / "pq")
    assert code == 2 and not (overlay2_root / "pq").exists()


def test_not_a_case(tmp_path):
    bogus = tmp_path / "x.duckdb"
    bogus.write_text("not a database\n")
    code, _out, err = run_cli("query", bogus, "SELECT 1")
    assert code == 2 and "not a case" in err
    code, _out, err = run_cli("query", tmp_path / "missing.duckdb", "SELECT 1")
    assert code == 2 and "no case" in err


def test_query_parses_json_columns_only(case):
    """A JSON column comes back parsed; a text value that merely looks like JSON stays text."""
    sql = "SELECT '[1, 2]' AS text_value, CAST('[1, 2]' AS JSON) AS json_value, what_changed"
    sql += " FROM changes LIMIT 1"
    code, out, _err = run_cli("query", case, sql, "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["text_value"] == "[1, 2]" and row["json_value"] == [1, 2]
    assert isinstance(row["what_changed"], list)
