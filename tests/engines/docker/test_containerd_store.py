"""Docker 28 with the containerd image store (tests/fixtures/docker-ctrd-store): pensieve's
containers, images, diff and whence against what docker answered at capture time
(docker-28-expected.json: inspect, diff, image ls) and ctr's view of the moby namespace
(docker-28-containerd-expected.json); a meta.db that is missing or truncated."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time

import pytest
from conftest import FIXTURE_ROOT, load_json, run_cli, unpack

from pensieve.engines.docker.containerd_store import familiar
from pensieve.times import parse_rfc3339

FIX = FIXTURE_ROOT / "docker-ctrd-store"
EXPECTED = load_json(FIX / "docker-28-expected.json")
CTR = load_json(FIX / "docker-28-containerd-expected.json")["namespaces"]["moby"]
META_DB = "containerd/daemon/io.containerd.metadata.v1.bolt/meta.db"
KIND = {"A": "added", "C": "modified", "D": "deleted"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(unpack(FIX / "docker-28-data.tar.xz", tmp_path_factory.mktemp("ctrd-store")) / "data")


def cli_json(*args, code: int = 0):
    got, out, err = run_cli(*args, "--json")
    assert got == code, err
    return json.loads(out)


def test_containers_agree_with_docker_inspect(data_root):
    got = {c["id"]: c for c in cli_json("containers", data_root)}
    want = {c["Id"]: c for c in EXPECTED["containers"]}
    assert sorted(got) == sorted(want)
    for cid, inspect in want.items():
        c = got[cid]
        assert c["engine"] == "docker" and c["problems"] == []
        assert c["name"] == inspect["Name"].lstrip("/")
        assert c["image"] == inspect["Config"]["Image"]
        assert c["image_id"] == inspect["Image"]
        assert c["state"] == inspect["State"]["Status"]
        assert c["exit_code"] == inspect["State"]["ExitCode"]
        assert parse_rfc3339(c["created"]) == parse_rfc3339(inspect["Created"])
        assert c["storage_driver"] == inspect["GraphDriver"]["Name"] == "overlayfs"


def test_layer_chain_is_the_snapshot_chain(data_root):
    """image layers = the committed snapshots of the image's chain ids (ctr snapshots), then the
    container's ``<id>-init`` and its active snapshot (keyed by the container id) as RW."""
    parents = {row["KEY"]: row["PARENT"] or None for row in CTR["snapshots"]}
    kinds = {row["KEY"]: row["KIND"] for row in CTR["snapshots"]}
    for c in cli_json("containers", data_root):
        keys, key = [], c["id"]
        while key is not None:
            keys.append(key)
            key = parents[key]
        keys.reverse()
        layers = c["layers"]
        assert [layer["role"] for layer in layers] == ["image"] * (len(keys) - 2) + ["init", "rw"]
        assert keys[-2:] == [c["id"] + "-init", c["id"]] and kinds[c["id"]] == "Active"
        assert [layer["chain_id"] for layer in layers[:-2]] == keys[:-2]
        assert all(layer["driver"] == "overlayfs" and layer["path"].endswith("/fs") for layer in layers)
        assert c["rw_layer"] == layers[-1]["cache_id"] and c["init_layer"] == layers[-2]["cache_id"]


def test_images_once_as_docker_lists_them(data_root):
    """Docker's image id is the name's target digest (index or manifest), tags familiar names;
    containerd's own view of the same moby images is not listed beside them."""
    got = cli_json("images", data_root)
    want = {i["Id"]: i for i in EXPECTED["images"]}
    assert sorted(i["id"] for i in got) == sorted(want)
    for image in got:
        inspect = want[image["id"]]
        assert image["engine"] == "docker"
        assert image["tags"] == inspect["RepoTags"] and image["digests"] == inspect["RepoDigests"]
        assert image["diff_ids"] == inspect["RootFS"]["Layers"]
        assert parse_rfc3339(image["created"]) == parse_rfc3339(inspect["Created"])
    listed = {f"{row['Repository']}:{row['Tag']}": row["Digest"] for row in EXPECTED["image_ls"]}
    assert {t: i["id"] for i in got for t in i["tags"]} == listed


@pytest.mark.parametrize("cid", sorted(EXPECTED["diff"]))
def test_diff_is_docker_diff(data_root, cid):
    got = cli_json("diff", data_root, cid)
    want = [(KIND[d["Kind"]], d["Path"]) for d in EXPECTED["diff"][cid]]
    assert sorted((d["change"], d["path"]) for d in got) == sorted(want)


def test_history_and_fs(data_root):
    steps = cli_json("history", data_root, "pensieve/app:1.0")
    assert any("RUN" in (s["created_by"] or "") for s in steps)
    code, out, err = run_cli("fs", data_root, "web", "cat", "/root/evidence.txt")
    assert code == 0 and out, err
    code, _out, _err = run_cli("fs", data_root, "web", "stat", "/etc/passwd")
    assert code == 4  # deleted in the container (docker exec rm)


def test_whence_rw_init_and_image_snapshots(data_root):
    web = next(c for c in cli_json("containers", data_root) if c["name"] == "web")
    base = "/containerd/daemon/io.containerd.snapshotter.v1.overlayfs/snapshots"
    rw = cli_json("whence", data_root, f"{base}/{web['rw_layer']}/fs/root/evidence.txt")
    assert rw["layer_kind"] == "rw" and rw["containers"] == [web["id"]]
    assert rw["container_path"] == "/root/evidence.txt" and rw["image_tags"] == ["pensieve/app:1.0"]
    init = cli_json("whence", data_root, f"{base}/{web['init_layer']}/fs/etc/hosts")
    assert init["layer_kind"] == "init" and init["containers"] == [web["id"]]
    run_layer = next(layer for layer in web["layers"] if "RUN" in (layer["created_by"] or ""))
    image = cli_json("whence", data_root, f"{base}/{run_layer['cache_id']}/fs/var/log/app/build.log")
    assert image["layer_kind"] == "image" and image["chain_id"] == run_layer["chain_id"]
    assert sorted(image["containers"]) == sorted(c["Id"] for c in EXPECTED["containers"])


def _listed(source: str, code: int | None = None) -> list[dict]:
    """``containers --json`` of SOURCE within a time bound; exit CODE (else 0 or 5)."""
    start = time.monotonic()
    got, out, err = run_cli("containers", source, "--json")
    assert time.monotonic() - start < 30
    assert got == code if code is not None else got in (0, 5), err
    listed = json.loads(out)
    assert sorted(c["id"] for c in listed) == sorted(c["Id"] for c in EXPECTED["containers"])
    return listed


def test_bad_meta_db_lists_containers_with_a_problem(tmp_path):
    """meta.db gone, empty or cut at many points: every container still listed from containers/
    (state from config.v2.json), a problem naming meta.db, exit 5; layers unknown (and said so)
    where the cut left no moby namespace."""
    data = unpack(FIX / "docker-28-data.tar.xz", tmp_path) / "data"
    db = data / META_DB
    original = db.read_bytes()
    db.unlink()
    damaged = [None] + [n for n in (0, 100, 4096, 8192, len(original) // 7, len(original) // 2)]
    for size in damaged:
        if size is not None:
            db.write_bytes(original[:size])
        listed = _listed(str(data), code=5)
        for c in listed:
            assert c["state"] in ("running", "exited")
            if not c["layers"]:  # what a cut file still holds is used; else the problem says so
                assert any(
                    p["source"].endswith(META_DB) and "layers unknown" in p["message"] for p in c["problems"]
                )
        assert size is None or size > 8192 or all(c["layers"] == [] for c in listed)
        code, _out, err = run_cli("images", str(data))
        assert code == 5 and "meta.db" in err


def test_flipped_meta_db_bytes_never_end_the_run(tmp_path):
    """Bytes of meta.db overwritten at random places: the containers are listed, exit 0 or 5."""
    data = unpack(FIX / "docker-28-data.tar.xz", tmp_path) / "data"
    db = data / META_DB
    original = db.read_bytes()
    rng = random.Random(9)
    for _ in range(25):
        raw = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(raw) - 16)
            raw[at : at + 16] = rng.randbytes(16)
        db.write_bytes(bytes(raw))
        _listed(str(data))
        for command in ("images", "diff"):
            args = (command, str(data)) + (("web",) if command == "diff" else ())
            code, _out, _err = run_cli(*args)
            assert code in (0, 4, 5)


def test_familiar_names():
    assert familiar("docker.io/library/busybox:1") == "busybox:1"
    assert familiar("docker.io/pensieve/app:1.0") == "pensieve/app:1.0"
    assert familiar("docker.io/library/a/b:1") == "library/a/b:1"
    assert familiar("registry.example:5000/x/y:2") == "registry.example:5000/x/y:2"


# ---- verify: the images of the store checked in Docker's containerd ---------------------------

SNAPSHOTS = "containerd/daemon/io.containerd.snapshotter.v1.overlayfs/snapshots"


def test_verify_checks_the_store_images(data_root):
    """Every layer of the moby namespace's images: blob, uncompressed stream (diff id) and
    snapshot; the verdicts name Docker's data root, images and containers (no containerd twin)."""
    layers = cli_json("verify", data_root)
    want = {c for i in EXPECTED["images"] for c in i["RootFS"]["Layers"]}
    assert {v["diff_id"] for v in layers} == want and len(layers) == len(want)
    assert {v["status"] for v in layers} == {"ok"}
    assert all(v["data_root"] == "/" and v["driver"] == "overlayfs" for v in layers)
    assert all(v["layer_path"].startswith("/" + SNAPSHOTS) for v in layers)
    base = [v for v in layers if v["parent"] is None]
    assert base[0]["images"] == ["pensieve/app:1.0", "pensieve/base:1.0"]
    assert base[0]["containers"] == ["job", "web"]
    images = cli_json("verify", data_root, "--images")
    assert sorted(t for i in images for t in i["tags"]) == ["pensieve/app:1.0", "pensieve/base:1.0"]
    assert {i["status"] for i in images} == {"ok"}
    only = cli_json("verify", data_root, "pensieve/base:1.0")
    assert [v["chain_id"] for v in only] == [base[0]["chain_id"]]


def test_verify_names_a_tampered_snapshot(data_root, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", data_root, str(copy)], check=True)
    layers = cli_json("verify", copy)
    top = next(v for v in layers if v["images"] == ["pensieve/app:1.0"] and v["entries"] > 2)
    fs = copy / top["layer_path"].lstrip("/")
    victim = next(p for p in sorted(fs.rglob("*")) if p.is_file() and not p.is_symlink() and p.stat().st_size)
    victim.write_bytes(victim.read_bytes() + b"!")
    (fs / "implant").write_text("x")
    got = {v["chain_id"]: v for v in cli_json("verify", copy, code=6)}
    problems = {(p["path"], p["kind"]) for p in got[top["chain_id"]]["problems"]}
    assert {(str(victim.relative_to(fs)), "size"), ("implant", "added")} <= problems
    assert [v["status"] for c, v in got.items() if c != top["chain_id"]] == ["ok"] * (len(got) - 1)


def test_export_layer_from_the_store(data_root, tmp_path):
    """The layer blob uncompressed: the tar its diff id names."""
    layer = cli_json("verify", data_root)[0]
    dest = tmp_path / "layer.tar"
    code, _out, err = run_cli("verify", data_root, "--export-layer", layer["chain_id"], "--to", dest)
    assert code == 0, err
    assert "sha256:" + hashlib.sha256(dest.read_bytes()).hexdigest() == layer["diff_id"]


def test_logs_are_dockers_json_file(data_root):
    """The json-file log of a container of the store root (web printed nothing, job wrote a
    file): read from containers/<id>/, no problem."""
    for c in EXPECTED["containers"]:
        code, out, err = run_cli("logs", data_root, c["Id"], "--json")
        assert code == 0, err
        assert json.loads(out) == []
        assert c["HostConfig"]["LogConfig"]["Type"] == "json-file"
