"""``diff --recover DIR``: the lower-layer originals written through the OutputSink -- never into
the evidence, never through a symlink, never over an earlier output, with a manifest whose sha256
values are those of the files written."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from conftest import run_cli

from pensieve import api
from pensieve.errors import UsageError
from pensieve.filesystem.diff import recover
from pensieve.output.sink import MANIFEST


@pytest.fixture(scope="module")
def host(overlay2_root):
    return api.open_docker(str(overlay2_root))


def _listing(top) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), top) for d, ds, fs in os.walk(top) for n in ds + fs)


def _sha256(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_recover_writes_a_manifest_matching_the_files(overlay2_root, tmp_path):
    dest = tmp_path / "rec"
    code, _, err = run_cli("diff", overlay2_root, "c-modified", "--recover", dest)
    assert code == 0, err
    manifest = json.loads((dest / MANIFEST).read_text())
    files = {f["path"]: f for f in manifest["files"]}
    on_disk = {p for p in _listing(dest) if (dest / p).is_file() and not (dest / p).is_symlink()}
    assert set(files) == on_disk - {MANIFEST}
    for rel, f in files.items():
        assert f["sha256"] == _sha256(dest / rel) and f["size"] == (dest / rel).stat().st_size
    # the layout is the container's: originals at their container paths, the listing beside them
    recovered = json.loads((dest / "pensieve-recovered.json").read_text())
    for item in recovered:
        if "written" in item:
            assert item["written"] == str(dest / item["path"].lstrip("/"))
            assert item["sha256"] == files[item["path"].lstrip("/")]["sha256"]
    assert (dest / "opt/app/README.md").is_file() and (dest / "etc/app.conf").is_file()


@pytest.mark.parametrize("where", ["rec", "containers/rec", "."])
def test_recover_into_the_evidence_is_refused(overlay2_root, where):
    dest = overlay2_root / where
    before = _listing(overlay2_root)
    code, out, err = run_cli("diff", overlay2_root, "c-modified", "--recover", dest)
    assert code == 2 and out == ""
    assert "evidence" in err
    assert _listing(overlay2_root) == before


def test_recover_into_a_directory_holding_the_evidence_is_refused(overlay2_root):
    parent = overlay2_root.parent
    before = _listing(parent)
    code, _, err = run_cli("diff", overlay2_root, "c-modified", "--recover", parent)
    assert code == 2 and "holding the evidence" in err
    assert _listing(parent) == before


def test_library_recover_refuses_the_evidence_itself(host, overlay2_root):
    """The refusal is the sink's, not only the command's: the library call writes nothing."""
    c = host.container("c-modified")
    changes = api.diff(host, "c-modified").changes
    before = _listing(overlay2_root)
    with pytest.raises(UsageError, match="inside the evidence"):
        recover(host.evidence, c.layers, changes, str(overlay2_root / "opt-out"))
    assert _listing(overlay2_root) == before


def test_recover_never_overwrites_an_earlier_output(overlay2_root, tmp_path):
    dest = tmp_path / "rec"
    assert run_cli("diff", overlay2_root, "c-modified", "--recover", dest)[0] == 0
    (dest / "etc/app.conf").chmod(0o600)
    before = {p: (dest / p).read_bytes() for p in _listing(dest) if (dest / p).is_file()}
    code, _, err = run_cli("diff", overlay2_root, "c-modified", "--recover", dest)
    assert code == 2 and MANIFEST in err
    assert {p: (dest / p).read_bytes() for p in _listing(dest) if (dest / p).is_file()} == before


def test_recover_does_not_follow_a_symlink_in_the_destination(overlay2_root, tmp_path):
    """A symlink already in DIR (``etc`` -> elsewhere): what would go through it is a problem
    (exit 5), nothing lands at the link's target, the rest is recovered."""
    dest, elsewhere = tmp_path / "rec", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "etc")
    code, _, err = run_cli("diff", overlay2_root, "c-modified", "--recover", dest)
    assert code == 5 and "/etc/" in err and "not recovered" in err
    assert os.listdir(elsewhere) == []
    assert (dest / "opt/app/README.md").is_file()
    written = {f["path"] for f in json.loads((dest / MANIFEST).read_text())["files"]}
    assert not any(p.startswith("etc/") for p in written)


def test_recover_keeps_a_file_already_there(overlay2_root, tmp_path):
    dest = tmp_path / "rec"
    (dest / "opt/app").mkdir(parents=True)
    (dest / "opt/app/README.md").write_bytes(b"analyst's own notes")
    code, _, err = run_cli("diff", overlay2_root, "c-modified", "--recover", dest)
    assert code == 5 and "/opt/app/README.md" in err
    assert (dest / "opt/app/README.md").read_bytes() == b"analyst's own notes"
