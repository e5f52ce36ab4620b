"""Hostile image archives (issue 15): every JSON field pensieve reads from a docker save or OCI
archive, mutated to every wrong type, null, absent and nested 100,000 deep, on the real captured
archives (tests/images/hostile_archives.py builds them); `images`, `history`, `fs ... ls /` and
`verify` run on each through the CLI and the library.

Each input must end with a documented exit code (never 1 and a traceback), in a time bound; a
field of the wrong type is a problem naming the file and the field; the image the mutation does
not touch is still listed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli, time_bound
from hostile_archives import APP, BASE, MUTATIONS, Case, cases, mutate, oci_tar, read_members, write_tar

import pensieve.cli
from pensieve.api import target_view
from pensieve.errors import EvidenceError, LookupFailed
from pensieve.images.archive import open_archive
from pensieve.images.verify_archive import verify_archive, verify_archive_images

#: wall-clock seconds one hostile archive may take for all its commands
TIME_BOUND = 30
#: exit codes a run may end with: ok, source unusable, not found, done with problems, tampered
DOCUMENTED = {0, 3, 4, 5, 6}
#: image ids of the first image (the one mutated), by base archive: a mutated tag cannot hide it
APP_IDS = {
    "save.tar": "sha256:ee93958db31742d25701caee7c75d3ff0241cc46b5a8d2561dd121beb56ee916",
    "oci.tar": "sha256:b4cc3ebd2bf48d529ddf9b4930ff31c79feaea9d1526cea415f3815aa017e911",
}

CASES = list(cases())


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, list]:
    """The members of the two real archives: docker save's, and the skopeo OCI layout's as a tar."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar not installed")
    dest = tmp_path_factory.mktemp("hostile-bases")
    subprocess.run(
        ["tar", "-xJf", str(FIXTURE_ROOT / "archives" / "archives.tar.xz"), "-C", str(dest)], check=True
    )
    return {
        "save.tar": read_members(dest / "save.tar"),
        "oci.tar": read_members(oci_tar(dest / "oci-gzip", dest / "oci.tar")),
    }


@pytest.fixture(scope="module", autouse=True)
def one_parser():
    """run_cli builds the whole argument parser at every run (a tenth of a second); build it
    once for the 700 inputs of this module."""
    parser = pensieve.cli.build_parser()
    saved = pensieve.cli.build_parser
    pensieve.cli.build_parser = lambda command=None: parser
    yield
    pensieve.cli.build_parser = saved


def build(case: Case, bases: dict[str, list], tmp: Path) -> Path:
    members = bases[case.base]
    member = case.resolve(members)
    original = next(body for info, body in members if info.name.lstrip("./") == member)
    dest = tmp / case.base
    write_tar(members, dest, member, mutate(original, case.path, case.mutation))
    return dest


def other_image_survives(case: Case) -> bool:
    """Does the mutation leave the second image readable?  Not when it takes the archive's
    manifest.json / index.json (or its list of manifests) or removes a file the layout needs."""
    if (
        case.whole_file
        and case.mutation == "missing"
        and case.kind in ("manifest.json", "index.json", "oci-layout")
    ):
        return False
    if case.kind in ("manifest.json", "index.json"):
        if case.mutation == "nesting":  # the whole document is refused
            return False
        return case.path not in ((), ("manifests",))
    return True


def run_library(source: Path, app_id: str, verify: bool) -> list[str]:
    """The library calls the commands make (only the documented errors may come out); the tags
    of the images listed.  VERIFY: verify's calls too (the CLI's verify already ran them)."""
    try:
        host = open_archive(str(source))
    except EvidenceError:
        return []
    images = host.images()
    for image in images:
        host.image_layers(image)
    try:
        _, view = target_view(host, app_id)
        view.listdir("/")
    except (LookupFailed, EvidenceError):
        pass
    if verify:
        verify_archive_images(host, verify_archive(host))
    return [t for i in images for t in i.tags]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_archive(case: Case, bases, tmp_path):
    source = build(case, bases, tmp_path)
    app = APP_IDS[case.base]
    started = time.monotonic()
    with time_bound(TIME_BOUND, case.id):
        runs = {
            "images": run_cli("images", "--json", source),
            "history": run_cli("history", "--json", source, app),
            "fs": run_cli("fs", source, app, "ls", "--json", "/"),
            "verify": run_cli("verify", "--json", source),
        }
        tags = run_library(source, app, verify=case.base == "oci.tar")
    assert time.monotonic() - started < TIME_BOUND
    for name, (code, _out, err) in runs.items():
        assert code in DOCUMENTED, f"{name}: exit {code}: {err[-2000:]}"
        assert "Traceback" not in err and "internal error" not in err, f"{name}: {err[-2000:]}"
    code, out, err = runs["images"]
    member = Path(case.resolve(bases[case.base])).name
    bomb = case.mutation == "nesting" and case.accepted is not None
    if case.wrong_type or bomb:
        assert code in (3, 5), err
        assert member in err, err
    if case.wrong_type and not case.whole_file:
        assert f"field {case.field}:" in err, err
    if bomb:
        assert "nested deeper" in err, err
    if other_image_survives(case):
        assert BASE in out and BASE in tags, err
    if case.kind == "repositories":  # pensieve reads nothing in it: nothing changes
        assert code == 0 and APP in out, err


def test_generator_covers_every_mutation_of_every_field():
    kinds = {(c.base, c.kind) for c in CASES}
    assert kinds == {
        ("save.tar", "manifest.json"),
        ("save.tar", "repositories"),
        ("save.tar", "config"),
        ("oci.tar", "oci-layout"),
        ("oci.tar", "index.json"),
        ("oci.tar", "manifest"),
        ("oci.tar", "config"),
    }
    per_field = {}
    for c in CASES:
        per_field.setdefault((c.base, c.kind, c.path), set()).add(c.mutation)
    assert all(m == set(MUTATIONS) for m in per_field.values())
    assert len(CASES) == len(per_field) * len(MUTATIONS)
