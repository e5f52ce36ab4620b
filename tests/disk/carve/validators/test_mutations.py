"""Every structural validator on real and generated files (carve_samples: the planted files of
the carve fixture, and files built for what it lacks) and on mutations of them: each unchanged
file validates complete at its full length; each mutation gets a verdict (None or a bounded
Verdict), never an exception, within a time bound."""

from __future__ import annotations

import pytest
from carve_samples import CONFIDENCES, mutations, samples, validate

from pensieve.disk.carve.base import COMPLETE, Verdict

TYPES = ("elf", "gzip", "jpeg", "zip")
SAMPLES = {t: samples(t) for t in TYPES}
CASES = [(t, name) for t in TYPES for name in sorted(SAMPLES[t])]


@pytest.mark.parametrize("type_", TYPES)
def test_every_sample_is_complete_at_its_length(type_):
    for name, data in SAMPLES[type_].items():
        if name.startswith(("trunc", "nocd")):
            continue
        verdict = validate(type_, data)
        assert verdict is not None and verdict.confidence == COMPLETE, name
        assert verdict.length == len(data), name


@pytest.mark.parametrize(("type_", "name"), CASES)
def test_mutations_get_a_verdict(type_, name):
    data = SAMPLES[type_][name]
    for what, mutated in mutations(data, seed=len(data)):
        for grid, range_end in ((4096, None), (512, len(mutated) + 100)):
            verdict = validate(type_, mutated, grid, range_end)
            assert verdict is None or isinstance(verdict, Verdict), what
            if verdict is not None:
                assert verdict.confidence in CONFIDENCES, what
                assert isinstance(verdict.details, dict), what
