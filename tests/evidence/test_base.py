"""The chroot-style symlink step every evidence shares (pensieve.evidence.base)."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pensieve.evidence.base import MAX_SYMLINKS, EvidenceError, chroot_link, follow_dir_link

_PART = st.sampled_from(["a", "b", ".", "..", "", "/"])
_PATHS = st.lists(_PART, max_size=8).map("/".join)


@given(link_dir=_PATHS.map(lambda p: posixpath.normpath("/" + p.lstrip("/"))), target=_PATHS)
def test_chroot_link_never_leaves_the_root(link_dir: str, target: str) -> None:
    out = chroot_link(link_dir, target)
    assert out.startswith("/") and not out.startswith("//")
    assert ".." not in out.split("/")
    assert out == posixpath.normpath(out)


def test_chroot_link_reroots_absolute_and_clamps_dotdot() -> None:
    assert chroot_link("/var/lib", "/etc/passwd") == "/etc/passwd"
    assert chroot_link("/var/lib", "../../../../etc") == "/etc"
    assert chroot_link("/var/lib", "docker") == "/var/lib/docker"
    assert chroot_link("/", "//") == "/"


def test_follow_dir_link_stops_at_the_kernel_limit_before_reading_the_link() -> None:
    def unread() -> str:
        raise AssertionError("the link must not be read past the limit")

    assert follow_dir_link("/a/l", "/a", MAX_SYMLINKS - 1, lambda: "../b") == "/b"
    with pytest.raises(EvidenceError, match="too many levels of symbolic links: /a/l"):
        follow_dir_link("/a/l", "/a", MAX_SYMLINKS, unread)
