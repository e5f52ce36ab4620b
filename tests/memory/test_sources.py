"""Checkpoint sources (Docker data roots, Podman/CRI-O archives) and memory dump/search/yara/diff.

References: tests/fixtures/criu-containers (fixtures/capture/criu_container_capture.sh) -- what
/proc, ss (in the container's netns), docker/podman inspect and diff, and crit showed -- and the
process-tree dumps of tests/fixtures/criu.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT

from pensieve.engines.docker import LookupFailed
from pensieve.formats.criu import Checkpoint, CriuImageError
from pensieve.memory import scan, views
from pensieve.memory.checkpoint_archive import CheckpointArchive
from pensieve.memory.sources import SourceError, docker_checkpoints, open_source
from pensieve.records import Container, record_fields, to_dict

FIX = FIXTURE_ROOT
CX = FIX / "criu-containers"
DUMPS = ("before", "after")


def expected(engine: str) -> dict:
    return json.loads((CX / "expected" / f"{engine}.json").read_text())


VERSIONS = json.loads((CX / "expected" / "versions.json").read_text())


@pytest.fixture(scope="session")
def docker_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docker-root")
    with tarfile.open(CX / "docker-root.tar.gz") as tf:
        tf.extractall(root, filter="data")
    return root


@pytest.fixture(scope="session")
def dumps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("criu-dumps")
    with tarfile.open(FIX / "criu" / "criu-dumps.tar.gz") as tf:
        tf.extractall(root, filter="data")
    return root


def podman(name: str) -> Path:
    return CX / f"podman-{name}.tar.zst"


def _ps_rows(text: str) -> dict[int, tuple[int, int, str]]:
    rows = [line.split() for line in text.splitlines()[1:] if line.strip()]
    return {int(r[0]): (int(r[1]), int(r[2]), r[3]) for r in rows}


def _check_against_proc(src, ref: dict) -> None:
    procs = {p.pid: p for p in views.processes(src.checkpoint)}
    want = {p["nspid"]: p for p in ref["proc"]["processes"]}
    assert set(procs) == set(want)
    for pid, p in procs.items():
        e = want[pid]
        assert p.cmdline == e["cmdline"], pid
        assert p.environ == e["environ"], pid
        assert p.comm == e["comm"]
        assert p.problems == []
    # crit x DIR ps: the same pids, pgids, sids and comms
    assert {pid: (p.pgid, p.sid, p.comm) for pid, p in procs.items()} == _ps_rows(ref["crit_ps"])
    # fds: the link targets /proc showed (host pids -> namespace pids)
    files = {}
    for f in views.files(src.checkpoint):
        if f.fd is not None:
            files.setdefault(f.pid, {})[str(f.fd)] = f.target
    for e in ref["proc"]["processes"]:
        got = files.get(e["nspid"], {})
        for fd, fe in e["fds"].items():
            target = fe["target"]
            if target.startswith("socket:") or target.startswith("pipe:"):
                assert got[fd].split(":")[0] == target.split(":")[0], (e["nspid"], fd)
            else:
                assert got[fd] == target, (e["nspid"], fd)
        assert set(got) == set(e["fds"]), e["nspid"]


# ---- Docker ------------------------------------------------------------------------------------


def test_docker_checkpoints_listed(docker_root):
    found = docker_checkpoints(str(docker_root))
    assert {(c["container_name"], c["name"]) for c in found} == {("web", "before"), ("web", "after")}
    assert {c["container_id"] for c in found} == {VERSIONS["docker_container_id"]}


@pytest.mark.parametrize("name", DUMPS)
def test_docker_checkpoint_matches_proc_and_crit(docker_root, name):
    ref = expected("docker")["dumps"][name]
    with open_source(str(docker_root), container="web", checkpoint=name) as src:
        info = src.info
        inspect = ref["inspect"][0]
        assert info.kind == "docker" and info.engine == "Docker" and info.name == name
        assert info.container_id == inspect["Id"] and info.container_name == inspect["Name"].lstrip("/")
        assert info.image == inspect["Config"]["Image"] and info.image_id == inspect["Image"]
        if "runtime" in record_fields(Container):  # TODO(merge): the engine records Container.runtime
            assert info.runtime == inspect["HostConfig"]["Runtime"] == "runc"
        assert info.tasks == len(ref["proc"]["processes"])
        assert "SECRET_TOKEN=pensieve-container-token-5678" in info.env
        assert src.problems == []
        _check_against_proc(src, ref)


def test_docker_lookups(docker_root):
    with open_source(
        str(docker_root), container=VERSIONS["docker_container_id"][:8], checkpoint="after"
    ) as src:
        assert src.info.container_name == "web"
    with pytest.raises(LookupFailed, match="checkpoints after, before"):
        open_source(str(docker_root), container="web")
    with pytest.raises(LookupFailed, match="no checkpoint 'nope'"):
        open_source(str(docker_root), container="web", checkpoint="nope")
    with pytest.raises(LookupFailed, match="no container"):
        open_source(str(docker_root), container="db", checkpoint="after")
    with pytest.raises(SourceError, match="--container web --checkpoint after"):
        open_source(str(docker_root))


# ---- Podman archives ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DUMPS)
def test_podman_archive_matches_proc_inspect_and_crit(name):
    ref = expected("podman")["dumps"][name]
    inspect = ref["inspect"][0]
    with open_source(str(podman(name))) as src:
        info = src.info
        assert info.kind == "podman" and info.engine == "Podman" and info.compression == "zstd"
        assert info.container_id == inspect["Id"] == VERSIONS["podman_container_id"]
        assert info.container_name == inspect["Name"] == "shop-web"
        assert info.image == inspect["ImageName"] and info.image_id == inspect["Image"]
        assert info.runtime == inspect["OCIRuntime"] == "runc"
        assert (info.pod, info.namespace, info.k8s_container) == ("shop-web-7d9f8", "shop", "web")
        assert info.command == ["/bin/sh", "/srv/web.sh"]
        assert {"config.dump", "spec.dump", "checkpoint", "rootfs-diff.tar"} <= set(info.members)
        assert ("deleted.files" in info.members) == (name == "after")  # nothing deleted before
        assert src.problems == []
        _check_against_proc(src, ref)


def _ss(text: str):
    for line in text.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] in ("LISTEN", "ESTAB"):
            yield parts[0], parts[3], parts[4], sorted({int(p) for p in re.findall(r"pid=(\d+)", line)})


def test_podman_sockets_match_ss_in_the_netns():
    ref = expected("podman")["dumps"]["after"]
    host_to_ns = {p["pid"]: p["nspid"] for p in ref["proc"]["processes"]}
    with open_source(str(podman("after"))) as src:
        socks = [s for s in views.sockets(src.checkpoint) if s.proto == "tcp"]
    got = {(s.state, _ep(s.src, s.src_port), _ep(s.dst, s.dst_port)): s.pids for s in socks}
    want = {}
    for state, local, peer, pids in _ss(ref["proc"]["ss_tcp_netns"]):
        peer = "0.0.0.0:0" if peer == "0.0.0.0:*" else peer
        want[({"ESTAB": "ESTABLISHED"}.get(state, state), local, peer)] = sorted(host_to_ns[p] for p in pids)
    assert got == want
    assert sum(1 for s in socks if s.state == "ESTABLISHED") == 2  # both ends of the operator's connection


def _ep(addr, port) -> str:
    return f"[{addr}]:{port}" if addr and ":" in addr else f"{addr}:{port}"


def test_podman_rootfs_changes_match_podman_diff():
    ref = expected("podman")["dumps"]["after"]["diff"]
    lines = [line.split(" ", 1) for line in ref.splitlines() if line.strip()]
    with open_source(str(podman("after"))) as src:
        changes = {c.path: c for c in src.changes()}
        assert src.info.rootfs_changes == len(changes)
    deleted = {p for op, p in lines if op == "D"}
    assert {p for p, c in changes.items() if c.change == "deleted"} == deleted == {"/bin/nslookup"}
    # rootfs-diff.tar holds every added or modified non-directory and every added directory
    listed = {p for op, p in lines if op in ("A", "C")}
    in_tar = {p for p, c in changes.items() if c.change != "deleted"}
    assert in_tar <= listed
    assert listed - in_tar == {"/bin", "/etc", "/srv", "/tmp"}  # modified directories: not carried
    loot = changes["/tmp/.cache/loot.txt"]
    assert loot.type == "file" and loot.size == len(b"ATTACKER-WAS-HERE\n") and loot.sha256
    assert changes["/tmp/.cache"].type == "dir"
    assert changes["/etc/passwd"].size > 0
    json.dumps(to_dict(list(changes.values())))


def test_archive_compressions_and_plain_criu_tar(tmp_path, dumps):
    import zstandard

    with open(podman("after"), "rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
    (tmp_path / "a.tar").write_bytes(raw)
    (tmp_path / "a.tar.gz").write_bytes(gzip.compress(raw))
    ref = None
    for name in ("a.tar", "a.tar.gz"):
        with open_source(str(tmp_path / name)) as src:
            got = [to_dict(p) | {"checkpoint": None} for p in views.processes(src.checkpoint)]
            assert src.info.compression == (None if name == "a.tar" else "gzip")
            ref = ref or got
            assert got == ref
    # a plain tar of a criu image directory
    with tarfile.open(tmp_path / "plain.tar", "w") as tf:
        tf.add(dumps / "after", arcname=".")
    with open_source(str(tmp_path / "plain.tar")) as src:
        assert src.info.kind == "archive"
        assert [p.pid for p in views.processes(src.checkpoint)] == [
            p.pid for p in views.processes(dumps / "after")
        ]


def test_archive_is_not_written_or_extracted(tmp_path):
    copy = tmp_path / "ev" / "p.tar.zst"
    copy.parent.mkdir()
    shutil.copy2(podman("after"), copy)
    before = (copy.read_bytes(), os.stat(copy).st_mtime_ns, sorted(os.listdir(copy.parent)))
    with open_source(str(copy)) as src:
        views.processes(src.checkpoint)
        list(scan.search(src.checkpoint, scan.Pattern.string("SECRET_TOKEN")))
        src.changes()
    assert (copy.read_bytes(), os.stat(copy).st_mtime_ns, sorted(os.listdir(copy.parent))) == before


def _tar(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, link in members:
            ti = tarfile.TarInfo(name)
            if link is not None:
                ti.type, ti.linkname = tarfile.SYMTYPE, link
                tf.addfile(ti)
            elif data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_hostile_archives(tmp_path, dumps):
    base = [
        (f"checkpoint/{n}", (dumps / "after" / n).read_bytes(), None) for n in ("inventory.img", "pstree.img")
    ]
    cases = {
        "escape": [("../../etc/evil", b"x", None), *base],
        "abs-parent": [*base, ("checkpoint/parent", None, "/etc")],
        "out-parent": [*base, ("checkpoint/parent", None, "../../x")],
    }
    for name, members in cases.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(_tar(members))
        a = CheckpointArchive(str(path))
        assert "../../etc/evil" not in a.members and "etc/evil" not in a.members
        if name == "escape":
            assert any("climbs out" in p for p in a.problems)
        else:
            with open_source(str(path)) as src, pytest.raises(CriuImageError, match="absolute|outside"):
                src.checkpoint.parent()
        a.close()
    # not a tar, a truncated zstd stream, a tar without a checkpoint, a kubelet archive
    (tmp_path / "junk").write_bytes(b"\x00" * 100 + b"junk" * 300)
    with pytest.raises(SourceError):
        open_source(str(tmp_path / "junk"))
    data = podman("after").read_bytes()
    (tmp_path / "cut.tar.zst").write_bytes(data[: len(data) // 2])
    try:
        with open_source(str(tmp_path / "cut.tar.zst")) as src:
            assert src.info.problems
    except SourceError:
        pass
    (tmp_path / "k.tar").write_bytes(_tar([("checkpointed.pods", b"{}", None)]))
    with pytest.raises(SourceError, match="kubelet"):
        open_source(str(tmp_path / "k.tar"))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing"))


# ---- memory: search, dump, yara, diff ------------------------------------------------------------


def test_search_strings_regex_hex(dumps):
    ck = Checkpoint(dumps / "after")
    hits = list(scan.search(ck, scan.Pattern.string("pensieve-fixture-token-1234")))
    live = [p for p in views.processes(ck) if p.state != "zombie"]
    assert {h.pid for h in hits} == {p.pid for p in live}  # every process inherited the env
    for h in hits:
        data = ck.read_memory(h.pid, h.address, h.length)[0]
        assert data == b"pensieve-fixture-token-1234"
        assert h.mapping == "[stack]" and h.perms == "rw-p" and "SECRET_TOKEN=" in h.context
    # the attacker's `cat .../notes.txt`, typed into the reverse shell, is in the implant's heap
    implant = next(p for p in live if p.cmdline == ["/usr/bin/busybox", "sh"])
    rx = list(scan.search(ck, [scan.Pattern.compile(r"cat [^\x00\n]{1,200}notes\.txt")]))
    assert any(h.pid == implant.pid and h.mapping == "[heap]" for h in rx)
    for h in rx:
        assert re.fullmatch(rb"cat [^\x00\n]{1,200}notes\.txt", ck.read_memory(h.pid, h.address, h.length)[0])
    hx = list(scan.search(ck, [scan.Pattern.hex(b"SECRET_TOKEN=".hex(" "))]))
    assert len(hx) >= len(hits)
    assert not list(scan.search(ck, scan.Pattern.string("not-in-any-process-memory-xyzzy")))
    ci = list(scan.search(ck, scan.Pattern.string("secret_token", ignore_case=True), pids=[live[0].pid]))
    assert ci and {h.pid for h in ci} == {live[0].pid}
    with pytest.raises(ValueError):
        scan.Pattern.hex("zz")
    with pytest.raises(ValueError):
        scan.Pattern.compile("(")


def test_search_across_window_edges(dumps):
    ck = Checkpoint(dumps / "after")
    pat = scan.Pattern.string("pensieve-fixture-token-1234")
    want = sorted((h.pid, h.address) for h in scan.search(ck, pat))
    # tiny windows: every match straddles some edge somewhere; each is still found exactly once
    got = []
    for p, _idx in scan._targets(ck, None):
        for addr, data, report in scan._windows(ck, p.pid, pat[0].overlap(), chunk=4096):
            got += [(p.pid, addr + off) for off, _ in pat[0].finditer(data, report)]
    assert sorted(got) == want


def test_dump_mapping_range_all(dumps, tmp_path):
    ck = Checkpoint(dumps / "after")
    root = next(p for p in views.processes(ck) if p.ppid == 0)
    stack = next(m for m in views.maps(ck, root.pid) if m.path == "[stack]")
    regions = scan.dump(ck, root.pid, str(tmp_path / "s"), mapping=hex(stack.start + 8))
    assert len(regions) == 1
    r = regions[0]
    name = os.path.basename(r.file)
    assert name == f"pid{root.pid}-{stack.start:016x}-{stack.end:016x}-rw-p-stack.bin"
    data = Path(r.file).read_bytes()
    assert len(data) == stack.end - stack.start
    assert data == ck.read_memory(root.pid, stack.start, stack.end - stack.start)[0]
    assert r.present_pages == stack.pages_present and b"SECRET_TOKEN=pensieve" in data
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest[0]["start"] == stack.start
    # by path, a range, everything
    bb = scan.dump(ck, root.pid, str(tmp_path / "b"), mapping="busybox")
    assert bb and all(x.mapping.endswith("busybox") for x in bb)
    assert any(g["reason"] == "not-dumped" for x in bb for g in x.gaps)  # clean text pages
    rng = scan.dump(ck, root.pid, str(tmp_path / "r"), ranges=[(stack.end - 8192, stack.end)])
    assert Path(rng[0].file).read_bytes() == data[-8192:]
    everything = scan.dump(ck, root.pid, str(tmp_path / "all"))
    assert len(everything) == len(views.maps(ck, root.pid))
    with pytest.raises(LookupError):
        scan.dump(ck, root.pid, str(tmp_path / "x"), mapping="no-such-file")
    with pytest.raises(LookupError):
        scan.dump(ck, 999999, str(tmp_path / "x"))


def test_dump_reports_parent_and_lazy_pages(dumps, tmp_path):
    from test_criu import make_chain

    chain = make_chain(dumps, tmp_path / "chain")
    ck = Checkpoint(chain)
    full = Checkpoint(dumps / "after")
    root = next(p for p in views.processes(ck) if p.ppid == 0)
    regions = scan.dump(ck, root.pid, str(tmp_path / "out"))
    assert sum(r.parent_pages for r in regions) > 0
    for r in regions:
        assert Path(r.file).read_bytes() == full.read_memory(root.pid, r.start, r.end - r.start)[0]
    # the parent gone: its pages become holes reported as no-parent
    (chain / "parent").unlink()
    regions = scan.dump(Checkpoint(chain), root.pid, str(tmp_path / "orphan"))
    assert any(g["reason"] == "no-parent" for r in regions for g in r.gaps)
    assert sum(r.missing_pages for r in regions) >= sum(r.parent_pages for r in regions)


def test_yara_over_process_memory(dumps):
    yara = pytest.importorskip("yara")
    ck = Checkpoint(dumps / "after")
    rules = scan.compile_rules(
        sources=[
            'rule reverse_shell : implant { meta: author = "pensieve" strings: '
            "$cat = /cat [^\\x00\\n]{1,200}notes\\.txt/ condition: $cat }",
            'rule token { strings: $t = "pensieve-fixture-token-1234" condition: $t }',
        ]
    )
    hits = list(scan.yara_scan(ck, rules))
    assert {h.rule for h in hits} == {"reverse_shell", "token"}
    shell = [h for h in hits if h.rule == "reverse_shell"]
    assert shell[0].tags == ["implant"] and shell[0].meta == {"author": "pensieve"}
    implant = next(p for p in views.processes(ck) if p.cmdline == ["/usr/bin/busybox", "sh"])
    assert implant.pid in {h.pid for h in shell}
    for h in hits:
        data = ck.read_memory(h.pid, h.address, h.length)[0]
        assert data == b"pensieve-fixture-token-1234" if h.rule == "token" else data.startswith(b"cat ")
    token = {h.pid for h in hits if h.rule == "token"}
    assert token == {h.pid for h in scan.search(ck, scan.Pattern.string("pensieve-fixture-token-1234"))}
    assert isinstance(yara.__version__, str)


def test_diff_shows_the_intrusion(dumps):
    a, b = Checkpoint(dumps / "before"), Checkpoint(dumps / "after")
    changes = scan.diff(a, b)
    procs = {p.pid: p for p in views.processes(b)}
    implant = next(p for p in procs.values() if p.cmdline == ["/usr/bin/busybox", "sh"])
    appeared = {c.pid for c in changes if c.kind == "process" and c.change == "appeared"}
    assert implant.pid in appeared
    assert any(procs[pid].cmdline == ["/usr/bin/busybox", "sleep", "7777"] for pid in appeared)
    assert not [c for c in changes if c.change == "vanished"]
    attacker = json.loads((FIX / "criu" / "expected" / "versions.json").read_text())["attacker_port"]
    conn = [c for c in changes if c.kind == "socket" and c.change == "opened"]
    assert any(c.after["dst_port"] == attacker and implant.pid in c.after["pids"] for c in conn)
    opened = [c for c in changes if c.kind == "file" and c.change == "opened" and c.pid == implant.pid]
    targets = {c.after["target"] for c in opened}
    assert any(t.endswith("/.cache/loot.txt") for t in targets)
    assert any(t.endswith("/.cache/.u (deleted)") for t in targets)
    assert scan.diff(b, b) == []
    json.dumps(to_dict(changes))


def test_diff_docker_and_podman_checkpoints(docker_root):
    with (
        open_source(str(docker_root), "web", "before") as a,
        open_source(str(docker_root), "web", "after") as b,
    ):
        changes = scan.diff(a.checkpoint, b.checkpoint)
    shell = [c for c in changes if c.kind == "process" and c.change == "appeared"]
    assert [c.after["cmdline"] for c in shell] == [["nc", "-l", "-p", "4444", "-e", "/bin/sh"]]
    assert any(
        c.kind == "socket" and c.after["state"] == "LISTEN" and c.after["src_port"] == 4444 for c in changes
    )
    with open_source(str(podman("before"))) as a, open_source(str(podman("after"))) as b:
        changes = scan.diff(a.checkpoint, b.checkpoint)
    est = [
        c
        for c in changes
        if c.kind == "socket" and c.change == "opened" and c.after["state"] == "ESTABLISHED"
    ]
    assert len(est) == 2 and {c.after["dst_port"] for c in est} >= {4444}
