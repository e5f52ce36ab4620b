"""Overlay forms a Docker 20.10 host does not write but a current kernel can: xattr whiteouts
(``*.overlay.whiteout`` on a zero-size file), ``user.overlay.*`` (userxattr mounts, rootless
engines), opaque ``x`` (not opaque), and ``*.overlay.redirect`` on a renamed directory.

Hand-made layer directories (no engine produces all of these on this machine); the semantics
follow the kernel's Documentation/filesystems/overlayfs.rst.
"""

from __future__ import annotations

import os

import pytest

from pensieve.evidence import DirectoryEvidence
from pensieve.filesystem.diff import container_diff
from pensieve.filesystem.layered import LayeredView, PathNotInView
from pensieve.records import Layer


def _xattr(path, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:  # tmpfs without user xattrs, or trusted.* as non-root
        pytest.skip(f"cannot set {name} here: {exc}")


def _write(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(params=["trusted", "user"])
def layers(request, tmp_path):
    ns = request.param
    if ns == "trusted" and os.geteuid() != 0:
        pytest.skip("trusted.* xattrs need root")
    lower, upper = tmp_path / "l0" / "diff", tmp_path / "rw" / "diff"
    for p in ("etc/passwd", "etc/motd", "srv/a/1.txt", "srv/a/2.txt", "opt/x/keep", "var/k/old"):
        _write(lower / p, p.encode())
    # xattr whiteout: a zero-size regular file
    _write(upper / "etc/motd", b"")
    _xattr(upper / "etc/motd", f"{ns}.overlay.whiteout", b"")
    # opaque directory
    _write(upper / "var/k/new", b"new")
    _xattr(upper / "var/k", f"{ns}.overlay.opaque", b"y")
    # "x": a directory that holds xattr whiteouts, NOT opaque
    _write(upper / "opt/x/added", b"added")
    _xattr(upper / "opt/x", f"{ns}.overlay.opaque", b"x")
    # a renamed directory: srv/b's contents come from srv/a below
    (upper / "srv/b").mkdir(parents=True)
    _xattr(upper / "srv/b", f"{ns}.overlay.redirect", b"/srv/a")
    _write(upper / "srv/a", b"")
    _xattr(upper / "srv/a", f"{ns}.overlay.whiteout", b"")
    ev = DirectoryEvidence(str(tmp_path))
    return ev, [
        Layer(role="image", cache_id="l0", path="/l0/diff", driver="overlay2"),
        Layer(role="rw", cache_id="rw", path="/rw/diff", driver="overlay2"),
    ]


def test_view_honours_xattr_forms(layers):
    ev, ls = layers
    v = LayeredView(ev, ls)
    assert v.listdir("/etc") == ["passwd"]
    with pytest.raises(PathNotInView):
        v.lookup("/etc/motd")
    assert v.listdir("/var/k") == ["new"]
    assert v.listdir("/opt/x") == ["added", "keep"]
    assert v.listdir("/srv") == ["b"]
    assert v.listdir("/srv/b") == ["1.txt", "2.txt"]
    with v.open("/srv/b/1.txt") as fh:
        assert fh.read() == b"srv/a/1.txt"
    assert v.stat("/srv/b/1.txt").layer == "l0"


def test_diff_with_xattr_forms(layers):
    ev, ls = layers
    changes = {(c.change, c.path) for c in container_diff(ev, ls).changes}
    assert ("deleted", "/etc/motd") in changes
    assert ("deleted", "/var/k/old") in changes and ("added", "/var/k/new") in changes
    assert ("added", "/opt/x/added") in changes
    assert not any(p == "/opt/x/keep" for _, p in changes)
    assert ("deleted", "/srv/a") in changes


# ---- hostile forms: redirects climbing out, symlink chains -----------------------------------
@pytest.mark.parametrize(
    "redirect", [b"/../../../../etc", b"../../etc", b"a/../../x", b"/srv/../../../etc", b"/./etc/.."]
)
def test_redirect_never_leaves_the_lower_layers(tmp_path, redirect: bytes) -> None:
    """A redirect holding ``..`` (the kernel refuses one) is a problem; the directory is read as
    not redirected, and nothing outside the layer directories is served."""
    if os.geteuid() != 0:
        pytest.skip("trusted.* xattrs need root")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "shadow").write_bytes(b"root:HOST")  # the evidence host's own /etc
    lower, upper = tmp_path / "data" / "l0" / "diff", tmp_path / "data" / "rw" / "diff"
    _write(lower / "etc" / "hostname", b"box")
    (upper / "renamed").mkdir(parents=True)
    _xattr(upper / "renamed", "trusted.overlay.redirect", redirect)
    ev = DirectoryEvidence(str(tmp_path))
    problems: list = []
    view = LayeredView(
        ev,
        [
            Layer("image", "l0", "/data/l0/diff", driver="overlay2"),
            Layer("rw", "rw", "/data/rw/diff", driver="overlay2"),
        ],
        problems=problems,
    )
    assert view.listdir("/renamed") == []
    with pytest.raises(PathNotInView):
        view.lookup("/renamed/shadow")
    assert problems and problems[0].source == "/data/rw/diff/renamed" and "redirect" in problems[0].message


@pytest.mark.parametrize("length", [41, 2000])
def test_long_symlink_chains_fail_cleanly(tmp_path, length: int) -> None:
    """A chain of symlinks (or one target of LENGTH components) is ELOOP after 40 hops: a clear
    error, never RecursionError."""
    from pensieve.filesystem.layered import TooManySymlinks

    top = tmp_path / "l0" / "diff"
    (top / "d").mkdir(parents=True)
    for i in range(length):
        os.symlink(f"/d/{i + 1}", top / "d" / str(i))
    _write(top / "d" / str(length), b"end")
    os.symlink(".", top / "a")
    os.symlink("/" + "/".join(["a"] * 2000), top / "far")  # 2,000 components, each a symlink
    view = LayeredView(
        DirectoryEvidence(str(tmp_path)), [Layer("image", "l0", "/l0/diff", driver="overlay2")]
    )
    with pytest.raises(TooManySymlinks, match="ELOOP"):
        view.open("/d/0")
    with pytest.raises(TooManySymlinks):
        view.resolve("/far/x")
    with pytest.raises(TooManySymlinks):
        view.realpath("/far")
    if length == 41:
        assert view.resolve("/d/1").stat.is_file  # exactly 40 hops: allowed, as by the kernel
