"""IOC lists: plain lines with sniffed types, STIX 2.1 bundles."""

from __future__ import annotations

import json

import pytest

from pensieve.hunting.iocs import load_iocs, parse_stix, sniff
from pensieve.hunting.rules import RuleError

SHA = "a" * 64


@pytest.mark.parametrize(
    "line, expected",
    [
        (SHA.upper(), ("sha256", SHA)),
        ("d41d8cd98f00b204e9800998ecf8427e", ("md5", "d41d8cd98f00b204e9800998ecf8427e")),
        ("da39a3ee5e6b4b0d3255bfef95601890afd80709", ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709")),
        ("10.1.2.3", ("ipv4", "10.1.2.3")),
        ("2001:DB8::1", ("ipv6", "2001:db8::1")),
        ("Evil.Example.COM", ("domain", "evil.example.com")),
        ("implant.sh", ("filename", "implant.sh")),
        ("xmrig", ("filename", "xmrig")),
        ("/root/implant.sh", ("path", "/root/implant.sh")),
        ("re:nc .* -e", ("regex", "nc .* -e")),
        ("/c2[0-9]+\\.net/", ("regex", "c2[0-9]+\\.net")),
        ("name:evil.example.com", ("filename", "evil.example.com")),
        ("   ", None),
    ],
)
def test_plain_lines_are_sniffed(line, expected):
    assert sniff(line) == expected


def test_a_plain_list_with_comments(tmp_path):
    path = tmp_path / "iocs.txt"
    path.write_text(f"# header\n\n{SHA} # the dropper\n10.9.8.7\n{SHA}\nre:^curl .*\\|sh\n")
    iocs = load_iocs([str(path)])
    assert [(i.type, i.value, i.name) for i in iocs] == [
        ("sha256", SHA, "the dropper"),
        ("ipv4", "10.9.8.7", None),
        ("regex", "^curl .*\\|sh", None),
    ]
    assert iocs[1].source == f"{path}:4"


def test_a_bad_regex_names_its_line(tmp_path):
    path = tmp_path / "iocs.txt"
    path.write_text("10.0.0.1\nre:([unclosed\n")
    with pytest.raises(RuleError) as info:
        load_iocs([str(path)])
    assert info.value.line == 2


BUNDLE = {
    "type": "bundle",
    "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
    "objects": [
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "name": "dropper",
            "pattern_type": "stix",
            "pattern": f"[file:hashes.'SHA-256' = '{SHA}']"
            " OR [file:hashes.MD5 = 'D41D8CD98F00B204E9800998ECF8427E']",
            "valid_from": "2024-01-01T00:00:00Z",
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--11111111-2222-4333-8444-555555555555",
            "name": "c2",
            "pattern_type": "stix",
            "pattern": "[ipv4-addr:value = '198.51.100.7'] OR [domain-name:value = 'c2.example.net']"
            " OR [url:value = 'http://dl.example.org/x.sh'] OR [file:name = 'kinsing']",
            "valid_from": "2024-01-01T00:00:00Z",
        },
        {"type": "indicator", "id": "indicator--x", "pattern_type": "sigma", "pattern": "title: x"},
        {"type": "malware", "id": "malware--y", "name": "kinsing", "is_family": True},
        {"type": "indicator", "id": "indicator--z", "pattern": "[process:name = 'kworker']"},
    ],
}


def test_a_stix_bundle(tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(BUNDLE))
    notes: list[str] = []
    iocs = load_iocs([str(path)], notes)
    assert [(i.type, i.value, i.name) for i in iocs] == [
        ("sha256", SHA, "dropper"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427e", "dropper"),
        ("ipv4", "198.51.100.7", "c2"),
        ("domain", "c2.example.net", "c2"),
        ("domain", "dl.example.org", "c2"),
        ("filename", "kinsing", "c2"),
    ]
    assert iocs[0].id == "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"
    assert notes and "2 STIX" in notes[0]


def test_a_lone_indicator_object():
    one = dict(BUNDLE["objects"][0])
    assert [i.type for i in parse_stix(one, "x.json", [])] == ["sha256", "md5"]


def test_broken_json_is_an_error(tmp_path):
    path = tmp_path / "b.json"
    path.write_text('{"type": "bundle", "objects": [}')
    with pytest.raises(RuleError, match="not a STIX bundle"):
        load_iocs([str(path)])
