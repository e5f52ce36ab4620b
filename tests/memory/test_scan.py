"""Hostile checkpoints against `mem search` / `mem maps` / `mem ps` (issue 15), and `mem dump`
through the output sink.

The class, generated: every process's pagemap and pages images of a real dump
(tests/fixtures/criu ``after/``) mutated in many ways -- truncated, flipped, random, crafted
entries (unaligned, empty, overlapping, huge present / parent / lazy runs, a missing pages file),
and replaced by symlinks, directories and FIFOs.  For each: the documented exit code (0, or 5 with
a problem naming the process), every *other* process still searched and listed exactly as in the
untouched dump, and an answer within a time bound.  Then ``parent`` links in every form
(relative up and out of the SOURCE, absolute, symlink chains, long chains, loops), for a CRIU
directory and for a Docker data root.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "formats"))  # the CRIU tests' helpers
from conftest import time_bound  # noqa: E402
from test_criu import make_chain  # noqa: E402

from pensieve.formats.criu import Checkpoint
from pensieve.formats.criu.checkpoint import PE_LAZY, PE_PARENT, PE_PRESENT
from pensieve.formats.criu.images import IMG_COMMON, MAGIC_BY_NAME
from pensieve.memory import scan, views
from pensieve.output.sink import MANIFEST

NEEDLE = "busybox"  # in every live process's memory (argv, environment, mapped names)
BOUND = 30  # seconds per command and input


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("criu-dumps")
    with tarfile.open(FIXTURE_ROOT / "criu" / "criu-dumps.tar.gz") as tf:
        tf.extractall(root, filter="data")
    return root


def _run(*args) -> tuple[int, str, str]:
    with time_bound(BOUND):
        return run_cli(*args)


def _by_pid(records: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in records:
        out.setdefault(r["pid"], []).append(r)
    return out


_VIEWS = (("search", ["-s", NEEDLE], "--jsonl"), ("maps", [], "--json"), ("ps", [], "--json"))


def _outputs(
    src: Path, views_run: tuple = _VIEWS
) -> tuple[dict[str, int], dict[str, dict[int, list[dict]]], str]:
    """Exit codes and per-pid records of search, maps and ps on SRC, and their stderr."""
    codes, records, errs = {}, {}, ""
    for view, extra, fmt in views_run:
        code, out, err = _run("mem", view, str(src), *extra, fmt)
        codes[view], errs = code, errs + err
        jsonl = fmt == "--jsonl"
        rows = [json.loads(line) for line in out.splitlines()] if jsonl else json.loads(out or "[]")
        records[view] = _by_pid(rows)
    return codes, records, errs


# ---- the mutations ----------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pagemap(pages_id: int, entries: list[tuple[int, int, int]]) -> bytes:
    head = b"\x08" + _varint(pages_id)
    body = b""
    for vaddr, nr, flags in entries:
        msg = b"\x08" + _varint(vaddr) + b"\x20" + _varint(flags) + b"\x28" + _varint(nr)
        body += struct.pack("<I", len(msg)) + msg
    return struct.pack("<III", IMG_COMMON, MAGIC_BY_NAME["PAGEMAP"], len(head)) + head + body


Mutation = Callable[[Path, bytes], None]


def _write(data: bytes) -> Mutation:
    return lambda path, _orig: path.write_bytes(data)


def _edit(fn: Callable[[bytes], bytes]) -> Mutation:
    return lambda path, orig: path.write_bytes(fn(orig))


def _symlink(target: str) -> Mutation:
    def apply(path: Path, _orig: bytes) -> None:
        path.unlink()
        os.symlink(target, path)

    return apply


def _replace_dir(path: Path, _orig: bytes) -> None:
    path.unlink()
    path.mkdir()


def _replace_fifo(path: Path, _orig: bytes) -> None:
    path.unlink()
    os.mkfifo(path)


def _flips(seed: int, count: int) -> Callable[[bytes], bytes]:
    def fn(data: bytes) -> bytes:
        rng = random.Random(seed)
        buf = bytearray(data)
        for _ in range(count):
            if buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf)

    return fn


def _common(orig_len: int) -> dict[str, Mutation]:
    """What any image can suffer."""
    cuts = sorted({0, 11, orig_len // 2, max(orig_len - 1, 0)})
    out: dict[str, Mutation] = {f"cut{n}": _edit(lambda d, n=n: d[:n]) for n in cuts}
    out.update({f"flip{seed}": _edit(_flips(seed, 1 + seed % 7)) for seed in range(3)})
    out["random"] = _edit(lambda d: random.Random(len(d)).randbytes(len(d)))
    out["junk-tail"] = _edit(lambda d: d + b"\xff" * 13)
    out["symlink-abs"] = _symlink("/etc/passwd")
    out["symlink-up"] = _symlink("../../../../etc/passwd")
    out["symlink-self"] = _symlink("loop")
    out["dir"] = _replace_dir
    out["fifo"] = _replace_fifo
    out["missing"] = lambda path, _orig: path.unlink()
    return out


def pagemap_mutations(pages_id: int, first: int, orig_len: int) -> dict[str, Mutation]:
    """Every way a pagemap goes bad: the common ones and crafted entries."""
    out = _common(orig_len)
    crafted = {
        "unaligned": [(first + 1, 1, PE_PRESENT)],
        "no-pages": [(first, 0, PE_PRESENT)],
        "overlap": [(first, 4, PE_PRESENT), (first + 4096, 4, PE_PRESENT)],
        "huge-present": [(first, 1 << 40, PE_PRESENT)],
        "huge-parent": [(first, 1 << 34, PE_PARENT)],  # no parent: must not scan 64 TiB of zeros
        "huge-lazy": [(first, 1 << 34, PE_LAZY)],
        "past-2^64": [((1 << 64) - 4096, 2, PE_PRESENT)],
        "other-pages": [(first, 1, PE_PRESENT)],
        "head-only": [],
    }
    for name, entries in crafted.items():
        out[name] = _write(_pagemap(pages_id, entries))
    out["missing-pages-file"] = _write(_pagemap(9999, [(first, 1, PE_PRESENT)]))
    out["symlink-other"] = _symlink(f"pages-{pages_id}.img")
    return out


def pages_mutations(orig_len: int) -> dict[str, Mutation]:
    out = _common(orig_len)
    out["cut4095"] = _edit(lambda d: d[:4095])
    out["zeros"] = _edit(lambda d: bytes(len(d)))
    return out


def _restore(path: Path, orig: bytes) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(orig)


def _cases(d: Path) -> Iterator[tuple[int, str, str, Mutation]]:
    """(pid, image name, mutation name, mutation) for every live process and both its images."""
    ck = Checkpoint(d)
    for t in ck.tasks():
        pm = ck.pagemap(t.pid)
        if pm is None:
            continue
        pages_id, runs = pm
        pm_name, pages_name = f"pagemap-{t.pid}.img", f"pages-{pages_id}.img"
        for name, m in pagemap_mutations(pages_id, runs[0].vaddr, (d / pm_name).stat().st_size).items():
            yield t.pid, pm_name, name, m
        for name, m in pages_mutations((d / pages_name).stat().st_size).items():
            yield t.pid, pages_name, name, m


#: mutations after which the process's memory is unchanged or merely different (no problem due)
_HARMLESS = {"junk-tail", "zeros", "random", "head-only", "huge-lazy", "huge-parent", "other-pages"}


def test_one_bad_process_is_a_problem_the_others_are_searched(dumps, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(dumps / "after", d)
    base_codes, base, _ = _outputs(d)
    assert base_codes == {"search": 0, "maps": 0, "ps": 0}
    live = set(base["search"])
    assert len(live) >= 5, "the needle must be in most processes"
    counts = {"inputs": 0, "problem": 0, "clean": 0}
    for pid, image, name, mutate in list(_cases(d)):
        path = d / image
        orig = path.read_bytes()
        mutate(path, orig)
        try:
            codes, got, err = _outputs(d, _VIEWS[:2])
        finally:
            _restore(path, orig)
        what = f"{image} {name}"
        counts["inputs"] += 1
        assert set(codes.values()) <= {0, 5}, (what, codes, err[-500:])
        for view in ("search", "maps"):
            for other in set(base[view]) - {pid}:
                assert got[view].get(other) == base[view][other], (what, view, other)
        if 5 in codes.values():
            counts["problem"] += 1
            assert f"pid {pid}" in err or image in err, (what, err[-500:])
        else:
            counts["clean"] += 1
            assert name in _HARMLESS or image.startswith("pages-") or name.startswith("flip"), (what, codes)
    # 9 processes with memory x (pagemap 26 + pages 17) mutations
    assert counts["inputs"] >= 350 and counts["problem"] >= 250, counts


def test_huge_parent_run_without_a_parent_is_not_scanned(dumps, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(dumps / "after", d)
    ck = Checkpoint(d)
    pid = next(t.pid for t in ck.tasks() if ck.pagemap(t.pid))
    pages_id, runs = ck.pagemap(pid)
    (d / f"pagemap-{pid}.img").write_bytes(_pagemap(pages_id, [(runs[0].vaddr, 1 << 36, PE_PARENT)]))
    with time_bound(10):
        assert list(scan.search(Checkpoint(d), [scan.Pattern.hex("00 00 00 00")], pids=[pid])) == []


# ---- parent links ---------------------------------------------------------------------------


def _chain_cases(ev: Path) -> dict[str, Callable[[Path], None]]:
    """SOURCE = ev/dump; each case sets its ``parent`` (the full dump sits at ev/pre)."""

    def link(target: str) -> Callable[[Path], None]:
        return lambda dump: os.symlink(target, dump / "parent")

    def via(*hops: str) -> Callable[[Path], None]:
        def apply(dump: Path) -> None:
            names = ["parent", *[f"hop{i}" for i in range(len(hops) - 1)]]
            for name, target in zip(names, hops, strict=True):
                os.symlink(target, dump / name)

        return apply

    def long_chain(dump: Path) -> None:
        n = 2000
        os.symlink("l0", dump / "parent")
        for i in range(n):
            os.symlink(f"l{i + 1}" if i + 1 < n else "../pre", dump / f"l{i}")

    def loop_of_two(dump: Path) -> None:
        shutil.copytree(ev / "pre", dump / "inner")
        os.symlink("inner", dump / "parent")
        os.symlink("..", dump / "inner" / "parent")

    return {
        "sibling": link("../pre"),
        "sibling-dotted": link("./../dump/../pre"),
        "far-up": link("../../../../../../pre"),
        "absolute": link(str(ev / "pre")),
        "absolute-etc": link("/etc"),
        "via-hops-out": via("hop0", "hop1", "../pre"),
        "via-absolute-hop": via("hop0", str(ev / "pre")),
        "long-chain": long_chain,
        "self": link("."),
        "self-loop": link("parent"),
        "two-loop": via("hop0", "parent"),
        "loop-through-child": loop_of_two,
        "file": lambda dump: (dump / "parent").write_bytes(b"x"),
        "fifo": lambda dump: os.mkfifo(dump / "parent"),
        "dangling": link("nowhere"),
    }


def test_parent_links_stay_inside_the_source(dumps, tmp_path):
    full = _outputs(dumps / "after")[1]
    ev = tmp_path / "ev"
    chain = make_chain(dumps, ev)
    os.unlink(chain / "parent")
    template = tmp_path / "template"
    shutil.copytree(chain, template)
    for name, apply in _chain_cases(ev).items():
        dump = ev / "dump"
        shutil.rmtree(dump)
        shutil.copytree(template, dump)
        apply(dump)
        codes, got, err = _outputs(dump)
        assert codes == {"search": 5, "maps": 5, "ps": 5}, (name, codes, err[-400:])
        assert "parent" in err, (name, err[-400:])
        # every process is still listed; what the refused parent held is missing, the rest found
        assert set(got["ps"]) == set(full["ps"]) and set(got["maps"]) == set(full["maps"]), name
        assert got["search"] and set(got["search"]) <= set(full["search"]), name
    # a parent *inside* the SOURCE (a directory, or a link to one) is followed: the full dump again
    for how in ("dir", "link"):
        dump = ev / "dump"
        shutil.rmtree(dump)
        shutil.copytree(template, dump)
        if how == "dir":
            shutil.copytree(ev / "pre", dump / "parent")
        else:
            shutil.copytree(ev / "pre", dump / "older")
            os.symlink("older", dump / "parent")
        codes, got, _ = _outputs(dump)
        assert codes == {"search": 0, "maps": 0, "ps": 0}, how
        assert got["search"] == full["search"], how


def test_docker_checkpoint_parent_stays_in_the_checkpoints_dir(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(FIXTURE_ROOT / "criu-containers" / "docker-root.tar.gz") as tf:
        tf.extractall(root, filter="data")
    after = next(root.rglob("checkpoints/after"))
    args = ("mem", "ps", str(root), "-c", "web", "-k", "after", "--json")
    os.symlink("../before", after / "parent")  # a sibling checkpoint: inside the boundary
    code, _, err = _run(*args)
    assert code == 0, err
    (after / "parent").unlink()
    os.symlink("../../../../..", after / "parent")  # inside the data root, outside checkpoints/
    code, out, err = _run(*args)
    assert code == 5 and "outside the evidence" in err
    assert len(json.loads(out)) >= 3


# ---- mem dump through the output sink -------------------------------------------------------------


def test_dump_writes_through_the_sink(dumps, tmp_path):
    ck = Checkpoint(dumps / "after")
    root = next(p for p in views.processes(ck) if p.ppid == 0)
    out = tmp_path / "o"
    regions = scan.dump(ck, root.pid, str(out))
    manifest = json.loads((out / MANIFEST).read_text())
    by_path = {f["path"]: f for f in manifest["files"]}
    assert set(by_path) == {os.path.basename(r.file) for r in regions} | {"manifest.json"}
    for r in regions:
        data = Path(r.file).read_bytes()
        assert len(data) == r.end - r.start
        assert data == ck.read_memory(root.pid, r.start, r.end - r.start)[0]
        import hashlib

        assert by_path[os.path.basename(r.file)]["sha256"] == hashlib.sha256(data).hexdigest()
    # never overwrites, never inside the evidence (nor beside a CRIU directory given as SOURCE)
    from pensieve.errors import UsageError

    with pytest.raises(UsageError, match="never overwritten"):
        scan.dump(ck, root.pid, str(out))
    from pensieve.memory.sources import open_source

    with open_source(str(dumps / "after")) as src:
        for dest in (dumps / "after" / "x", dumps / "beside", dumps):
            with pytest.raises(UsageError):
                scan.dump(src.checkpoint, root.pid, str(dest))
            assert not (dumps / "after" / "x").exists() and not (dumps / "beside").exists()
