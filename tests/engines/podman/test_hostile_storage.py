"""Hostile containers.json / images.json / layers.json and a damaged bolt_state.db.

A generator mutates every field of every item of the real Podman 4.3 store files into each
wrong JSON type (and a nesting bomb); each reading of the whole host -- containers with their
layer chains, images with their layers, pods, volumes -- must end within a time bound with
records and problems, never an exception, and a wrong type in a field pensieve reads must be a
problem naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, time_bound, unpack

from pensieve.engines.podman import PodmanHost
from pensieve.evidence import DirectoryEvidence

#: the fields pensieve reads from each store file, and the JSON type each must have
STORE_FILES = {
    "overlay-containers/containers.json": {
        "id": "str", "names": "list", "image": "str", "layer": "str", "metadata": "str", "created": "str",
        "flags": "obj",
    },
    "overlay-images/images.json": {
        "id": "str", "digest": "str", "digests": "list", "names": "list", "layer": "str", "metadata": "str",
        "big-data-names": "list", "big-data-digests": "obj", "big-data-sizes": "obj",
        "created": "str",
    },
    "overlay-layers/layers.json": {
        "id": "str", "parent": "str", "names": "list", "created": "str", "compressed-diff-digest": "str",
        "compressed-size": "int", "diff-digest": "str", "diff-size": "int",
    },
}  # fmt: skip
#: JSON texts of every other type (written raw: 1e400 and the bomb are not Python values)
#: (JSON text, the type it has: a field of another type must give a problem; "any": always one)
WRONG = [
    ("null", "null"), ("true", "bool"), ("12", "int"), ("1e400", "inf"), ('"text"', "str"), ("[]", "list"),
    ('["a", 1]', "any-list"), ("{}", "obj"), ('{"a": 1}', "obj"), ("[" * 5000 + "]" * 5000, "any"),
]  # fmt: skip
BOMB = b"[" * 200_000 + b"]" * 200_000


@pytest.fixture(scope="module")
def graphroot(tmp_path_factory) -> Path:
    """The test's own copy of the graphroot (the store files are rewritten in it)."""
    return (
        unpack(FIXTURE_ROOT / "podman" / "podman-4.3-root.tar.xz", tmp_path_factory.mktemp("podman"))
        / "storage"
    )


def read_everything(root: Path) -> PodmanHost:
    host = PodmanHost(DirectoryEvidence(str(root)))
    with time_bound(10):
        for c in host.containers():
            assert c.engine == "podman"
            host.pod_of(c)
        for image in host.images():
            host.image_layers(image)
        host.volumes()
        host.pods()
    return host


def mutations(items: list[dict], fields: dict[str, str]) -> Iterator[tuple[str, str, bool, bytes]]:
    """(field, wrong value, whether it must be a problem, file text) for each item's each field
    and each JSON type."""
    for i in range(len(items)):
        for name, want in sorted(fields.items()):
            for wrong, kind in WRONG:
                must = kind == "any" or (
                    kind not in ("null", want) and not (kind == "any-list" and want != "list")
                )
                must = must or (kind == "any-list" and want == "list")
                must = must or (name in ("metadata", "created") and kind == "str")  # not JSON / not a time
                texts = [json.dumps(item) for item in items]
                marker = '"__pensieve_mutation__"'
                texts[i] = json.dumps({**items[i], name: "__pensieve_mutation__"}).replace(marker, wrong)
                yield name, wrong, must, ("[" + ",".join(texts) + "]").encode()


@pytest.mark.parametrize("rel", sorted(STORE_FILES))
def test_type_mutations_give_problems_not_crashes(graphroot, rel):
    path = graphroot / rel
    original = path.read_bytes()
    items = json.loads(original)
    baseline = {(c.id, c.name) for c in read_everything(graphroot).containers()}
    tried = 0
    try:
        for name, wrong, must, text in mutations(items, STORE_FILES[rel]):
            path.write_bytes(text)
            host = read_everything(graphroot)
            tried += 1
            if must:
                assert any(p.source.endswith(rel) for p in host.problems), (name, wrong)
            if rel.endswith("containers.json") and name != "id":
                # one bad field of one container never hides a container
                assert {c.id for c in host.containers()} == {cid for cid, _ in baseline}
    finally:
        path.write_bytes(original)
    assert tried == len(items) * len(STORE_FILES[rel]) * len(WRONG)


@pytest.mark.parametrize("rel", sorted(STORE_FILES))
@pytest.mark.parametrize("text", [BOMB, b"", b"{", b"{}", b'"x"', b"\xff\xfe", b"[1, 2, 3]"])
def test_whole_file_damage(graphroot, rel, text):
    path = graphroot / rel
    original = path.read_bytes()
    try:
        path.write_bytes(text)
        host = read_everything(graphroot)
        if text.strip() and text != b"[]":
            assert any(p.source.endswith(rel) for p in host.problems)
        assert host.volumes()  # libpod's own state survives a broken store file
    finally:
        path.write_bytes(original)


def test_missing_layer_and_image(graphroot):
    path = graphroot / "overlay-layers" / "layers.json"
    original = path.read_bytes()
    layers = json.loads(original)
    try:
        path.write_bytes(json.dumps([layer for layer in layers if layer.get("parent")]).encode())
        host = read_everything(graphroot)
        assert len(host.containers()) == 4
        assert any("not in layers.json" in p.message for p in host.problems)
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("cut", [0, 100, 4096, 9000, 20000, -1])
def test_truncated_bolt_state(graphroot, cut):
    db = graphroot / "libpod" / "bolt_state.db"
    data = db.read_bytes()
    half = len(data) // 2
    try:
        db.write_bytes(data[:cut] if cut >= 0 else data[:half] + b"\xff" * (len(data) - half))
        host = read_everything(graphroot)
        assert any(p.source.endswith("bolt_state.db") for p in host.problems) or cut == -1
        # containers/storage still names every container
        assert len(host.containers()) == 4
    finally:
        db.write_bytes(data)
