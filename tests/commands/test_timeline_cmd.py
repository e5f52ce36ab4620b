"""``pensieve timeline`` and ``pensieve links``: formats, filters, mactime, Timesketch, --out."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess

import pytest
from conftest import run_cli

from pensieve.output.bodyfile import line, mode_string
from pensieve.output.timesketch import REQUIRED


@pytest.fixture(scope="module")
def case(overlay2_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-tl") / "case.duckdb"
    code, _out, err = run_cli("triage", overlay2_root, "--case", path, "-q")
    assert code in (0, 5), err
    return path


def _events(case, *args):
    code, out, err = run_cli("timeline", case, "--jsonl", *args)
    assert code == 0, err
    return [json.loads(x) for x in out.splitlines()]


def test_filters(case):
    every = _events(case)
    assert every == sorted(every, key=lambda e: e["time"]) and len(every) > 100
    files = _events(case, "--kind", "file.", "--kind", "container.created")
    assert files and {e["kind"] for e in files} <= {"file.mtime", "file.ctime", "container.created"}
    mine = _events(case, "--container", "c-modified")
    assert mine and {e["container"] for e in mine} == {"c-modified"}
    by_id = _events(case, "--container", mine[0]["container_id"][:8])
    assert by_id == mine
    t = every[len(every) // 2]["time"]
    since = _events(case, "--since", t)
    assert since and all(e["time"] >= t for e in since) and len(since) < len(every)
    until = _events(case, "--until", t)
    assert all(e["time"] <= t for e in until) and len(until) + len(since) >= len(every)
    day = t[:10]
    assert _events(case, "--since", day, "--until", day) == [e for e in every if e["time"].startswith(day)]
    code, _out, err = run_cli("timeline", case, "--since", "yesterday")
    assert code == 2 and "RFC 3339" in err


def test_csv_and_table(case):
    code, out, _err = run_cli("timeline", case, "--csv", "--kind", "container.")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows and all(r["time"].endswith("Z") and len(r["time"]) == 30 for r in rows)
    code, out, _err = run_cli("timeline", case, "--kind", "container.started")
    assert code == 0 and "container.started" in out and "MESSAGE" in out


def test_timesketch_has_what_timesketch_requires(case):
    # Timesketch's user guide ("Create timeline from JSONL or CSV file",
    # docs/guides/user/import-from-json-csv.md) and timesketch/lib/utils.py read_and_validate_jsonl:
    # message, datetime (ISO 8601) and timestamp_desc are mandatory; timestamp is microseconds.
    code, out, _err = run_cli("timeline", case, "--format", "timesketch")
    assert code == 0
    events = [json.loads(x) for x in out.splitlines()]
    assert events
    for e in events:
        assert all(isinstance(e[f], str) and e[f] for f in REQUIRED)
        assert isinstance(e["timestamp"], int) and e["datetime"].endswith("Z")
        assert e["timestamp"] == _ns(e["datetime"]) // 1000
    assert {"container", "host", "engine", "kind"} <= set().union(*events)


def _ns(text: str) -> int:
    from pensieve.times import parse_rfc3339

    return parse_rfc3339(text)


def test_bodyfile_is_read_by_mactime(case, tmp_path):
    out = tmp_path / "body.txt"
    code, _o, err = run_cli("timeline", case, "--format", "bodyfile", "--out", out)
    assert code == 0, err
    lines = out.read_text().splitlines()
    fields = [x.split("|") for x in lines]
    assert fields and all(len(f) == 11 for f in fields)
    names = {f[1] for f in fields}
    assert len(names) == len(lines)  # one line per file, times merged
    assert any(n.endswith("c-modified:/root/implant.sh") for n in names)
    changes = _events(case, "--kind", "file.")
    want = {(e["container"], e["path"], e["kind"][5], _ns(e["time"]) // 10**9) for e in changes}
    got = set()
    for f in fields:
        where, path = f[1].rsplit(":", 1)
        for letter, value in zip("amcb", f[7:11], strict=True):
            if value != "0":
                got.add((where.split(" ")[-1], path.removesuffix(" (deleted)"), letter, int(value)))
    assert got == want
    assert (tmp_path / "body.txt.manifest.json").exists()
    if shutil.which("mactime") is None:
        pytest.skip("mactime (sleuthkit) not installed")
    res = subprocess.run(
        ["mactime", "-b", str(out), "-d", "-z", "UTC"], capture_output=True, text=True, check=True
    )
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0][:3] == ["Date", "Size", "Type"]
    parsed, date = set(), ""
    for r in rows[1:]:
        date = r[0].strip() or date  # mactime leaves a repeated date blank
        for letter in r[2].replace(".", ""):
            parsed.add((r[7], letter, date))
    ours = set()
    for f in fields:
        for letter, value in zip("amcb", f[7:11], strict=True):
            if value != "0":
                ours.add((f[1], letter, _iso_seconds(int(value))))
    assert ours <= parsed  # every time of every file, as mactime reads it
    assert {n for n, _x, _d in parsed} == names


def _iso_seconds(seconds: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%a %b %d %Y %H:%M:%S")


def test_out_refused_inside_the_evidence_and_never_overwritten(case, overlay2_root, tmp_path):
    code, _o, err = run_cli("timeline", case, "--out", overlay2_root / "tl.txt")
    assert code == 2 and "inside the evidence" in err and not (overlay2_root / "tl.txt").exists()
    dest = tmp_path / "links.json"
    assert run_cli("links", case, "--json", "--out", dest)[0] == 0
    assert run_cli("links", case, "--json", "--out", dest)[0] == 2


def test_links_command(case):
    code, out, _err = run_cli("links", case, "--json", "--kind", "image.")
    links = json.loads(out)
    assert code == 0 and links and {x["kind"] for x in links} == {"image.shared"}
    code, out, _err = run_cli("links", case, "--json", "--container", "c-oom")
    assert all("c-oom" in (x["a"]["container"], x["b"]["container"]) for x in json.loads(out))
    code, out, _err = run_cli("links", case)
    assert code == 0 and "image.shared" in out
    assert json.loads(run_cli("links", case, "--json", "--kind", "file.")[1]) == []


def test_bodyfile_writer():
    assert mode_string("file", 0o4755) == "r/rrwsr-xr-x" and mode_string(None, None) == "-/----------"
    assert line("a|b%c\n", 5, "r/rrw-r--r--", 1, 2, 3, 4 * 10**9, 5 * 10**9 + 7, None, None) == (
        "0|a%7Cb%25c%0A|5|r/rrw-r--r--|1|2|3|4|5|0|0"
    )
