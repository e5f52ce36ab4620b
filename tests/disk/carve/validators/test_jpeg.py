"""The jpeg validator (ITU T.81 / JFIF) on real and generated files and on mutations of them: every
mutation gets a verdict (None or a bounded Verdict), never an exception, within a time bound."""

from __future__ import annotations

import pytest
from carve_samples import CONFIDENCES, mutations, samples, validate

from pensieve.disk.carve.base import COMPLETE, Verdict

TYPE = "jpeg"
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


def test_restart_markers_and_progressive_scans():
    baseline = validate(TYPE, SAMPLES["restarts.jpg"]).details
    assert (baseline["scans"], baseline["progressive"], baseline["width"]) == (1, False, 64)
    progressive = validate(TYPE, SAMPLES["scans.jpg"]).details
    assert (progressive["scans"], progressive["progressive"]) == (3, True)
