"""Tests for pensieve.engines.docker.logs (json-file and local driver readers).

Most fixtures here are HAND-MADE corner-case fixtures (rotation, gzip, hostile framing), built
from the documented formats.  Real-engine fixtures (tests/fixtures/docker/, captured from a
real dockerd, `docker logs -t` output in tests/fixtures/docker/expected/) are compared by the
engine's integration tests; the last test here also checks this reader against them and is
skipped when they are absent.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT

from pensieve.engines.docker.logs import (
    MAX_RECORD,
    log_files,
    read_logs,
)
from pensieve.evidence.directory import DirectoryEvidence
from pensieve.records import LogLine, Problem
from pensieve.times import iso_ns as _rfc3339_nano
from pensieve.times import parse_rfc3339

CID = "3f4e" * 16
CDIR = f"/var/lib/docker/containers/{CID}"
HOST_LOG_PATH = f"/srv/other-root/containers/{CID}/{CID}-json.log"  # not in the evidence


# ---- helpers: build the formats by hand -----------------------------------------------------
def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def log_entry(
    line: bytes,
    source: str = "stdout",
    time_nano: int = 1_795_897_862_123_456_789,
    partial: bool = False,
    meta: tuple[bool, str, int] | None = None,
    extra: bytes = b"",
) -> bytes:
    """protobuf LogEntry (moby api/types/plugins/logdriver/entry.proto)."""
    msg = field_bytes(1, source.encode()) + field_varint(2, time_nano) + field_bytes(3, line)
    if partial:
        msg += field_varint(4, 1)
    if meta is not None:
        last, pid, ordinal = meta
        sub = field_varint(1, int(last)) + field_bytes(2, pid.encode()) + field_varint(3, ordinal)
        msg += field_bytes(5, sub)
    return msg + extra


def frame(payload: bytes, trailer: int | None = None) -> bytes:
    n = len(payload)
    return struct.pack(">I", n) + payload + struct.pack(">I", n if trailer is None else trailer)


def record(line: bytes, **kw: object) -> bytes:
    return frame(log_entry(line, **kw))  # type: ignore[arg-type]


def json_line(text: str, stream: str = "stdout", when: str = "2026-11-28T20:31:02.1Z") -> bytes:
    return json.dumps({"log": text, "stream": stream, "time": when}).encode() + b"\n"


def write(root: Path, path: str, data: bytes, gz: bool = False) -> None:
    host = root / path.lstrip("/")
    host.parent.mkdir(parents=True, exist_ok=True)
    host.write_bytes(gzip.compress(data) if gz else data)


def read_all(ev: DirectoryEvidence, files: list[str]) -> tuple[list[LogLine], list[Problem]]:
    problems: list[Problem] = []
    lines = list(read_logs(ev, CID, files, problems))
    return lines, problems


def messages(lines: list[LogLine]) -> list[str]:
    return [ln.message for ln in lines]


# ---- log_files ------------------------------------------------------------------------------
def test_json_file_rotation_order_and_host_log_path(tmp_path: Path) -> None:
    base = f"{CDIR}/{CID}-json.log"
    write(tmp_path, base, json_line("now\n"))
    write(tmp_path, base + ".1", json_line("one\n"))
    write(tmp_path, base + ".2.gz", json_line("two\n"), gz=True)
    write(tmp_path, base + ".10.gz", json_line("ten\n"), gz=True)
    write(tmp_path, f"{CDIR}/config.v2.json", b"{}")
    write(tmp_path, f"{CDIR}/{CID}-json.log.bak", b"junk")
    ev = DirectoryEvidence(str(tmp_path))

    files = log_files(ev, CDIR, HOST_LOG_PATH, "json-file")
    assert files == [base + ".10.gz", base + ".2.gz", base + ".1", base]
    lines, problems = read_all(ev, files)
    assert messages(lines) == ["ten", "two", "one", "now"]
    assert problems == []


def test_plain_rotation_wins_over_half_compressed_copy(tmp_path: Path) -> None:
    base = f"{CDIR}/{CID}-json.log"
    write(tmp_path, base, json_line("now\n"))
    write(tmp_path, base + ".1", json_line("one\n"))
    write(tmp_path, base + ".1.gz", b"\x1f\x8b\x08")  # compression interrupted
    ev = DirectoryEvidence(str(tmp_path))
    assert log_files(ev, CDIR, None, "json-file") == [base + ".1", base]


def test_log_files_scans_when_log_path_missing_or_unmapped(tmp_path: Path) -> None:
    base = f"{CDIR}/{CID}-json.log"
    write(tmp_path, base, json_line("x\n"))
    ev = DirectoryEvidence(str(tmp_path))
    assert log_files(ev, CDIR, None, None) == [base]
    assert log_files(ev, CDIR, "/somewhere/else/other.log", "json-file") == [base]
    assert log_files(ev, CDIR, "", "json-file") == [base]
    assert log_files(ev, "/var/lib/docker/containers/missing", None, None) == []


def test_log_files_local_and_dual_logging_cache(tmp_path: Path) -> None:
    local = f"{CDIR}/local-logs/container.log"
    write(tmp_path, local, record(b"now"))
    write(tmp_path, local + ".1.gz", record(b"one"), gz=True)
    write(tmp_path, local + ".2.gz", record(b"two"), gz=True)
    cache = f"{CDIR}/container-cached.log"
    write(tmp_path, cache, record(b"cached"))
    write(tmp_path, cache + ".1.gz", record(b"cached-old"), gz=True)
    ev = DirectoryEvidence(str(tmp_path))

    assert log_files(ev, CDIR, None, "local") == [local + ".2.gz", local + ".1.gz", local]
    assert log_files(ev, CDIR, None, "fluentd") == [cache + ".1.gz", cache]
    assert set(log_files(ev, CDIR, None, None)) == {
        local,
        local + ".1.gz",
        local + ".2.gz",
        cache,
        cache + ".1.gz",
    }
    lines, problems = read_all(ev, log_files(ev, CDIR, None, "local"))
    assert messages(lines) == ["two", "one", "now"]
    assert problems == []


# ---- json-file ------------------------------------------------------------------------------
def test_json_entries_partial_attrs_and_corrupt_line(tmp_path: Path) -> None:
    path = f"{CDIR}/{CID}-json.log"
    data = (
        json_line("hello\n", when="2026-11-28T20:31:02.123456789Z")
        + json_line("first half ", stream="stderr")
        + json_line("second half\n", stream="stderr")
        + b'{"log":"broken\n'  # corrupt line 4
        + b"\n"  # blank: ignored
        + json.dumps(
            {
                "log": "with attrs\n",
                "stream": "stdout",
                "time": "2026-11-28T20:31:03Z",
                "attrs": {"tag": "web"},
            }
        ).encode()
        + b"\n"
        + b'["not", "an", "entry"]\n'  # line 7
        + json.dumps({"log": "no newline at eof\n", "stream": "stdout", "time": "t"}).encode()
    )
    write(tmp_path, path, data)
    ev = DirectoryEvidence(str(tmp_path))
    lines, problems = read_all(ev, [path])

    assert messages(lines) == ["hello", "first half ", "second half", "with attrs", "no newline at eof"]
    assert lines[0] == LogLine(CID, parse_rfc3339("2026-11-28T20:31:02.123456789Z"), "stdout", "hello", path)
    assert [ln.partial for ln in lines] == [False, True, False, False, False]
    assert lines[1].stream == "stderr"
    assert (
        _rfc3339_nano(lines[1].time) == "2026-11-28T20:31:02.100000000Z"
    )  # fixed 9 digits like docker logs -t
    assert len(problems) == 2
    assert all(p.source == path and p.subject == CID for p in problems)
    assert "line 4" in problems[0].message and "corrupt JSON" in problems[0].message
    assert "line 7" in problems[1].message


def test_json_invalid_utf8_and_truncated_gzip(tmp_path: Path) -> None:
    base = f"{CDIR}/{CID}-json.log"
    body = b"".join(json_line(f"old {i}\n") for i in range(2000))
    gz = gzip.compress(body)
    write(tmp_path, base + ".1.gz", gz[: len(gz) // 2])  # truncated copy
    write(tmp_path, base, b'{"log":"\xff\xfe\\n","stream":"stdout","time":"t"}\n' + json_line("ok\n"))
    ev = DirectoryEvidence(str(tmp_path))
    lines, problems = read_all(ev, log_files(ev, CDIR, None, "json-file"))

    old = [m for m in messages(lines) if m.startswith("old ")]
    assert 0 < len(old) < 2000 and old == [f"old {i}" for i in range(len(old))]
    assert messages(lines)[-1] == "ok"
    assert len(problems) == 2
    assert problems[0].source == base + ".1.gz" and "cannot read" in problems[0].message
    assert problems[1].source == base and "line 1" in problems[1].message


def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    path = f"{CDIR}/{CID}-json.log"
    write(tmp_path, path, json_line("still here\n"))
    ev = DirectoryEvidence(str(tmp_path))
    lines, problems = read_all(ev, [f"{CDIR}/gone-json.log.1", path])
    assert messages(lines) == ["still here"]
    assert len(problems) == 1 and problems[0].source == f"{CDIR}/gone-json.log.1"


# ---- local driver ---------------------------------------------------------------------------
def test_local_entries_time_partial_and_unknown_fields(tmp_path: Path) -> None:
    path = f"{CDIR}/local-logs/container.log"
    unknown = (
        field_varint(9, 12345)
        + varint(10 << 3 | 1)
        + b"\x00" * 8  # fixed64
        + varint(11 << 3 | 5)
        + b"\x00" * 4  # fixed32
        + field_bytes(12, b"future")
    )
    data = (
        record(b"plain", time_nano=1_795_897_862_123_456_789)
        + record(b"chunk1 ", source="stderr", partial=True, meta=(False, "p1", 1))
        + record(b"chunk2", source="stderr", partial=True, meta=(True, "p1", 2))
        + record(b"bare partial", partial=True)
        + record(b"extra", extra=unknown, time_nano=5)
        + record(b"bad \xff utf8", time_nano=-1)
    )
    write(tmp_path, path, data)
    ev = DirectoryEvidence(str(tmp_path))
    lines, problems = read_all(ev, [path])

    assert problems == []
    assert messages(lines) == ["plain", "chunk1 ", "chunk2", "bare partial", "extra", "bad \\xff utf8"]
    assert lines[0] == LogLine(CID, parse_rfc3339("2026-11-28T20:31:02.123456789Z"), "stdout", "plain", path)
    assert [ln.partial for ln in lines] == [False, True, False, True, False, False]
    assert [ln.stream for ln in lines][:3] == ["stdout", "stderr", "stderr"]
    assert _rfc3339_nano(lines[4].time) == "1970-01-01T00:00:00.000000005Z"
    assert _rfc3339_nano(lines[5].time) == "1969-12-31T23:59:59.999999999Z"


def test_rfc3339_nano_range() -> None:
    assert _rfc3339_nano(0) == "1970-01-01T00:00:00.000000000Z"
    assert _rfc3339_nano(1_795_897_862_000_000_000) == "2026-11-28T20:31:02.000000000Z"
    assert _rfc3339_nano(2**63 - 1) == "2262-04-11T23:47:16.854775807Z"
    assert _rfc3339_nano(-(2**63)) == "1677-09-21T00:12:43.145224192Z"


def test_local_many_records_across_buffer_boundaries(tmp_path: Path) -> None:
    path = f"{CDIR}/local-logs/container.log"
    big = b"B" * 999_000  # near the daemon's 1e6 serialized maximum
    recs = [record(f"line {i:05d} ".encode() + b"x" * (i % 300)) for i in range(12000)]
    recs.insert(6000, record(big))
    write(tmp_path, path + ".1.gz", b"".join(recs), gz=True)
    write(tmp_path, path, b"".join(recs[:3]))
    lines, problems = read_all(DirectoryEvidence(str(tmp_path)), [path + ".1.gz", path])
    assert problems == []
    assert len(lines) == 12001 + 3
    assert lines[6000].message == big.decode()
    assert lines[12000].message.startswith("line 11999 ")


# ---- hostile local-driver input: each yields a Problem, the rest is still read -------------
def _hostile(tmp_path: Path, middle: bytes) -> tuple[list[LogLine], list[Problem], str]:
    path = f"{CDIR}/local-logs/container.log"
    write(tmp_path, path + ".1", record(b"before") + middle + record(b"after"))
    write(tmp_path, path, record(b"next file"))
    lines, problems = read_all(DirectoryEvidence(str(tmp_path)), [path + ".1", path])
    return lines, problems, path + ".1"


def test_local_absurd_length_does_not_allocate(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        lines, problems, src = _hostile(tmp_path, b"\xff\xff\xff\xff" + b"garbage" * 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20
    assert messages(lines) == ["before", "after", "next file"]
    assert len(problems) == 1 and problems[0].source == src
    msg = problems[0].message
    assert "4294967295" in msg and f"byte offset {len(record(b'before'))}" in msg and "resumed" in msg


def test_local_length_just_over_limit(tmp_path: Path) -> None:
    lines, problems, _ = _hostile(tmp_path, struct.pack(">I", MAX_RECORD + 1))
    assert messages(lines) == ["before", "after", "next file"]
    assert len(problems) == 1 and "exceeds" in problems[0].message


def test_local_header_trailer_mismatch(tmp_path: Path) -> None:
    bad = frame(log_entry(b"lost"), trailer=7)
    lines, problems, _ = _hostile(tmp_path, bad)
    assert messages(lines) == ["before", "after", "next file"]
    assert len(problems) == 1
    assert (
        "disagree" in problems[0].message and f"byte offset {len(record(b'before'))}" in problems[0].message
    )


def test_local_corrupt_protobuf(tmp_path: Path) -> None:
    lines, problems, _ = _hostile(tmp_path, frame(b"\x0a\xff\xff\xff"))  # bad length/varint
    assert messages(lines) == ["before", "after", "next file"]
    assert len(problems) == 1 and "protobuf" in problems[0].message


def test_local_zero_fill_in_the_middle(tmp_path: Path) -> None:
    lines, problems, _ = _hostile(tmp_path, b"\x00" * 4096)
    assert messages(lines) == ["before", "after", "next file"]
    assert len(problems) == 1 and "skipped 4096 bytes" in problems[0].message


def test_local_truncated_record_at_end(tmp_path: Path) -> None:
    path = f"{CDIR}/local-logs/container.log"
    full = record(b"kept") + record(b"cut off in the middle")
    write(tmp_path, path + ".1", full[:-9])
    write(tmp_path, path, record(b"next file") + b"\x00\x00")  # torn length field
    lines, problems = read_all(DirectoryEvidence(str(tmp_path)), [path + ".1", path])
    assert messages(lines) == ["kept", "next file"]
    assert len(problems) == 2
    assert problems[0].source == path + ".1" and "truncated record" in problems[0].message
    assert f"byte offset {len(record(b'kept'))}" in problems[0].message
    assert problems[1].source == path and "truncated length" in problems[1].message


def test_local_garbage_file_is_fast(tmp_path: Path) -> None:
    path = f"{CDIR}/local-logs/container.log"
    zeros = b"\x00" * (4 << 20)  # zero-filled tail, as after an unclean shutdown
    decoys = b"\x00\x00\x01\x00\x0a\x06stdout" * (1 << 18)  # look like record starts
    write(tmp_path, path, record(b"first") + zeros + decoys)
    start = time.monotonic()
    lines, problems = read_all(DirectoryEvidence(str(tmp_path)), [path])
    assert time.monotonic() - start < 30
    assert messages(lines) == ["first"]
    assert len(problems) == 1 and "nothing readable" in problems[0].message


def test_local_resync_deep_inside_a_large_file(tmp_path: Path) -> None:
    path = f"{CDIR}/local-logs/container.log.1.gz"
    recs = [record(f"line {i:05d} ".encode() + b"y" * (i % 200)) for i in range(8000)]
    broken = bytearray(recs[5000])
    broken[-1] ^= 0xFF  # trailer disagrees
    recs[5000] = bytes(broken)
    write(tmp_path, path, b"".join(recs), gz=True)
    lines, problems = read_all(DirectoryEvidence(str(tmp_path)), [path])
    assert len(lines) == 7999 and "line 05000 " not in {m[:11] for m in messages(lines)}
    assert messages(lines)[5000].startswith("line 05001 ")
    assert len(problems) == 1
    assert f"byte offset {sum(len(r) for r in recs[:5000])}" in problems[0].message


def test_reader_is_lazy(tmp_path: Path) -> None:
    path = f"{CDIR}/local-logs/container.log"
    write(tmp_path, path, record(b"a") + b"\xff\xff\xff\xff")
    problems: list[Problem] = []
    it = read_logs(DirectoryEvidence(str(tmp_path)), CID, [path], problems)
    assert next(it).message == "a"
    assert problems == []  # the broken record is not reached yet
    assert list(it) == [] and len(problems) == 1


# ---- real-engine fixtures: compare with `docker logs -t` captured from a real dockerd ---------
FIXTURES = FIXTURE_ROOT / "docker"
TARBALL = FIXTURES / "overlay2-root.tar.gz"  # its root is the data root
EXPECTED = FIXTURES / "expected"
EXPECTED_LOGS = sorted((EXPECTED / "logs").glob("*.json")) if (EXPECTED / "logs").is_dir() else []


@pytest.fixture(scope="module")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TARBALL.is_file() or not (EXPECTED / "scenario.json").is_file():
        pytest.skip("real-engine docker fixtures not captured")
    dest = tmp_path_factory.mktemp("overlay2-root")
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-xzf", str(TARBALL), "-C", str(dest)],
        check=True,
        capture_output=True,
    )
    return dest


def _docker_logs_t(lines: list[LogLine], stream: str) -> list[str]:
    """What `docker logs -t` prints for *stream*: a timestamp per entry, newline unless partial."""
    text = "".join(
        f"{_rfc3339_nano(ln.time)} {ln.message}" + ("" if ln.partial else "\n")
        for ln in lines
        if ln.stream == stream
    )
    return text.splitlines()


@pytest.mark.parametrize("expected_file", EXPECTED_LOGS, ids=lambda p: p.stem)
def test_matches_docker_logs_of_real_engine(real_root: Path, expected_file: Path) -> None:
    expected = json.loads(expected_file.read_text())
    scenario = json.loads((EXPECTED / "scenario.json").read_text())
    info = scenario["containers"].get(expected["container"])
    if not info or info.get("removed"):
        pytest.skip("container not in the captured data root")
    ev = DirectoryEvidence(str(real_root))
    cdir = f"/containers/{info['id']}"
    config = json.loads(ev.read_text(f"{cdir}/config.v2.json"))
    hostconfig = json.loads(ev.read_text(f"{cdir}/hostconfig.json"))
    driver = (hostconfig.get("LogConfig") or {}).get("Type")
    assert driver == info["log_driver"]

    files = log_files(ev, cdir, config.get("LogPath"), driver)
    problems: list[Problem] = []
    lines = list(read_logs(ev, info["id"], files, problems))
    assert problems == []
    for stream in ("stdout", "stderr"):
        got = _docker_logs_t(lines, stream)
        if info.get("running") or info.get("restarting"):
            # still writing when `docker logs` ran, killed later: the file may hold more
            assert got[: len(expected[stream])] == expected[stream]
        else:
            assert got == expected[stream]
