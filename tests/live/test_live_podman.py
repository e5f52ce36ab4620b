"""pensieve against a LIVE, private, rootful Podman (Debian 12: 4.3), compared with podman's answers.

A module-scoped fixture runs podman on private paths (tests/live/private_podman.py: --root,
--runroot, --tmpdir, overlay, cgroupfs, file events, private containers.conf/storage.conf/
registries.conf, cgroup parent, ``--network none``), ``podman import``s a busybox-static rootfs
(no network) and makes:

* ``web``  running, into which ``podman exec`` wrote /root/planted.txt, deleted /etc/motd and
           made /tmp/work;
* ``job``  wrote /tmp/result.txt and exited with status 3;
* ``idle`` created, never started.

podman's own answers (``ps -a --format json``, ``container inspect``, ``diff --format json``,
``images --format json``) are taken right then. ``test_live_graphroot_agrees_with_podman`` reads
the graphroot while ``web`` runs (its overlay mounted); ``test_graphroot_at_rest_agrees_and_is_never
_written`` kills only our conmon and container pids (a power cut), unmounts below the temp dir and
checks the same answers offline, and that no pensieve command changes a byte, time or xattr.

Needs root, podman + conmon + runc and busybox-static (skipped otherwise); about 15 s.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import tree_digest
from private_containerd import static_busybox
from private_podman import PodmanError, PrivatePodman, missing_prerequisites
from test_live_dockerd import pensieve_cli, settled_digests

from pensieve import api
from pensieve.engines.podman.diff import mark_podman_silent
from pensieve.times import parse_rfc3339

pytestmark = pytest.mark.live

IMAGE = "localhost/pensieve/live:1.0"
NAMES = ("web", "job", "idle")
DIFF_CHANGES = {"added": "added", "changed": "modified", "deleted": "deleted"}
PLANT = "echo 'planted live' > /root/planted.txt; rm /etc/motd; mkdir /tmp/work"


@pytest.fixture(scope="module")
def podman():
    why = missing_prerequisites() or (None if static_busybox() else "busybox-static is not installed")
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="plpm.", dir="/tmp"))
    tmp.chmod(0o755)
    p = PrivatePodman(tmp)
    try:
        p.setup()
        yield p
    finally:
        problems = p.teardown()
        assert not problems, problems


@dataclass
class Recorded:
    """podman's answers, taken while `web` ran."""

    ps: list[dict]
    inspect: dict[str, dict]  # name -> podman container inspect
    diff: dict[str, dict]  # name -> podman diff --format json
    images: list[dict]


def _image(p: PrivatePodman) -> None:
    busybox = static_busybox()
    assert busybox
    root = p.tmp / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(Path(busybox).read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "sleep", "echo", "cat", "rm", "mkdir", "ls"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("etc", "root", "tmp"):
        (root / d).mkdir()
    (root / "etc" / "motd").write_text("pensieve live podman\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    tar = p.tmp / "rootfs.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tar), "."], check=True)
    p.run("import", "--change", 'CMD ["/bin/sh"]', "--change", "LABEL org.pensieve.image=live",
          "-m", "busybox-static rootfs", str(tar), IMAGE)  # fmt: skip


@pytest.fixture(scope="module")
def engine(podman) -> Recorded:
    p = podman
    try:
        _image(p)
        flags = p.container_flags()
        p.run("run", "-d", "--name", "web", *flags, "--label", "org.pensieve.role=running",
              "--env", "APP_MODE=live", IMAGE, "sleep", "100000")  # fmt: skip
        p.run("exec", "web", "sh", "-c", PLANT)
        res = p.run("run", "--name", "job", *flags, "--label", "org.pensieve.role=exited",
                    IMAGE, "sh", "-c", "echo finished > /tmp/result.txt; exit 3", check=False)  # fmt: skip
        assert res.returncode == 3, res.stderr
        p.run("create", "--name", "idle", *flags, "--label", "org.pensieve.role=created", IMAGE, "sleep", "1")
        ps = p.json("ps", "-a", "--format", "json")
        rec = Recorded(ps, {}, {}, p.json("images", "--format", "json"))
        for row in ps:
            name = row["Names"][0]
            rec.inspect[name] = p.json("container", "inspect", row["Id"])[0]
            rec.diff[name] = p.json("diff", "--format", "json", row["Id"]) or {}
    except PodmanError as exc:
        pytest.fail(str(exc))
    assert sorted(rec.inspect) == sorted(NAMES)
    assert rec.inspect["web"]["State"]["Status"] == "running"
    return rec


# ---- comparisons ----------------------------------------------------------------------------


def when(text: str | None) -> int | None:
    """podman's Go time as pensieve keeps it (the zero time is "never": None)."""
    return None if not text or text.startswith("0001-01-01") else parse_rfc3339(text)


def check_containers(source: Path, rec: Recorded) -> None:
    """The library's containers against `podman ps -a` and `podman inspect`."""
    host = api.open_host(str(source))
    by_id = {c.id: c for c in host.containers()}
    assert sorted(by_id) == sorted(row["Id"] for row in rec.ps)
    for row in rec.ps:
        c, want = by_id[row["Id"]], rec.inspect[row["Names"][0]]
        assert c.engine == "podman" and c.problems == [], (c.name, c.problems)
        assert c.name == want["Name"] == row["Names"][0]
        assert c.image == want["ImageName"] == row["Image"] == IMAGE
        assert c.image_id == want["Image"] == row["ImageID"]
        assert c.state == row["State"] == want["State"]["Status"]
        assert c.exit_code == want["State"]["ExitCode"] == row["ExitCode"]
        assert c.pid == (want["State"]["Pid"] or None)
        assert c.created == parse_rfc3339(want["Created"])
        assert c.started == when(want["State"]["StartedAt"])
        assert c.finished == when(want["State"]["FinishedAt"])
        assert c.labels == want["Config"]["Labels"] == row["Labels"]
        assert sorted(c.env) == sorted(want["Config"]["Env"])
        assert c.rw_layer and want["GraphDriver"]["Data"]["UpperDir"].endswith(f"/{c.rw_layer}/diff")
        lowers = want["GraphDriver"]["Data"].get("LowerDir", "")
        lower = [x.rsplit("/", 2)[-2] for x in lowers.split(":") if x]
        assert [layer.cache_id for layer in c.layers] == lower[::-1] + [c.rw_layer]


def check_cli(source: Path, rec: Recorded) -> None:
    """The CLI's containers, images and diff JSON against podman's."""
    got = {c["name"]: c for c in json.loads(pensieve_cli("containers", str(source), "--json"))}
    assert {n: c["state"] for n, c in got.items()} == {r["Names"][0]: r["State"] for r in rec.ps}
    images = json.loads(pensieve_cli("images", str(source), "--json"))
    assert sorted(i["id"] for i in images) == sorted(i["Id"] for i in rec.images)
    assert [t for i in images for t in i["tags"]] == [IMAGE]
    host = api.open_host(str(source))
    for name in NAMES:
        result = api.diff(host, name)
        mark_podman_silent(result.changes)
        mine = {(c.change, c.path) for c in result.changes if c.engine_reports}
        podmans = {(DIFF_CHANGES[k], x) for k, paths in rec.diff[name].items() for x in paths or []}
        assert mine == podmans, name
        assert result.problems == []
        rows = json.loads(pensieve_cli("diff", str(source), name, "--json"))
        cli = {(c["change"], c["path"]) for c in rows}
        assert mine <= cli
    assert pensieve_cli("fs", str(source), "web", "cat", "/root/planted.txt") == "planted live\n"
    assert ("deleted", "/etc/motd") in {(c["change"], c["path"]) for c in json.loads(
        pensieve_cli("diff", str(source), "web", "--json"))}  # fmt: skip


def run_every_command(source: Path, tmp: Path) -> None:
    src = str(source)
    for args in (
        ["roots", src],
        ["verify", src],
        ["containers", src],
        ["images", src, "--csv"],
        ["history", src, IMAGE],
        ["diff", src, "web", "--jsonl"],
        ["fs", src, "web", "ls", "-R", "/"],
        ["fs", src, "job", "find", "--layer", "rw", "--hash"],
        ["fs", src, "job", "export", str(tmp / "job.tar")],
    ):
        pensieve_cli(*args, ok=(0, 5))


# ---- the tests ------------------------------------------------------------------------------


def test_live_graphroot_agrees_with_podman(podman, engine, tmp_path):
    layers = podman.evidence / "overlay-layers"
    images = podman.evidence / "overlay-images"
    before = settled_digests([layers, images])
    check_containers(podman.evidence, engine)
    check_cli(podman.evidence, engine)
    run_every_command(podman.evidence, tmp_path)
    assert settled_digests([layers, images]) == before, "pensieve changed a live graphroot's metadata"
    state = podman.json("container", "inspect", "web")[0]["State"]
    assert state["Status"] == "running" and state["Pid"] == engine.inspect["web"]["State"]["Pid"]


def test_graphroot_at_rest_agrees_and_is_never_written(podman, engine, tmp_path):
    problems = podman.power_off()
    assert not problems, problems
    assert podman.our_pids() == [] and podman.mounts_below() == []
    before = settled_digests([podman.evidence])
    check_containers(podman.evidence, engine)  # libpod's state still says running, as podman answered
    check_cli(podman.evidence, engine)
    run_every_command(podman.evidence, tmp_path)
    assert tree_digest(podman.evidence) == before[str(podman.evidence)], "pensieve changed the graphroot"
