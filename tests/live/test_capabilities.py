"""Capability masks decoded (live/capabilities.py), against capsh --decode when it is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pensieve.live.capabilities import CAPABILITIES, DEFAULT_CONTAINER, decode, is_full, summary

MASKS = [
    "0",
    "1",
    "a80425fb",
    "000001ffffffffff",
    "000001fffeffffff",
    "0000000000200000",
    "3fffffffff",
    "1" + "0" * 15,
]


def test_known_masks() -> None:
    assert decode("0000000000000000") == []
    assert decode("0000000000000001") == ["CAP_CHOWN"]
    assert decode(1 << 21) == ["CAP_SYS_ADMIN"]
    assert decode(1 << 40) == ["CAP_CHECKPOINT_RESTORE"]
    assert decode(1 << 41) == ["cap_41"]
    assert decode("not hex") == []
    assert len(decode("000001ffffffffff")) == 41 == len(CAPABILITIES)
    assert DEFAULT_CONTAINER == 0xA80425FB
    assert decode("a80425fb") == [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT",
        "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP",
    ]  # fmt: skip


def test_full_and_summary() -> None:
    assert is_full("000001ffffffffff")
    assert is_full("000001ffffffffff", last_cap=39)
    assert not is_full("000001fffeffffff")
    assert not is_full("0000003fffffffff")  # a kernel with 41 capabilities: bit 40 missing
    assert is_full("0000003fffffffff", last_cap=37)
    assert summary("000001ffffffffff") == "all"
    assert summary("000001fffeffffff") == "all-SYS_RESOURCE"
    assert summary("0") == "none"
    assert summary("a80425fb") == "default"
    assert summary(DEFAULT_CONTAINER | 1 << 21) == "default+SYS_ADMIN"
    assert summary(DEFAULT_CONTAINER & ~(1 << 13)) == "default-NET_RAW"
    assert summary(0b1010101) == "4 caps"
    assert summary(None) == ""


@pytest.mark.skipif(shutil.which("capsh") is None, reason="capsh (libcap2-bin) is not installed")
@pytest.mark.parametrize("mask", MASKS)
def test_against_capsh(mask: str) -> None:
    out = subprocess.run(["capsh", f"--decode={mask}"], capture_output=True, text=True, check=True).stdout
    # "0x000001ffffffffff=cap_chown,cap_dac_override,..."
    names = out.strip().partition("=")[2]
    theirs = [f"cap_{n}" if n.isdigit() else n for n in names.split(",") if n]  # capsh: a bare number
    assert [n.lower() for n in decode(mask)] == theirs
