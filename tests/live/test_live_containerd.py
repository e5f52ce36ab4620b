"""pensieve against a LIVE, private containerd (1.6), compared with ``ctr``'s own answers.

A module-scoped fixture starts containerd on private paths (tests/live/private_containerd.py:
own config with the CRI plugin off, --root, --state, sockets, runc root, cgroup parent), imports a
two-layer OCI image built locally from busybox-static (fixtures/capture/containerd_image.py, no
network) into the namespaces ``default`` and ``k8s.io``, and in each makes:

* ``c-run``   a running task, into whose rootfs ``ctr tasks exec`` wrote /root/planted.txt and
              from which it deleted /etc/motd;
* ``c-exit``  a task that wrote /tmp/result.txt and exited with status 3;
* ``c-new``   a container that was only created (no task).

``test_live_root_agrees_with_ctr`` reads the evidence (root/ beside state/) while the daemon runs;
``test_root_at_rest_agrees_and_is_never_written`` stops the daemon (SIGTERM through its pid file),
kills its shims and tasks and unmounts their rootfs (a power cut for the tasks), then checks the
same answers offline and that no pensieve command changes a byte, time or xattr of the evidence.
Compared: `containers --json` with `ctr containers info` (ids, image, labels, snapshotter, the
snapshot key through `ctr snapshots mounts` and `snapshots ls`, created, updated, args),
`images --json` with `ctr images ls`, `diff --json` with what the scenario wrote.

Needs root, containerd + ctr, runc and busybox-static (skipped otherwise); about 10 s.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import tree_digest
from private_containerd import (
    ContainerdError,
    PrivateContainerd,
    capture_module,
    missing_prerequisites,
    static_busybox,
)
from test_live_dockerd import pensieve_cli, settled_digests

from pensieve.times import parse_rfc3339

pytestmark = pytest.mark.live

IMAGE = "docker.io/pensieve/live-app:1.0"
NAMESPACES = ("default", "k8s.io")
CONTAINERS = ("c-run", "c-exit", "c-new")
STOPPED = ("c-exit", "c-new")  # their snapshots do not change while the daemon runs
# runc makes the spec's mount points the image lacks in the rootfs (the snapshot's upper dir)
RUNC_MOUNTPOINTS = {"/dev": "added", "/proc": "added", "/run": "added", "/sys": "added"}
PLANT = "echo 'planted in {ns}' > /root/planted.txt; rm /etc/motd; mkdir /tmp/work"


# ---- the private daemon and the scenario ----------------------------------------------------


@pytest.fixture(scope="module")
def daemon():
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="plctr.", dir="/tmp"))  # short: socket paths < 108 bytes
    tmp.chmod(0o755)
    d = PrivateContainerd(tmp)
    try:
        d.start()
        yield d
    except ContainerdError as exc:
        pytest.fail(str(exc))
    finally:
        problems = d.teardown()
        assert not problems, problems


@dataclass
class Recorded:
    """ctr's answers, taken while the daemon ran (per namespace)."""

    info: dict[str, dict[str, dict]]  # ns -> id -> `ctr containers info`
    images: dict[str, list[dict]]  # ns -> `ctr images ls` rows
    tasks: dict[str, dict[str, tuple[int, str]]]  # ns -> id -> (pid, status)
    parents: dict[str, dict[str, str | None]]  # ns -> snapshot key -> parent key (`snapshots ls`)
    upper_ids: dict[str, dict[str, str]]  # ns -> container id -> snapshot id of its upperdir


def _populate(d: PrivateContainerd, ns: str, image_tar: Path) -> None:
    d.out("images", "import", str(image_tar), ns=ns)
    d.out("images", "label", IMAGE, f"org.pensieve.namespace={ns}", ns=ns)
    d.out(
        "run", "-d", *d.run_opts(ns, "c-run"), "--label", "org.pensieve.role=running",
        "--label", f"org.pensieve.ns={ns}", "--env", "APP_MODE=live", IMAGE, "c-run", "sleep", "100000",
        ns=ns,
    )  # fmt: skip
    d.wait_status(ns, "c-run", "RUNNING")
    d.out("tasks", "exec", "--exec-id", "plant", "c-run", "sh", "-c", PLANT.format(ns=ns), ns=ns)
    d.out(
        "run", "-d", *d.run_opts(ns, "c-exit"), "--label", "org.pensieve.role=exited", IMAGE, "c-exit",
        "sh", "-c", "echo finished > /tmp/result.txt; exit 3",
        ns=ns,
    )  # fmt: skip
    d.wait_status(ns, "c-exit", "STOPPED")
    d.out(
        "containers", "create", "--label", "org.pensieve.role=created", "--label", "org.pensieve.note=never",
        IMAGE, "c-new", "sleep", "1",
        ns=ns,
    )  # fmt: skip


def _upper_id(d: PrivateContainerd, ns: str, key: str) -> str:
    """The overlayfs snapshot id of KEY, from the mount ctr would make (`upperdir=.../snapshots/N/fs`)."""
    text = d.out("snapshots", "mounts", "/mnt", key, ns=ns)
    m = re.search(r"upperdir=[^,\s]*/snapshots/(\d+)/fs", text)
    assert m, text
    return m.group(1)


@pytest.fixture(scope="module")
def engine(daemon) -> Recorded:
    d = daemon
    busybox = static_busybox()
    assert busybox
    image_tar = d.tmp / "image.tar"
    capture_module("containerd_image").main(busybox, str(image_tar), IMAGE)
    table = capture_module("containerd_record").table
    rec = Recorded({}, {}, {}, {}, {})
    try:
        for ns in NAMESPACES:
            _populate(d, ns, image_tar)
            ids = d.out("containers", "ls", "-q", ns=ns).split()
            rec.info[ns] = {cid: json.loads(d.out("containers", "info", cid, ns=ns)) for cid in ids}
            rec.images[ns] = table(
                d.out("images", "ls", ns=ns), ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]
            )
            rec.tasks[ns] = d.tasks(ns)
            snaps = table(d.out("snapshots", "ls", ns=ns), ["KEY", "PARENT", "KIND"])
            rec.parents[ns] = {row["KEY"]: row["PARENT"] or None for row in snaps}
            rec.upper_ids[ns] = {cid: _upper_id(d, ns, rec.info[ns][cid]["SnapshotKey"]) for cid in ids}
    except ContainerdError as exc:
        pytest.fail(str(exc))
    assert sorted(rec.info["default"]) == sorted(CONTAINERS)
    return rec


# ---- comparisons ----------------------------------------------------------------------------


def cli_json(*args: str):
    return json.loads(pensieve_cli(*args, "--json"))


def check_containers(source: Path, rec: Recorded) -> None:
    got = {(c["namespace"], c["id"]): c for c in cli_json("containers", str(source))}
    want = {(ns, cid): info for ns in NAMESPACES for cid, info in rec.info[ns].items()}
    assert sorted(got) == sorted(want)
    for (ns, cid), info in want.items():
        c = got[(ns, cid)]
        assert c["engine"] == "containerd" and c["problems"] == [], (ns, cid, c["problems"])
        assert c["image"] == info["Image"] == IMAGE
        assert c["labels"] == info["Labels"], (ns, cid)
        assert c["storage_driver"] == info["Snapshotter"] == "overlayfs"
        assert parse_rfc3339(c["created"]) == parse_rfc3339(info["CreatedAt"])
        assert parse_rfc3339(c["updated"]) == parse_rfc3339(info["UpdatedAt"])
        assert c["command"] == info["Spec"]["process"]["args"]
        assert c["env"] == info["Spec"]["process"].get("env", [])
        # the snapshot key: its overlay upper dir is the RW layer, its parents the image layers
        assert c["rw_layer"] == rec.upper_ids[ns][cid], (ns, cid)
        chain, key = [], rec.parents[ns][info["SnapshotKey"]]
        while key is not None:
            chain.append(key)
            key = rec.parents[ns][key]
        assert [x["chain_id"] for x in c["layers"][:-1]] == chain[::-1], (ns, cid)
        assert [x["role"] for x in c["layers"]] == ["image"] * len(chain) + ["rw"]
        check_state(c, rec.tasks[ns].get(cid))


def check_state(c: dict, task: tuple[int, str] | None) -> None:
    """A container ctr listed a task for has that task's pid (init.pid in its bundle); its status is
    'unknown' live and at rest alike (containerd 1.6 keeps a task's status and exit code in the
    shim's memory, not on disk); one without a task is 'created'."""
    if task is None:
        assert c["state"] == "created" and c["pid"] is None, c["id"]
    else:
        assert (c["state"], c["pid"], c["exit_code"]) == ("unknown", task[0], None), (c["id"], task)


def check_images(source: Path, rec: Recorded) -> None:
    got = cli_json("images", str(source))
    want = {(ns, row["REF"]): row for ns in NAMESPACES for row in rec.images[ns]}
    assert sorted((i["namespace"], t) for i in got for t in i["tags"]) == sorted(want)
    for img in got:
        row = want[(img["namespace"], img["tags"][0])]
        assert img["digests"] == [f"{row['REF'].rsplit(':', 1)[0]}@{row['DIGEST']}"]
        assert f"{img['os']}/{img['architecture']}" == row["PLATFORMS"]
        assert len(img["diff_ids"]) == 2 and None not in img["cache_ids"]


def check_diffs(source: Path, rec: Recorded) -> None:
    for ns in NAMESPACES:
        run = {c["path"]: c for c in cli_json("diff", str(source), f"{ns}/c-run")}
        assert run["/root/planted.txt"]["change"] == "added"
        assert run["/etc/motd"]["change"] == "deleted"
        assert run["/tmp/work"]["change"] == "added" and run["/tmp/work"]["type"] == "dir"
        assert {p: c["change"] for p, c in run.items()} == {
            "/root": "modified", "/root/planted.txt": "added", "/etc": "modified", "/etc/motd": "deleted",
            "/tmp": "modified", "/tmp/work": "added",
        } | RUNC_MOUNTPOINTS  # fmt: skip
        assert (
            pensieve_cli("fs", str(source), f"{ns}/c-run", "cat", "/root/planted.txt") == f"planted in {ns}\n"
        )
        exited = {c["path"]: c["change"] for c in cli_json("diff", str(source), f"{ns}/c-exit")}
        assert exited == {"/tmp/result.txt": "added", "/tmp": "modified"} | RUNC_MOUNTPOINTS, exited
        assert cli_json("diff", str(source), f"{ns}/c-new") == []


def run_every_command(source: Path, tmp: Path) -> None:
    src = str(source)
    for args in (
        ["roots", src],
        ["verify", src],
        ["verify", src, f"default/{IMAGE}", "--json"],
        ["pods", src],
        ["containers", src],
        ["images", src, "--csv"],
        ["history", src, f"k8s.io/{IMAGE}"],
        ["diff", src, "default/c-run", "--jsonl"],
        ["fs", src, "default/c-run", "ls", "-R", "/"],
        ["fs", src, "k8s.io/c-run", "find", "--layer", "rw", "--hash"],
        ["fs", src, "default/c-exit", "export", str(tmp / "c-exit.tar")],
    ):
        pensieve_cli(*args, ok=(0, 5))


def entry_table(top: Path) -> dict[str, tuple]:
    """Each entry below TOP: (mode, size, mtime, ctime, atime), read without moving atimes."""
    import os

    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), top)] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_atime_ns,
            )
    return out


def moved_entries(before: dict[str, tuple], after: dict[str, tuple]) -> dict[str, str]:
    """Which entries differ and in what (gone, new, or the fields), to tell the daemon's own work
    (new or removed blobs, directory mtimes) from a read that moved an atime."""
    fields = ("mode", "size", "mtime", "ctime", "atime")
    out = {}
    for p in sorted(before.keys() | after.keys()):
        a, b = before.get(p), after.get(p)
        if a != b:
            out[p] = (
                "gone"
                if b is None
                else "new"
                if a is None
                else ",".join(f for f, x, y in zip(fields, a, b, strict=True) if x != y)
            )
    return out


def stable_paths(d: PrivateContainerd, rec: Recorded) -> list[Path]:
    """What the running daemon leaves alone: content blobs, image layer and stopped containers' snapshots."""
    snaps = d.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    paths = {d.root / "io.containerd.content.v1.content" / "blobs"}
    for ns in NAMESPACES:
        paths |= {snaps / rec.upper_ids[ns][cid] for cid in STOPPED}
    image_ids = {p.name for p in snaps.iterdir()} - {
        i for ns in NAMESPACES for i in rec.upper_ids[ns].values()
    }
    paths |= {snaps / i for i in image_ids}
    assert all(p.exists() for p in paths), sorted(paths)
    return sorted(paths)


# ---- the tests ------------------------------------------------------------------------------


def test_live_root_agrees_with_ctr(daemon, engine, tmp_path):
    assert daemon.running, "the daemon must still run for the live case"
    watched = stable_paths(daemon, engine)
    before = settled_digests(watched)
    entries_before = {str(p): entry_table(p) for p in watched}

    check_containers(daemon.evidence, engine)
    check_images(daemon.evidence, engine)
    check_diffs(daemon.evidence, engine)
    run_every_command(daemon.evidence, tmp_path)

    after = {str(p): tree_digest(p) for p in watched}
    changed = sorted(p for p in before if before[p] != after[p])
    how = {p: moved_entries(entries_before[p], entry_table(Path(p))) for p in changed}
    assert not changed, f"pensieve changed parts of a live containerd root: {how}"
    assert daemon.running and daemon.tasks("default")["c-run"][1] == "RUNNING"


def test_root_at_rest_agrees_and_is_never_written(daemon, engine, tmp_path):
    d = daemon
    how = d.stop()
    assert how == "terminated", f"containerd did not stop on SIGTERM ({how}):\n{d.log_tail()}"
    problems = d.power_off()
    assert not problems, problems
    assert d.our_pids() == [] and d.mounts_below() == []

    before = settled_digests([d.evidence])

    check_containers(d.evidence, engine)
    check_images(d.evidence, engine)
    check_diffs(d.evidence, engine)
    run_every_command(d.evidence, tmp_path)

    assert tree_digest(d.evidence) == before[str(d.evidence)], "pensieve changed the containerd evidence"
