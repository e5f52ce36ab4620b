"""Record carve and recover output of the current code on the fixtures (the pin for speed work).

Run once on the base commit (ebcaf5e): ``PYTHONPATH=src python3 bench/record_baseline.py DIR`` where
DIR holds carve.img and deleted.img (the decompressed fixtures).  Writes
tests/fixtures/{carve,deleted}/expected/pensieve-baseline.json; tests/disk/test_baseline.py asserts
that the code of today gives the same records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pensieve.disk.carve import carve
from pensieve.disk.recover import recover
from pensieve.evidence import open_evidence
from pensieve.records.core import to_dict

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def carve_records(image: str) -> dict:
    """Every carved record and the summary, as plain JSON."""
    files, summary = carve(image, skip_duplicates=True)
    summary_dict = to_dict(summary)
    summary_dict.pop("seconds", None)  # the one field that is a timing, not a result
    return {"files": [to_dict(f) for f in files], "summary": summary_dict}


def recover_records(image: str) -> dict:
    """Every recovered file, as plain JSON."""
    ev = open_evidence(image)
    try:
        report = recover(ev)
    finally:
        ev.close()
    return {"files": [to_dict(f) for f in report.files]}


def main(argv: list[str]) -> int:
    base = Path(argv[1])
    pairs = [("carve", carve_records(str(base / "carve.img")))]
    pairs.append(("deleted", recover_records(str(base / "deleted.img"))))
    for name, data in pairs:
        out = ROOT / name / "expected" / "pensieve-baseline.json"
        out.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
