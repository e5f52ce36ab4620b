"""pensieve against a real dockerd's data root, compared with the engine's own answers.

The data root and the answers (`docker inspect`, `docker diff`, `docker history`, `docker images`)
were captured together by fixtures/capture/docker_capture.sh from dockerd 20.10 (overlay2, and
the legacy overlay driver), then the host was "crashed" (kill -9) so configs still say running.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURES, load_json, run_cli, tree_digest

from pensieve import api
from pensieve.times import iso_ns, parse_rfc3339

EXPECTED = FIXTURES / "expected"
SCENARIO = load_json(EXPECTED / "scenario.json")
LIVE_CONTAINERS = sorted(n for n, c in SCENARIO["containers"].items() if not c.get("removed"))


def inspect(name: str, expected: Path = EXPECTED) -> dict:
    data = load_json(expected / "containers" / f"{name}.inspect.json")
    return data[0] if isinstance(data, list) else data


def docker_diff(name: str, expected: Path = EXPECTED) -> set[tuple[str, str]]:
    ops = {"A": "added", "C": "modified", "D": "deleted"}
    out = set()
    for line in (expected / "containers" / f"{name}.diff.txt").read_text().splitlines():
        if line.strip():
            op, path = line.split(" ", 1)
            out.add((ops[op], path))
    return out


def run(*args: str) -> tuple[int, str, str]:
    return run_cli(*args)


@pytest.fixture(scope="module")
def host(overlay2_root):
    return api.open_docker(str(overlay2_root))


# ---- inventory ------------------------------------------------------------------------------


def test_finds_every_container_with_engine_identity(host):
    by_name = {c.name: c for c in host.containers()}
    assert sorted(by_name) == LIVE_CONTAINERS
    for name in LIVE_CONTAINERS:
        want = inspect(name)
        c = by_name[name]
        assert c.id == want["Id"]
        assert c.image == want["Config"]["Image"]
        assert c.image_id == want["Image"]
        assert c.engine == "docker"
        assert c.created == parse_rfc3339(want["Created"])
        assert c.env == want["Config"]["Env"]
        assert c.labels == (want["Config"]["Labels"] or {})
        assert c.log_driver == want["HostConfig"]["LogConfig"]["Type"]
        assert c.storage_driver == want["Driver"]
        assert c.rw_layer and want["GraphDriver"]["Data"]["UpperDir"].endswith(f"/{c.rw_layer}/diff")
        assert c.problems == []


def test_states_match_what_the_engine_left_on_disk(host):
    by_name = {c.name: c for c in host.containers()}
    for name in LIVE_CONTAINERS:
        disk = SCENARIO["containers"][name]["on_disk_state_after_crash"]
        c = by_name[name]
        assert c.exit_code == disk["ExitCode"]
        assert c.oom_killed == disk["OOMKilled"]
        if disk["Running"]:
            want = "paused" if disk["Paused"] else "restarting" if disk["Restarting"] else "running"
            assert c.state == want
            assert c.pid == (disk["Pid"] or None)
        elif disk["StartedAt"].startswith("0001"):
            assert c.state == "created"
        else:
            assert c.state == "exited"
    assert by_name["c-paused"].state == "paused"
    assert by_name["c-created"].state == "created"
    assert by_name["c-exited3"].exit_code == 3
    oom = SCENARIO["containers"]["c-oom"]["on_disk_state_after_crash"]["OOMKilled"]
    assert by_name["c-oom"].oom_killed is oom


def test_mounts_ports_and_risky_settings(host):
    by_name = {c.name: c for c in host.containers()}
    run_c = by_name["c-running"]
    want = inspect("c-running")
    got = {(m.type, m.destination) for m in run_c.mounts}
    for m in want["Mounts"]:
        assert (m["Type"], m["Destination"]) in got
    assert ("tmpfs", "/run/scratch") in got
    vol = next(m for m in run_c.mounts if m.type == "volume")
    assert vol.name == "pvol" and vol.host_path.endswith("/volumes/pvol/_data")
    assert run_c.cap_add == want["HostConfig"]["CapAdd"]
    assert run_c.restart_policy == want["HostConfig"]["RestartPolicy"]["Name"]
    assert "cap-add NET_ADMIN" in run_c.risks
    priv = by_name["c-priv"]
    assert priv.privileged
    joined = " | ".join(priv.risks)
    for needle in ("privileged", "host pid", "host network", "host ipc", "host root filesystem", "socket"):
        assert needle in joined, needle
    assert by_name["c-restarting"].restart_count == inspect("c-restarting")["RestartCount"] or (
        by_name["c-restarting"].restart_count >= 1
    )


def test_images_tags_layers_and_history(host):
    want_all = load_json(EXPECTED / "images" / "inspect.json")
    images = {i.id: i for i in host.images()}
    assert set(images) == {w["Id"] for w in want_all}
    for w in want_all:
        img = images[w["Id"]]
        assert img.diff_ids == w["RootFS"]["Layers"]
        assert sorted(img.tags) == sorted(w["RepoTags"] or [])
        assert img.cmd == w["Config"]["Cmd"]
        assert img.env == (w["Config"]["Env"] or [])
        assert all(img.cache_ids), "every layer resolves to a storage-driver directory"
    for tag in ("pensieve/base:1", "pensieve/app:1", "pensieve/app:2"):
        hist = load_json(EXPECTED / "images" / f"history-{tag.replace('/', '_').replace(':', '_')}.json")
        img = host.image(tag)
        # docker history lists newest first
        assert [s.created_by or "" for s in reversed(img.history)] == [h["CreatedBy"] for h in hist]
        for step, h in zip(reversed(img.history), hist, strict=True):
            if h["Size"] != "0B":  # a layer of 0 bytes (only a whiteout) is still a layer
                assert not step.empty_layer
        # each non-empty step is aligned with a layer that really holds its files
        non_empty = [s for s in img.history if not s.empty_layer]
        assert [s.diff_id for s in non_empty] == img.diff_ids


def test_volumes(host):
    vols = {v.name: v for v in host.volumes()}
    want = {v["Name"] for v in load_json(EXPECTED / "volumes" / "inspect.json")}
    assert set(vols) == want
    for w in load_json(EXPECTED / "volumes" / "inspect.json"):
        assert iso_ns(vols[w["Name"]].created)[:19] == w["CreatedAt"][:19]
        assert vols[w["Name"]].labels == (w["Labels"] or {})
    pvol = vols["pvol"]
    assert pvol.used_by == [inspect("c-running")["Id"]]
    assert pvol.file_count >= 1
    assert vols["orphan-vol"].used_by == []


# ---- diff ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LIVE_CONTAINERS)
def test_diff_agrees_with_docker_diff(host, name):
    result = api.diff(host, name)
    engine = {(c.change, c.path) for c in result.changes if c.engine_reports}
    assert engine == docker_diff(name)
    assert result.problems == []


def test_diff_says_more_than_docker(host):
    changes = {c.path: c for c in api.diff(host, "c-modified").changes}
    conf = changes["/etc/app.conf"]
    assert conf.change == "modified"
    assert "content" in conf.what_changed and "size" in conf.what_changed
    assert conf.sha256 and conf.lower["sha256"] and conf.sha256 != conf.lower["sha256"]
    assert conf.lower_layer and conf.lower_layer != conf.layer
    tool = changes["/opt/app/bin/tool"]
    assert tool.what_changed == ["mode"] and tool.mode == "0o4755"
    assert changes["/opt/app/config.ini"].what_changed == ["owner"]
    for deleted in ("/opt/app/sub/s1.txt", "/opt/app/sub/s2.txt"):
        assert changes[deleted].change == "deleted"
        assert "opaque" in changes[deleted].what_changed[0]
    implant = changes["/root/implant.sh"]
    assert implant.change == "added" and implant.type == "file" and implant.mode == "0o755"
    assert changes["/root/escape"].type == "symlink"


def test_diff_recover_copies_originals_out(host, tmp_path):
    result = api.diff(host, "c-modified")
    c = host.container("c-modified")
    manifest = api.recover(host.evidence, c.layers, result.changes, str(tmp_path / "rec")).entries
    by_path = {m["path"]: m for m in manifest}
    assert (tmp_path / "rec/opt/app/README.md").read_bytes()
    assert by_path["/opt/app/README.md"]["sha256"] == next(
        x.sha256 for x in result.changes if x.path == "/opt/app/README.md"
    )
    assert "/opt/data" in by_path and any(p.startswith("/opt/data/") for p in by_path)
    original = (tmp_path / "rec/etc/app.conf").read_bytes()
    view = api.view(host, c)
    with view.open("/etc/app.conf") as fh:
        current = fh.read()
    assert current.startswith(original) and current != original  # the container appended


def test_diff_on_legacy_overlay_driver(overlay_root):
    host = api.open_docker(str(overlay_root))
    exp = FIXTURES / "expected-overlay"
    for path in sorted((exp / "containers").glob("*.diff.txt")):
        name = path.name.removesuffix(".diff.txt")
        changes = api.diff(host, name).changes
        assert {(c.change, c.path) for c in changes if c.engine_reports} == docker_diff(name, exp)


# ---- layered view ---------------------------------------------------------------------------


def test_view_provenance_and_whiteouts(host):
    c = host.container("c-modified")
    v = api.view(host, c)
    names = v.listdir("/opt/app")
    assert "README.md" not in names and "x" not in names and "y" in names
    assert v.listdir("/opt/app/sub") == ["new.txt"]
    conf = v.stat("/etc/app.conf")
    assert conf.layer_role == "rw" and conf.layer == c.rw_layer
    assert conf.shadows and all(s != c.rw_layer for s in conf.shadows)
    passwd = v.stat("/etc/passwd")
    assert passwd.layer_role == "image" and passwd.shadows == []
    version = v.stat("/opt/app/VERSION")
    assert version.layer_role == "image" and "echo 2.0 > /opt/app/VERSION" in version.created_by
    hosts = v.stat("/etc/hosts")
    assert hosts.layer_role == "init"
    # an image-level whiteout: a file deleted by a later build step stays deleted
    img = host.image("pensieve/app:2")
    iv = api.view(host, img)
    assert not any(e.path.endswith("build-secret.txt") for e in iv.walk("/"))


def test_symlinks_never_leave_the_container_root(host):
    v = api.view(host, host.container("c-modified"))
    assert v.stat("/root/escape").link_target == "/etc/shadow"
    assert v.realpath("/root/escape") == "/etc/shadow"
    assert v.realpath("/opt/app/up/passwd") == "/etc/passwd"  # ../../../../etc clamps at /
    with v.open("/opt/app/up/passwd") as fh:
        data = fh.read()
    with v.open("/etc/passwd") as fh:
        assert data == fh.read()
    # the host's /etc/passwd is never what we read
    if os.path.exists("/etc/passwd"):
        assert data != Path("/etc/passwd").read_bytes()


def test_export_tar_keeps_metadata(host, tmp_path):
    dest = tmp_path / "c.tar"
    code, _, _ = run("fs", str(host.evidence.root), "c-modified", "export", str(dest))
    assert code == 0
    with tarfile.open(dest) as tar:
        members = {m.name: m for m in tar.getmembers()}
        tool = members["opt/app/bin/tool"]
        assert tool.mode == 0o4755
        assert members["root/escape"].issym() and members["root/escape"].linkname == "/etc/shadow"
        assert "opt/app/README.md" not in members
        assert tar.extractfile("root/implant.sh").read().startswith(b"#!")
        assert members["root/implant.sh"].pax_headers["PENSIEVE.layer_role"] == "rw"


# ---- attribution ----------------------------------------------------------------------------


def test_whence_rw_and_image_layers(host, overlay2_root):
    c = host.container("c-modified")
    v = api.view(host, c)
    implant = v.stat("/root/implant.sh")
    a = api.whence(host, implant.host_path)
    assert a.layer_kind == "rw" and a.containers == [c.id] and a.container_path == "/root/implant.sh"
    passwd = v.stat("/etc/passwd")
    a = api.whence(host, passwd.host_path)
    assert a.layer_kind == "image" and a.container_path == "/etc/passwd"
    assert c.image_id in a.images and c.id in a.containers and a.diff_id
    a = api.whence(host, v.stat("/opt/app/VERSION").host_path)
    assert c.image_id in a.images and "echo 2.0" in a.created_by
    assert all(a.chain_id in host.image(i).chain_ids for i in a.images)  # build-cache parents too
    assert sorted(a.containers) == sorted(x.id for x in host.containers() if x.image_id == c.image_id)
    # the same path as it was named on the original host (data root elsewhere)
    original = SCENARIO["paths_at_capture"]["data_root"] + implant.host_path
    a2 = api.whence(host, original)
    assert a2.containers == [c.id] and a2.container_path == "/root/implant.sh"
    # CLI: a host path of the unpacked copy is mapped into the evidence
    code, out, _ = run("whence", str(overlay2_root), str(overlay2_root) + implant.host_path, "--json")
    assert code == 0 and json.loads(out)["containers"] == [c.id]


def test_whence_volume_and_unreferenced(host):
    a = api.whence(host, "/volumes/pvol/_data/" + "x")
    assert a.layer_kind == "volume" and a.containers == [inspect("c-running")["Id"]]
    assert a.container_path == "/data/x"
    removed = SCENARIO["containers"].get("c-removed", {})
    upper = removed.get("upperdir")
    if upper:
        layer_id = upper.rstrip("/").split("/")[-2]
        a = api.whence(host, f"/overlay2/{layer_id}/diff/tmp/removed-marker")
        assert a.layer_kind == "unreferenced"
        assert a.containers == []


# ---- CLI, bad input, evidence integrity ------------------------------------------------------


def test_cli_json_keys(overlay2_root):
    code, out, _ = run("containers", str(overlay2_root), "--json")
    assert code == 0
    items = json.loads(out)
    assert len(items) == len(LIVE_CONTAINERS)
    for key in ("id", "name", "image", "image_id", "state", "engine"):
        assert all(key in i for i in items)
    code, out, _ = run("diff", str(overlay2_root), "c-modified", "--jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and all({"change", "path"} <= set(r) for r in rows)


def test_not_a_data_root_and_unknown_names(tmp_path, overlay2_root):
    (tmp_path / "etc").mkdir()
    code, _, err = run("containers", str(tmp_path))
    assert code == 3 and "no Docker data root" in err
    code, _, err = run("containers", str(tmp_path / "missing"))
    assert code == 3
    code, _, err = run("diff", str(overlay2_root), "no-such-container")
    assert code == 4 and "no container" in err
    code, _, err = run("fs", str(overlay2_root), "c-modified", "cat", "/no/such/file")
    assert code == 4


def test_one_corrupt_container_does_not_hide_the_others(overlay2_root, tmp_path):
    import shutil
    import subprocess

    copy = tmp_path / "root"
    subprocess.run(["cp", "-a", str(overlay2_root), str(copy)], check=True)
    broken = inspect("c-exited0")["Id"]
    no_mount = inspect("c-exited3")["Id"]
    (copy / "containers" / broken / "config.v2.json").write_text('{"ID": "trunc')
    driver_mounts = copy / "image" / "overlay2" / "layerdb" / "mounts" / no_mount
    (driver_mounts / "mount-id").unlink()
    shutil.rmtree(copy / "containers" / inspect("c-created")["Id"] / "checkpoints", ignore_errors=True)
    code, out, err = run("containers", str(copy), "--json")
    assert code == 5
    items = {i["id"]: i for i in json.loads(out)}
    assert len(items) == len(LIVE_CONTAINERS)
    assert items[broken]["state"] == "unknown" and items[broken]["problems"]
    assert any("mount-id" in p["message"] for p in items[no_mount]["problems"])
    assert "config.v2.json" in err and "mount-id" in err
    assert sum(1 for i in items.values() if not i["problems"]) == len(LIVE_CONTAINERS) - 2
    code, _, err = run("diff", str(copy), no_mount)
    assert code == 4 and "RW layer" in err


def test_no_command_alters_the_evidence(overlay2_root, tmp_path):
    before = tree_digest(overlay2_root)
    src = str(overlay2_root)
    img = "pensieve/app:2"
    commands = [
        ["roots", src],
        ["containers", src, "--json"],
        ["containers", src],
        ["images", src, "--csv"],
        ["history", src, img],
        ["volumes", src],
        ["logs", src, "c-running"],
        ["logs", src, "c-jsonrot", "--json"],
        ["logs", src, "c-local-log"],
        ["fs", src, "c-modified", "ls", "-R", "/"],
        ["fs", src, "c-modified", "stat", "/etc/app.conf"],
        ["fs", src, "c-modified", "cat", "/root/implant.sh"],
        ["fs", src, "c-modified", "find", "--layer", "rw", "--hash"],
        ["fs", src, img, "ls", "/opt/app"],
        ["fs", src, "c-modified", "export", str(tmp_path / "out.tar")],
        ["fs", src, "c-modified", "export", str(tmp_path / "outdir")],
        ["diff", src, "c-modified", "--recover", str(tmp_path / "rec")],
        ["whence", src, "/volumes/pvol/_data"],
    ]
    for cmd in commands:
        code, _, err = run(*cmd)
        assert code == 0, (cmd, err)
    assert tree_digest(overlay2_root) == before


def test_refuses_to_write_inside_the_evidence(overlay2_root):
    code, _, err = run("fs", str(overlay2_root), "c-modified", "export", str(overlay2_root / "x.tar"))
    assert code == 2 and "inside the evidence" in err
    assert not (overlay2_root / "x.tar").exists()


def test_host_root_discovery(overlay2_root, tmp_path):
    """A host root: data roots at /var/lib/docker, daemon.json's data-root (reached through an
    absolute symlink that must resolve inside the evidence), a user's rootless root, and snap."""
    import subprocess

    host_root = tmp_path / "host"
    places = ["var/lib/docker", "mnt/disk2/docker", "home/alice/.local/share/docker"]
    for rel in places:
        (host_root / rel).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(overlay2_root), str(host_root / rel)], check=True)
    (host_root / "etc/docker").mkdir(parents=True)
    (host_root / "etc/docker/daemon.json").write_text('{"data-root": "/data/docker"}')
    os.symlink("/mnt/disk2", host_root / "data")  # absolute: must not mean the analyst's /mnt
    (host_root / "var/snap/docker/common").mkdir(parents=True)  # snap dir without a data root
    host = api.open_docker(str(host_root))
    found = {r.path: r.how_found for r in host.roots}
    assert set(found) == {"/var/lib/docker", "/data/docker", "/home/alice/.local/share/docker"}
    assert "daemon.json" in found["/data/docker"] and "rootless" in found["/home/alice/.local/share/docker"]
    per_root = len(LIVE_CONTAINERS)
    assert len(host.containers()) == 3 * per_root
    # each root's containers resolve their layers inside that root
    c = next(c for c in host.containers() if c.data_root == "/data/docker" and c.name == "c-modified")
    assert c.layers[-1].path.startswith("/data/docker/overlay2/")
    with pytest.raises(api.LookupFailed, match="ambiguous"):
        host.container("c-modified")
    assert host.container(f"/data/docker:{c.id[:12]}") is c
    changes = {
        (x.change, x.path) for x in api.diff(host, "/data/docker:c-modified").changes if x.engine_reports
    }
    assert changes == docker_diff("c-modified")
    code, out, _ = run("roots", str(host_root), "--json")
    assert code == 0 and {r["path"] for r in json.loads(out)} == set(found)
