"""Docker's bookkeeping files as recovered after ``docker rm`` (moby layer/filestore.go: the
layerdb mount record; daemon/container: config.v2.json; daemon/graphdriver/overlay2: lower):
what RemovedContainers reads from them, and that no mutation of their contents raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve.engines.docker.drivers import DEFAULT_DATA_ROOT, LAYER_REMNANT, RemovedContainers
from pensieve.engines.docker.drivers.remnants import (
    MOUNT_RECORD_NOTE,
    mount_id_file,
    mount_record_container,
    removed_layer_kind,
)

CID = "c" * 64
RW = "a" * 64
ROOT = "/var/lib/docker"
MOUNTS = f"{ROOT}/image/overlay2/layerdb/mounts/{CID}"
CONFIG = f"{ROOT}/containers/{CID}/config.v2.json"


def test_default_data_root():
    assert DEFAULT_DATA_ROOT == "/var/lib/docker"


@pytest.mark.parametrize(
    "path",
    [
        f"{MOUNTS}/mount-id",
        f"{MOUNTS}/init-id",
        CONFIG,
        f"{ROOT}/overlay2/{RW}/lower",
        f"{ROOT}/overlay2/{RW}/link",
    ],
)
def test_remnant_files_are_recognised(path):
    assert LAYER_REMNANT.search(path)


@pytest.mark.parametrize(
    "path",
    [
        f"{MOUNTS}/parent",
        f"{ROOT}/image/overlay2/layerdb/mounts/{CID[:12]}/mount-id",
        f"{ROOT}/containers/{CID}/hostconfig.json",
        f"{ROOT}/overlay2/{RW}/diff/lower",
        f"{ROOT}/overlay2/{RW}/lower/x",
        "/home/user/config.v2.json",
    ],
)
def test_other_files_are_not_remnants(path):
    assert not LAYER_REMNANT.search(path)


def test_mount_id_and_init_id_name_the_container():
    removed = RemovedContainers(
        {f"{MOUNTS}/mount-id": RW.encode() + b"\n", f"{MOUNTS}/init-id": f"{RW}-init".encode()}
    )
    assert removed.mount_of == {RW: CID, f"{RW}-init": CID}
    assert removed.container_of(RW) == CID
    assert removed.container_of(f"{RW}-init") == CID
    assert removed.container_of("b" * 64) is None


def test_init_layer_falls_back_to_its_rw_layer_and_back():
    only_rw = RemovedContainers({f"{MOUNTS}/mount-id": RW.encode()})
    assert only_rw.container_of(f"{RW}-init") == CID
    only_init = RemovedContainers({f"{MOUNTS}/init-id": f"{RW}-init".encode()})
    assert only_init.container_of(RW) == CID


@pytest.mark.parametrize("content", [b"", b"not-an-id", b"A" * 64, RW.encode() + b"-rw", b"\xff" * 64])
def test_a_mount_id_that_is_no_layer_id_is_ignored(content):
    assert RemovedContainers({f"{MOUNTS}/mount-id": content}).mount_of == {}


def test_config_gives_name_and_image():
    cfg = json.dumps({"Name": "/web", "Image": "sha256:" + "e" * 64}).encode()
    removed = RemovedContainers({CONFIG: cfg})
    assert removed.name(CID) == "web"
    assert removed.image(CID) == "sha256:" + "e" * 64
    assert removed.name("d" * 64) is None and removed.image("d" * 64) is None


@pytest.mark.parametrize(
    "cfg",
    [
        b"",
        b"{",
        b"[1, 2]",
        b'"x"',
        b"null",
        b'{"Name": 5, "Image": ["x"]}',
        b'{"Name": "/"}',
        b"{}",
        b"[" * 5000,
    ],
)
def test_a_config_that_says_nothing_gives_nothing(cfg):
    removed = RemovedContainers({CONFIG: cfg})
    assert removed.name(CID) is None
    assert removed.image(CID) is None


def test_top_lower_is_the_first_link_of_the_chain():
    removed = RemovedContainers({f"{ROOT}/overlay2/{RW}/lower": b"l/TOPLINK:l/BELOWLINK\n"})
    assert removed.lowers == {RW: "l/TOPLINK:l/BELOWLINK"}
    assert removed.top_lower(RW) == "TOPLINK"
    assert removed.top_lower(f"{RW}-init") == "TOPLINK"  # an init layer: its RW layer's chain
    assert removed.top_lower("b" * 64) is None


def test_an_empty_lower_file_has_no_top():
    assert RemovedContainers({f"{ROOT}/overlay2/{RW}/lower": b"\n"}).top_lower(RW) is None


def test_removed_layer_kind():
    assert removed_layer_kind(RW) == "rw (removed container)"
    assert removed_layer_kind(f"{RW}-init") == "init (removed container)"


def test_mount_record_paths():
    assert mount_record_container(MOUNTS) == CID
    assert mount_record_container(f"{MOUNTS}/parent") == CID
    assert mount_record_container(f"{MOUNTS}x/parent") is None
    assert mount_record_container(f"{ROOT}/containers/{CID}/hostname") is None
    assert mount_id_file(CID) == f"layerdb/mounts/{CID[:12]}/mount-id"
    assert "layerdb" in MOUNT_RECORD_NOTE


_PATHS = st.sampled_from([f"{MOUNTS}/mount-id", f"{MOUNTS}/init-id", CONFIG, f"{ROOT}/overlay2/{RW}/lower"])


@settings(max_examples=300, deadline=2000)
@given(st.dictionaries(_PATHS, st.binary(max_size=2048)), st.sampled_from([RW, f"{RW}-init", CID]))
def test_any_remnant_content_is_read_without_raising(remnants, layer):
    removed = RemovedContainers(remnants)
    cid = removed.container_of(layer)
    assert cid is None or cid == CID
    top = removed.top_lower(layer)
    assert top is None or "/" not in top and ":" not in top
    for got in (removed.name(CID), removed.image(CID)):
        assert got is None or isinstance(got, str)


@settings(max_examples=200, deadline=2000)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_config_is_read_without_raising(value):
    removed = RemovedContainers({CONFIG: json.dumps({"Name": value, "Image": value}).encode()})
    name, image = removed.name(CID), removed.image(CID)
    if isinstance(value, str):
        assert name == (value.lstrip("/") or None) and image == (value or None)
    else:
        assert name is None and image is None
