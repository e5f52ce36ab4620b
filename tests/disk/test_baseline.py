"""carve and recover give the same records as the code at ebcaf5e (before the speed work, issue 13).

expected/pensieve-baseline.json was written by bench/record_baseline.py on ebcaf5e from the
kernel-made fixtures (tests/fixtures/carve, tests/fixtures/deleted); every record, hash and summary
count must stay the same whatever the scanner's strategy (windows, workers).
"""

from __future__ import annotations

import importlib.util
import json
import lzma
import shutil
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parent.parent / "fixtures"
BENCH = Path(__file__).resolve().parents[2] / "bench" / "record_baseline.py"


def _recorder():
    spec = importlib.util.spec_from_file_location("record_baseline", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _unpack(tmp_path_factory, name: str) -> str:
    raw = tmp_path_factory.mktemp(name) / f"{name}.img"
    with lzma.open(FIX / name / f"{name}.img.xz") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return str(raw)


def _load(name: str) -> dict:
    return json.loads((FIX / name / "expected" / "pensieve-baseline.json").read_text())


@pytest.mark.parametrize("name,func", [("carve", "carve_records"), ("deleted", "recover_records")])
def test_records_unchanged_since_the_base(tmp_path_factory, name, func):
    got = getattr(_recorder(), func)(_unpack(tmp_path_factory, name))
    want = _load(name)
    assert json.loads(json.dumps(got, sort_keys=True, default=str)) == want
