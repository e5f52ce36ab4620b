"""The CLI shell: one command registry, exit codes (tampering by a typed marker), --debug anywhere,
single-record CSV, and each warning printed once."""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import os
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import pensieve.commands as commands
from pensieve import cli
from pensieve.errors import Tampered

SRC = Path(cli.__file__).parent


def _parser_with(fn) -> argparse.ArgumentParser:
    """A top-level parser with one command `probe` running FN."""
    parser = cli.base_parser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("word", nargs="?")
    p.set_defaults(func=fn)
    return parser


# ---- one registry ---------------------------------------------------------------------------------


def test_every_command_module_is_registered_once_in_order():
    found = {m.name for m in pkgutil.iter_modules(commands.__path__)} - {"common"}
    assert set(commands.COMMAND_MODULES) == found
    assert len(set(commands.COMMAND_MODULES)) == len(commands.COMMAND_MODULES)
    for name in commands.COMMAND_MODULES:
        assert callable(importlib.import_module(f"pensieve.commands.{name}").add_parser)
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [
        "roots", "containers", "images", "history", "volumes", "logs", "pods", "diff", "whence",
        "verify", "compare", "mem", "recover", "carve", "fs", "triage", "query", "case", "timeline",
        "links", "report", "live", "collect",
    ]  # fmt: skip


def test_cli_is_only_the_parser_and_exit_codes():
    text = (SRC / "cli.py").read_text()
    assert "@command" not in text and "def cmd_" not in text
    assert len(text.splitlines()) < 250
    for name in ("mem", "recover", "carve"):
        module = (SRC / "commands" / f"{name}.py").read_text()
        assert "from pensieve.cli import" not in module
        assert "cli.build_parser =" not in module


def test_mem_runs_alone_through_the_parser_hook(monkeypatch, capsys):
    from pensieve.commands import mem

    def refuse():
        raise AssertionError("mem.main must not build (or replace) the whole parser")

    monkeypatch.setattr(cli, "build_parser", refuse)
    assert mem.main(["nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert cli.build_parser is refuse


# ---- tampering ------------------------------------------------------------------------------------


def test_tampering_is_a_typed_marker(capsys):
    assert cli.main(["probe"], parser=_parser_with(lambda o: [Tampered()])) == cli.EXIT_TAMPERED
    assert "tampering found" in capsys.readouterr().err

    class _Tampered:  # the old name test: only the type counts now
        source, message = "x", "looks like a marker"

    assert cli.main(["probe"], parser=_parser_with(lambda o: [_Tampered()])) == cli.EXIT_PARTIAL
    assert "warning: x: looks like a marker" in capsys.readouterr().err


def test_verify_marks_tampering_with_the_type():
    from pensieve.commands.verify import _tampered_exit

    assert [type(p) for p in _tampered_exit(True)] == [Tampered] and _tampered_exit(False) == []


# ---- --debug ----------------------------------------------------------------------------------------


def _boom(o):
    raise RuntimeError("kaput")


@pytest.mark.parametrize(
    "argv", [["--debug", "probe"], ["probe", "--debug"], ["probe", "w", "--debug"], ["probe", "--debug", "w"]]
)
def test_debug_anywhere_shows_the_traceback(argv):
    with pytest.raises(RuntimeError, match="kaput"):
        cli.main(argv, parser=_parser_with(_boom))


def test_without_debug_the_message_says_how_to_get_it(capsys):
    assert cli.main(["probe"], parser=_parser_with(_boom)) == cli.EXIT_INTERNAL
    assert "internal error: RuntimeError: kaput (rerun with --debug)" in capsys.readouterr().err


def test_split_debug_keeps_what_follows_a_double_dash():
    assert cli.split_debug(["a", "--debug", "b"]) == (["a", "b"], True)
    assert cli.split_debug(["a", "--", "--debug"]) == (["a", "--", "--debug"], False)
    assert cli.split_debug(["a"]) == (["a"], False)


# ---- CSV ------------------------------------------------------------------------------------------


def test_one_record_as_csv_is_one_row_under_its_field_names():
    from pensieve.output.render import emit_one
    from pensieve.records import FileEntry, record_fields, to_dict

    names = record_fields(FileEntry)
    entry = FileEntry(**{n: None for n in names})
    entry.path, entry.type, entry.shadows = "/etc/motd", "file", ["abc"]
    out = io.StringIO()
    emit_one(entry, "csv", out=out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(to_dict(entry)) and len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["path"] == "/etc/motd" and row["shadows"] == '["abc"]'


def test_empty_csv_still_has_its_header_row():
    from pensieve.output.render import emit
    from pensieve.records import Container, record_fields

    out = io.StringIO()
    assert emit([], "csv", record_type=Container, out=out) == 0
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [list(record_fields(Container))]
    out = io.StringIO()
    assert emit(iter([]), "csv", out=out) == 0 and out.getvalue() == ""  # no class known: nothing


@pytest.fixture(scope="session")
def arx(tmp_path_factory) -> Path:
    """The image archives of tests/fixtures/archives, unpacked."""
    from conftest import FIXTURE_ROOT

    if shutil.which("tar") is None:
        pytest.skip("GNU tar not installed")
    dest = tmp_path_factory.mktemp("archives")
    tarball = FIXTURE_ROOT / "archives" / "archives.tar.xz"
    subprocess.run(["tar", "-xJf", str(tarball), "-C", str(dest)], check=True)
    return dest


def test_fs_stat_as_csv_through_the_cli(arx):
    from conftest import run_cli

    code, out, err = run_cli("fs", arx / "save.tar", "pensieve/aapp:1", "stat", "/srv/data/key", "--csv")
    assert code in (0, 5), err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["path"] == "/srv/data/key" and rows[0]["sha256"]


def test_empty_listing_as_csv_prints_the_header(tmp_path):
    from conftest import run_cli

    from pensieve.records import Container, record_fields

    (tmp_path / "containers").mkdir()
    (tmp_path / "image").mkdir()
    code, out, err = run_cli("containers", tmp_path, "--csv")
    if code not in (0, 5):
        pytest.skip(f"an empty data root is not accepted here: {err}")
    assert out.splitlines()[0] == ",".join(record_fields(Container))


# ---- warnings -------------------------------------------------------------------------------------


def test_each_warning_is_printed_once(capsys):
    from pathlib import PurePosixPath

    from pensieve.records import Problem

    first = Problem("/ev/a", "unreadable")

    def returns(o):  # the host's list and a record's list carrying the same problem
        return [
            first,
            Problem("/ev/b", "other"),
            first,
            Problem(PurePosixPath("/ev/a"), "unreadable"),
            "bare",
        ]

    assert cli.main(["probe"], parser=_parser_with(returns)) == cli.EXIT_PARTIAL
    assert capsys.readouterr().err.splitlines() == [
        "warning: /ev/a: unreadable",
        "warning: /ev/b: other",
        "warning: bare",
    ]


def test_whence_as_csv_is_one_row(overlay2_root):
    from conftest import run_cli

    layer = next(p.name for p in sorted((overlay2_root / "overlay2").iterdir()) if p.name != "l")
    code, out, err = run_cli("whence", overlay2_root, f"overlay2/{layer}/diff", "--csv")
    assert code in (0, 5), err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["layer"] == layer and rows[0]["driver"] == "overlay2"


def test_fifo_source_is_refused_without_blocking(tmp_path):
    """A FIFO as SOURCE: exit 3 at once (the sniffing open used to block forever)."""
    import subprocess
    import sys

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = "import sys; from pensieve.cli import main; sys.exit(main(sys.argv[1:]))"
    for argv in (["containers", str(fifo)], ["images", str(fifo), "--json"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=30)
        assert done.returncode == 3, done.stderr
        assert "FIFO" in done.stderr


def test_machine_output_times_are_rfc3339_with_nanoseconds(overlay2_root):
    """Every Timestamp field (int ns inside) leaves as RFC 3339 UTC with nine digits, in --json,
    --jsonl and --csv alike (the fast JSON path and to_dict must agree)."""
    import json
    import re

    from conftest import run_cli

    rfc = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
    for fmt in ("--json", "--jsonl"):
        code, out, _ = run_cli("containers", overlay2_root, fmt)
        assert code in (0, 5)
        rows = json.loads(out) if fmt == "--json" else [json.loads(line) for line in out.splitlines()]
        assert rows and all(rfc.match(r["created"]) for r in rows)
    code, out, _ = run_cli("fs", overlay2_root, "c-modified", "ls", "/root", "--json")
    assert all(rfc.match(e["mtime"]) for e in json.loads(out))
    code, out, _ = run_cli("containers", overlay2_root, "--csv")
    header, first = out.splitlines()[:2]
    import csv
    import io

    row = next(csv.DictReader(io.StringIO(out)))
    assert rfc.match(row["created"]), (header, first)


def test_hostile_names_reach_no_terminal_raw_and_json_stays_utf8(overlay2_root, tmp_path):
    """A file named with terminal escapes and an undecodable byte, planted in a copy of a real RW
    layer: tables, --engine-view lines and messages show it escaped; JSON is valid UTF-8 with the
    raw name in <key>_b64."""
    import base64
    import json
    import shutil
    import subprocess
    import sys

    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(overlay2_root), str(root)], check=True)
    from pensieve.engines.docker import DockerHost
    from pensieve.evidence import open_evidence

    c = DockerHost(open_evidence(str(root))).container("c-modified")
    rw = root / c.layers[-1].path.lstrip("/")
    evil = b"\x1b]0;owned\x07\x1b[2Jx\xff.sh"
    with open(os.path.join(os.fsencode(rw), b"root", evil), "wb") as fh:
        fh.write(b"x")
    code = "import sys; from pensieve.cli import main; sys.exit(main(sys.argv[1:]))"

    def run(*argv):
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, timeout=120)

    for argv in (
        ["diff", str(root), "c-modified"],
        ["diff", str(root), "c-modified", "--engine-view"],
        ["fs", str(root), "c-modified", "ls", "/root"],
    ):
        done = run(*argv)
        assert b"\x1b" not in done.stdout and b"\x07" not in done.stdout, argv
        assert b"\\x1b" in done.stdout, argv  # shown escaped, not dropped
    done = run("fs", str(root), "c-modified", "stat", "/root/" + os.fsdecode(evil))
    assert b"\x1b" not in done.stderr + done.stdout
    done = run("fs", str(root), "c-modified", "ls", "/root", "--json")
    entries = json.loads(done.stdout.decode("utf-8"))  # valid UTF-8
    hit = [e for e in entries if "path_b64" in e]
    assert len(hit) == 1 and base64.b64decode(hit[0]["path_b64"]) == b"/root/" + evil
    shutil.rmtree(root)


# ---- tables for people, global options, verify --export-layer -------------------------------------


def _cells(table: str) -> list[list[str]]:
    """The body cells of a rich table, row by row."""
    return [
        [c.strip() for c in line.strip("│").split("│")] for line in table.splitlines() if line.startswith("│")
    ]


@pytest.mark.parametrize("width", ["80", "120"])
def test_tables_keep_ids_paths_and_times_whole_at_any_width(overlay2_root, monkeypatch, width):
    import json

    from conftest import run_cli

    monkeypatch.setenv("COLUMNS", width)
    _, doc, _ = run_cli("containers", overlay2_root, "--json")
    ids = {c["id"][:12] for c in json.loads(doc)}
    code, table, _ = run_cli("containers", overlay2_root)
    assert code in (0, 5)
    rows = _cells(table)
    assert {r[0] for r in rows} == ids  # one line a container, its short id whole
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r[4]) for r in rows)
    _, doc, _ = run_cli("fs", overlay2_root, "c-modified", "ls", "-R", "/etc", "--json")
    entries = json.loads(doc)
    code, table, _ = run_cli("fs", overlay2_root, "c-modified", "ls", "-R", "-l", "/etc")
    rows = _cells(table)
    assert len(rows) == len(entries)  # nothing wrapped onto a second line
    for row, e in zip(rows, entries, strict=True):
        assert row[5] == e["path"] + (f" -> {e['link_target']}" if e["link_target"] else "")
        assert row[6] == f"{e['layer_role']}:{(e['layer'] or '')[:12]}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[4])


def test_no_trunc_shows_whole_ids_and_machine_output_is_unchanged(overlay2_root, monkeypatch):
    import json

    from conftest import run_cli

    monkeypatch.setenv("COLUMNS", "400")
    _, doc, _ = run_cli("containers", overlay2_root, "--json")
    ids = [c["id"] for c in json.loads(doc)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids)
    _, short, _ = run_cli("containers", overlay2_root)
    _, full, _ = run_cli("containers", overlay2_root, "--no-trunc")
    assert not any(i in short for i in ids) and all(i[:12] in short for i in ids)
    assert {r[0] for r in _cells(full)} == set(ids)
    for fmt in ("--json", "--jsonl", "--csv"):
        assert run_cli("containers", overlay2_root, fmt) == run_cli(
            "containers", overlay2_root, fmt, "--no-trunc"
        )


def test_an_always_empty_column_is_left_out(overlay2_root, monkeypatch):
    import json

    from conftest import run_cli

    monkeypatch.setenv("COLUMNS", "300")
    _, doc, _ = run_cli("containers", overlay2_root, "--json")
    problems = any(c["problems"] for c in json.loads(doc))
    _, table, _ = run_cli("containers", overlay2_root)
    assert ("PROBLEMS" in table) == problems and "CONTAINER" in table


def test_split_globals_takes_max_spool_and_debug_anywhere():
    assert cli.split_globals(["images", "--max-spool", "1k", "SRC", "--debug"]) == (
        ["images", "SRC"],
        True,
        "1k",
    )
    assert cli.split_globals(["--max-spool=2M", "fs", "x"]) == (["fs", "x"], False, "2M")
    assert cli.split_globals(["fs", "--", "--max-spool", "1"]) == (
        ["fs", "--", "--max-spool", "1"],
        False,
        None,
    )
    with pytest.raises(cli.UsageError):
        cli.split_globals(["images", "--max-spool"])


def test_max_spool_bad_size_is_a_usage_error(capsys):
    assert cli.main(["--max-spool", "12Q", "roots", "/nonexistent"]) == 2
    assert "--max-spool" in capsys.readouterr().err
    assert cli.main(["roots", "/nonexistent", "--max-spool"]) == 2
    assert "--max-spool" in cli.build_parser().format_help()


@pytest.mark.parametrize("where", ["before", "after", "equals"])
def test_a_tiny_max_spool_makes_a_compressed_layer_a_problem(arx, where):
    from conftest import run_cli

    from pensieve.evidence import spool

    src = arx / "oci-zstd.tar"
    argv = {
        "before": ["--max-spool", "1k", "images", src, "--json"],
        "after": ["images", src, "--json", "--max-spool", "1k"],
        "equals": ["images", "--max-spool=1K", src, "--json"],
    }[where]
    try:
        code, out, err = run_cli(*argv)
        assert spool.budget() == 1024
    finally:
        spool.set_budget(None)
    assert code == 5, err
    assert "too large to spool" in err and "budget 1024 bytes" in err
    assert "pensieve/aapp:1" in out  # the rest of the evidence is read
    # (not rerun here without the budget: an in-process run holds its spools until collected,
    # and tests/evidence/test_spool.py counts what the process holds)


def _first_chain(src) -> str:
    import json

    from conftest import run_cli

    code, doc, _ = run_cli("verify", src, "--json")
    assert code == 0
    return json.loads(doc)[0]["chain_id"]


def test_verify_export_layer_goes_through_the_sink(arx, tmp_path):
    import hashlib
    import json

    from conftest import run_cli

    src = arx / "save.tar"
    chain = _first_chain(src)
    dest = tmp_path / "out" / "layer.tar"
    code, _, err = run_cli("verify", src, "--export-layer", chain, "--to", dest)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "layer.tar.manifest.json").read_text())
    (entry,) = manifest["files"]
    data = dest.read_bytes()
    assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["chain_id"] == chain and manifest["status"] == "ok"
    assert (
        "sha256:" + hashlib.sha256(data).hexdigest()
        == json.loads(run_cli("verify", src, "--json")[1])[0]["diff_id"]
    )
    # never over an existing file, never into the evidence
    code, _, err = run_cli("verify", src, "--export-layer", chain, "--to", dest)
    assert code == 2 and "overwrite" in err and dest.read_bytes() == data
    before = sorted(p.name for p in arx.iterdir())
    code, _, err = run_cli("verify", src, "--export-layer", chain, "--to", arx / "layer.tar")
    assert code == 2 and "evidence" in err
    assert sorted(p.name for p in arx.iterdir()) == before


def test_a_command_gives_its_spool_back_when_it_ends(arx):
    """The hosts a command opens are closed when it ends: a compressed archive's spool files
    leave the budget's count (a script running many commands in one process keeps nothing)."""
    from conftest import run_cli

    from pensieve.evidence import spool

    before = spool.in_use()
    code, out, err = run_cli("fs", arx / "oci-zstd.tar", "-", "ls", "/", "--json")
    assert code == 0, err
    assert spool.in_use() == before
