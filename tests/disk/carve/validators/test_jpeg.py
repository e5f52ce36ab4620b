"""The jpeg validator (ITU T.81 / JFIF): the details of its verdicts on real and generated
files (the mutation tests of every validator are in test_mutations.py)."""

from __future__ import annotations

from carve_samples import samples, validate

TYPE = "jpeg"
SAMPLES = samples(TYPE)


def test_restart_markers_and_progressive_scans():
    baseline = validate(TYPE, SAMPLES["restarts.jpg"]).details
    assert (baseline["scans"], baseline["progressive"], baseline["width"]) == (1, False, 64)
    progressive = validate(TYPE, SAMPLES["scans.jpg"]).details
    assert (progressive["scans"], progressive["progressive"]) == (3, True)
