"""The one tar reader: header formats (formats/tar.py), the index (evidence/tar.py), and a fuzz of
both over mutated real archives with a time bound per input."""

from __future__ import annotations

import io
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pensieve.evidence import EvidenceError
from pensieve.evidence.tar import TarEvidence
from pensieve.formats import tar as tarfmt
from pensieve.formats.compression import GZIP, ZSTD, decompress_stream, sniff


def _tar(entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data, extra in entries:
            info = tarfile.TarInfo(name)
            for k, v in (extra or {}).items():
                setattr(info, k, v)
            if data is None:
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _headers(raw: bytes) -> list[tarfmt.TarHeader]:
    return list(tarfmt.iter_headers(lambda n, off: raw[off : off + n], len(raw)))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_and_links_in_every_format(fmt):
    name = "d/" + "n" * 90 + "/" + "m" * 90 + "/file.txt"  # over 100: GNU L, PAX path or ustar prefix
    link = "t/" + "x" * 95
    entries = [(name, b"data", None)]
    if fmt != tarfile.USTAR_FORMAT:
        entries.append(("l" * 150, None, {"type": tarfile.SYMTYPE, "linkname": link * 2}))
    raw = _tar(entries, fmt)
    hs = _headers(raw)
    assert (
        hs[0].name == name and hs[0].size == 4 and raw[hs[0].offset_data : hs[0].offset_data + 4] == b"data"
    )
    if fmt != tarfile.USTAR_FORMAT:
        assert hs[1].name == "l" * 150 and hs[1].linkname == link * 2 and hs[1].type == tarfmt.SYM


def test_numbers_octal_and_base256():
    assert tarfmt.number(b"0000644\0") == 0o644
    assert tarfmt.number(b"   17 \0") == 0o17
    assert tarfmt.number(b"\x80" + (10 << 30).to_bytes(11, "big")) == 10 << 30
    assert tarfmt.number(b"\xff" * 8) == -1
    with pytest.raises(ValueError):
        tarfmt.number(b"99zz\0")


def test_large_member_sizes_are_base256_and_pax():
    """tarfile writes a member over 8 GiB as base-256 (GNU) or a PAX size record; only the header
    is built here (the data would be 9 GiB)."""
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        info = tarfile.TarInfo("big")
        info.size = 9 << 30
        raw = info.tobuf(fmt)
        h = _headers(raw + bytes(1024))[0]
        assert h.size == 9 << 30 and h.name == "big"


def test_pax_times_xattrs_and_globals():
    raw = _tar(
        [
            ("a", b"x", {"pax_headers": {"mtime": "1700000000.123456789", "SCHILY.xattr.user.k": "v"}}),
        ]
    )
    h = _headers(raw)[0]
    assert h.mtime == 1700000000 and h.pax["mtime"] == "1700000000.123456789"


def test_hostile_headers_are_bounded(tmp_path):
    """A PAX record claiming gigabytes is refused without reading it; a negative size too."""
    info = tarfile.TarInfo("pax")
    info.type = tarfmt.PAX.encode()
    info.size = 4 << 30
    raw = _tar([("first", b"1", None)], tarfile.GNU_FORMAT)[:1024] + info.tobuf(tarfile.GNU_FORMAT)
    path = tmp_path / "p.tar"
    path.write_bytes(raw + bytes(2048))
    ev = TarEvidence(str(path))
    assert ev.read_bytes("/first") == b"1"
    assert any("extension record" in p.message for p in ev.problems)
    neg = tarfile.TarInfo("neg")
    block = bytearray(neg.tobuf(tarfile.GNU_FORMAT))
    block[124:136] = b"\xff" * 12
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block):06o}\0".encode()
    with pytest.raises(tarfmt.TarFormatError, match="negative"):
        _headers(bytes(block) + bytes(1024))


def test_bad_first_header_is_not_a_tar(tmp_path):
    for content in (b"\0" * 10, b"x" * 600, b""):
        (tmp_path / "b").write_bytes(content)
        with pytest.raises(EvidenceError, match="not a tar|empty"):
            TarEvidence(str(tmp_path / "b"))


def test_checkpoint_and_layer_views_share_the_reader(tmp_path):
    """Names climbing out are not indexed, absolute ones are relative to the root, the last of
    duplicates wins: through TarEvidence and through the checkpoint archive view alike."""
    from pensieve.memory.checkpoint_archive import CheckpointArchive

    raw = _tar(
        [
            ("../x", b"evil", None),
            ("/abs", b"abs", None),
            ("dup", b"one", None),
            ("dup", b"two", None),
        ]
    )
    path = tmp_path / "c.tar"
    path.write_bytes(raw)
    ev = TarEvidence(str(path))
    view = CheckpointArchive(str(path))
    assert sorted(ev.listdir("/")) == ["abs", "dup"] and sorted(view.members) == ["abs", "dup"]
    assert view.read("dup") == b"two" == ev.read_bytes("/dup")
    assert view.read("abs") == b"abs"
    for messages in ([p.message for p in ev.problems], view.problems):
        text = " ".join(messages)
        assert "climbs out" in text and "absolute" in text and "duplicate" in text


def test_compressed_streams_have_bounded_blocks():
    import zlib

    import zstandard

    data = bytes(8 << 20) + b"tail"
    for kind, blob in (
        (GZIP, zlib.compress(data, 9, wbits=31)),
        (ZSTD, zstandard.ZstdCompressor().compress(data)),
    ):
        assert sniff(blob) == kind
        blocks = list(decompress_stream(io.BytesIO(blob).read, kind, out_chunk=1 << 16))
        assert b"".join(blocks) == data
        assert max(len(b) for b in blocks) <= (1 << 16) + (128 << 10)


# ---- fuzz: mutated real archives, each input under a time bound -----------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[bytes]:
    dest = tmp_path_factory.mktemp("seeds")
    subprocess.run(
        ["tar", "-xJf", str(FIXTURE_ROOT / "archives" / "archives.tar.xz"), "-C", str(dest)], check=True
    )
    out = []
    for name in ("save.tar", "oci-zstd.tar"):
        data = (dest / name).read_bytes()
        out.append(data[:300_000])  # the headers and the first members: mutations land on them
    out.append((FIXTURE_ROOT / "criu-containers" / "podman-after.tar.zst").read_bytes())
    out.append(
        _tar([("a/" + "b" * 120, b"x" * 700, None), ("l", None, {"type": tarfile.SYMTYPE, "linkname": "a"})])
    )
    return out


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise _Timeout


def _exercise(ev: TarEvidence) -> None:
    for _path, entries in ev.walk("/"):
        for e in entries[:50]:
            if e.stat.is_file:
                try:
                    ev.read_bytes(f"{_path.rstrip('/')}/{e.name}", 1 << 16)
                except EvidenceError:
                    pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 3),
    edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=12)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_fuzz_mutated_archives(seeds, tmp_path, seed, edits, cut):
    data = bytearray(seeds[seed])
    for pos, patch in edits:
        pos %= len(data)
        data[pos : pos + len(patch)] = patch
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path / "f.tar"
    path.write_bytes(bytes(data))
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)  # a hang fails the test
    try:
        try:
            with TarEvidence(str(path), partial=True) as ev:
                _exercise(ev)
        except EvidenceError:
            pass
        try:
            list(tarfmt.iter_headers(lambda n, off: bytes(data[off : off + n]), len(data)))
        except tarfmt.TarFormatError:
            pass
    except _Timeout:
        pytest.fail(f"tar reader hung on a mutation of seed {seed}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_archive_opened_without_moving_its_atime(tmp_path):
    """O_NOATIME on the archive descriptor (we own the file, so the kernel allows it)."""
    import os

    path = tmp_path / "a.tar"
    path.write_bytes(_tar([("f", b"x", None)]))
    with TarEvidence(str(path)) as ev:
        assert ev.boundaries() == [str(path.resolve())]
        flags = int(Path(f"/proc/self/fdinfo/{ev._fd}").read_text().split("flags:")[1].split()[0], 8)
        assert flags & getattr(os, "O_NOATIME", 0o1000000)
