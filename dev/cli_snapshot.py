"""Capture the output of every pensieve CLI command on the bundled fixtures.

    python3 dev/cli_snapshot.py --src SRC_DIR --out OUT_DIR

runs pensieve from SRC_DIR (PYTHONPATH=SRC_DIR, one fresh subprocess per command, COLUMNS=200,
TZ=UTC) over a fixed list of commands and writes, per command, ``NN-name.stdout``, ``.stderr``,
``.rc`` (and ``.files`` for commands that write files: a sorted listing of what they wrote, with
type, size and sha256).  The fixtures are unpacked once into /var/tmp/pensieve-snap/fixtures
(reused when present) so that every run sees the same paths; output directories live under
/var/tmp/pensieve-snap/out-* and are deleted and recreated before each command that writes them.
Run-specific noise (timings, the temp directory of a run) is normalised in the saved files.
Compare two captures with dev/cli_snapshot_diff.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

SNAP = Path("/var/tmp/pensieve-snap")
FIX = SNAP / "fixtures"
REPO = Path(__file__).resolve().parents[1]
RUNNER = "import sys; from pensieve.cli import main; sys.exit(main(sys.argv[1:]))"

# ---- fixtures --------------------------------------------------------------------------------


def _untar(tarball: Path, dest: Path) -> None:
    """As tests/conftest.py `unpack`: GNU tar keeping xattrs, whiteout devices and numeric owners."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xf", str(tarball), "-C", str(dest)],
        check=True,
    )


def _unxz(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(src) as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def prepare_fixtures(source: Path) -> None:
    """Unpack every fixture under FIX once; a `.complete` marker says it finished."""
    marker = FIX / ".complete"
    if marker.exists():
        return
    if os.geteuid() != 0:
        sys.exit("unpacking the overlay fixtures (whiteout devices, trusted.* xattrs) needs root")
    if FIX.exists():
        shutil.rmtree(FIX)
    FIX.mkdir(parents=True)
    _untar(source / "docker" / "overlay2-root.tar.gz", FIX / "overlay2")
    _untar(source / "docker" / "overlay-root.tar.gz", FIX / "overlay")
    _untar(source / "archives" / "archives.tar.xz", FIX / "archives")
    _untar(source / "integrity" / "integrity-roots.tar.xz", FIX / "integrity")
    _untar(source / "criu" / "criu-dumps.tar.gz", FIX / "criu")
    _untar(source / "criu-containers" / "docker-root.tar.gz", FIX / "criu-docker")
    for name in ("podman-before.tar.zst", "podman-after.tar.zst"):
        _copy(source / "criu-containers" / name, FIX / "podman" / name)
    _unxz(source / "disk" / "disk.img.xz", FIX / "disk" / "disk.img")
    for name in ("disk.E01", "disk.qcow2"):
        _copy(source / "disk" / name, FIX / "disk" / name)
    _unxz(source / "deleted" / "deleted.img.xz", FIX / "deleted" / "deleted.img")
    _unxz(source / "carve" / "carve.img.xz", FIX / "carve" / "carve.img")
    bad = FIX / "bad"
    bad.mkdir()
    (bad / "not-a-tar.tar").write_bytes(b"not a tar at all" * 100)
    (bad / "empty-dir").mkdir()
    marker.write_text("done\n")


# ---- the commands ----------------------------------------------------------------------------

O2 = str(FIX / "overlay2")
OV = str(FIX / "overlay")
ARX = FIX / "archives"
SAVE, OCI_GZ, OCI_ZST, EXPORT = (str(ARX / n) for n in ("save.tar", "oci-gzip", "oci-zstd.tar", "export.tar"))
INT = FIX / "integrity"
CLEAN, TAMPERED, ISAVE = str(INT / "clean"), str(INT / "tampered"), str(INT / "save.tar")
CRIU_A, CRIU_B = str(FIX / "criu" / "after"), str(FIX / "criu" / "before")
CDOCKER = str(FIX / "criu-docker")
POD_A, POD_B = str(FIX / "podman" / "podman-after.tar.zst"), str(FIX / "podman" / "podman-before.tar.zst")
DISK = str(FIX / "disk" / "disk.img")
E01, QCOW = str(FIX / "disk" / "disk.E01"), str(FIX / "disk" / "disk.qcow2")
DELETED = str(FIX / "deleted" / "deleted.img")
CARVE = str(FIX / "carve" / "carve.img")
MISSING = str(FIX / "does-not-exist")
APP = "pensieve/app:1"
APP2 = "pensieve/app:2"
ARX_APP = "pensieve/aapp:1"
IAPP = "pensieve/iapp:1"
IMPLANT = "/overlay2/b53eba07b785640431f45fe66faa15afd536694b3746c2d2b805849f1fb045f5/diff/root/implant.sh"
CHAIN = "sha256:02986061f73ca9527e88024a2d8d49823acd4553d07b8b34530fd0f3ebe122ee"  # clean's first layer
IMPLANT_PID = "6131"  # the reverse shell in the criu `after` dump


def out_dir(name: str) -> str:
    return str(SNAP / f"out-{name}")


def commands() -> list[tuple[str, list[str], list[str]]]:
    """(name, argv, output paths written by the command: recreated empty before, listed after)."""
    c: list[tuple[str, list[str], list[str]]] = []

    def add(name: str, *argv: str, writes: tuple[str, ...] = ()) -> None:
        c.append((name, list(argv), list(writes)))

    # help and usage
    add("help", "--help")
    add("version", "--version")
    # roots / containers / images / history / volumes on the overlay2 root, every format
    for fmt in ("table", "json", "jsonl", "csv"):
        flag = [] if fmt == "table" else [f"--{fmt}"]
        add(f"roots-o2-{fmt}", "roots", O2, *flag)
        add(f"containers-o2-{fmt}", "containers", O2, *flag)
        add(f"images-o2-{fmt}", "images", O2, *flag)
    add("history-o2-app2", "history", O2, APP2)
    add("history-o2-app2-json", "history", O2, APP2, "--json")
    add("history-o2-app1-csv", "history", O2, APP, "--csv")
    add("volumes-o2", "volumes", O2)
    add("volumes-o2-json", "volumes", O2, "--json")
    add("volumes-o2-format-jsonl", "volumes", O2, "--format", "jsonl")
    # logs
    add("logs-o2-running", "logs", O2, "c-running")
    add("logs-o2-running-json", "logs", O2, "c-running", "--json")
    add("logs-o2-running-stderr", "logs", O2, "c-running", "--stream", "stderr")
    add("logs-o2-local-json", "logs", O2, "c-local-log", "--json")
    add("logs-o2-jsonrot", "logs", O2, "c-jsonrot")
    add("logs-o2-jsonrot-csv", "logs", O2, "c-jsonrot", "--csv")
    # the legacy overlay driver
    add("containers-ov", "containers", OV)
    add("containers-ov-json", "containers", OV, "--json")
    add("images-ov-json", "images", OV, "--json")
    add("diff-ov-running", "diff", OV, "c-ov-running")
    add("diff-ov-running-json", "diff", OV, "c-ov-running", "--json")
    # diff
    add("diff-o2-modified", "diff", O2, "c-modified")
    add("diff-o2-modified-json", "diff", O2, "c-modified", "--json")
    add("diff-o2-modified-jsonl", "diff", O2, "c-modified", "--jsonl")
    add("diff-o2-modified-csv", "diff", O2, "c-modified", "--csv")
    add("diff-o2-modified-engine-view", "diff", O2, "c-modified", "--engine-view")
    add("diff-o2-modified-engine-view-json", "diff", O2, "c-modified", "--engine-view", "--json")
    add("diff-o2-modified-no-hash-json", "diff", O2, "c-modified", "--no-hash", "--json")
    rec = out_dir("diff-recover")
    add("diff-o2-modified-recover", "diff", O2, "c-modified", "--recover", rec, "--json", writes=(rec,))
    add("diff-o2-running", "diff", O2, "c-running")
    add("diff-o2-priv-json", "diff", O2, "c-priv", "--json")
    # fs
    add("fs-o2-ls-root", "fs", O2, "c-modified", "ls", "-l", "/root")
    add("fs-o2-ls-root-json", "fs", O2, "c-modified", "ls", "/root", "--json")
    add("fs-o2-ls-opt-R", "fs", O2, "c-modified", "ls", "-R", "-l", "/opt")
    add("fs-o2-ls-opt-R-csv", "fs", O2, "c-modified", "ls", "-R", "/opt", "--csv")
    add("fs-o2-ls-image", "fs", O2, APP, "ls", "-l", "/opt/app")
    add("fs-o2-stat-implant", "fs", O2, "c-modified", "stat", "/root/implant.sh")
    add("fs-o2-stat-implant-json", "fs", O2, "c-modified", "stat", "/root/implant.sh", "--json")
    add("fs-o2-stat-escape-json", "fs", O2, "c-modified", "stat", "/root/escape", "--json")
    add("fs-o2-stat-escape-L-json", "fs", O2, "c-modified", "stat", "-L", "/root/escape", "--json")
    add("fs-o2-stat-tool-json", "fs", O2, "c-modified", "stat", "/opt/app/bin/tool", "--json")
    add("fs-o2-cat-implant", "fs", O2, "c-modified", "cat", "/root/implant.sh")
    add("fs-o2-cat-appconf", "fs", O2, "c-modified", "cat", "/etc/app.conf")
    add("fs-o2-cat-missing", "fs", O2, "c-modified", "cat", "/no/such/file")
    add("fs-o2-find-opt", "fs", O2, "c-modified", "find", "/opt")
    add("fs-o2-find-name-json", "fs", O2, "c-modified", "find", "--name", "*.txt", "--json")
    add("fs-o2-find-type-l", "fs", O2, "c-modified", "find", "--type", "l", "/root")
    add("fs-o2-find-hash-jsonl", "fs", O2, "c-modified", "find", "/opt/app", "--hash", "--jsonl")
    add("fs-o2-find-newer", "fs", O2, "c-modified", "find", "/", "--newer", "2020-01-01", "--type", "f")
    add(
        "fs-o2-find-layer-json", "fs", O2, "c-modified", "find", "/", "--layer", "rw", "--type", "f", "--json"
    )
    exp_dir = out_dir("fs-export-dir")
    add("fs-o2-export-dir", "fs", O2, "c-modified", "export", "--path", "/opt", exp_dir, writes=(exp_dir,))
    exp_tar = out_dir("fs-export-tar")
    add("fs-o2-export-tar", "fs", O2, "c-modified", "export", "--tar", exp_tar + "/c.tar", writes=(exp_tar,))
    add("fs-o2-export-into-evidence", "fs", O2, "c-modified", "export", O2 + "/x")
    # whence
    add("whence-o2-implant", "whence", O2, O2 + IMPLANT)
    add("whence-o2-implant-json", "whence", O2, O2 + IMPLANT, "--json")
    add("whence-o2-containers-dir-json", "whence", O2, O2 + "/containers", "--json")
    # archives
    add("roots-oci-gzip-json", "roots", OCI_GZ, "--json")
    add("images-save", "images", SAVE)
    add("images-oci-zstd-json", "images", OCI_ZST, "--json")
    add("images-export-json", "images", EXPORT, "--json")
    add("history-save-json", "history", SAVE, ARX_APP, "--json")
    add("history-oci-gzip", "history", OCI_GZ, ARX_APP)
    add("containers-save", "containers", SAVE)
    add("diff-save", "diff", SAVE, "x")
    add("fs-oci-zstd-cat", "fs", OCI_ZST, ARX_APP, "cat", "/srv/www/index.html")
    add("fs-save-stat-json", "fs", SAVE, ARX_APP, "stat", "/srv/data/key", "--json")
    add("fs-export-cat", "fs", EXPORT, "-", "cat", "/srv/www/index.html")
    add("fs-save-ls-json", "fs", SAVE, ARX_APP, "ls", "/srv/cache", "--json")
    add("fs-save-ls-R", "fs", SAVE, ARX_APP, "ls", "-R", "-l", "/srv")
    add("fs-save-cat-motd", "fs", SAVE, ARX_APP, "cat", "/etc/motd")
    # verify
    add("verify-o2", "verify", O2)
    add("verify-o2-images", "verify", O2, "--images")
    add("verify-clean-json", "verify", CLEAN, "--json")
    add("verify-clean-images-json", "verify", CLEAN, "--images", "--json")
    add("verify-tampered", "verify", TAMPERED)
    add("verify-tampered-v", "verify", TAMPERED, "-v")
    add("verify-tampered-json", "verify", TAMPERED, "--json")
    add("verify-tampered-findings-json", "verify", TAMPERED, "--findings", "--json")
    add("verify-tampered-findings", "verify", TAMPERED, "--findings")
    add("verify-tampered-images", "verify", TAMPERED, "--images")
    add("verify-tampered-images-json", "verify", TAMPERED, "--images", "--json")
    add("verify-tampered-image-iapp-jsonl", "verify", TAMPERED, IAPP, "--jsonl")
    add("verify-save-json", "verify", SAVE, "--json")
    add("verify-save-images-json", "verify", SAVE, "--images", "--json")
    add("verify-oci-gzip", "verify", OCI_GZ)
    add("verify-oci-zstd-images", "verify", OCI_ZST, "--images")
    add("verify-export-json", "verify", EXPORT, "--json")
    lay = out_dir("verify-export-layer")
    add(
        "verify-clean-export-layer",
        "verify",
        CLEAN,
        "--export-layer",
        CHAIN,
        "--to",
        lay + "/layer.tar",
        writes=(lay,),
    )
    add(
        "verify-clean-export-layer-into-evidence",
        "verify",
        CLEAN,
        "--export-layer",
        CHAIN,
        "--to",
        CLEAN + "/x",
    )
    # compare
    add("compare-clean-save", "compare", CLEAN, ISAVE)
    add("compare-clean-save-json", "compare", CLEAN, ISAVE, "--json")
    add("compare-tampered-save-iapp", "compare", TAMPERED, ISAVE, "--image", IAPP)
    add("compare-tampered-save-iapp-jsonl", "compare", TAMPERED, ISAVE, "--image", IAPP, "--jsonl")
    add("compare-tampered-save-iapp-csv", "compare", TAMPERED, ISAVE, "--image", IAPP, "--csv")
    add(
        "compare-tampered-save-no-hash-json",
        "compare",
        TAMPERED,
        ISAVE,
        "--image",
        IAPP,
        "--no-hash",
        "--json",
    )
    add("compare-save-oci-zstd-json", "compare", SAVE, OCI_ZST, "--json")
    add("compare-save-oci-zstd-path", "compare", SAVE, OCI_ZST, "--image", ARX_APP, "--path", "/srv")
    add("compare-save-export", "compare", SAVE, EXPORT)
    add(
        "compare-save-export-layers",
        "compare",
        SAVE,
        EXPORT,
        "--image",
        ARX_APP,
        "--image-b",
        "-",
        "--layers",
    )
    add(
        "compare-save-export-layers-json",
        "compare",
        SAVE,
        EXPORT,
        "--image",
        ARX_APP,
        "--image-b",
        "-",
        "--layers",
        "--json",
    )
    # mem on a criu directory
    for view in ("info", "ps", "files", "sockets", "maps", "env", "cmdline"):
        add(f"mem-{view}-criu", "mem", view, CRIU_A)
        add(f"mem-{view}-criu-json", "mem", view, CRIU_A, "--json")
    add("mem-ps-criu-csv", "mem", "ps", CRIU_A, "--csv")
    add("mem-sockets-criu-jsonl", "mem", "sockets", CRIU_A, "--jsonl")
    add("mem-files-criu-pid", "mem", "files", CRIU_A, "-p", IMPLANT_PID)
    add("mem-search-criu-s", "mem", "search", CRIU_A, "-s", "SECRET_TOKEN")
    add("mem-search-criu-s-json", "mem", "search", CRIU_A, "-s", "SECRET_TOKEN", "--json")
    add("mem-search-criu-e-i", "mem", "search", CRIU_A, "-e", "secret_[a-z]+", "-i", "--max-hits", "5")
    add(
        "mem-search-criu-x",
        "mem",
        "search",
        CRIU_A,
        "-x",
        "5345435245545f544f4b454e",
        "--context",
        "8",
        "--json",
    )
    add("mem-search-criu-utf16", "mem", "search", CRIU_A, "-s", "busybox", "--utf16", "--json")
    add(
        "mem-yara-criu",
        "mem",
        "yara",
        CRIU_A,
        "--rule",
        'rule tok { strings: $a = "SECRET_TOKEN" condition: $a }',
    )
    add(
        "mem-yara-criu-json",
        "mem",
        "yara",
        CRIU_A,
        "--rule",
        'rule sh { strings: $a = "busybox" condition: $a }',
        "--context",
        "4",
        "--json",
    )
    d = out_dir("mem-dump")
    add("mem-dump-criu", "mem", "dump", CRIU_A, "-p", IMPLANT_PID, "-o", d, writes=(d,))
    d2 = out_dir("mem-dump-map")
    add(
        "mem-dump-criu-map-json",
        "mem",
        "dump",
        CRIU_A,
        "-p",
        IMPLANT_PID,
        "-o",
        d2,
        "--map",
        "[stack]",
        "--json",
        writes=(d2,),
    )
    add("mem-diff-criu", "mem", "diff", CRIU_B, CRIU_A)
    add("mem-diff-criu-json", "mem", "diff", CRIU_B, CRIU_A, "--json")
    # mem on a podman archive and a docker root
    add("mem-info-podman", "mem", "info", POD_A)
    add("mem-info-podman-json", "mem", "info", POD_A, "--json")
    add("mem-ps-podman", "mem", "ps", POD_A)
    add("mem-sockets-podman-json", "mem", "sockets", POD_A, "--json")
    add("mem-changes-podman", "mem", "changes", POD_A)
    add("mem-changes-podman-json", "mem", "changes", POD_A, "--json")
    add("mem-diff-podman", "mem", "diff", POD_B, POD_A)
    add("mem-diff-podman-json", "mem", "diff", POD_B, POD_A, "--json")
    add("mem-info-docker-json", "mem", "info", CDOCKER, "-c", "web", "-k", "after", "--json")
    add("mem-ps-docker", "mem", "ps", CDOCKER, "-c", "web", "-k", "after")
    add("mem-files-docker-json", "mem", "files", CDOCKER, "-c", "web", "-k", "after", "--json")
    add("mem-diff-docker", "mem", "diff", CDOCKER, "-c", "web", "-k", "before", "-k", "after")
    # disk images
    add("roots-disk", "roots", DISK)
    add("roots-disk-p2-json", "roots", DISK + "@2", "--json")
    add("roots-disk-p1", "roots", DISK + "@1")
    add("containers-disk-json", "containers", DISK, "--json")
    add("containers-e01", "containers", E01)
    add("containers-qcow2-csv", "containers", QCOW, "--csv")
    add("diff-disk-modified-json", "diff", DISK, "c-modified", "--json")
    add("images-disk", "images", DISK)
    # recover
    add("recover-deleted", "recover", DELETED)
    add("recover-deleted-json", "recover", DELETED, "--json")
    add("recover-deleted-all-csv", "recover", DELETED, "--all", "--csv")
    r = out_dir("recover")
    add("recover-deleted-out-jsonl", "recover", DELETED, "--out", r, "--jsonl", writes=(r,))
    add("recover-deleted-out-into-evidence", "recover", DELETED, "--out", DELETED)
    add("containers-deleted", "containers", DELETED)
    # carve
    add("carve-carve", "carve", CARVE)
    add("carve-carve-json", "carve", CARVE, "--json")
    add("carve-carve-types-csv", "carve", CARVE, "--types", "elf,png", "--types", "script", "--csv")
    add("carve-carve-keep-dup-json", "carve", CARVE, "--keep-duplicates", "--no-progress", "--json")
    add("carve-carve-all-jsonl", "carve", CARVE, "--all", "--types", "pdf,jpeg", "--jsonl")
    co = out_dir("carve")
    add("carve-carve-out-jsonl", "carve", CARVE, "--out", co, "--jsonl", writes=(co,))
    add("carve-disk-png", "carve", DISK, "--types", "png")
    add("carve-deleted-json", "carve", DELETED, "--json")
    # error cases
    add(
        "err-no-args",
    )
    add("err-unknown-command", "nope")
    add("err-containers-no-source", "containers")
    add("err-bad-format", "containers", O2, "--format", "xml")
    add("err-json-and-csv", "containers", O2, "--json", "--csv")
    add("err-containers-missing", "containers", MISSING)
    add("err-verify-missing-json", "verify", MISSING, "--json")
    add("err-images-not-a-tar", "images", str(FIX / "bad" / "not-a-tar.tar"))
    add("err-roots-empty-dir", "roots", str(FIX / "bad" / "empty-dir"))
    add("err-logs-unknown-container", "logs", O2, "no-such-container")
    add("err-diff-unknown-container", "diff", O2, "no-such-container")
    add("err-fs-unknown-target", "fs", O2, "no-such-container", "ls", "/")
    add("err-history-unknown-image", "history", O2, "no/such:image")
    add("whence-o2-host-named-path", "whence", O2, "/etc/passwd")
    add("err-compare-no-image", "compare", SAVE, EXPORT)
    add("err-mem-missing", "mem", "ps", MISSING)
    add("err-mem-not-checkpoint", "mem", "ps", str(FIX / "bad" / "empty-dir"))
    add("err-mem-unknown-container", "mem", "ps", CDOCKER, "-c", "nope", "-k", "after")
    add("err-mem-unknown-checkpoint", "mem", "ps", CDOCKER, "-c", "web", "-k", "nope")
    add(
        "err-mem-dump-unknown-pid",
        "mem",
        "dump",
        CRIU_A,
        "-p",
        "424242",
        "-o",
        out_dir("mem-dump-err"),
        writes=(out_dir("mem-dump-err"),),
    )
    add("err-mem-search-bad-regex", "mem", "search", CRIU_A, "-e", "(")
    add("err-mem-search-no-pattern", "mem", "search", CRIU_A)
    add("err-mem-changes-on-dir", "mem", "changes", CRIU_A)
    add("err-mem-unknown-view", "mem", "nope")
    add("err-recover-not-ext4", "recover", SAVE)
    add("err-carve-missing", "carve", MISSING)
    add("err-carve-bad-type", "carve", CARVE, "--types", "bogus")
    add("err-carve-out-is-image", "carve", CARVE, "--out", CARVE)
    return c


# ---- running ---------------------------------------------------------------------------------

# (pattern, replacement) applied to stdout and stderr before saving: run-specific noise only.
NORMALISE: list[tuple[re.Pattern[str], str]] = [
    # carve's table summary: "... in 0.63 s (101.0 MiB/s); ..." (wall-clock time and rate)
    (re.compile(r"\bin \d+\.\d+ s \([\d.]+ [KMGT]?i?B/s\)"), "in <SECONDS> s (<RATE>/s)"),
]


def normalise(text: str) -> str:
    for pattern, repl in NORMALISE:
        text = pattern.sub(repl, text)
    return text


def listing(root: Path) -> str:
    """What a command wrote below ROOT: one sorted line per entry (path, type, mode, size, sha256)."""
    lines = []
    if not root.exists():
        return "(nothing: destination does not exist)\n"
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            mode = f"{stat.S_IMODE(st.st_mode):04o}"
            if stat.S_ISLNK(st.st_mode):
                lines.append(f"{rel} link {mode} -> {os.readlink(p)}")
            elif stat.S_ISDIR(st.st_mode):
                lines.append(f"{rel} dir {mode}")
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
                lines.append(f"{rel} file {mode} {st.st_size} {digest}")
            else:
                lines.append(f"{rel} other {st.st_mode:o}")
    return "".join(line + "\n" for line in sorted(lines))


def _walk_noatime(top: str):
    """(path, lstat) of every entry below TOP, sorted, listing directories with O_NOATIME so that
    taking the state does not move access times, which outputs show (relatime would, daily)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOATIME", 0)
    fd = os.open(top, flags)
    try:
        names = sorted(os.listdir(fd))
    finally:
        os.close(fd)
    for name in names:
        path = os.path.join(top, name)
        st = os.lstat(path)
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_noatime(path)


def fixtures_state() -> str:
    """A digest per fixture of every entry's inode, mode, size, mtime and ctime: outputs show inodes
    and times of the unpacked fixtures, so two captures compare only over one unpacking.  (Access
    times are left out: pensieve reads image files without O_NOATIME, relatime moves them daily.)"""
    lines = []
    for top in sorted(p for p in FIX.iterdir() if p.is_dir()):
        h = hashlib.sha256()
        for path, st in _walk_noatime(str(top)):
            h.update(
                f"{path}|{st.st_ino}|{st.st_mode}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}\n".encode(
                    "utf-8", "surrogateescape"
                )
            )
        lines.append(f"{top.name} {h.hexdigest()}\n")
    return "".join(lines)


def run_one(src: Path, argv: list[str], writes: list[str]) -> tuple[int, str, str, str | None]:
    for w in writes:
        shutil.rmtree(w, ignore_errors=True)
        Path(w).mkdir(parents=True)
    env = dict(
        os.environ,
        PYTHONPATH=str(src),
        COLUMNS="200",
        LINES="50",
        TZ="UTC",
        LC_ALL="C.UTF-8",
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
    )
    for var in ("NO_COLOR", "FORCE_COLOR", "TERM", "PYTHONSTARTUP", "PYTHONWARNINGS"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *argv],
        env=env,
        cwd=str(SNAP),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=600,
    )
    out = normalise(proc.stdout.decode("utf-8", "surrogateescape"))
    err = normalise(proc.stderr.decode("utf-8", "surrogateescape"))
    files = None
    if writes:
        files = "".join(f"== {w}\n{listing(Path(w))}" for w in writes)
    return proc.returncode, out, err, files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, type=Path, help="the src directory to run pensieve from")
    ap.add_argument("--out", required=True, type=Path, help="where to write the capture (replaced)")
    ap.add_argument(
        "--fixtures-from",
        type=Path,
        default=REPO / "tests" / "fixtures",
        help=f"the fixture tarballs, unpacked once into {FIX}",
    )
    ap.add_argument("--only", help="run only commands whose name contains this")
    opts = ap.parse_args(argv)
    src = opts.src.resolve()
    if not (src / "pensieve").is_dir():
        ap.error(f"{src} has no pensieve package")
    prepare_fixtures(opts.fixtures_from)
    if opts.out.exists():
        shutil.rmtree(opts.out)
    opts.out.mkdir(parents=True)
    todo = commands()
    names = [n for n, _, _ in todo]
    assert len(names) == len(set(names)), "duplicate command names"
    (opts.out / "000-fixtures-state.stdout").write_text(fixtures_state())
    (opts.out / "000-fixtures-state.stderr").write_text("")
    (opts.out / "000-fixtures-state.rc").write_text("0\n")
    index = []
    started = time.monotonic()
    for i, (name, args, writes) in enumerate(todo, start=1):
        if opts.only and opts.only not in name:
            continue
        stem = f"{i:03d}-{name}"
        t0 = time.monotonic()
        rc, out, err, files = run_one(src, args, writes)
        took = time.monotonic() - t0
        (opts.out / f"{stem}.stdout").write_text(out, "utf-8", "surrogateescape")
        (opts.out / f"{stem}.stderr").write_text(err, "utf-8", "surrogateescape")
        (opts.out / f"{stem}.rc").write_text(f"{rc}\n")
        if files is not None:
            (opts.out / f"{stem}.files").write_text(files, "utf-8", "surrogateescape")
        index.append({"stem": stem, "argv": ["pensieve", *args], "rc": rc})
        print(f"{stem:60s} rc={rc} {took:6.2f}s", flush=True)
    (opts.out / "commands.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"{len(index)} commands in {time.monotonic() - started:.1f}s -> {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
