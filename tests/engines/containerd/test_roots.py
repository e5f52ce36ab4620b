"""``pensieve roots`` on containerd roots: the 1.6, 1.7 and 2.1 captures as copied (root/ beside state/),
and a host root holding a Docker data root and a containerd root side by side, each row with its
engine, layout hints and how it was found; and the ``images`` table's NAMESPACE column."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import FIXTURE_ROOT, FIXTURES, load_json, run_cli, unpack

CAPTURES = {
    "1.6": (FIXTURE_ROOT / "containerd" / "containerd-1.6-root.tar.xz", "containerd-1.6-expected.json", 3),
    "1.7": (FIXTURE_ROOT / "containerd17" / "containerd-1.7-root.tar.xz", "containerd-1.7-expected.json", 3),
    "2.1": (FIXTURE_ROOT / "containerd2" / "containerd-2.1-root.tar.xz", "containerd-2.1-expected.json", 4),
}


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def capture(request, tmp_path_factory):
    tarball, expected, schema = CAPTURES[request.param]
    dest = unpack(tarball, tmp_path_factory.mktemp(f"ctr-roots-{request.param}"))
    return dest, load_json(tarball.parent / expected), schema


def roots_json(source) -> list[dict]:
    code, out, err = run_cli("roots", str(source), "--json")
    assert code in (0, 5), err
    return json.loads(out)


def test_copied_roots(capture):
    source, expected, schema = capture
    rows = roots_json(source)
    assert len(rows) == 1
    row = rows[0]
    assert row["engine"] == "containerd" and row["path"] == "/root"
    assert row["layout"] == f"meta.db v{schema}"  # containerd metadata/db.go dbVersion
    assert "overlayfs" in row["drivers"] and "native" in row["drivers"]
    assert row["hints"][0] == "namespaces: " + ", ".join(sorted(expected["namespaces"]))
    assert "runtime state: /state" in row["hints"]
    assert row["found"] == "directory below the source"
    code, out, _err = run_cli("roots", str(source))
    assert code in (0, 5) and "containerd" in out and "meta.db" in out


def test_images_table_shows_namespaces(capture):
    source, expected, _schema = capture
    code, out, _err = run_cli("images", str(source))
    assert code in (0, 5)
    assert "NAMESPACE" in out and all(ns in out for ns in expected["namespaces"])


@pytest.fixture(scope="module")
def host_root(tmp_path_factory):
    """/var/lib/docker (the overlay2 capture) and /var/lib/containerd (the 1.6 capture's root)."""
    top = tmp_path_factory.mktemp("two-engines")
    lib = top / "var" / "lib"
    unpack(FIXTURES / "overlay2-root.tar.gz", lib / "docker")
    ctr = unpack(CAPTURES["1.6"][0], tmp_path_factory.mktemp("ctr-unpacked"))
    shutil.move(str(ctr / "root"), str(lib / "containerd"))
    return top


def test_side_by_side(host_root):
    rows = roots_json(host_root)
    by_engine = {r["engine"]: r for r in rows}
    assert sorted(by_engine) == ["containerd", "docker"] and len(rows) == 2
    docker = by_engine["docker"]
    assert docker["path"] == "/var/lib/docker" and docker["layout"] == "v2"
    assert "overlay2" in docker["drivers"] and docker["found"]
    ctr = by_engine["containerd"]
    assert ctr["path"] == "/var/lib/containerd" and ctr["found"] == "default location"
    assert ctr["layout"] == "meta.db v3" and ctr["hints"][0] == "namespaces: default, k8s.io"
    code, out, _err = run_cli("images", str(host_root))
    assert "NAMESPACE" in out


def test_docker_alone_keeps_its_columns(overlay2_root):
    code, out, _err = run_cli("roots", str(overlay2_root))
    assert code in (0, 5) and "DATA ROOT" in out and "ENGINE" not in out
    code, out, _err = run_cli("images", str(overlay2_root))
    assert "NAMESPACE" not in out
