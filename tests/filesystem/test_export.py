"""fs export: through the output sink, never a live device node or FIFO on disk, never into the
evidence (a destination with ``..`` that resolves into it is refused)."""

from __future__ import annotations

import json
import os
import stat
import tarfile

import pytest

from pensieve.errors import UsageError
from pensieve.evidence import DirectoryEvidence
from pensieve.filesystem.export import export_dir, export_tar
from pensieve.filesystem.layered import LayeredView
from pensieve.records import Layer


@pytest.fixture
def view(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("device nodes need root")
    top = tmp_path / "ev" / "l0" / "diff"
    (top / "dev").mkdir(parents=True)
    os.mknod(top / "dev" / "mem", 0o20666, os.makedev(1, 1))
    os.mkfifo(top / "dev" / "pipe")
    (top / "etc").mkdir()
    (top / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    return LayeredView(
        DirectoryEvidence(str(tmp_path / "ev")), [Layer("image", "l0", "/l0/diff", driver="overlay2")]
    )


def test_directory_export_never_creates_nodes(view, tmp_path) -> None:
    out = tmp_path / "out"
    n, problems = export_dir(view, "/", str(out))
    assert problems == [] and n >= 3
    assert not (out / "dev" / "mem").exists() and not (out / "dev" / "pipe").exists()
    assert (out / "etc" / "passwd").read_bytes().startswith(b"root:")
    manifest = json.loads((out / "pensieve-manifest.json").read_text())
    special = {s["path"]: s for s in manifest["special_files"]}
    assert special["/dev/mem"]["type"] == "char" and special["/dev/mem"]["rdev"] == [1, 1]
    assert special["/dev/pipe"]["type"] == "fifo"
    assert any(f["path"] == "etc/passwd" for f in manifest["files"])
    assert not any(stat.S_ISCHR(os.lstat(p).st_mode) for p in out.rglob("*"))


def test_tar_export_keeps_nodes_as_entries(view, tmp_path) -> None:
    dest = tmp_path / "c.tar"
    export_tar(view, "/", str(dest))
    with tarfile.open(dest) as tar:
        m = {t.name: t for t in tar.getmembers()}
    assert m["dev/mem"].ischr() and (m["dev/mem"].devmajor, m["dev/mem"].devminor) == (1, 1)
    assert m["dev/pipe"].isfifo()
    assert (tmp_path / "c.tar.manifest.json").exists()


@pytest.mark.parametrize("as_tar", [True, False])
def test_destination_climbing_into_the_evidence_is_refused(view, tmp_path, as_tar: bool) -> None:
    (tmp_path / "elsewhere").mkdir()
    dest = str(tmp_path / "elsewhere" / ".." / "ev" / "l0" / ("x.tar" if as_tar else "x"))
    with pytest.raises(UsageError, match="evidence"):
        (export_tar if as_tar else export_dir)(view, "/", dest)
    assert not os.path.lexists(tmp_path / "ev" / "l0" / ("x.tar" if as_tar else "x"))
