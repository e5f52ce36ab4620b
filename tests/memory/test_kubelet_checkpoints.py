"""The kubelet's forensic checkpoints (KEP-2008) as memory sources: one archive, and a host root's
kubelet checkpoint directories (pensieve.memory.sources).

Reference: tests/fixtures/kubelet-checkpoint (fixtures/capture/kubelet_checkpoint_capture.sh) -- a
real archive containerd 2.1's CRI wrote with criu 4.2.1, and what CRI ContainerStatus, tar and crit
said about it (expected.json).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, time_bound

from pensieve.engines.docker import LookupFailed
from pensieve.formats.criu import CriuImageError
from pensieve.memory import views
from pensieve.memory.sources import (
    SourceError,
    kubelet_checkpoints,
    kubelet_roots,
    open_source,
    parse_kubelet_name,
)

KC = FIXTURE_ROOT / "kubelet-checkpoint"
EXPECTED = json.loads((KC / "expected.json").read_text())
ARCHIVE = KC / EXPECTED["archive"]
STATUS = EXPECTED["cri"]["container_status"][EXPECTED["container_id"]]["status"]


def tree_state(root: Path) -> dict:
    """Every name below ROOT with its type, mode, mtime and content hash: what 'unchanged' means."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_size, digest)
    return out


@pytest.fixture
def host_root(tmp_path) -> Path:
    """A node's filesystem with the archive where the kubelet keeps it."""
    d = tmp_path / "node" / "var" / "lib" / "kubelet" / "checkpoints"
    d.mkdir(parents=True)
    shutil.copy2(ARCHIVE, d / ARCHIVE.name)
    return tmp_path / "node"


def test_identity_from_the_dumps_and_the_name():
    with open_source(str(ARCHIVE)) as src:
        i = src.info
        assert (i.engine, i.pod, i.namespace, i.k8s_container) == (
            "containerd",
            STATUS["labels"]["io.kubernetes.pod.name"],
            STATUS["labels"]["io.kubernetes.pod.namespace"],
            STATUS["metadata"]["name"],
        )
        assert i.pod_uid == STATUS["labels"]["io.kubernetes.pod.uid"]
        assert i.container_id == EXPECTED["container_id"] == STATUS["id"]
        assert i.image == STATUS["image"]["image"] and i.image_id == STATUS["image_ref"]
        assert i.labels == STATUS["labels"]
        assert i.name == ARCHIVE.name
        assert i.checkpointed is not None and i.created is not None and i.created < i.checkpointed
        stamp = parse_kubelet_name(ARCHIVE.name)["time"]
        assert 0 <= i.checkpointed - stamp < 2_000_000_000  # the name's time is to the second
        assert i.annotations["io.kubernetes.cri.sandbox-id"] == EXPECTED["pod_sandbox_id"]
        assert "status.dump" in i.members and i.compression is None
        assert i.problems == []


def test_processes_files_and_the_listener_match_crit():
    crit = EXPECTED["crit_images"]
    with open_source(str(ARCHIVE)) as src:
        procs = views.processes(src.checkpoint)
        assert [(p.pid, p.ppid, p.pgid, p.sid) for p in procs] == [
            (e["pid"], e["ppid"], e["pgid"], e["sid"]) for e in crit["pstree"]["entries"]
        ]
        assert [p.comm for p in procs] == [line.split()[-1] for line in EXPECTED["crit"]["ps"][1:]]
        assert procs[1].cmdline[:2] == ["busybox", "httpd"]
        (isk,) = [e["isk"] for e in crit["files"]["entries"] if "isk" in e]
        (sock,) = views.sockets(src.checkpoint)
        assert (sock.proto, sock.state, sock.src, sock.src_port, sock.ino) == (
            isk["proto"].lower(),
            isk["state"],
            isk["src_addr"][0],
            isk["src_port"],
            isk["ino"],
        )
        assert sock.src_port == EXPECTED["listen_port"] and sock.pids == [procs[1].pid]
        ours = {}
        for f in views.files(src.checkpoint):
            key = str(f.fd) if f.fd is not None else f.type
            if key != "exe":
                ours[(f.pid, key)] = f.target
        assert ours[(procs[1].pid, "3")] == f"socket:[{isk['ino']}]"
    # crit x DIR fds: "PID" then "\t   FD: TARGET" lines (pipes as pipe[N], sockets as INETSK.<id>)
    theirs, pid = {}, None
    for line in EXPECTED["crit"]["fds"]:
        if not line.startswith("\t"):
            pid = int(line)
            continue
        fd, target = (part.strip() for part in line.split(":", 1))
        theirs[(pid, fd)] = target
    assert set(ours) == set(theirs)
    for key, target in theirs.items():
        if target.startswith("pipe["):
            target = target.replace("pipe[", "pipe:[")
        elif target.startswith("INETSK."):
            continue
        assert ours[key] == target, key


def test_rootfs_diff_is_gzip_and_its_whiteout_a_deletion():
    listed = {line.split()[-1].rstrip("/") for line in EXPECTED["rootfs_diff"]}
    assert "etc/.wh.motd" in listed and "root/evidence.txt" in listed
    with open_source(str(ARCHIVE)) as src:
        changes = {c.path: c for c in src.changes()}
    assert changes["/etc/motd"].change == "deleted" and "/etc/.wh.motd" not in changes
    written = changes["/root/evidence.txt"]
    assert written.change == "added" and written.size == len(b"written by the counter\n")
    assert written.sha256 == hashlib.sha256(b"written by the counter\n").hexdigest()
    assert set(changes) == {"/" + n.replace(".wh.", "") for n in listed}


def test_parse_kubelet_name():
    p = parse_kubelet_name("checkpoint-counters_default-counter-2023-02-13T16:20:09Z.tar")
    assert (p["pod"], p["namespace"], p["container"]) == ("counters", "default", "counter")
    # a namespace with a dash: told apart by what the dumps say, else left open
    name = "checkpoint-coredns-5d78c9869d-abcde_kube-system-core-dns-2024-03-04T12:20:30+01:00.tar"
    p = parse_kubelet_name(name)
    assert p["pod"] == "coredns-5d78c9869d-abcde" and p["namespace"] is None
    assert p["namespace_container"] == "kube-system-core-dns"
    assert parse_kubelet_name(name, namespace="kube-system")["container"] == "core-dns"
    assert parse_kubelet_name(name, container="core-dns")["namespace"] == "kube-system"
    assert p["time"] == 1709551230 * 10**9
    for bad in (
        "checkpoint-x.tar",
        "dump.tar",
        "checkpoint-a_b-c-2024-13-99.tar",
        "checkpoint-a_b-c-now.tar",
    ):
        assert parse_kubelet_name(bad) is None


def test_host_root_finds_and_opens_the_archives(host_root, tmp_path):
    before = tree_state(host_root)
    (found,) = kubelet_checkpoints(str(host_root))
    assert (found.pod, found.namespace, found.k8s_container, found.tasks) == (
        "counters",
        "default",
        "counter",
        2,
    )
    with open_source(str(host_root)) as src:  # the only archive
        assert src.info.source == str(host_root) and src.info.name == ARCHIVE.name
        assert len(views.processes(src.checkpoint)) == 2
        assert str(host_root.resolve()) in src.boundaries()
    with open_source(str(host_root), checkpoint=ARCHIVE.name.removesuffix(".tar")) as src:
        assert src.info.pod == "counters"
    with pytest.raises(LookupFailed, match="no kubelet checkpoint"):
        open_source(str(host_root), checkpoint="checkpoint-nope")
    assert tree_state(host_root) == before


def test_kubelet_root_dir_from_the_flags_file(host_root):
    moved = host_root / "data" / "kubelet"
    moved.mkdir(parents=True)
    shutil.move(host_root / "var" / "lib" / "kubelet" / "checkpoints", moved / "checkpoints")
    assert kubelet_checkpoints(str(host_root)) == []
    flags = host_root / "var" / "lib" / "kubelet" / "kubeadm-flags.env"
    flags.write_text(
        'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/c.sock --root-dir=/data/kubelet"\n'
    )
    k3s = host_root / "etc" / "rancher" / "k3s"
    k3s.mkdir(parents=True)
    (k3s / "config.yaml").write_text('kubelet-arg:\n  - "root-dir=/srv/k"\n  - "cert-dir=/x"\n')
    (host_root / "srv" / "k").mkdir(parents=True)
    from pensieve.evidence import open_evidence

    with open_evidence(str(host_root)) as ev:
        assert kubelet_roots(ev) == ["/var/lib/kubelet", "/data/kubelet", "/srv/k"]
    (found,) = kubelet_checkpoints(str(host_root))
    assert found.checkpoint.endswith(f"/data/kubelet/checkpoints/{ARCHIVE.name}:checkpoint")


def test_several_archives_need_a_name_and_a_bad_one_is_a_problem(host_root):
    d = host_root / "var" / "lib" / "kubelet" / "checkpoints"
    data = ARCHIVE.read_bytes()
    cut = "checkpoint-web-7f9_shop-app-2026-12-03T15:00:00Z.tar"
    (d / cut).write_bytes(data[: len(data) // 3])
    (d / "notes.txt").write_text("not an archive")
    rows = {r.name: r for r in kubelet_checkpoints(str(host_root))}
    assert set(rows) == {ARCHIVE.name, cut}
    assert rows[ARCHIVE.name].problems == [] and rows[ARCHIVE.name].tasks == 2
    assert rows[cut].problems and (rows[cut].pod, rows[cut].namespace) == ("web-7f9", "shop")
    with pytest.raises(SourceError, match="--checkpoint " + cut):
        open_source(str(host_root))


def _plain_diff() -> bytes:
    """rootfs-diff.tar of the archive, decompressed (a CRI-O style plain one)."""
    with tarfile.open(ARCHIVE) as tf:
        return gzip.decompress(tf.extractfile("rootfs-diff.tar").read())


def _rewrite(tmp_path: Path, name: str, replace: dict[str, bytes | None]) -> Path:
    """The fixture archive with members replaced (None: dropped)."""
    out = tmp_path / name
    with tarfile.open(ARCHIVE) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            if m.name in replace:
                data = replace[m.name]
                if data is None:
                    continue
                m.size = len(data)
                dst.addfile(m, io.BytesIO(data))
            else:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    return out


def test_plain_rootfs_diff_and_deleted_files(tmp_path):
    path = _rewrite(
        tmp_path,
        ARCHIVE.name,
        {"rootfs-diff.tar": _plain_diff(), "deleted.files": None},
    )
    with tarfile.open(path, "a") as tf:
        data = json.dumps(["/etc/motd", "/srv/app/version.txt"]).encode()
        ti = tarfile.TarInfo("deleted.files")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    with open_source(str(path)) as src:
        deleted = sorted((c.path, c.layer) for c in src.changes() if c.change == "deleted")
    assert deleted == [("/etc/motd", "rootfs-diff.tar"), ("/srv/app/version.txt", "deleted.files")]


def test_name_and_dumps_disagree(tmp_path):
    path = tmp_path / "checkpoint-other_prod-counter-2026-12-03T14:40:17Z.tar"
    shutil.copy2(ARCHIVE, path)
    with open_source(str(path)) as src:
        assert src.info.pod == "counters"
        assert any("file name says pod 'other'" in p for p in src.info.problems)


def test_hostile_kubelet_archives(tmp_path):
    """Truncations and byte mutations of the real archive (and of its rootfs-diff.tar and dumps):
    each opens, or is refused (SourceError, CriuImageError: exit 3), in bounded time; the listing
    keeps the others."""
    data = ARCHIVE.read_bytes()
    rng = random.Random(2008)
    node = tmp_path / "node" / "var" / "lib" / "kubelet" / "checkpoints"
    node.mkdir(parents=True)
    cases: list[bytes] = [data[:n] for n in (0, 1, 511, 512, 1024, 4096, len(data) // 2, len(data) - 1024)]
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append(bytes(mutated))
    diff = gzip.compress(_plain_diff())
    cases.append(_rewrite(tmp_path, "a.tar", {"rootfs-diff.tar": diff[: len(diff) // 2]}).read_bytes())
    cases.append(
        _rewrite(tmp_path, "b.tar", {"status.dump": b'{"labels": [1, 2], "metadata": 7'}).read_bytes()
    )
    cases.append(_rewrite(tmp_path, "c.tar", {"config.dump": b"\xff" * 64, "spec.dump": b"[]"}).read_bytes())
    for n, case in enumerate(cases):
        path = tmp_path / f"checkpoint-p{n}_ns-c-2026-12-03T14:40:17Z.tar"
        path.write_bytes(case)
        with time_bound(20, f"case {n}"):
            try:
                with open_source(str(path)) as src:
                    views.processes(src.checkpoint)
                    views.sockets(src.checkpoint)
                    views.files(src.checkpoint)
                    src.changes()
            except (SourceError, CriuImageError):  # refused whole, as `mem` does (exit 3)
                pass
        if n % 8 == 0:
            shutil.copy2(path, node / path.name)
    shutil.copy2(ARCHIVE, node / ARCHIVE.name)
    with time_bound(60, "the listing"):
        rows = {r.name: r for r in kubelet_checkpoints(str(tmp_path / "node"))}
    assert rows[ARCHIVE.name].problems == [] and rows[ARCHIVE.name].tasks == 2
    assert len(rows) == len(os.listdir(node))
