"""The gzip validator (RFC 1952) on real and generated files and on mutations of them: every
mutation gets a verdict (None or a bounded Verdict), never an exception, within a time bound."""

from __future__ import annotations

import pytest
from carve_samples import CONFIDENCES, mutations, samples, validate

from pensieve.disk.carve.base import COMPLETE, Verdict

TYPE = "gzip"
SAMPLES = samples(TYPE)


def test_every_sample_is_complete_at_its_length():
    for name, data in SAMPLES.items():
        if name.startswith(("trunc", "nocd")):
            continue
        verdict = validate(TYPE, data)
        assert verdict is not None and verdict.confidence == COMPLETE, name
        assert verdict.length == len(data), name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_mutations_get_a_verdict(name):
    data = SAMPLES[name]
    for what, mutated in mutations(data, seed=len(data)):
        for grid, range_end in ((4096, None), (512, len(mutated) + 100)):
            verdict = validate(TYPE, mutated, grid, range_end)
            assert verdict is None or isinstance(verdict, Verdict), what
            if verdict is not None:
                assert verdict.confidence in CONFIDENCES, what
                assert isinstance(verdict.details, dict), what


def test_header_flags_and_members():
    flags = validate(TYPE, SAMPLES["flags.gz"]).details
    assert (flags["name"], flags["os"], flags["members"]) == ("notes.txt", 3, 1)
    members = validate(TYPE, SAMPLES["members.gz"]).details
    assert (members["name"], members["members"], members["uncompressed"]) == ("first.txt", 3, 12400)
