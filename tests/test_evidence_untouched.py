"""Evidence that must not move: every command of ``pensieve --help`` run on evidence kept on an ext4
loop mount with ``-o strictatime`` (every read(2) and getdents(2) without O_NOATIME updates the
access time), and the access time of every file and directory compared before and after.

The mount holds a real overlay2 data root, the integrity roots (clean, tampered, ``docker
save``), CRIU dumps, image archives (docker save / export, OCI) and two disk images.  Entries are
inspected with O_NOATIME descriptors only (``os.scandir(fd)``, ``fstatat``), so that looking does
not move what is looked at.  A symlink's atime is left out: readlink(2) has no O_NOATIME.
Outputs go to a directory outside the mount.  Needs root (loop devices, mount); skipped otherwise.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, FIXTURES, run_cli, unpack

_NOATIME = getattr(os, "O_NOATIME", 0)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | _NOATIME


#: the tree as populated, contents included (the last test compares with it)
INITIAL: dict[str, dict[str, tuple]] = {}


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


@pytest.fixture(scope="module")
def mnt(tmp_path_factory) -> Path:
    """An ext4 loop mount (strictatime) holding a copy of every kind of evidence pensieve reads."""
    if os.geteuid() != 0:
        pytest.skip("a loop mount needs root")
    for tool in ("mkfs.ext4", "mount", "umount", "losetup"):
        _need(tool)
    work = tmp_path_factory.mktemp("strictatime")
    image, top = work / "evidence.ext4", work / "mnt"
    top.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(640 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)], check=True)
    done = subprocess.run(["mount", "-o", "loop,strictatime", str(image), str(top)], capture_output=True)
    if done.returncode:
        pytest.skip(f"no loop mount here: {done.stderr.decode(errors='replace').strip()}")
    try:
        _populate(top)
        subprocess.run(["sync"], check=True)
        INITIAL["content"] = snapshot(top, content=True)
        yield top
    finally:
        subprocess.run(["umount", "-l", str(top)], check=False)  # lazy: leaked fds of in-process runs


def _populate(top: Path) -> None:
    unpack(FIXTURES / "overlay2-root.tar.gz", top / "docker")
    unpack(FIXTURE_ROOT / "integrity" / "integrity-roots.tar.xz", top / "integrity")
    unpack(FIXTURE_ROOT / "archives" / "archives.tar.xz", top / "archives")
    unpack(FIXTURE_ROOT / "containerd2" / "containerd-2.1-root.tar.xz", top / "containerd2")
    with tarfile.open(FIXTURE_ROOT / "criu" / "criu-dumps.tar.gz") as tf:
        tf.extractall(top / "criu", filter="data")
    for name, src in (("disk.img", "disk/disk.img.xz"), ("deleted.img", "deleted/deleted.img.xz")):
        with lzma.open(FIXTURE_ROOT / src) as fin, open(top / name, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    for name in ("disk.E01", "disk.qcow2"):  # read by libewf and pensieve's qcow2 reader
        shutil.copyfile(FIXTURE_ROOT / "disk" / name, top / name)
    kubelet = top / "node" / "var" / "lib" / "kubelet" / "checkpoints"  # a kubelet forensic checkpoint
    kubelet.mkdir(parents=True)
    for archive in (FIXTURE_ROOT / "kubelet-checkpoint").glob("checkpoint-*.tar"):
        shutil.copyfile(archive, kubelet / archive.name)


# ---- looking without touching ------------------------------------------------------------------


def snapshot(top: Path, content: bool = False) -> dict[str, tuple]:
    """Every entry below TOP: (type, mode, owner, size, mtime, atime, xattrs[, sha256]), read through
    O_NOATIME fds only. Symlinks: no atime (see the module docstring)."""
    out: dict[str, tuple] = {}
    fd = os.open(top, _DIR)
    try:
        out["."] = _meta(os.fstat(fd), _xattrs(fd))
        _walk(fd, "", out, content)
    finally:
        os.close(fd)
    return out


def _xattrs(target: int | str) -> tuple:
    try:
        if isinstance(target, int):
            return tuple(sorted((k, os.getxattr(target, k)) for k in os.listxattr(target)))
        return tuple(
            sorted(
                (k, os.getxattr(target, k, follow_symlinks=False))
                for k in os.listxattr(target, follow_symlinks=False)
            )
        )
    except OSError:
        return ()


def _meta(st: os.stat_result, xattrs: tuple) -> tuple:
    atime = "-" if stat.S_ISLNK(st.st_mode) else st.st_atime_ns
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, atime, st.st_rdev, xattrs)


def _walk(fd: int, rel: str, out: dict[str, tuple], content: bool) -> None:
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        path = f"{rel}/{e.name}" if rel else e.name
        st = e.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(e.name, _DIR, dir_fd=fd)
            try:
                out[path] = _meta(st, _xattrs(sub))
                _walk(sub, path, out, content)
            finally:
                os.close(sub)
            continue
        extra: tuple = ()
        if stat.S_ISREG(st.st_mode):
            f = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _NOATIME, dir_fd=fd)
            try:
                xattrs = _xattrs(f)
                if content:
                    h = hashlib.sha256()
                    while block := os.read(f, 1 << 20):
                        h.update(block)
                    extra = (h.hexdigest(),)
            finally:
                os.close(f)
        else:
            xattrs = _xattrs(f"/proc/self/fd/{fd}/{e.name}")
        out[path] = _meta(st, xattrs) + extra


def moved(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """Entries whose metadata (atime included) differ, appeared or vanished."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


# ---- the commands ------------------------------------------------------------------------------

DOCKER, INTEGRITY, ARCHIVES, CRIU = "docker", "integrity", "archives", "criu"

#: (id, argv with {m} = the mount, {o} = the output directory, {pid} = a dumped pid), xfail reason
CASES: list[tuple[str, list[str], str | None]] = [
    ("roots", ["roots", "{m}/docker"], None),
    ("containers", ["containers", "{m}/docker", "--json"], None),
    ("images", ["images", "{m}/docker", "--json"], None),
    ("history", ["history", "{m}/docker", "pensieve/app:2", "--json"], None),
    ("volumes", ["volumes", "{m}/docker", "--json"], None),
    ("logs-json-file", ["logs", "{m}/docker", "c-modified", "--json"], None),
    ("logs-local", ["logs", "{m}/docker", "c-local-log", "--json"], None),
    ("pods", ["pods", "{m}/containerd2", "--json"], None),
    ("logs-cri", ["logs", "{m}/containerd2", "app", "--json"], None),
    ("fs-ls", ["fs", "{m}/docker", "c-modified", "ls", "/etc", "--json"], None),
    ("fs-stat", ["fs", "{m}/docker", "c-modified", "stat", "/etc/passwd", "--json"], None),
    ("fs-cat", ["fs", "{m}/docker", "c-modified", "cat", "/etc/passwd"], None),
    ("fs-find", ["fs", "{m}/docker", "c-modified", "find", "/", "--json"], None),
    ("fs-export-tar", ["fs", "{m}/docker", "c-modified", "export", "{o}/c.tar"], None),
    ("fs-export-dir", ["fs", "{m}/docker", "c-modified", "export", "{o}/c-dir"], None),
    ("diff", ["diff", "{m}/docker", "c-modified", "--json"], None),
    ("diff-recover", ["diff", "{m}/docker", "c-modified", "--recover", "{o}/rec"], None),
    ("whence", ["whence", "{m}/docker", "{whence}", "--json"], None),
    ("verify-clean", ["verify", "{m}/integrity/clean", "--images", "--json"], None),
    ("verify-tampered", ["verify", "{m}/integrity/tampered", "-v"], None),
    (
        "verify-export-layer",
        ["verify", "{m}/integrity/clean", "--export-layer", "{chain}", "--to", "{o}/l.tar"],
        None,
    ),
    ("verify-archive", ["verify", "{m}/integrity/save.tar", "--json"], None),
    ("images-save-tar", ["images", "{m}/archives/save.tar", "--json"], None),
    ("images-oci-dir", ["images", "{m}/archives/oci-gzip", "--json"], None),
    ("fs-cat-export-tar", ["fs", "{m}/archives/export.tar", "-", "cat", "/srv/www/index.html"], None),
    ("compare", ["compare", "{m}/integrity/clean", "{m}/integrity/save.tar", "--json"], None),
    ("containers-disk", ["containers", "{m}/disk.img", "--json"], None),
    ("containers-e01", ["containers", "{m}/disk.E01", "--json"], None),
    ("containers-qcow2", ["containers", "{m}/disk.qcow2", "--json"], None),
    ("mem-info", ["mem", "info", "{m}/criu/after", "--json"], None),
    ("mem-ps", ["mem", "ps", "{m}/criu/after", "--json"], None),
    ("mem-files", ["mem", "files", "{m}/criu/after", "--json"], None),
    ("mem-sockets", ["mem", "sockets", "{m}/criu/after", "--json"], None),
    ("mem-maps", ["mem", "maps", "{m}/criu/after", "--json"], None),
    ("mem-env", ["mem", "env", "{m}/criu/after", "--json"], None),
    ("mem-cmdline", ["mem", "cmdline", "{m}/criu/after", "--json"], None),
    (
        "mem-search",
        ["mem", "search", "{m}/criu/after", "-s", "pensieve-fixture-token-1234", "--json"],
        None,
    ),
    ("mem-dump", ["mem", "dump", "{m}/criu/after", "-p", "{pid}", "-o", "{o}/dump"], None),
    ("mem-diff", ["mem", "diff", "{m}/criu/before", "{m}/criu/after", "--json"], None),
    ("mem-checkpoints", ["mem", "checkpoints", "{m}/node", "--json"], None),
    ("mem-changes-kubelet", ["mem", "changes", "{m}/node", "--json"], None),
    ("recover", ["recover", "{m}/deleted.img", "--out", "{o}/recovered", "--json"], None),
    ("carve", ["carve", "{m}/disk.img", "--out", "{o}/carved", "--json", "--no-progress"], None),
    (
        "triage",
        [
            "triage",
            "{m}/docker",
            "{m}/containerd2",
            "{m}/disk.img",
            "{m}/criu/after",
            "{m}/archives/save.tar",
            "--case",
            "{o}/case.duckdb",
        ],
        None,
    ),
    ("query", ["query", "{case}", "SELECT name, state FROM containers", "--json"], None),
    ("case-tables", ["case", "tables", "--json"], None),
    ("case-export", ["case", "export", "{case}", "--parquet", "{o}/pq"], None),
    ("timeline", ["timeline", "{case}", "--format", "bodyfile", "--out", "{o}/body.txt"], None),
    ("timeline-timesketch", ["timeline", "{case}", "--format", "timesketch"], None),
    ("links", ["links", "{case}", "--json", "--out", "{o}/links.json"], None),
    ("report", ["report", "{case}", "--out", "{o}/report"], None),
    # live views read /proc; the engine records they join come from the evidence
    ("live-ps", ["live", "ps", "--root", "{m}/docker", "--container", "c-modified", "--json"], None),
    ("live-cgroups", ["live", "cgroups", "--root", "{m}/docker", "-c", "c-modified", "--json"], None),
    ("live-net", ["live", "net", "--root", "{m}/docker", "--container", "c-modified", "--json"], None),
    (
        "live-watch",
        ["live", "watch", "--root", "{m}/docker", "-c", "c-modified", "--for", "1", "--out", "{o}/w.jsonl"],
        None,
    ),
    (
        "collect",
        ["collect", "c-modified", "--root", "{m}/docker", "--out", "{o}/b", "--proc", "/nonexistent"],
        None,
    ),
]


def _params():
    for case_id, argv, reason in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(argv, id=case_id, marks=marks)


@pytest.fixture(scope="module")
def values(mnt, tmp_path_factory) -> dict[str, str]:
    """What some commands need (a layer file's host path, a chain id, a dumped pid), found without
    pensieve so that finding them moves nothing: read through O_NOATIME fds."""
    snap = snapshot(mnt)
    whence = next(
        p
        for p, m in sorted(snap.items())
        if p.startswith("docker/overlay2/") and "/diff/" in p and stat.S_ISREG(m[0])
    )
    layerdb = "integrity/clean/image/overlay2/layerdb/sha256/"
    chain = next(p[len(layerdb) :] for p in sorted(snap) if p.startswith(layerdb) and p.count("/") == 6)
    pid = next(
        p.rsplit("-", 1)[1][:-4]
        for p in sorted(snap)
        if p.startswith("criu/after/core-") and p.endswith(".img")
    )
    case = tmp_path_factory.mktemp("case") / "case.duckdb"
    code, _out, err = run_cli("triage", "-q", mnt / "docker", "--case", case)
    assert code in (0, 5), err
    return {"whence": str(mnt / whence), "chain": "sha256:" + chain, "pid": pid, "case": str(case)}


@pytest.mark.parametrize("argv", list(_params()))
def test_command_moves_no_access_time(mnt, values, tmp_path, argv):
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(m=mnt, o=out, **values) for a in argv]
    before = snapshot(mnt)
    code, stdout, stderr = run_cli(*args)
    after = snapshot(mnt)
    assert code in (0, 5, 6), (args, code, stderr[-2000:])
    changed = moved(before, after)
    assert not changed, f"{len(changed)} entries moved, e.g. {changed[:10]}"


def test_the_cases_cover_every_command():
    """Every command of ``pensieve --help`` (and every ``fs`` action and ``mem`` view but yara,
    which needs rules) has a case above."""
    from pensieve.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    covered = {argv[0] for _id, argv, _r in CASES}
    assert set(sub.choices) <= covered, set(sub.choices) - covered
    actions = {argv[3] for _id, argv, _r in CASES if argv[0] == "fs"}
    assert {"ls", "stat", "cat", "find", "export"} <= actions
    views = {argv[1] for _id, argv, _r in CASES if argv[0] == "mem"}
    mem = next(a for a in sub.choices["mem"]._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(mem.choices) - {"yara", "changes"} <= views, set(mem.choices) - views


def test_contents_and_metadata_unchanged_after_all_commands(mnt):
    """Last: the whole tree (content sha256, mode, owner, size, mtime, xattrs) as it was made."""

    def without_atime(snap: dict[str, tuple]) -> dict[str, tuple]:
        return {p: m[:5] + m[6:] for p, m in snap.items()}

    assert without_atime(snapshot(mnt, content=True)) == without_atime(INITIAL["content"])
