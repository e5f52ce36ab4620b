"""ContainerdHost through the CLI on the real containerd 1.6 and 1.7 captures of one scenario
(tests/fixtures/containerd, containerd17), compared with what ctr answered at capture time
(containerd-X.Y-expected.json) and, for image layers, with the layer tars in the content store
read by tarfile."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli, unpack

from pensieve.times import parse_rfc3339

#: the captures of the same scenario (fixtures/capture/containerd_capture.sh): version -> fixture dir
CAPTURES = {"1.6": FIXTURE_ROOT / "containerd", "1.7": FIXTURE_ROOT / "containerd17"}


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def expected(version) -> dict:
    """ctr's answers at capture time (containerd-X.Y-expected.json)."""
    return load_json(CAPTURES[version] / f"containerd-{version}-expected.json")


NAMESPACES = ["default", "k8s.io"]  # both captures


@pytest.fixture(scope="module")
def source(version, tmp_path_factory) -> str:
    """The unpacked capture: root/ (the daemon's --root) beside state/ (its --state)."""
    tarball = CAPTURES[version] / f"containerd-{version}-root.tar.xz"
    return str(unpack(tarball, tmp_path_factory.mktemp(f"ctr-host-{version}")))


def cli_json(*args):
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def running(ns: str, expected) -> list[str]:
    return [t["TASK"] for t in expected["namespaces"][ns]["tasks"] if t["STATUS"] == "RUNNING"]


def test_containers_match_ctr(source, expected):
    got = {(c["namespace"], c["id"]): c for c in cli_json("containers", source)}
    want = {
        (ns, cid): info for ns in NAMESPACES for cid, info in expected["namespaces"][ns]["containers"].items()
    }
    assert sorted(got) == sorted(want)
    for (ns, cid), info in want.items():
        c = got[(ns, cid)]
        assert c["engine"] == "containerd" and c["problems"] == []
        assert c["image"] == info["Image"] and c["labels"] == info["Labels"]
        assert c["name"] == info["Labels"].get("io.kubernetes.container.name", cid)
        assert parse_rfc3339(c["created"]) == parse_rfc3339(info["CreatedAt"])
        assert parse_rfc3339(c["updated"]) == parse_rfc3339(info["UpdatedAt"])
        assert c["command"] == info["Spec"]["process"]["args"]
        assert c["env"] == info["Spec"]["process"].get("env", [])
        assert c["storage_driver"] == info["Snapshotter"]
        assert c["privileged"] == (info["Labels"]["org.pensieve.role"] == "created")
        assert [m["destination"] for m in c["mounts"]] == [m["destination"] for m in info["Spec"]["mounts"]]
        # image id: the config digest the image's manifest names
        manifest = [
            r
            for r in expected["namespaces"][ns]["content"]
            if "containerd.io/gc.ref.content.config" in r["LABELS"]
        ]
        assert c["image_id"] == manifest[0]["LABELS"]["containerd.io/gc.ref.content.config"]
        check_state(c, ns, cid, expected)
        check_chain(c, ns, info["SnapshotKey"], expected)


def check_state(c: dict, ns: str, cid: str, expected) -> None:
    """A task ctr listed has its bundle (pid from init.pid); a container without one has no task."""
    tasks = {t["TASK"]: t for t in expected["namespaces"][ns]["tasks"]}
    if cid in tasks:
        assert c["pid"] == int(tasks[cid]["PID"]) and c["state"] == "unknown"
    else:
        assert c["state"] == "created" and c["pid"] is None


def check_chain(c: dict, ns: str, key: str, expected) -> None:
    """The layers are the snapshot's parent chain as ctr snapshots ls gave it, bottom to top."""
    parents = {row["KEY"]: row["PARENT"] or None for row in expected["namespaces"][ns]["snapshots"]}
    chain = []
    while key is not None:
        chain.append(key)
        key = parents[key]
    chain.reverse()
    layers = c["layers"]
    assert len(layers) == len(chain)
    assert [x["role"] for x in layers] == ["image"] * (len(chain) - 1) + ["rw"]
    assert [x["chain_id"] for x in layers[:-1]] == chain[:-1]
    assert all(x["path"].endswith(f"/snapshots/{x['cache_id']}/fs") for x in layers)
    assert c["rw_layer"] == layers[-1]["cache_id"]


def test_images_match_ctr(source, expected):
    got = cli_json("images", source)
    want = {(ns, row["REF"]): row for ns in NAMESPACES for row in expected["namespaces"][ns]["images"]}
    assert sorted((i["namespace"], t) for i in got for t in i["tags"]) == sorted(want)
    for img in got:
        row = want[(img["namespace"], img["tags"][0])]
        repo = row["REF"].rsplit(":", 1)[0]
        assert img["digests"] == [f"{repo}@{row['DIGEST']}"]
        content = {r["DIGEST"]: r for r in expected["namespaces"][img["namespace"]]["content"]}
        assert img["id"] == content[row["DIGEST"]]["LABELS"]["containerd.io/gc.ref.content.config"]
        # the top chain id is the snapshot containerd's GC label on the config names
        assert img["chain_ids"][-1] == content[img["id"]]["LABELS"]["containerd.io/gc.ref.snapshot.overlayfs"]
        assert None not in img["cache_ids"]


def test_history_aligned_to_snapshots(source, expected):
    for ns in NAMESPACES:
        ref = f"{ns}/{expected['namespaces'][ns]['images'][0]['REF']}"
        steps = cli_json("history", source, ref)
        assert [s["empty_layer"] for s in steps] == [False, True, False]
        assert all(s["cache_id"] for s in steps if not s["empty_layer"])


def test_bare_image_ref_is_ambiguous_across_namespaces(source, expected):
    ref = expected["namespaces"]["default"]["images"][0]["REF"]
    code, _out, err = run_cli("history", source, ref)
    assert code == 4
    assert "ambiguous" in err and all(f"{ns}/" in err for ns in NAMESPACES)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_diff_of_running_container(source, ns, expected):
    for cid in running(ns, expected):
        changes = {c["path"]: c for c in cli_json("diff", source, f"{ns}/{cid}")}
        assert changes["/root/evidence.txt"]["change"] == "added"
        assert changes["/etc/motd"]["change"] == "deleted"
        assert changes["/tmp/work"]["change"] == "added" and changes["/tmp/work"]["type"] == "dir"
        code, out, err = run_cli("fs", source, f"{ns}/{cid}", "cat", "/root/evidence.txt")
        assert code == 0, err
        with open(os.path.join(source, "root", layer_dir(source, ns, cid), "root", "evidence.txt")) as fh:
            assert out == fh.read() and ns in out


def layer_dir(source: str, ns: str, cid: str) -> str:
    c = cli_json("containers", source)
    top = next(x for x in c if x["namespace"] == ns and x["id"] == cid)["layers"][-1]["path"]
    return top.removeprefix("/root/")


def layer_tar_members(source: str, ns: str, expected) -> list[dict[str, tarfile.TarInfo]]:
    """Each image layer's tar from the content store (the manifest's order), path -> member."""
    blobs = os.path.join(source, "root", "io.containerd.content.v1.content", "blobs", "sha256")
    target = expected["namespaces"][ns]["images"][0]["DIGEST"]
    with open(os.path.join(blobs, target.split(":")[1])) as fh:
        manifest = json.load(fh)
    out = []
    for layer in manifest["layers"]:
        with open(os.path.join(blobs, layer["digest"].split(":")[1]), "rb") as fh:
            data = fh.read()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            out.append(
                {"/" + m.name.lstrip("./").rstrip("/"): m for m in tar.getmembers() if m.name.strip("./")}
            )
    return out


@pytest.mark.parametrize("ns", NAMESPACES)
def test_image_fs_matches_layer_tars(source, ns, expected):
    ref = f"{ns}/{expected['namespaces'][ns]['images'][0]['REF']}"
    entries = {e["path"]: e for e in cli_json("fs", source, ref, "find")}
    entries.pop("/")
    tars = layer_tar_members(source, ns, expected)
    assert sorted(entries) == sorted(set().union(*tars))
    image = next(i for i in cli_json("images", source) if i["namespace"] == ns)
    for path, e in entries.items():
        top = max(i for i, members in enumerate(tars) if path in members)
        member = tars[top][path]
        assert e["layer"] == image["cache_ids"][top], path
        assert e["mode"] & 0o7777 == member.mode & 0o7777, path
        if member.isfile():
            assert e["type"] == "file" and e["size"] == member.size
        elif member.issym():
            assert e["link_target"] == member.linkname
        else:
            assert e["type"] == "dir"


def test_fs_ls_stat_and_export(source, tmp_path, expected):
    cid = running("default", expected)[0]
    code, out, err = run_cli("fs", source, f"default/{cid}", "ls", "/root", "--json")
    assert code == 0, err
    assert [e["layer_role"] for e in json.loads(out) if e["path"] == "/root/evidence.txt"] == ["rw"]
    stat = cli_json("fs", source, f"default/{cid}", "stat", "/srv/app/version.txt")
    assert stat["layer_role"] == "image" and stat["sha256"]
    dest = tmp_path / "web.tar"
    code, _out, err = run_cli("fs", source, f"default/{cid}", "export", str(dest))
    assert code == 0, err
    with tarfile.open(dest) as tar:
        names = set(tar.getnames())
    assert "root/evidence.txt" in names and "etc/motd" not in names and "tmp/work" in names


@pytest.mark.parametrize("ns", NAMESPACES)
def test_whence_names_namespace_container_and_image(source, ns, expected):
    cid = running(ns, expected)[0]
    c = next(x for x in cli_json("containers", source) if x["namespace"] == ns and x["id"] == cid)
    a = cli_json("whence", source, c["layers"][-1]["path"] + "/root/evidence.txt")
    assert a["layer_kind"] == "rw" and a["container_path"] == "/root/evidence.txt"
    assert a["containers"] == [cid] and a["images"] == [c["image_id"]]
    assert a["image_tags"] == [c["image"]]
    assert any(f"namespace {ns}" in n for n in a["notes"])
    base = c["layers"][0]
    a = cli_json("whence", source, base["path"] + "/bin/busybox")
    assert a["layer_kind"] == "image" and a["chain_id"] == base["chain_id"]
    assert cid in a["containers"] and a["created_by"] == base["created_by"]


def test_root_without_state_dir(source):
    """The root alone: state is unknown, with one problem saying the state is not on disk."""
    code, out, _err = run_cli("containers", os.path.join(source, "root"), "--json")
    assert code == 5
    containers = json.loads(out)
    assert {c["state"] for c in containers} == {"unknown"}
    assert all(any("not on disk" in p["message"] for p in c["problems"]) for c in containers)
