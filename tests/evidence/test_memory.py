"""MemoryEvidence: the Evidence contract without a filesystem, and unit tests built on it (the
layered view's whiteout and opaque rules through its public API, no root needed)."""

from __future__ import annotations

import stat

import pytest

from pensieve.evidence import DirHandle, Evidence, EvidenceError, NotFound
from pensieve.evidence.memory import Dir, File, MemoryEvidence, Node, Symlink
from pensieve.filesystem.layered import LayeredView, PathNotInView
from pensieve.records import Layer


def test_memory_evidence_is_an_evidence_with_the_contract():
    ev = MemoryEvidence({"/etc/passwd": b"root:x:0:0\n", "/bin/sh": Symlink("busybox")})
    assert isinstance(ev, Evidence)
    assert ev.problems == [] and ev.boundaries() == []
    assert ev.host_path("/etc") is None and ev.from_host_path("/etc") is None
    assert ev.read_text("/etc/passwd") == "root:x:0:0\n"
    assert ev.lstat("/etc").is_dir and ev.lstat("/bin/sh").is_symlink
    assert ev.readlink("/bin/sh") == "busybox"
    assert sorted(ev.listdir("/")) == ["bin", "etc"]
    with pytest.raises(EvidenceError, match="symlink"):
        ev.open("/bin/sh")
    with pytest.raises(NotFound):
        ev.lstat("/nope")
    ev.close()


def test_an_abstract_evidence_cannot_be_made_without_its_primitives():
    class Half(Evidence):
        def lstat(self, path):
            raise NotFound(path)

    with pytest.raises(TypeError):
        Half()


def test_directory_symlinks_resolve_inside_the_root():
    ev = MemoryEvidence(
        {
            "/etc/passwd": b"evidence",
            "/data/abs": Symlink("/etc"),
            "/data/climb": Symlink("../../../../etc"),
            "/data/loop": Symlink("loop"),
        }
    )
    assert ev.read_text("/data/abs/passwd") == "evidence"
    assert ev.read_text("/data/climb/passwd") == "evidence"
    with pytest.raises(EvidenceError):
        ev.read_text("/data/loop/x")


def test_dir_handles_look_entries_up_by_name_and_refuse_symlinked_dirs():
    ev = MemoryEvidence(
        {
            "/d/f": File(b"abc", mode=0o600, uid=7, xattrs={"user.k": b"v"}),
            "/d/sub/g": b"",
            "/d/link": Symlink("sub"),
        }
    )
    with ev.opendir("/d") as h:
        assert isinstance(h, DirHandle)
        assert sorted(h.names()) == [("f", False), ("link", False), ("sub", True)]
        st = h.lstat("f")
        assert (stat.S_IMODE(st.mode), st.uid, st.size) == (0o600, 7, 3)
        assert h.open("f").read() == b"abc"
        assert h.xattrs("f") == {"user.k": b"v"}
        assert h.readlink("link") == "sub"
        assert h.opendir("sub").names() == [("g", False)]
        with pytest.raises(EvidenceError):
            h.opendir("link")
        with pytest.raises(ValueError):
            h.lstat("../d")
    with pytest.raises(EvidenceError):
        ev.opendir("/d/f")


def _layers(*paths: str) -> list[Layer]:
    return [Layer("image", p.strip("/").replace("/", "-"), p, driver="overlay2") for p in paths]


WHITEOUT = Node("char", rdev=0)


def test_layered_view_overlay_whiteouts_and_opaque_dirs():
    ev = MemoryEvidence(
        {
            "/l0/etc/keep": b"lower",
            "/l0/etc/gone": b"lower",
            "/l0/opt/old/a": b"lower",
            "/l0/bin/tool": b"v1",
            "/l1/etc/gone": WHITEOUT,  # overlay whiteout: char 0/0
            "/l1/opt": Dir(xattrs={"trusted.overlay.opaque": b"y"}),
            "/l1/opt/new": b"upper",
            "/l1/bin/tool": b"v2",
            "/l1/bin/dev": Node("char", rdev=0x0501),  # a real device, not a whiteout
        }
    )
    view = LayeredView(ev, _layers("/l0", "/l1"))
    assert sorted(view.listdir("/etc")) == ["keep"]
    with pytest.raises(PathNotInView):
        view.stat("/etc/gone")
    assert view.listdir("/opt") == ["new"]  # the opaque directory hides the lower one
    with pytest.raises(PathNotInView):
        view.stat("/opt/old/a")
    tool = view.stat("/bin/tool")
    assert tool.layer_index == 1 and view.open("/bin/tool").read() == b"v2"
    assert view.stat("/bin/dev").type == "char"
    assert view.stat("/etc/keep").layer_index == 0


def test_layered_view_xattr_whiteouts():
    ev = MemoryEvidence(
        {
            "/l0/etc/gone": b"lower",
            "/l1/etc/gone": File(b"", xattrs={"trusted.overlay.whiteout": b""}),
        }
    )
    view = LayeredView(ev, _layers("/l0", "/l1"))
    assert view.listdir("/etc") == []


def test_layered_view_aufs_whiteouts():
    ev = MemoryEvidence(
        {
            "/l0/etc/keep": b"lower",
            "/l0/etc/gone": b"lower",
            "/l0/var/cache/x": b"lower",
            "/l1/etc/.wh.gone": b"",
            "/l1/var/cache/.wh..wh..opq": b"",
            "/l1/var/cache/y": b"upper",
        }
    )
    layers = [Layer("image", p.strip("/"), p, driver="aufs") for p in ("/l0", "/l1")]
    view = LayeredView(ev, layers)
    assert view.listdir("/etc") == ["keep"]
    assert view.listdir("/var/cache") == ["y"]
