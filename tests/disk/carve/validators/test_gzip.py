"""The gzip validator (RFC 1952): the details of its verdicts on real and generated
files (the mutation tests of every validator are in test_mutations.py)."""

from __future__ import annotations

from carve_samples import samples, validate

TYPE = "gzip"
SAMPLES = samples(TYPE)


def test_header_flags_and_members():
    flags = validate(TYPE, SAMPLES["flags.gz"]).details
    assert (flags["name"], flags["os"], flags["members"]) == ("notes.txt", 3, 1)
    members = validate(TYPE, SAMPLES["members.gz"]).details
    assert (members["name"], members["members"], members["uncompressed"]) == ("first.txt", 3, 12400)
