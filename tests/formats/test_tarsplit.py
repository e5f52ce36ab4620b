"""Hostile tar-split records: a mutated record or header segment raises TarSplitError (or is
read), never hangs, within a time bound per input."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile

from conftest import time_bound
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pensieve.formats import tarsplit


def _tar(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for i, size in enumerate((0, 5, 700)):
            f = tarfile.TarInfo(f"dir/{'long' * 30 if fmt != tarfile.USTAR_FORMAT else 'f'}{i}")
            f.size, f.mtime = size, 1_700_000_000 + i
            if fmt == tarfile.PAX_FORMAT:
                f.pax_headers = {"SCHILY.xattr.user.k": "v", "mtime": "1700000000.5"}
            tf.addfile(f, io.BytesIO(b"x" * size))
        s = tarfile.TarInfo("dir/link")
        s.type, s.linkname = tarfile.SYMTYPE, "f0"
        tf.addfile(s)
    return buf.getvalue()


def _lines(raw: bytes) -> list[dict]:
    """The tar-split entries of RAW: segments between payloads, file entries with CRC-64s."""
    lines, last = [], 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    for m in members:
        lines.append({"type": 2, "payload": raw[last : m.offset_data]})
        entry = {"type": 1, "name": m.name, "size": m.size, "payload": None}
        if m.size:
            crc = tarsplit.crc64_iso(raw[m.offset_data : m.offset_data + m.size])
            entry["payload"] = tarsplit.crc64_bytes(crc)
        lines.append(entry)
        last = m.offset_data + m.size
    lines.append({"type": 2, "payload": raw[last:]})
    return lines


def _record(lines: list[dict]) -> bytes:
    out = []
    for i, e in enumerate(lines):
        doc = dict(e, position=i)
        if isinstance(doc["payload"], bytes):
            doc["payload"] = base64.b64encode(doc["payload"]).decode()
        out.append(json.dumps(doc))
    return gzip.compress(("\n".join(out) + "\n").encode())


_FORMATS = [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]
_LINES = {fmt: _lines(_tar(fmt)) for fmt in _FORMATS}


def _read(record: bytes) -> list[tarsplit.TarHeader]:
    parser = tarsplit.HeaderParser()
    headers = []
    for e in tarsplit.iter_entries(io.BytesIO(record)):
        if e.type == tarsplit.SEGMENT:
            parser.feed(e.payload or b"")
        else:
            headers.append(parser.header(e))
    parser.finish()
    return headers


def test_unmutated_records_read():
    for fmt in _FORMATS:
        headers = _read(_record(_LINES[fmt]))
        assert [h.name for h in headers][-1] == b"dir/link"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(_FORMATS),
    edits=st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 1 << 12)),
)
def test_mutated_header_segments_fail_cleanly(fmt, edits, cut):
    lines = [dict(e) for e in _LINES[fmt]]
    segments = [e for e in lines if e["type"] == 2 and e["payload"]]
    for pos, value in edits:
        seg = segments[pos % len(segments)]
        data = bytearray(seg["payload"])
        data[pos % len(data)] = value
        seg["payload"] = bytes(data)
    if cut is not None:
        seg = segments[cut % len(segments)]
        seg["payload"] = seg["payload"][: cut % (len(seg["payload"]) + 1)]
    with time_bound(5):
        try:
            _read(_record(lines))
        except tarsplit.TarSplitError:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(_FORMATS),
    edits=st.lists(st.tuples(st.integers(0, 1 << 14), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_records_fail_cleanly(fmt, edits):
    raw = bytearray(gzip.decompress(_record(_LINES[fmt])))
    for pos, value in edits:
        raw[pos % len(raw)] = value
    with time_bound(5):
        try:
            _read(gzip.compress(bytes(raw)))
        except tarsplit.TarSplitError:
            pass
