"""Files for the validator tests: the planted files of the carve fixture image (real zip, jar,
gzip, ELF and JPEG files) and generated ones for the structures the fixture lacks (zip data
descriptors and zip64, every gzip header flag and several members, ELF32 and big-endian ELF,
JPEG restart markers and progressive scans); the mutations each is put through; and a run of a
validator on bytes under a time bound."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import random
import struct
import zipfile
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from conftest import time_bound

from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, MAX_LENGTH, PARTIAL, BufferImage, Context, Source
from pensieve.disk.carve.validators import VALIDATORS

CARVE = Path(__file__).resolve().parents[3] / "fixtures" / "carve"
CONFIDENCES = (COMPLETE, PARTIAL, HEADER_ONLY)
#: seconds one validation may take before the test calls it a hang
TIME_BOUND = 5.0


@cache
def planted(type_: str, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    """The planted files of the fixture image whose names end in SUFFIXES and that lie in one
    piece (name -> bytes), as planted.json says they are."""
    with lzma.open(CARVE / "carve.img.xz") as fh:
        raw = fh.read()
    found = {}
    for p in json.loads((CARVE / "expected" / "planted.json").read_text()):
        if p["name"].endswith(suffixes) and p["contiguous"] and not p.get("unpartitioned"):
            found[p["name"]] = raw[p["offset"] : p["offset"] + p["size"]]
    assert found, f"no planted {type_} file"
    return found


def validate(type_: str, data: bytes, grid: int = 4096, range_end: int | None = None):
    """The verdict of TYPE's validator on DATA at offset 0, the image being DATA, zero fill to
    the next GRID boundary and two more blocks; at most TIME_BOUND seconds."""
    buf = data + bytes(-len(data) % grid) + bytes(2 * grid)
    src = Source(BufferImage(buf))
    ctx = Context(src, min(src.size, MAX_LENGTH[type_]), src.size if range_end is None else range_end, grid)
    with time_bound(TIME_BOUND):
        return VALIDATORS[type_](ctx, 0)


def mutations(data: bytes, seed: int, count: int = 120) -> Iterator[tuple[str, bytes]]:
    """(what was done, bytes): truncations at every 1/40 of the file and at the first 64 bytes,
    bit flips, bytes set at random in the headers, runs of zeros, 4-byte fields set to extremes
    or to other signatures, and cut-outs; reproducible from SEED."""
    rng = random.Random(seed)
    n = len(data)
    for k in range(40):
        yield f"cut at {n * k // 40}", data[: n * k // 40]
    for k in range(1, 64):
        yield f"cut at {k}", data[:k]
    for _ in range(count):
        b = bytearray(data)
        i = rng.randrange(n)
        b[i] ^= 1 << rng.randrange(8)
        yield f"bit flip at {i}", bytes(b)
    for _ in range(count // 2):
        b = bytearray(data)
        i = rng.randrange(min(n, 512))
        b[i] = rng.randrange(256)
        yield f"header byte {i}", bytes(b)
    for _ in range(count // 3):
        b = bytearray(data)
        i = rng.randrange(n)
        run = rng.randrange(1, 9000)
        b[i : i + run] = bytes(len(b[i : i + run]))
        yield f"zeros at {i}+{run}", bytes(b)
    fields = (b"\xff" * 4, bytes(4), b"\xff\xff\0\0", b"PK\x01\x02", b"PK\x07\x08", b"\xff\xd9\xff\xda")
    for _ in range(count // 3):
        b = bytearray(data)
        i = rng.randrange(max(1, n - 4))
        b[i : i + 4] = rng.choice(fields)
        yield f"field at {i}", bytes(b)
    for _ in range(count // 6):
        i = rng.randrange(n)
        gap = rng.randrange(1, 600)
        yield f"cut out {i}+{gap}", data[:i] + data[i + gap :]


# ---- generated zip files -------------------------------------------------------------------------


class _Unseekable(io.RawIOBase):
    """A write-only stream that cannot seek: zipfile then writes data descriptors (bit 3)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += b
        return len(b)


#: the time stamp of every generated member (reproducible bytes)
_WHEN = (2020, 1, 2, 3, 4, 6)


def _members(zf: zipfile.ZipFile, count: int, method: int) -> None:
    for i in range(count):
        body = b"".join(b"member %d line %d %x\n" % (i, k, k * 7919) for k in range(40 + 30 * i))
        zf.writestr(zipfile.ZipInfo(f"dir/file{i}.txt", _WHEN), body, compress_type=method)


def zip_streamed(method: int) -> bytes:
    """A zip written to a stream that cannot seek: every member has a data descriptor."""
    out = _Unseekable()
    with zipfile.ZipFile(out, "w") as zf:
        _members(zf, 3, method)
    return bytes(out.buf)


def zip_forced_zip64() -> bytes:
    """Members with zip64 extra fields, and an archive comment."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(2):
            with zf.open(zipfile.ZipInfo(f"big{i}.bin", _WHEN), "w", force_zip64=True) as fh:
                fh.write(bytes(range(256)) * (20 + i))
        zf.comment = b"generated for the carve tests"
    return out.getvalue()


def zip_with_zip64_end() -> bytes:
    """A zip whose end of central directory defers to a zip64 end record and locator."""
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w", zipfile.ZIP_DEFLATED) as zf:
        _members(zf, 2, zipfile.ZIP_DEFLATED)
    data = plain.getvalue()
    eocd = data.rindex(b"PK\x05\x06")
    n, cd_size, cd_off = struct.unpack_from("<HII", data, eocd + 10)
    record = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, n, n, cd_size, cd_off)
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, eocd, 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:eocd] + record + locator + end


def jar_many() -> bytes:
    """A jar of 25 members whose manifest comes last (past the 20 names listed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(24):
            member = zipfile.ZipInfo(f"com/example/C{i}.class", _WHEN)
            zf.writestr(member, b"\xca\xfe\xba\xbe" + bytes(i * 10))
        zf.writestr(zipfile.ZipInfo("META-INF/MANIFEST.MF", _WHEN), b"Manifest-Version: 1.0\r\n\r\n")
    return out.getvalue()


# ---- generated gzip files ------------------------------------------------------------------------


def gzip_every_flag() -> bytes:
    """One member with FEXTRA, FNAME, FCOMMENT and FHCRC set (RFC 1952 2.3.1)."""
    body = b"".join(b"gzip line %d %x\n" % (k, k * 31) for k in range(2000))
    head = b"\x1f\x8b\x08" + bytes([4 | 8 | 16 | 2]) + struct.pack("<I", 1_600_000_000) + b"\x00\x03"
    head += struct.pack("<H", 6) + b"AB\x02\x00hi" + b"notes.txt\0" + b"a comment\0"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = comp.compress(body) + comp.flush()
    return head + deflated + struct.pack("<II", zlib.crc32(body), len(body))


def gzip_members() -> bytes:
    """Three members, the first with a name (as gzip(1) writes them one after another)."""
    out = io.BytesIO()
    with gzip.GzipFile("first.txt", "wb", fileobj=out, mtime=1_500_000_000) as fh:
        fh.write(b"first member\n" * 300)
    return out.getvalue() + gzip.compress(b"second\n" * 500, mtime=0) + gzip.compress(bytes(5000), mtime=0)


# ---- generated ELF files -------------------------------------------------------------------------


def elf_file(cls: int, endian: str) -> bytes:
    """An ELF executable of class CLS (1: 32-bit, 2: 64-bit), byte order ENDIAN ("<" or ">"):
    a PT_LOAD and a PT_NOTE segment; sections null, .text, .bss (SHT_NOBITS), .shstrtab."""
    wide = cls == 2
    ehsize, phentsize, shentsize = (64, 56, 64) if wide else (52, 32, 40)
    strtab = b"\0.text\0.bss\0.shstrtab\0"
    text = bytes(range(200))
    phoff = ehsize
    text_off = phoff + 2 * phentsize
    str_off = text_off + len(text)
    shoff = str_off + len(strtab) + (-(str_off + len(strtab)) % 8)
    ident = b"\x7fELF" + bytes([cls, 1 if endian == "<" else 2, 1]) + bytes(9)
    fmt = "HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"
    header = ident + struct.pack(
        endian + fmt,
        2,
        62 if wide else 3,
        1,
        0x401000,
        phoff,
        shoff,
        0,
        ehsize,
        phentsize,
        2,
        shentsize,
        4,
        3,
    )
    phdrs = []
    for ptype, poff, size in ((1, 0, str_off), (4, text_off, 32)):
        if wide:
            phdrs.append(struct.pack(endian + "IIQQQQQQ", ptype, 5, poff, 0x400000, 0x400000, size, size, 8))
        else:
            phdrs.append(struct.pack(endian + "IIIIIIII", ptype, poff, 0x400000, 0x400000, size, size, 5, 4))
    sfmt = endian + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
    sections = [
        struct.pack(sfmt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack(sfmt, 1, 1, 6, 0x401000, text_off, len(text), 0, 0, 16, 0),
        struct.pack(sfmt, 7, 8, 3, 0x402000, str_off, 4096, 0, 0, 8, 0),
        struct.pack(sfmt, 12, 3, 0, 0, str_off, len(strtab), 0, 0, 1, 0),
    ]
    body = header + b"".join(phdrs) + text + strtab
    return body + bytes(shoff - len(body)) + b"".join(sections)


# ---- generated JPEG files ------------------------------------------------------------------------


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _entropy(seed: int, size: int, restarts: bool) -> bytes:
    """Entropy-coded-looking bytes: FF stuffed as FF 00, restart markers every 500 bytes."""
    rng = random.Random(seed)
    out = bytearray()
    for k in range(size):
        b = rng.randrange(256)
        out += b"\xff\x00" if b == 0xFF else bytes([b])
        if restarts and k % 500 == 499:
            out += bytes([0xFF, 0xD0 + (k // 500) % 8])
    return bytes(out)


def jpeg_file(progressive: bool) -> bytes:
    """SOI, APP0 JFIF, DQT, SOFn, DHT, then one scan with restart markers (baseline) or three
    scans (progressive), EOI: the structure of T.81 Annex B, the scan bytes made up."""
    sof = 0xC2 if progressive else 0xC0
    out = b"\xff\xd8" + _segment(0xE0, b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    out += _segment(0xDB, b"\x00" + bytes(range(1, 65)))
    out += _segment(sof, b"\x08" + struct.pack(">HH", 48, 64) + b"\x01\x01\x11\x00")
    out += _segment(0xDD, struct.pack(">H", 0 if progressive else 4))
    for k in range(3 if progressive else 1):
        out += _segment(0xC4, b"\x00" + bytes(16) + b"")
        out += _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + _entropy(k, 3000, not progressive)
    return out + b"\xff\xd9"


def samples(type_: str) -> dict[str, bytes]:
    """Name -> bytes of every test file of TYPE (the planted ones, then the generated ones)."""
    if type_ == "zip":
        found = dict(planted("zip", (".zip", ".jar")))
        found.update(
            {
                "streamed-deflate.zip": zip_streamed(zipfile.ZIP_DEFLATED),
                "streamed-stored.zip": zip_streamed(zipfile.ZIP_STORED),
                "forced-zip64.zip": zip_forced_zip64(),
                "zip64-end.zip": zip_with_zip64_end(),
                "many.jar": jar_many(),
            }
        )
        return found
    if type_ == "gzip":
        return {**planted("gzip", (".gz",)), "flags.gz": gzip_every_flag(), "members.gz": gzip_members()}
    if type_ == "elf":
        found = dict(planted("elf", ("tool",)))
        for cls, endian in ((1, "<"), (1, ">"), (2, ">"), (2, "<")):
            found[f"elf{16 * 2 * cls}{'le' if endian == '<' else 'be'}"] = elf_file(cls, endian)
        return found
    if type_ == "jpeg":
        found = dict(planted("jpeg", (".jpg",)))
        found.update({"restarts.jpg": jpeg_file(False), "scans.jpg": jpeg_file(True)})
        return found
    raise ValueError(type_)
