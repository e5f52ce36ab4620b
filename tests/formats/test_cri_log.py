"""The CRI log format reader: the real CRI logs of the containerd 2.1 capture, partial lines,
kubelet rotation names, and generated hostile lines (each input time-bounded)."""

from __future__ import annotations

import io
import random
import time

from conftest import FIXTURE_ROOT, unpack

from pensieve.formats.cri_log import MAX_PROBLEMS_PER_FILE, join_partials, read_records, rotation_order
from pensieve.times import iso_ns, parse_rfc3339

FIX = FIXTURE_ROOT / "containerd2"


def lines(data: bytes, limit: int | None = None, path: str = "/x/0.log"):
    problems: list = []
    kwargs = {"limit": limit} if limit else {}
    got = list(join_partials(read_records(io.BytesIO(data), path, problems, "c"), "c", problems, **kwargs))
    return got, problems


def test_real_cri_logs(tmp_path):
    root = unpack(FIX / "containerd-2.1-root.tar.xz", tmp_path)
    files = sorted((root / "logs" / "pods").glob("*/*/*.log"))
    assert [f"{f.parent.name}/{f.name}" for f in files] == ["app/0.log", "migrate/0.log", "migrate/1.log"]
    for f in files:
        raw = f.read_bytes()
        got, problems = lines(raw)
        assert problems == []
        want = [line.split(" ", 3) for line in raw.decode().splitlines()]
        assert [(iso_ns(g.time), g.stream, g.message) for g in got] == [
            (iso_ns(parse_rfc3339(t)), s, m) for t, s, tag, m in want if tag == "F"
        ]


def test_partial_lines_are_joined_per_stream():
    data = (
        b"2024-01-01T00:00:00.000000001Z stdout P hello \n"
        b"2024-01-01T00:00:00.000000002Z stderr F err line\n"
        b"2024-01-01T00:00:00.000000003Z stdout P wor\n"
        b"2024-01-01T00:00:00.000000004Z stdout F ld\n"
        b"2024-01-01T00:00:00.000000005Z stdout F \n"
        b"2024-01-01T00:00:00.000000006Z stdout P tail"
    )
    got, problems = lines(data)
    assert problems == []
    assert [(g.time % 10, g.stream, g.message, g.partial) for g in got] == [
        (2, "stderr", "err line", False),
        (1, "stdout", "hello world", False),
        (5, "stdout", "", False),
        (6, "stdout", "tail", True),
    ]


def test_rotation_order():
    names = [
        "0.log", "0.log.20240102-000000.gz", "0.log.20240101-000000", "0.log.20240103-000000",
        "0.log.20240103-000000.gz", "0.log.20240104-000000.gz.tmp", "1.log", "0.log.bak", "0.logx",
    ]  # fmt: skip
    assert rotation_order(names, "0.log") == [
        "0.log.20240101-000000", "0.log.20240102-000000.gz", "0.log.20240103-000000", "0.log",
    ]  # fmt: skip
    assert rotation_order(["1.log"], "0.log") == []


def test_endless_partial_run_is_capped():
    chunk = b"2024-01-01T00:00:00Z stdout P " + b"a" * 1000 + b"\n"
    data = chunk * 300 + b"2024-01-01T00:00:01Z stdout F end\n2024-01-01T00:00:02Z stdout F next\n"
    start = time.monotonic()
    got, problems = lines(data, limit=10_000)
    assert time.monotonic() - start < 5
    assert [len(g.message) for g in got] == [10_000, 4]
    assert len(problems) == 1 and "joined past 10000 bytes" in problems[0].message


def test_bad_lines_are_problems():
    data = (
        b"yesterday stdout F bad time\n"
        b"2024-01-01T00:00:00Z stdout\n"
        b"2024-01-01T00:00:00Z journal F who\n"
        b"\n"
        b"2024-01-01T00:00:00Z stdout X odd tag\n"
        b"2024-01-01T00:00:00Z stdout F \xff\xfe bytes\n"
        b"2024-01-01T00:00:00Z stdout F ok\n"
    )
    got, problems = lines(data)
    assert [g.message for g in got] == [
        "bad time", "2024-01-01T00:00:00Z stdout", "2024-01-01T00:00:00Z journal F who", "odd tag",
        "\\xff\\xfe bytes", "ok",
    ]  # fmt: skip
    assert (
        got[0].time is None
        and got[1].stream is None
        and got[-1].time == parse_rfc3339("2024-01-01T00:00:00Z")
    )
    assert len(problems) == 6
    assert all(p.source == "/x/0.log" and p.message.startswith("line ") for p in problems)


def _mutate(rng: random.Random, line: bytes) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return line[: rng.randrange(len(line) + 1)]
    if kind == 1:
        i = rng.randrange(len(line))
        return line[:i] + bytes([rng.randrange(256)]) + line[i + 1 :]
    if kind == 2:
        return line.replace(b" ", b"", 1)
    if kind == 3:
        return rng.randbytes(rng.randrange(64))
    if kind == 4:
        return line.replace(b" F ", b" P ")
    if kind == 5:
        return b"\xff" * rng.randrange(100) + line
    return line.replace(b"Z", b"+99:99", 1)


def test_generated_hostile_logs_never_crash():
    good = b"2024-01-01T00:00:00.123456789Z stdout F a message\n"
    rng = random.Random(9)
    for _ in range(400):
        data = b"".join(
            _mutate(rng, good) + rng.choice([b"\n", b"", b"\r\n"]) for _ in range(rng.randrange(1, 80))
        )
        start = time.monotonic()
        got, problems = lines(data, limit=4096)
        assert time.monotonic() - start < 2
        for g in got:
            assert (
                isinstance(g.message, str)
                and len(g.message.encode("utf-8", "surrogatepass")) <= 4 * 4096 + 1000
            )
            assert g.stream in (None, "stdout", "stderr")
        assert len([p for p in problems if "more bad lines" not in p.message]) <= MAX_PROBLEMS_PER_FILE + len(
            got
        )


def test_huge_physical_line_is_cut():
    import pensieve.formats.cri_log as cri_log

    saved = cri_log.MAX_PHYSICAL
    cri_log.MAX_PHYSICAL = 1000
    try:
        got, problems = lines(
            b"2024-01-01T00:00:00Z stdout F " + b"x" * 5000 + b"\n2024-01-01T00:00:00Z stdout F y\n"
        )
    finally:
        cri_log.MAX_PHYSICAL = saved
    assert [len(g.message) for g in got] == [1000 - 30, 1]
    assert any("longer than 1000 bytes" in p.message for p in problems)
