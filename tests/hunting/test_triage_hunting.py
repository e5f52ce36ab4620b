"""triage --yara / --ioc end to end: the overlay2 fixture and the CRIU fixture."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import duckdb
import pytest

from pensieve.case.content import ContentScanner
from pensieve.case.triage import triage
from pensieve.hunting import load_hunting
from pensieve.hunting.matchers import matcher_factories
from pensieve.hunting.rules import load_rules

FIXTURES = Path(__file__).parents[1] / "fixtures"
#: the sha256 of /tmp/x that c-modified added (the fixture's changes)
TMP_X_SHA256 = "73cb3858a687a8494ca3323053016282f3dad39d42cf62ca4e79dda2aac7d9ac"
IMPLANT_RULE = """rule implant_script {
  meta:
    mitre = "T1059.004, T1105"
    description = "a netcat reverse shell"
  strings:
    $nc = "4444 -e /bin/sh"
  condition:
    $nc
}
"""


def _query(case: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(case), read_only=True) as db:
        return db.execute(sql).fetchall()


@pytest.fixture(scope="module")
def hunted(overlay2_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hunt")
    (tmp / "rules").mkdir()
    (tmp / "rules" / "implant.yar").write_text(IMPLANT_RULE)
    (tmp / "iocs.txt").write_text(f"{TMP_X_SHA256} # staged payload\nnew.txt\n")
    hunting = load_hunting([str(tmp / "rules")], [str(tmp / "iocs.txt")])
    case = tmp / "case.duckdb"
    summary = triage([str(overlay2_root)], str(case), hunting=hunting)
    return case, summary


def test_a_rule_and_a_sha256_ioc_become_findings(hunted):
    case, summary = hunted
    assert summary.failed == 0
    rows = _query(
        case,
        "SELECT title, severity, techniques, subject, evidence, rationale FROM findings"
        " WHERE producer = 'findings.rules' ORDER BY title",
    )
    by_subject = {r[3]: r for r in rows}
    implant = by_subject["/root/implant.sh"]
    assert implant[0] == "YARA implant_script: /root/implant.sh" and implant[1] == "high"
    assert json.loads(implant[2]) == ["T1059.004", "T1105"]
    (ref,) = json.loads(implant[4])
    assert ref["table"] == "changes" and ref["path"] == "/root/implant.sh" and ref["change"] == "added"
    assert "implant_script" in implant[5] and "netcat" in implant[5]
    staged = by_subject["/tmp/x"]
    assert staged[0].startswith("IOC sha256 ") and "staged payload" in staged[5]
    assert "/opt/app/sub/new.txt" in by_subject


def test_the_change_row_holds_the_match(hunted):
    case, _summary = hunted
    (matches,) = _query(case, "SELECT matches FROM changes WHERE path = '/root/implant.sh'")[0]
    (m,) = json.loads(matches)
    assert m["type"] == "yara" and m["rule"] == "implant_script" and m["strings"][0][0] == "$nc"


def test_image_layers_are_a_task_of_their_own(hunted):
    case, _summary = hunted
    assert _query(case, "SELECT status FROM tasks WHERE task = 'yara-layers'") == [("done",)]


def test_an_oversize_file_is_reported_not_scanned(overlay2_root, tmp_path):
    (tmp_path / "r.yar").write_text(IMPLANT_RULE)
    hunting = load_hunting([str(tmp_path / "r.yar")], max_size=16)
    case = tmp_path / "case.duckdb"
    triage([str(overlay2_root)], str(case), hunting=hunting)
    assert _query(case, "SELECT count(*) FROM findings WHERE title LIKE 'YARA %'") == [(0,)]
    problems = _query(
        case, "SELECT source, message FROM problems WHERE message LIKE 'not scanned with YARA%'"
    )
    assert any(src.endswith("/root/implant.sh") for src, _m in problems)
    (matches,) = _query(case, "SELECT matches FROM changes WHERE path = '/root/implant.sh'")[0]
    assert json.loads(matches)[0]["type"] == "unscanned"


def test_the_scanner_feeds_yara_the_whole_file(tmp_path):
    (tmp_path / "r.yar").write_text('rule across { strings: $a = "ab" condition: $a }')
    rules = load_rules([str(tmp_path / "r.yar")])
    problems: list = []
    scanner = ContentScanner(matcher_factories(rules, [], problems))
    data = b"x" * ((1 << 20) - 1) + b"ab" + b"y" * 10  # the string straddles the 1 MiB blocks
    scanner(io.BytesIO(data), "/f")
    assert [m["rule"] for m in scanner.matches["/f"]] == ["across"] and not problems


def test_md5_iocs_are_hashed_over_the_same_blocks(tmp_path):
    import hashlib

    (tmp_path / "i.txt").write_text(hashlib.md5(b"payload").hexdigest() + "\n")
    hunting = load_hunting(None, [str(tmp_path / "i.txt")])
    scanner = ContentScanner(hunting.factories([]))
    scanner(io.BytesIO(b"payload"), "/a")
    scanner(io.BytesIO(b"other"), "/b")
    assert [m["indicator"] for m in scanner.matches["/a"]] == ["md5"] and "/b" not in scanner.matches


def test_a_memory_hit_on_the_criu_fixture(tmp_path):
    with tarfile.open(FIXTURES / "criu" / "criu-dumps.tar.gz") as tf:
        tf.extractall(tmp_path / "dumps", filter="data")
    (tmp_path / "t.yar").write_text(
        'rule token { meta: severity = "critical" strings: $t = "pensieve-fixture-token-1234" condition: $t }'
    )
    (tmp_path / "bundle.json").write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "indicator", "id": "indicator--1", "name": "local c2", "pattern_type": "stix",
         "pattern": "[ipv4-addr:value = '127.0.0.1']"}]}))  # fmt: skip
    case = tmp_path / "case.duckdb"
    hunting = load_hunting([str(tmp_path / "t.yar")], [str(tmp_path / "bundle.json")])
    summary = triage([str(tmp_path / "dumps" / "after")], str(case), hunting=hunting)
    assert summary.failed == 0
    sockets = _query(
        case,
        "SELECT title, rationale FROM findings WHERE title LIKE 'IOC ipv4 127.0.0.1%'"
        " AND json_extract_string(evidence, '$[0].table') = 'sockets'",
    )
    assert sockets and all("local c2" in why and "socket" in why for _t, why in sockets)
    rows = _query(case, "SELECT severity, subject, details FROM findings WHERE producer = 'yara.memory'")
    assert rows and all(sev == "critical" for sev, _s, _d in rows)
    details = [json.loads(d) for _s, _sub, d in rows]
    pids = {p for (p,) in _query(case, "SELECT pid FROM processes")}
    assert all(
        d["pid"] in pids and d["address"] > 0 and "pensieve-fixture-token" in d["context"] for d in details
    )


def test_the_cli_exits_2_naming_file_and_line(tmp_path, capsys):
    from pensieve.cli import main

    bad = tmp_path / "bad.yar"
    bad.write_text("rule x {\n  condition:\n    nope\n}\n")
    code = main(["triage", str(tmp_path), "--case", str(tmp_path / "c.duckdb"), "--yara", str(bad)])
    assert code == 2
    assert f"{bad}:3" in capsys.readouterr().err
    assert not (tmp_path / "c.duckdb").exists()
