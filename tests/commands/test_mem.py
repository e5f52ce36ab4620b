"""`pensieve mem ...` (pensieve.commands.mem) run in-process: a parser built with add_parser, each
view's func called as the CLI would, and the exit codes through cli.main."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT

from pensieve import cli
from pensieve.commands import mem

FIX = FIXTURE_ROOT
CX = FIX / "criu-containers"
PODMAN_AFTER = str(CX / "podman-after.tar.zst")
KC = FIX / "kubelet-checkpoint"
KC_EXPECTED = json.loads((KC / "expected.json").read_text())
KUBELET_ARCHIVE = KC / KC_EXPECTED["archive"]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("criu-dumps")
    with tarfile.open(FIX / "criu" / "criu-dumps.tar.gz") as tf:
        tf.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def docker_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docker-root")
    with tarfile.open(CX / "docker-root.tar.gz") as tf:
        tf.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def make_chain():
    """``make_chain(dumps, dest)`` of tests/formats/test_criu.py (an incremental checkpoint whose
    parent holds the unchanged pages), loaded from its file: this module runs alone too."""
    path = Path(__file__).resolve().parent.parent / "formats" / "test_criu.py"
    spec = importlib.util.spec_from_file_location("criu_test_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_chain


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pensieve")
    p.add_argument("--debug", action="store_true")
    mem.add_parser(p.add_subparsers(dest="command", required=True))
    return p


def run(capsys, *argv: str):
    """Parse and run like the CLI: (problems, stdout)."""
    opts = parser().parse_args(["mem", *argv])
    problems = opts.func(opts)
    return problems, capsys.readouterr().out


def run_json(capsys, *argv: str):
    problems, out = run(capsys, *argv, "--json")
    return problems, json.loads(out)


@pytest.fixture
def main(monkeypatch):
    """cli.main with `mem` registered (as the lead's one line in build_parser will do)."""
    real = cli.build_parser

    def build(command=None):
        p = real(command)
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        if "mem" not in sub.choices:
            mem.add_parser(sub)
        return p

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main


def test_views_on_a_criu_directory(capsys, dumps):
    src = str(dumps / "after")
    problems, procs = run_json(capsys, "ps", src)
    assert problems == []
    assert {p["state"] for p in procs} == {"alive", "stopped", "zombie"}
    implant = next(p for p in procs if p["cmdline"] == ["/usr/bin/busybox", "sh"])
    _, socks = run_json(capsys, "sockets", src)
    for s in socks:
        assert {"proto", "state", "src", "src_port", "dst", "dst_port", "pids"} <= set(s)
    shell = next(s for s in socks if implant["pid"] in s["pids"] and s["proto"] == "tcp")
    assert shell["state"] == "ESTABLISHED" and shell["dst"] == "127.0.0.1"
    _, files = run_json(capsys, "files", src, "-p", str(implant["pid"]))
    assert {f["pid"] for f in files} == {implant["pid"]}
    assert any(f["deleted"] and f["target"].endswith(".u (deleted)") for f in files)
    _, maps = run_json(capsys, "maps", src, "--pid", str(implant["pid"]))
    assert any(m["path"] == "[stack]" for m in maps)
    _, env = run_json(capsys, "env", src)
    assert all("SECRET_TOKEN=pensieve-fixture-token-1234" in e["environ"] for e in env)
    _, argv = run_json(capsys, "cmdline", src)
    assert implant["cmdline"] in [a["cmdline"] for a in argv]
    # tables and the other machine formats
    _, out = run(capsys, "ps", src)
    assert "busybox" in out and "zombie (3)" in out
    _, out = run(capsys, "sockets", src, "--jsonl")
    assert len(out.splitlines()) == len(socks)
    _, out = run(capsys, "maps", src, "--csv")
    assert out.splitlines()[0].startswith("pid,start,end,perms")
    _, out = run(capsys, "env", src)
    assert "SECRET_TOKEN=pensieve-fixture-token-1234" in out


def test_podman_archive_info_changes_and_sockets(capsys):
    _, info = run_json(capsys, "info", PODMAN_AFTER)
    assert (info["engine"], info["container_name"], info["pod"], info["namespace"]) == (
        "Podman",
        "shop-web",
        "shop-web-7d9f8",
        "shop",
    )
    assert info["k8s_container"] == "web" and info["rootfs_changes"] == 6
    _, changes = run_json(capsys, "changes", PODMAN_AFTER)
    assert {(c["change"], c["path"]) for c in changes if c["change"] == "deleted"} == {
        ("deleted", "/bin/nslookup")
    }
    _, socks = run_json(capsys, "sockets", PODMAN_AFTER)
    assert sorted(s["state"] for s in socks if s["proto"] == "tcp") == [
        "ESTABLISHED",
        "ESTABLISHED",
        "LISTEN",
    ]
    _, out = run(capsys, "ps", PODMAN_AFTER)
    assert "Podman shop-web pod shop/shop-web-7d9f8" in out


def test_docker_source_and_diff(capsys, docker_root):
    root = str(docker_root)
    _, procs = run_json(capsys, "ps", root, "-c", "web", "-k", "after")
    assert [p["cmdline"][0] for p in procs][-1] == "nc"
    _, changes = run_json(capsys, "diff", root, "-c", "web", "-k", "before", "-k", "after")
    assert {(c["kind"], c["change"]) for c in changes} >= {("process", "appeared"), ("socket", "opened")}
    _, out = run(capsys, "diff", root, "-c", "web", "-k", "before", "-k", "after")
    assert "nc -l -p 4444" in out


def test_diff_two_dirs_shows_the_reverse_shell(capsys, dumps):
    _, changes = run_json(capsys, "diff", str(dumps / "before"), str(dumps / "after"))
    appeared = [c for c in changes if c["kind"] == "process" and c["change"] == "appeared"]
    assert any(c["after"]["cmdline"] == ["/usr/bin/busybox", "sh"] for c in appeared)
    assert any(c["kind"] == "socket" and c["after"]["state"] == "ESTABLISHED" for c in changes)
    assert any(c["kind"] == "file" and c["subject"].endswith("loot.txt") for c in changes)


def test_search_yara_dump(capsys, dumps, tmp_path):
    src = str(dumps / "after")
    _, hits = run_json(capsys, "search", src, "-s", "pensieve-fixture-token-1234", "-x", "53 45 43 52 45 54")
    assert hits and all({"pid", "address", "mapping", "context"} <= set(h) for h in hits)
    _, out = run(capsys, "search", src, "-e", r"SECRET_TOKEN=\S+", "--max-hits", "2")
    assert "SECRET_TOKEN" in out and "0x7f" in out
    pytest.importorskip("yara")
    rules = tmp_path / "r.yar"
    rules.write_text('rule tok : t { strings: $a = "fixture-token" condition: $a }\n')
    _, yhits = run_json(capsys, "yara", src, "-r", str(rules))
    assert {h["rule"] for h in yhits} == {"tok"} and len(yhits) == len(
        [h for h in hits if "token" in h["pattern"]]
    )
    _, procs = run_json(capsys, "ps", src)
    root = next(p for p in procs if p["ppid"] == 0)
    out_dir = tmp_path / "dump"
    problems, regions = run_json(
        capsys, "dump", src, "-p", str(root["pid"]), "-o", str(out_dir), "--map", "stack"
    )
    assert len(regions) == 1 and os.path.exists(regions[0]["file"])
    assert (out_dir / "manifest.json").exists()
    assert problems == []


def test_exit_codes(main, dumps, tmp_path, capsys, docker_root, make_chain):
    assert main(["mem", "ps", str(dumps / "after")]) == 0
    # unusable source: 3, with a clear message
    assert main(["mem", "ps", str(tmp_path / "missing")]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert main(["mem", "ps", str(tmp_path)]) == 3
    assert "not a CRIU image directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "inventory.img").write_bytes(b"\x00\x01\x02\x03garbage")
    assert main(["mem", "ps", str(broken)]) == 3
    assert "unusable checkpoint" in capsys.readouterr().err
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    assert main(["mem", "sockets", str(junk)]) == 3
    # not found: 4
    assert main(["mem", "ps", str(docker_root), "-c", "nope", "-k", "after"]) == 4
    assert main(["mem", "ps", str(docker_root), "-c", "web", "-k", "nope"]) == 4
    assert main(["mem", "dump", str(dumps / "after"), "-p", "424242", "-o", str(tmp_path / "d")]) == 4
    # usage: 2
    assert main(["mem", "search", str(dumps / "after"), "-e", "("]) == 2
    assert main(["mem", "search", str(dumps / "after")]) == 2
    assert main(["mem", "dump", str(dumps / "after"), "-p", "1", "-o", str(dumps / "after" / "x")]) == 2
    assert not (dumps / "after" / "x").exists()
    assert main(["mem", "changes", str(dumps / "after")]) == 2
    assert main(["mem", "nope"]) == 2
    # warnings: 5 (a parent chain whose parent is gone)
    chain = make_chain(dumps, tmp_path / "chain")
    (chain / "parent").unlink()
    capsys.readouterr()
    pid = json.loads(_out(main, capsys, ["mem", "ps", str(chain), "--json"]))[0]["pid"]
    assert main(["mem", "dump", str(chain), "-p", str(pid), "-o", str(tmp_path / "o")]) == 5
    assert "parent checkpoint that is missing" in capsys.readouterr().err


def _out(main, capsys, argv) -> str:
    main(argv)
    return capsys.readouterr().out


def test_help_lists_every_view(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["mem", "--help"])
    out = capsys.readouterr().out
    for v in (
        "ps",
        "files",
        "sockets",
        "maps",
        "env",
        "cmdline",
        "dump",
        "search",
        "yara",
        "diff",
        "info",
        "changes",
        "checkpoints",
    ):
        assert v in out


def test_search_json_is_what_emit_writes(capsys, dumps):
    """The search's own JSON writer gives emit's bytes, odd values (falling back) included."""
    import io

    from pensieve.formats.criu import Checkpoint
    from pensieve.memory import scan as memscan
    from pensieve.output.render import emit

    ck = Checkpoint(dumps / "after")
    hits = list(
        memscan.search(ck, memscan.Pattern.string("SECRET") + [memscan.Pattern.compile(r"\x00\x01.")])
    )
    assert len(hits) > 10
    odd = [
        memscan.MemoryHit(1, 2, 3, 'q"uo\\te\n\u00e9\ud800', None, '/x "y"', 0, "rw-p", 2, "a\\b", "00"),
        memscan.MemoryHit(1, 2**64 - 1, 0, "p", "c"),
        memscan.MemoryHit(1, 2, 3, "r:s", rule="r", tags=["t"], meta={"k": 1}),
        memscan.MemoryHit(True, 2, 3, "p"),
        memscan.MemoryHit(1, 2, 3, b"bytes"),
    ]
    for batch in (hits, odd, []):
        for fmt in ("json", "jsonl"):
            ours, theirs = io.StringIO(), io.StringIO()
            assert mem._emit_hits_json(iter(batch), fmt, ours) == len(batch)
            emit(iter(batch), fmt, out=theirs)
            assert ours.getvalue() == theirs.getvalue(), fmt


# ---- the kubelet's forensic checkpoints ----------------------------------------------------------


def _tree(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def node(tmp_path) -> Path:
    """A host root with the fixture archive in the kubelet's checkpoint directory."""
    d = tmp_path / "node" / "var" / "lib" / "kubelet" / "checkpoints"
    d.mkdir(parents=True)
    shutil.copy2(KUBELET_ARCHIVE, d / KUBELET_ARCHIVE.name)
    return tmp_path / "node"


def test_kubelet_archive_views(capsys):
    status = KC_EXPECTED["cri"]["container_status"][KC_EXPECTED["container_id"]]["status"]
    _, info = run_json(capsys, "info", str(KUBELET_ARCHIVE))
    assert (info["pod"], info["namespace"], info["k8s_container"], info["pod_uid"]) == (
        "counters",
        "default",
        status["metadata"]["name"],
        status["labels"]["io.kubernetes.pod.uid"],
    )
    assert info["image"] == status["image"]["image"] and info["checkpointed"].startswith(
        "2026-12-03T14:40:17"
    )
    _, ps = run_json(capsys, "ps", str(KUBELET_ARCHIVE))
    assert [(p["pid"], p["ppid"], p["comm"]) for p in ps] == [
        (e["pid"], e["ppid"], c)
        for e, c in zip(
            KC_EXPECTED["crit_images"]["pstree"]["entries"],
            [line.split()[-1] for line in KC_EXPECTED["crit"]["ps"][1:]],
            strict=True,
        )
    ]
    _, socks = run_json(capsys, "sockets", str(KUBELET_ARCHIVE))
    assert [(s["proto"], s["state"], s["src"], s["src_port"]) for s in socks] == [
        ("tcp", "LISTEN", "127.0.0.1", KC_EXPECTED["listen_port"])
    ]
    _, changes = run_json(capsys, "changes", str(KUBELET_ARCHIVE))
    assert ("deleted", "/etc/motd") in {(c["change"], c["path"]) for c in changes}
    assert ("added", "/root/evidence.txt") in {(c["change"], c["path"]) for c in changes}
    _, out = run(capsys, "ps", str(KUBELET_ARCHIVE))
    assert "pod default/counters" in out


def test_kubelet_checkpoints_of_a_host_root(main, capsys, node):
    before = _tree(node)
    _, rows = run_json(capsys, "checkpoints", str(node))
    assert [(r["name"], r["namespace"], r["pod"], r["k8s_container"], r["tasks"]) for r in rows] == [
        (KUBELET_ARCHIVE.name, "default", "counters", "counter", 2)
    ]
    _, ps = run_json(capsys, "ps", str(node))  # the only archive: no --checkpoint needed
    assert len(ps) == 2
    _, socks = run_json(capsys, "sockets", str(node), "-k", KUBELET_ARCHIVE.name)
    assert socks[0]["src_port"] == KC_EXPECTED["listen_port"]
    assert main(["mem", "dump", str(node), "-p", "7", "-o", str(node / "out")]) == 2  # inside the evidence
    assert _tree(node) == before
    # a cut archive beside it: a problem naming it (exit 5), the good one still listed
    cut = node / "var" / "lib" / "kubelet" / "checkpoints" / "checkpoint-x_y-z-2026-12-03T15:00:00Z.tar"
    cut.write_bytes(KUBELET_ARCHIVE.read_bytes()[:20000])
    before = _tree(node)
    capsys.readouterr()
    assert main(["mem", "checkpoints", str(node), "--json"]) == 5
    captured = capsys.readouterr()
    assert cut.name in captured.err
    assert {r["name"]: r["tasks"] for r in json.loads(captured.out)} == {
        KUBELET_ARCHIVE.name: 2,
        cut.name: None,
    }
    assert main(["mem", "ps", str(node)]) == 3  # two archives: name one
    assert "--checkpoint " + cut.name in capsys.readouterr().err
    assert main(["mem", "ps", str(node), "-k", "checkpoint-none"]) == 4
    assert main(["mem", "ps", str(node), "-k", cut.name]) == 3
    assert main(["mem", "checkpoints", str(cut)]) == 3  # a file: not a host root
    assert _tree(node) == before
