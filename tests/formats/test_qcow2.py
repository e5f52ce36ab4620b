"""formats/qcow2: hostile headers and tables are a Qcow2Error or zeros, never a crash."""

from __future__ import annotations

import random
import struct
import time

from pensieve.formats.qcow2 import Qcow2, Qcow2Error


def header(cbits: int = 16, size: int = 1 << 20, l1_size: int = 1, l1_off: int = 1 << 16) -> bytearray:
    h = bytearray(1 << 17)
    h[:4] = b"QFI\xfb"
    struct.pack_into(">I", h, 4, 3)
    struct.pack_into(">QIIQIIQ", h, 8, 0, 0, cbits, size, 0, l1_size, l1_off)
    struct.pack_into(">I", h, 100, 104)
    return h


def test_unallocated_reads_as_zeros():
    data = bytes(header())
    q = Qcow2(lambda off, n: data[off : off + n])
    assert q.read(0, 4096) == bytes(4096) and q.size == 1 << 20


def test_refused_features():
    for mutate in (
        lambda h: struct.pack_into(">Q", h, 8, 512),  # backing file
        lambda h: struct.pack_into(">I", h, 32, 1),  # encrypted
        lambda h: struct.pack_into(">Q", h, 72, 0x4),  # external data file
        lambda h: struct.pack_into(">I", h, 20, 30),  # cluster size
        lambda h: h.__setitem__(slice(0, 4), b"QFI\x00"),
    ):
        h = header()
        mutate(h)
        data = bytes(h)
        try:
            Qcow2(lambda off, n, data=data: data[off : off + n])
        except Qcow2Error:
            continue
        raise AssertionError("accepted")


def test_random_tables_never_crash():
    rnd = random.Random(2)
    for _ in range(300):
        h = header()
        for k in range(rnd.randint(1, 8)):
            struct.pack_into(">Q", h, (1 << 16) + 8 * k, rnd.getrandbits(64))
        data = bytes(h)
        t0 = time.perf_counter()
        try:
            q = Qcow2(lambda off, n, data=data: data[off : off + n])
            q.read(rnd.randrange(q.size), 1 << 16)
        except (Qcow2Error, OSError):
            pass
        assert time.perf_counter() - t0 < 2.0
