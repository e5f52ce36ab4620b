"""The script validator on shebang lines an attacker can write: any bytes after the
interpreter (not valid UTF-8 included) give a verdict, never an exception."""

from __future__ import annotations

import random

from carve_samples import validate

from pensieve.disk.carve.base import Verdict

BODY = b"echo carved\n" * 40 + b"\0" * 4096


def test_an_env_argument_of_any_bytes_is_a_verdict():
    rng = random.Random(7)
    for _ in range(300):
        arg = bytes(rng.choice([*range(0x21, 0x7F), *range(0x80, 0x100)]) for _ in range(rng.randint(1, 40)))
        verdict = validate("script", b"#!/usr/bin/env " + arg + b"\n" + BODY)
        assert verdict is None or isinstance(verdict, Verdict)


def test_a_non_utf8_env_argument_names_its_interpreter_escaped():
    verdict = validate("script", b"#!/usr/bin/env b\xffash\n" + BODY)
    assert verdict is not None and verdict.details["interpreter"] == "/usr/bin/env"
    assert verdict.details["subtype"] == "b\\xffash"
