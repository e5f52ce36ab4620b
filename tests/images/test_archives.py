"""Image archives as sources: docker save, OCI layouts (gzip and zstd layers), docker export.

tests/fixtures/archives/ was made by fixtures/capture/archive_capture.sh: a private dockerd (20.10)
built a 3-layer image on a busybox base, `docker save`d it (save.tar, the legacy layout), ran and
`docker export`ed a container that changed files (export.tar); skopeo turned the save into an OCI
layout with gzip layers (oci-gzip/) and an OCI archive with zstd layers (oci-zstd.tar);
expected.json holds `docker image inspect`, `docker history`, `docker diff` and the id `docker
load` gave the OCI image copied back.  The Docker >= 25 layout (manifest.json over an OCI layout)
is built here from the real blobs, by its documented shape: dockerd 20.10 cannot write it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli, tree_digest

from pensieve.api import target_view
from pensieve.evidence import EvidenceError
from pensieve.evidence.tar import TarEvidence
from pensieve.formats.tar import TarCounter
from pensieve.images.archive import DOCKER_EXPORT, DOCKER_SAVE, OCI_LAYOUT, open_archive
from pensieve.images.verify_archive import verify_archive, verify_archive_images

HERE = FIXTURE_ROOT / "archives"
EXPECTED = json.loads((HERE / "expected.json").read_text())
APP, BASE = "pensieve/aapp:1", "pensieve/abase:1"


@pytest.fixture(scope="session")
def arx(tmp_path_factory) -> Path:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar not installed")
    dest = tmp_path_factory.mktemp("archives")
    subprocess.run(["tar", "-xJf", str(HERE / "archives.tar.xz"), "-C", str(dest)], check=True)
    return dest


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def docker_size(n: int) -> str:
    """go-units HumanSizeWithPrecision(n, 3), as `docker history` prints sizes."""
    units = ["B", "kB", "MB", "GB", "TB"]
    i, v = 0, float(n)
    while v >= 1000 and i < len(units) - 1:
        v /= 1000
        i += 1
    return f"{v:.3g}{units[i]}"


def oci_ids(arx: Path) -> dict[str, str]:
    """Image id (config digest) per ref name of the skopeo layout."""
    out = {}
    for d in EXPECTED["oci_gzip_index"]["manifests"]:
        manifest = json.loads((arx / "oci-gzip" / "blobs" / "sha256" / d["digest"][7:]).read_text())
        out[d["annotations"]["org.opencontainers.image.ref.name"]] = manifest["config"]["digest"]
    return out


SOURCES = ["save.tar", "oci-gzip", "oci-zstd.tar"]


# ---- images and history agree with the engine ---------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_images_agree_with_docker_image_inspect(arx, name):
    host = open_archive(str(arx / name))
    assert host.kind == (DOCKER_SAVE if name == "save.tar" else OCI_LAYOUT)
    images = {i.tags[0]: i for i in host.images()}
    wanted = [APP] if name == "oci-zstd.tar" else [APP, BASE]
    assert sorted(images) == sorted(wanted)
    for tag in wanted:
        want, img = EXPECTED["images"][tag], images[tag]
        assert img.diff_ids == want["diff_ids"]
        assert img.size == want["size"]  # file bytes once per inode + symlink lengths, like Docker
        assert img.created == want["created"]
        assert img.cmd == want["cmd"] and img.labels == (want["labels"] or {})
        assert img.env == (want["env"] or [])
        assert (img.os, img.architecture) == (want["os"], want["architecture"])
        if name == "save.tar":
            assert img.id == want["id"] and img.tags == want["tags"]
        else:  # skopeo rewrites the config (so the id); docker load of it gives that id back
            assert img.id == oci_ids(arx)[tag]
    if name == "oci-gzip":
        assert images[APP].id == EXPECTED["roundtrip"]["id"]
    assert host.problems == []


@pytest.mark.parametrize("name", SOURCES)
def test_history_agrees_with_docker_history(arx, name):
    host = open_archive(str(arx / name))
    for tag in [APP] if name == "oci-zstd.tar" else [APP, BASE]:
        docker = list(reversed(EXPECTED["images"][tag]["history"]))  # docker lists newest first
        steps = host.image(tag).history
        assert [s.created_by or "" for s in steps] == [h["CreatedBy"] for h in docker]
        assert [s.comment or "" for s in steps] == [h["Comment"] for h in docker]
        for s, h in zip(steps, docker, strict=True):
            assert docker_size(s.size or 0) == h["Size"], (s.created_by, s.size, h["Size"])
            assert s.empty_layer == (h["Size"] == "0B")
        assert [s.diff_id for s in steps if not s.empty_layer] == EXPECTED["images"][tag]["diff_ids"]


def test_history_and_images_through_the_cli(arx):
    code, out, err = run_cli("history", arx / "save.tar", APP, "--json")
    assert code == 0, err
    steps = json.loads(out)
    assert [s["diff_id"] for s in steps if not s["empty_layer"]] == EXPECTED["images"][APP]["diff_ids"]
    code, out, err = run_cli("images", arx / "oci-zstd.tar", "--json")
    assert code == 0, err
    assert [i["diff_ids"] for i in json.loads(out)] == [EXPECTED["images"][APP]["diff_ids"]]
    code, out, _ = run_cli("roots", arx / "oci-gzip", "--json")
    assert code == 0 and json.loads(out)[0]["layout"] == "oci-layout"
    code, _, err = run_cli("containers", arx / "save.tar")
    assert code == 0
    code, _, err = run_cli("diff", arx / "save.tar", "x")
    assert code == 4 and "image archive" in err


# ---- the merged filesystem, with provenance ----------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_fs_views_apply_whiteouts_and_name_the_layer(arx, name):
    host = open_archive(str(arx / name))
    img, view = target_view(host, APP)
    layers = host.image_layers(img)
    by_path = {e.path: e for e in view.walk("/")}
    assert "/etc/motd" not in by_path  # deleted by the third layer (.wh.motd)
    assert [p for p in by_path if p.startswith("/srv/cache/")] == ["/srv/cache/c"]  # opaque dir
    idx = by_path["/srv/www/index.html"]
    assert (idx.layer_index, idx.uid, idx.size) == (2, 33, 12)
    assert idx.layer == layers[2].cache_id and "rm /etc/motd" in (idx.created_by or "")
    assert idx.shadows == [layers[1].cache_id]
    key = by_path["/srv/data/key"]
    assert (key.layer_index, key.mode & 0o7777) == (1, 0o640)
    assert by_path["/srv/home"].link_target == "www/index.html"
    assert by_path["/bin/busybox"].layer_index == 0 and by_path["/bin/busybox"].size == 1982256
    with view.open("/srv/home") as fh:  # symlink followed inside the image
        assert fh.read() == b"<h1>v2</h1>\n"
    with view.open("/srv/www/hard.html") as fh:  # a hard link in the layer tar: its target's bytes
        assert fh.read() == b"<h1>v1</h1>\n"


def test_fs_cli_on_archives(arx):
    code, out, err = run_cli("fs", arx / "oci-zstd.tar", APP, "cat", "/srv/www/index.html")
    assert code == 0, err
    assert out == "<h1>v2</h1>\n"
    code, out, err = run_cli("fs", arx / "save.tar", APP, "stat", "/srv/data/key", "--json")
    assert code == 0, err
    entry = json.loads(out)
    assert (
        entry["sha256"] == hashlib.sha256(b"k3y\n").hexdigest() and "mkdir -p /srv/www" in entry["created_by"]
    )
    code, out, err = run_cli("fs", arx / "export.tar", "-", "cat", "/srv/www/index.html")
    assert code == 0 and out == "<h1>defaced</h1>\n"
    code, out, _ = run_cli("fs", arx / "save.tar", APP, "ls", "/srv/cache", "--json")
    assert [e["path"] for e in json.loads(out)] == ["/srv/cache/c"]
    code, _, _ = run_cli("fs", arx / "save.tar", APP, "cat", "/etc/motd")
    assert code == 4


def test_docker_export_is_one_layer_without_history(arx):
    host = open_archive(str(arx / "export.tar"))
    assert host.kind == DOCKER_EXPORT
    (img,) = host.images()
    assert img.id == sha(arx / "export.tar") and img.tags == [] and len(img.diff_ids) == 1
    assert len(img.history) == 1 and img.history[0].created_by is None
    view = target_view(host, "-")[1]
    paths = {e.path for e in view.walk("/")}
    assert {"/.dockerenv", "/tmp/dropper.sh", "/root/.ssh/authorized_keys"} <= paths
    assert "/srv/data/key" not in paths


# ---- verify --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_verify_untouched_archives_all_ok(arx, name):
    if not name.endswith(".tar"):
        tree_digest(arx / name)  # the first walk itself moves directory atimes (relatime)
    before = sha(arx / name) if name.endswith(".tar") else tree_digest(arx / name)
    code, out, err = run_cli("verify", arx / name, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert {v["diff_id"] for v in doc} == set(EXPECTED["images"][APP]["diff_ids"])
    assert all(v["status"] == "ok" and v["computed_diff_id"] == v["diff_id"] for v in doc)
    assert all({"chain_id", "diff_id", "status", "problems"} <= set(v) for v in doc)
    code, out, _ = run_cli("verify", arx / name, "--images", "--json")
    assert code == 0 and all(i["status"] == "ok" and i["computed_id"] == i["id"] for i in json.loads(out))
    after = sha(arx / name) if name.endswith(".tar") else tree_digest(arx / name)
    assert after == before


def test_verify_export_is_unverifiable_with_its_digest(arx):
    code, out, err = run_cli("verify", arx / "export.tar", "--json")
    assert code == 5 and "unverifiable" in err
    (v,) = json.loads(out)
    assert v["status"] == "unverifiable" and v["computed_diff_id"] == sha(arx / "export.tar")


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))


def test_flipped_byte_in_an_oci_blob_taints_only_that_layer(arx, tmp_path):
    layout = tmp_path / "oci"
    shutil.copytree(arx / "oci-gzip", layout)
    manifest = json.loads(
        (layout / "blobs" / "sha256" / EXPECTED["oci_gzip_index"]["manifests"][0]["digest"][7:]).read_text()
    )
    victim = manifest["layers"][1]["digest"]
    _flip(layout / "blobs" / "sha256" / victim[7:], 100)
    code, out, err = run_cli("verify", layout, "--json")
    assert code == 6, err
    by_status = {v["diff_id"]: v for v in json.loads(out)}
    bad = by_status[EXPECTED["images"][APP]["diff_ids"][1]]
    assert bad["status"] == "tampered"
    assert [(p["path"], p["kind"]) for p in bad["problems"]][0] == (f"/blobs/sha256/{victim[7:]}", "digest")
    assert [v["status"] for d, v in by_status.items() if v is not bad] == ["ok", "ok"]
    code, out, _ = run_cli("verify", layout, "--images", "--json")
    assert {i["tags"][0]: i["status"] for i in json.loads(out)} == {APP: "tampered", BASE: "ok"}


def test_flipped_byte_in_a_zstd_blob_inside_an_oci_archive(arx, tmp_path):
    copy = tmp_path / "z.tar"
    shutil.copy(arx / "oci-zstd.tar", copy)
    with tarfile.open(copy) as tf:
        member = tf.getmember("blobs/sha256/" + EXPECTED["oci_zstd_manifest"]["layers"][0]["digest"][7:])
    _flip(copy, member.offset_data + member.size // 2)
    host = open_archive(str(copy))
    verdicts = verify_archive(host)
    assert [v.status for v in verdicts] == ["tampered", "ok", "ok"]
    assert verdicts[0].problems[0].kind == "digest"


def test_flipped_byte_in_a_docker_save_layer(arx, tmp_path):
    copy = tmp_path / "save.tar"
    shutil.copy(arx / "save.tar", copy)
    top = EXPECTED["save_manifest"][0]["Layers"][2]
    with tarfile.open(copy) as tf:
        member = tf.getmember(top)
    _flip(copy, member.offset_data + 600)  # inside the payload of the layer's first file
    verdicts = {v.diff_id: v for v in verify_archive(open_archive(str(copy)))}
    diff_ids = EXPECTED["images"][APP]["diff_ids"]
    assert verdicts[diff_ids[2]].status == "tampered"
    assert verdicts[diff_ids[2]].problems[0].path == top
    assert verdicts[diff_ids[0]].status == verdicts[diff_ids[1]].status == "ok"


def _rewrite(src: Path, dest: Path, order) -> None:
    """Copy the tar SRC to DEST with its members in ORDER(names)."""
    with tarfile.open(src) as tf, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        members = {m.name: m for m in tf.getmembers()}
        for name in order(list(members)):
            m = members[name]
            out.addfile(m, tf.extractfile(m) if m.isfile() else None)


def test_truncated_archive_leaves_the_layer_unverifiable_the_rest_verified(arx, tmp_path):
    big = EXPECTED["save_manifest"][0]["Layers"][0]
    reordered = tmp_path / "reordered.tar"
    _rewrite(arx / "save.tar", reordered, lambda names: sorted(names, key=lambda n: (n == big, n)))
    with tarfile.open(reordered) as tf:
        m = tf.getmember(big)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(reordered.read_bytes()[: m.offset_data + 100_000])
    code, out, err = run_cli("verify", cut, "--json")
    assert code == 5, err
    verdicts = {v["diff_id"]: v for v in json.loads(out)}
    base = verdicts[EXPECTED["images"][APP]["diff_ids"][0]]
    assert base["status"] == "unverifiable" and "truncated" in base["reason"]
    assert [v["status"] for v in verdicts.values()].count("ok") == 2
    assert "Traceback" not in err
    code, out, err = run_cli("fs", cut, APP, "ls", "/srv")  # the other layers stay browsable
    assert code == 5 and "www" in out and "cache" in out


def test_blob_that_does_not_decompress_is_unverifiable(arx, tmp_path):
    """A gzip blob whose descriptor was updated along with it: the digest matches, the stream is
    corrupt: nothing to compare with the diff id."""
    layout = tmp_path / "oci"
    shutil.copytree(arx / "oci-gzip", layout)
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][0]
    manifest = json.loads((blobs / desc["digest"][7:]).read_text())
    layer = manifest["layers"][2]
    data = bytearray((blobs / layer["digest"][7:]).read_bytes())
    data[30:40] = b"\xff" * 10
    new = hashlib.sha256(data).hexdigest()
    (blobs / new).write_bytes(data)
    layer["digest"], layer["size"] = "sha256:" + new, len(data)
    raw = json.dumps(manifest).encode()
    (blobs / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
    desc["digest"], desc["size"] = "sha256:" + hashlib.sha256(raw).hexdigest(), len(raw)
    (layout / "index.json").write_text(json.dumps(index))
    verdicts = verify_archive(open_archive(str(layout)), APP)
    assert [v.status for v in verdicts] == ["ok", "ok", "unverifiable"]
    assert "does not decompress" in (verdicts[2].reason or "")


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"not a tar at all" * 100])
def test_garbage_sources_are_clear_errors(tmp_path, content):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(content)
    code, _, err = run_cli("images", bad)
    assert code == 3 and err.startswith("error:") and "Traceback" not in err


def test_truncated_manifestless_save_is_a_clear_error(arx, tmp_path):
    cut = tmp_path / "cut.tar"
    cut.write_bytes((arx / "save.tar").read_bytes()[:1_500_000])
    code, _, err = run_cli("verify", cut)
    assert code == 3 and "truncated" in err


def test_docker25_layout_manifest_over_oci_blobs(arx, tmp_path):
    """docker save >= 25: manifest.json whose Config and Layers are blobs/sha256/<hex>, beside
    oci-layout and index.json (built here from the real save's blobs)."""
    src = arx / "save.tar"
    out = tmp_path / "save25.tar"
    with tarfile.open(src) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        blobs: dict[str, bytes] = {}
        new_manifest = []
        for item in manifest:
            cfg = tf.extractfile(item["Config"]).read()
            layers = []
            for name in item["Layers"]:
                data = tf.extractfile(name).read()
                digest = hashlib.sha256(data).hexdigest()
                blobs[digest] = data
                layers.append(f"blobs/sha256/{digest}")
            cd = hashlib.sha256(cfg).hexdigest()
            blobs[cd] = cfg
            new_manifest.append(
                {"Config": f"blobs/sha256/{cd}", "RepoTags": item["RepoTags"], "Layers": layers}
            )
    with tarfile.open(out, "w") as tf:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", b'{"schemaVersion":2,"manifests":[]}')
        for digest, data in blobs.items():
            add(f"blobs/sha256/{digest}", data)
        add("manifest.json", json.dumps(new_manifest).encode())
    host = open_archive(str(out))
    assert host.layout == "docker-save (OCI layout)"
    assert {i.id for i in host.images()} == {EXPECTED["images"][APP]["id"], EXPECTED["images"][BASE]["id"]}
    verdicts = verify_archive(host)
    assert len(verdicts) == 3 and all(v.status == "ok" for v in verdicts)
    assert all(iv.status == "ok" for iv in verify_archive_images(host, verdicts))


# ---- the tar reader itself -------------------------------------------------------------------


def _tar(entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, data, extra in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            for k, v in (extra or {}).items():
                setattr(info, k, v)
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def test_hostile_names_never_escape(tmp_path):
    raw = _tar(
        [
            ("/etc/passwd", tarfile.REGTYPE, b"abs", None),
            ("../../../etc/shadow", tarfile.REGTYPE, b"evil", None),
            ("a/../../b", tarfile.REGTYPE, b"evil2", None),
            ("deep/x/y/z.txt", tarfile.REGTYPE, b"z", None),
            ("dup", tarfile.REGTYPE, b"first", None),
            ("dup", tarfile.REGTYPE, b"last", None),
            ("link", tarfile.SYMTYPE, b"", {"linkname": "/../../../../etc"}),
            ("hl", tarfile.LNKTYPE, b"", {"linkname": "dup"}),
            ("dangling", tarfile.LNKTYPE, b"", {"linkname": "nowhere"}),
        ]
    )
    path = tmp_path / "h.tar"
    path.write_bytes(raw)
    ev = TarEvidence(str(path))
    assert sorted(ev.listdir("/")) == ["dangling", "deep", "dup", "etc", "hl", "link"]
    assert ev.read_bytes("/etc/passwd") == b"abs"
    assert ev.read_bytes("/dup") == b"last" and ev.read_bytes("/hl") == b"last"
    assert ev.lstat("/deep/x").is_dir and ev.read_bytes("/deep/x/y/z.txt") == b"z"
    assert ev.read_bytes("/link/passwd") == b"abs"  # the symlink resolves inside the archive
    with pytest.raises(EvidenceError):
        ev.open("/link")
    with pytest.raises(EvidenceError, match="does not hold"):
        ev.open("/dangling")
    messages = " ".join(p.message for p in ev.problems)
    assert "climbs out" in messages and "duplicate" in messages and "absolute" in messages
    assert ev.complete


def test_member_cap_and_bounded_readers(tmp_path):
    raw = _tar([(f"f{i}", tarfile.REGTYPE, b"x" * i, None) for i in range(50)])
    path = tmp_path / "many.tar"
    path.write_bytes(raw)
    ev = TarEvidence(str(path), max_members=10)
    assert len(ev.listdir("/")) == 10 and "more than 10 members" in ev.problems[-1].message
    ev = TarEvidence(str(path))
    with ev.open("/f7") as fh:
        assert fh.read() == b"x" * 7 and fh.read() == b""  # never past the member
    counter = TarCounter()
    for i in range(0, len(raw), 333):
        counter.feed(raw[i : i + 333])
    assert counter.entries == 50 and counter.end


def test_xattrs_from_pax_records(tmp_path):
    raw = _tar(
        [
            (
                "cap",
                tarfile.REGTYPE,
                b"c",
                {"pax_headers": {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}},
            )
        ]
    )
    path = tmp_path / "x.tar"
    path.write_bytes(raw)
    assert TarEvidence(str(path)).xattrs("/cap") == {"security.capability": b"\x01\x00\x00\x02"}


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_json_nesting_bombs_are_problems_not_recursion_errors(arx, tmp_path):
    """100,000 levels in manifest.json, an image config, index.json: a problem naming the file."""
    bomb = _nest(100_000)
    save = tmp_path / "save.tar"
    with tarfile.open(save, "w") as tf:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(bomb)
        tf.addfile(info, io.BytesIO(bomb))
    code, _, err = run_cli("images", save)
    assert code == 5 and "manifest.json" in err and "nested deeper" in err and "Traceback" not in err
    layout = tmp_path / "oci"
    shutil.copytree(arx / "oci-gzip", layout)
    (layout / "index.json").write_bytes(bomb)
    code, _, err = run_cli("images", layout)
    assert code == 5 and "index.json" in err and "nested deeper" in err
    cfg = tmp_path / "cfg.tar"
    with tarfile.open(arx / "save.tar") as src, tarfile.open(cfg, "w") as dst:
        manifest = json.load(src.extractfile("manifest.json"))
        for m in src.getmembers():
            if m.name == manifest[0]["Config"]:
                m.size = len(bomb)
                dst.addfile(m, io.BytesIO(bomb))
            else:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    code, out, err = run_cli("images", cfg, "--json")
    assert code == 5 and manifest[0]["Config"] in err and "nested deeper" in err
    assert len(json.loads(out)) == 1  # the other image is listed
