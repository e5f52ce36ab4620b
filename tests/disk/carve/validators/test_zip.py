"""The zip validator (PKWARE APPNOTE.TXT): the details of its verdicts on real and generated
files (the mutation tests of every validator are in test_mutations.py)."""

from __future__ import annotations

from carve_samples import samples, validate

TYPE = "zip"
SAMPLES = samples(TYPE)


def test_generated_structures_are_followed():
    jar = validate(TYPE, SAMPLES["many.jar"])
    assert jar.details["subtype"] == "jar" and len(jar.details["names"]) == 21
    assert jar.details["names"][-1] == "META-INF/MANIFEST.MF"
    for name in ("streamed-deflate.zip", "streamed-stored.zip", "forced-zip64.zip", "zip64-end.zip"):
        assert validate(TYPE, SAMPLES[name]).details["entries"] >= 2, name
    assert validate(TYPE, SAMPLES["streamed-deflate.zip"]).details["crc_checked"] == 3
