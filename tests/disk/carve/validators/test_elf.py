"""The elf validator (the System V gABI): the details of its verdicts on real and generated
files (the mutation tests of every validator are in test_mutations.py)."""

from __future__ import annotations

import pytest
from carve_samples import samples, validate

TYPE = "elf"
SAMPLES = samples(TYPE)


@pytest.mark.parametrize("name", ["elf32le", "elf32be", "elf64be", "elf64le"])
def test_each_class_and_byte_order(name):
    details = validate(TYPE, SAMPLES[name]).details
    assert details["class"] == int(name[3:5]) and details["endian"] == (
        "little" if name[5:] == "le" else "big"
    )
    assert details["section_names"] == [".text", ".bss", ".shstrtab"]
