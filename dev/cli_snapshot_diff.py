"""Compare two captures made by dev/cli_snapshot.py.

    python3 dev/cli_snapshot_diff.py OUT_A OUT_B [--context N] [--max-lines N]

Commands are matched by name (the part after ``NNN-``, so inserting a command does not shift the
rest).  For each command every captured part (.rc, .stdout, .stderr, .files) is compared; a part
that differs as text but parses as JSON (one document, or JSON lines) on both sides is compared
structurally: equal values count as identical (reported as "same JSON"), otherwise the first
differing JSON paths are shown.  Differences come with a short unified diff.  Exit status: 0 when
every command is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import signal
import sys
from pathlib import Path

PARTS = (".rc", ".stdout", ".stderr", ".files")
_STEM = re.compile(r"^\d+-(?P<name>.+)$")


def captures(root: Path) -> dict[str, str]:
    """name -> stem for every command of a capture."""
    found = {}
    for rc in sorted(root.glob("*.rc")):
        m = _STEM.match(rc.stem)
        found[m.group("name") if m else rc.stem] = rc.stem
    return found


def parse_json(text: str):
    """The JSON value of TEXT (a document, or a list of JSON lines), or raise ValueError."""
    try:
        return json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise
        return [json.loads(line) for line in lines]


def json_paths(a, b, path: str = "$", out: list[str] | None = None, limit: int = 10) -> list[str]:
    """Up to LIMIT paths where the JSON values A and B differ."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a:
                out.append(f"{path}.{key}: only in B")
            elif key not in b:
                out.append(f"{path}.{key}: only in A")
            elif a[key] != b[key]:
                json_paths(a[key], b[key], f"{path}.{key}", out, limit)
            if len(out) >= limit:
                break
    elif isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                json_paths(x, y, f"{path}[{i}]", out, limit)
            if len(out) >= limit:
                break
        if len(a) != len(b) and len(out) < limit:
            out.append(f"{path}: length {len(a)} vs {len(b)}")
    elif a != b:
        out.append(f"{path}: {json.dumps(a)[:120]} vs {json.dumps(b)[:120]}")
    return out


def unified(a: str, b: str, name: str, context: int, max_lines: int) -> list[str]:
    lines = list(
        difflib.unified_diff(a.splitlines(), b.splitlines(), f"A/{name}", f"B/{name}", n=context, lineterm="")
    )
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more diff lines)"]
    return lines


def read(path: Path) -> str | None:
    return path.read_text("utf-8", "surrogateescape") if path.exists() else None


def compare_part(a: str | None, b: str | None, name: str, opts) -> tuple[str, list[str]]:
    """('identical' | 'same JSON' | 'differs', detail lines)."""
    if a == b:
        return "identical", []
    if a is None or b is None:
        return "differs", [f"{name}: only in {'B' if a is None else 'A'}"]
    try:
        ja, jb = parse_json(a), parse_json(b)
    except ValueError:
        ja = jb = None
        structural = False
    else:
        structural = True
    if structural:
        if ja == jb:
            return "same JSON", []
        detail = [f"{name}: JSON differs at:"] + [f"  {p}" for p in json_paths(ja, jb)]
        pa = json.dumps(ja, indent=1, sort_keys=True)
        pb = json.dumps(jb, indent=1, sort_keys=True)
        return "differs", detail + unified(pa, pb, name, opts.context, opts.max_lines)
    return "differs", unified(a, b, name, opts.context, opts.max_lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="the first capture (say, before)")
    ap.add_argument("b", type=Path, help="the second capture (say, after)")
    ap.add_argument("--context", type=int, default=2, help="context lines of the unified diffs")
    ap.add_argument("--max-lines", type=int, default=30, help="diff lines shown per part")
    ap.add_argument("-q", "--quiet", action="store_true", help="list only the commands that differ")
    opts = ap.parse_args(argv)
    ca, cb = captures(opts.a), captures(opts.b)
    if read(opts.a / "000-fixtures-state.stdout") != read(opts.b / "000-fixtures-state.stdout"):
        print(
            "WARNING: the fixtures were unpacked again (or touched) between the two captures: outputs\n"
            "showing inodes, atime or ctime of fixture files will differ. Capture A again (the baseline\n"
            "worktree is pristine) so both see the same unpacking.\n"
        )
    counts = {"identical": 0, "differs": 0, "only in A": 0, "only in B": 0}
    for name in sorted(set(ca) | set(cb), key=lambda n: ca.get(n) or cb.get(n)):
        if name not in cb or name not in ca:
            where = "only in A" if name not in cb else "only in B"
            counts[where] += 1
            print(f"{where:10s} {name}")
            continue
        verdicts, details = [], []
        for part in PARTS:
            a, b = read(opts.a / f"{ca[name]}{part}"), read(opts.b / f"{cb[name]}{part}")
            verdict, detail = compare_part(a, b, f"{name}{part}", opts)
            if verdict != "identical":
                verdicts.append(f"{part[1:]}: {verdict}")
            details += detail
        if details:
            counts["differs"] += 1
            print(f"differs    {name} ({', '.join(verdicts)})")
            for line in details:
                print(f"    {line}")
        else:
            counts["identical"] += 1
            if not opts.quiet:
                note = f" ({', '.join(verdicts)})" if verdicts else ""
                print(f"identical  {name}{note}")
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0 if counts["differs"] == counts["only in A"] == counts["only in B"] == 0 else 1


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends quietly
    sys.exit(main())
