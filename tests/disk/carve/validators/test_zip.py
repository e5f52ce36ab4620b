"""The zip validator (PKWARE APPNOTE.TXT) on real and generated files and on mutations of them: every
mutation gets a verdict (None or a bounded Verdict), never an exception, within a time bound."""

from __future__ import annotations

import pytest
from carve_samples import CONFIDENCES, mutations, samples, validate

from pensieve.disk.carve.base import COMPLETE, Verdict

TYPE = "zip"
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


def test_generated_structures_are_followed():
    jar = validate(TYPE, SAMPLES["many.jar"])
    assert jar.details["subtype"] == "jar" and len(jar.details["names"]) == 21
    assert jar.details["names"][-1] == "META-INF/MANIFEST.MF"
    for name in ("streamed-deflate.zip", "streamed-stored.zip", "forced-zip64.zip", "zip64-end.zip"):
        assert validate(TYPE, SAMPLES[name]).details["entries"] >= 2, name
    assert validate(TYPE, SAMPLES["streamed-deflate.zip"]).details["crc_checked"] == 3
