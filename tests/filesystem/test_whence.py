"""whence on the captured overlay2 root: images named by their tags, and a path outside every
data root of the source is "not in the evidence" (exit 4), not an empty attribution."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from pensieve import api
from pensieve.errors import NotFound


@pytest.fixture(scope="module")
def host(overlay2_root):
    return api.open_docker(str(overlay2_root))


def test_image_layer_names_every_image_by_its_tags(host):
    base = api.view(host, host.image("pensieve/base:1"))
    a = api.whence(host, base.stat("/bin").host_path)
    assert a.layer_kind == "image"
    assert {"pensieve/base:1", "pensieve/app:1", "pensieve/app:2"} <= set(a.image_tags)
    # the tags are those of the images listed, in their order, each once
    want = [t for i in a.images for t in host.image(i).tags]
    assert a.image_tags == list(dict.fromkeys(want))


def test_layer_of_one_image_names_only_its_tag(host):
    c = host.container("c-modified")
    v = api.view(host, c)
    a = api.whence(host, v.stat("/opt/app/VERSION").host_path)
    assert "pensieve/app:2" in a.image_tags and "pensieve/base:1" not in a.image_tags
    implant = api.whence(host, v.stat("/root/implant.sh").host_path)  # the RW layer: its image
    assert implant.layer_kind == "rw" and implant.image_tags == host.image(c.image_id).tags


def test_whence_json_carries_the_tags(host, overlay2_root):
    v = api.view(host, host.container("c-modified"))
    path = str(overlay2_root) + v.stat("/etc/passwd").host_path
    code, out, err = run_cli("whence", overlay2_root, path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert "pensieve/app:2" in doc["image_tags"] and doc["images"]


def test_volume_and_metadata_paths_name_no_tags(host):
    assert api.whence(host, "/volumes/pvol/_data/x").image_tags == []
    assert api.whence(host, "/image/overlay2/repositories.json").layer_kind == "image-metadata"


@pytest.mark.parametrize("path", ["/etc/passwd", "/srv/elsewhere/file", "relative/name"])
def test_path_outside_every_data_root_is_not_in_the_evidence(host, overlay2_root, path):
    with pytest.raises(NotFound, match="below no Docker data root"):
        api.whence(host, path)
    code, out, err = run_cli("whence", overlay2_root, path, "--json")
    assert code == 4 and out == ""
    assert "not in the evidence" in err and path.lstrip("/") in err


def test_path_below_a_data_root_in_no_layer_still_attributes(overlay2_root):
    code, out, err = run_cli("whence", overlay2_root, str(overlay2_root / "containers"), "--json")
    assert code == 0, err
    assert "in no layer, volume or container directory" in json.loads(out)["notes"][0]


def test_a_file_of_a_containers_directory_names_the_container(host):
    (root,) = host.roots  # the captured root is one data root
    for c in host.containers():
        a = api.whence(host, f"{root.path.rstrip('/')}/containers/{c.id}/config.v2.json")
        assert a.layer_kind == "container-metadata"
        assert a.containers == [c.id] and a.container_names == [c.name or ""]
