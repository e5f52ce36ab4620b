"""``fs SOURCE TARGET find --layer L``: a layer that is not one of the target's is "not in the
evidence" (exit 4, the layer named), not an empty table."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from pensieve import api


@pytest.mark.parametrize(
    "target, layer",
    [
        ("c-modified", "nosuchlayer"),
        ("c-modified", "0000000000"),
        ("pensieve/app:2", "rw"),  # an image has no RW layer
        ("pensieve/app:2", "init"),
    ],
)
def test_find_with_a_layer_the_target_lacks_exits_4(overlay2_root, target, layer):
    code, out, err = run_cli("fs", overlay2_root, target, "find", "--layer", layer, "--json")
    assert code == 4 and out == ""
    assert "not in the evidence" in err and f"no layer {layer} in {target}" in err


def test_find_with_one_of_the_targets_layers_still_lists(overlay2_root):
    host = api.open_docker(str(overlay2_root))
    c = host.container("c-modified")
    rw = c.layers[-1].cache_id
    code, out, err = run_cli("fs", overlay2_root, "c-modified", "find", "/root", "--layer", rw[:12], "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows and all(r["layer"] == rw for r in rows)
    code, out, err = run_cli(
        "fs", overlay2_root, "pensieve/app:2", *("find", "/opt", "--layer", "image", "--json")
    )
    assert code == 0 and json.loads(out)
