"""`compare`: an image on a host against an archive of it, two archives, an image against a
container export; checked against what was done to the evidence and against `docker diff`.

Fixtures: tests/fixtures/integrity (a real data root before and after four tamperings, and the
`docker save` of the untouched images) and tests/fixtures/archives (see test_archives.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli, tree_digest, unpack
from test_archives import APP, EXPECTED, arx  # noqa: F401 - the session fixture

from pensieve import api
from pensieve.images.archive import open_archive
from pensieve.images.compare import compare_images, match_images

INTEGRITY = FIXTURE_ROOT / "integrity"
TAMPER = json.loads((INTEGRITY / "expected.json").read_text())["tamper"]["changes"]


@pytest.fixture(scope="session")
def roots(tmp_path_factory) -> Path:
    return unpack(INTEGRITY / "integrity-roots.tar.xz", tmp_path_factory.mktemp("integrity-compare"))


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tampered_host_against_its_docker_save_names_exactly_the_tampered_files(roots):
    tree_digest(roots / "tampered")
    before = tree_digest(roots / "tampered"), file_sha(roots / "save.tar")
    host, archive = api.open_docker(str(roots / "tampered")), open_archive(str(roots / "save.tar"))
    pairs, _, _ = match_images(host, archive)
    assert {a.tags[0] for a, _, how in pairs if how == "id"} == {
        "pensieve/ibase:1",
        "pensieve/iapp:1",
        "pensieve/iapp:2",
    }
    got = set()
    for a, b, how in pairs:
        c = compare_images(host, a, archive, b, how)
        assert all(m.status == "shared" and m.same_position for m in c.layers)
        got |= {(f.path.lstrip("/"), f.change, tuple(f.what)) for f in c.files}
        for f in c.files:  # each side names the layer providing the entry
            side = f.a or f.b
            assert side["diff_id"] in a.diff_ids
    want = {
        ("opt/app/config.txt", "changed", ("content",)),  # same size, mtime restored
        ("opt/app/dropper.sh", "deleted", ("deleted",)),  # only on the host (A)
        ("opt/app/notes.txt", "added", ("added",)),  # only in the archive (B)
        ("bin/busybox", "changed", ("mode",)),
    }
    assert got == want
    assert {c["path"] for c in TAMPER} == {p for p, _, _ in want}
    assert (tree_digest(roots / "tampered"), file_sha(roots / "save.tar")) == before


def test_untouched_host_against_its_docker_save_is_identical(roots):
    code, out, err = run_cli("compare", roots / "clean", roots / "save.tar", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["comparisons"]) == 3
    for c in doc["comparisons"]:
        assert c["files"] == [] and c["same_id"] and all(m["status"] == "shared" for m in c["layers"])


def test_compare_cli_one_image_with_provenance(roots):
    code, out, err = run_cli(
        "compare", roots / "tampered", roots / "save.tar", "--image", "pensieve/iapp:1", "--jsonl"
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    config = next(r for r in rows if r["path"] == "/opt/app/config.txt")
    assert config["sha256_a"] != config["sha256_b"] and config["layer_a"] == config["layer_b"]
    assert config["sha256_b"] == hashlib.sha256(b"hello=world\n").hexdigest()
    assert "mkdir -p /opt/app/conf" in config["a"]["created_by"]
    code, out, _ = run_cli("compare", roots / "tampered", roots / "save.tar", "--image", "pensieve/iapp:1")
    assert code == 0 and "/opt/app/config.txt" in out and "content" in out


def test_two_archives_of_the_same_image(arx):  # noqa: F811
    a, b = open_archive(str(arx / "save.tar")), open_archive(str(arx / "oci-zstd.tar"))
    (pair,), rest_a, _ = match_images(a, b)
    assert pair[2] == "tag" and pair[0].id != pair[1].id  # skopeo rewrote the config
    c = compare_images(a, pair[0], b, pair[1], pair[2])
    assert [m.status for m in c.layers] == ["shared"] * 3 and c.files == []
    assert [i.tags[0] for i in rest_a] == ["pensieve/abase:1"]


def test_image_against_a_container_export_matches_docker_diff(arx):  # noqa: F811
    """The export is the container's merged tree: what differs from its image is `docker diff`
    (directories aside: their mtimes are not compared) plus the init layer Docker adds."""
    image, export = open_archive(str(arx / "save.tar")), open_archive(str(arx / "export.tar"))
    c = compare_images(image, image.image(APP), export, export.image("-"), "given")
    assert [m.status for m in c.layers] == ["only-a"] * 3 + ["only-b"]
    init = {"/.dockerenv", "/dev", "/dev/console", "/dev/pts", "/dev/shm", "/etc/hostname", "/etc/hosts",
            "/etc/mtab", "/etc/resolv.conf", "/proc", "/sys"}  # fmt: skip
    got = {(f.path, f.change) for f in c.files if f.path not in init and not f.path.startswith("/dev/")}
    ops = {"A": "added", "D": "deleted", "C": "changed"}
    dirs = {"/etc", "/root", "/srv", "/srv/data", "/srv/www", "/tmp"}
    want = {(x["path"], ops[x["kind"]]) for x in EXPECTED["container"]["changes"] if x["path"] not in dirs}
    assert got == want
    what = {f.path: f.what for f in c.files}
    assert what["/etc/passwd"] == ["mode"] and what["/srv/www/index.html"][:2] == ["content", "size"]


def test_compare_needs_a_match(arx):  # noqa: F811
    code, _, err = run_cli("compare", arx / "save.tar", arx / "export.tar")
    assert code == 4 and "--image" in err
    code, out, err = run_cli(
        "compare", arx / "save.tar", arx / "export.tar", "--image", APP, "--image-b", "-", "--layers"
    )
    assert code == 0 and "only in B" in out
