"""overlay2's own files (moby daemon/graphdriver/overlay2: ``<root>/overlay2/<id>/link`` holds the
layer's short name, ``lower`` its chain ``l/<short>:l/<short>`` top first, contents in ``diff``)."""

from __future__ import annotations

import pytest

from pensieve.engines.docker.drivers import link_names, overlay2_contents, parse_lower
from pensieve.evidence.base import EvidenceError


@pytest.mark.parametrize(
    ("text", "shorts"),
    [
        ("l/AAA:l/BBB\n", ["AAA", "BBB"]),
        ("l/AAA", ["AAA"]),
        ("", []),
        ("\n", []),
        (":l/AAA::l/BBB:", ["AAA", "BBB"]),
    ],
)
def test_parse_lower(text, shorts):
    assert parse_lower(text) == shorts


def test_overlay2_contents():
    assert overlay2_contents("/var/lib/docker", "abc") == "/var/lib/docker/overlay2/abc/diff"


class FakeEvidence:
    def __init__(self, files: dict[str, bytes], dirs: dict[str, list[str]]) -> None:
        self.files, self.dirs = files, dirs

    def listdir(self, path: str) -> list[str]:
        if path not in self.dirs:
            raise EvidenceError(f"{path}: no such directory")
        return self.dirs[path]

    def read_bytes(self, path: str, limit: int) -> bytes:
        if path not in self.files:
            raise EvidenceError(f"{path}: no such file")
        return self.files[path][:limit]


def test_link_names_read_each_layers_link_file():
    base = "/r/overlay2"
    ev = FakeEvidence(
        {f"{base}/one/link": b"SHORTONE\n", f"{base}/two/link": b"SHORTTWO", f"{base}/empty/link": b"\n"},
        {base: ["one", "two", "empty", "nolink", "l"]},
    )
    assert link_names(ev, "/r") == {"SHORTONE": "one", "SHORTTWO": "two"}


def test_link_names_without_an_overlay2_store():
    assert link_names(FakeEvidence({}, {}), "/r") == {}
