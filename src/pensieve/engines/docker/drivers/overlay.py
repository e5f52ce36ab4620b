"""overlay2 and the legacy overlay driver (moby daemon/graphdriver/overlay2, overlay; the kernel's
Documentation/filesystems/overlayfs.rst).

* a whiteout is a character device 0/0, or (kernel >= 6.7, userxattr mounts) a zero-size file
  carrying ``trusted.overlay.whiteout`` / ``user.overlay.whiteout``;
* a directory is opaque when ``trusted.overlay.opaque`` / ``user.overlay.opaque`` is ``y``;
* ``*.overlay.redirect`` on a renamed directory names the lower path its contents come from:
  absolute (from the layer root) or one relative name; the kernel refuses anything else, and so
  does pensieve -- a redirect never climbs out of the lower layers;
* overlay2 keeps ``<root>/overlay2/<cache-id>/diff``, a ``link`` file (short name) and a
  ``lower`` file (``l/<short>:l/<short>...``, top first; ``l/<short>`` links to ``../<id>/diff``);
* legacy overlay keeps image layers as full ``root/`` snapshots and a container's ``upper/`` over
  ``lower-id``; its upper starts as a copy of the init layer's upper.
"""

from __future__ import annotations

import posixpath
import re

from pensieve.engines.base import LayerDir, LayerPlace
from pensieve.engines.docker.drivers.union import UnionDiff
from pensieve.evidence.base import DirEntry, Evidence, EvidenceError
from pensieve.records import Layer

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_WHITEOUT_XATTRS = ("trusted.overlay.whiteout", "user.overlay.whiteout")
_REDIRECT_XATTRS = ("trusted.overlay.redirect", "user.overlay.redirect")


def _read_small(ev: Evidence, path: str, limit: int = 1 << 20) -> str | None:
    try:
        return ev.read_text(path, limit).strip()
    except (EvidenceError, OSError):
        return None


def check_redirect(value: bytes, parent_rel: str) -> tuple[str | None, str | None]:
    """(layer-relative path, problem) of a redirect xattr value, the kernel's rules applied."""
    target = value.decode("utf-8", "replace").rstrip("\0")
    if not target or "\0" in target:
        return None, f"empty or malformed overlay redirect {target!r}: ignored"
    parts = target.split("/")
    if ".." in parts or "." in parts[1:]:
        return None, f"overlay redirect {target!r} climbs out of the lower layers: ignored"
    if target.startswith("/"):
        return posixpath.normpath(target), None
    if "/" in target:
        return None, f"relative overlay redirect {target!r} holds a '/': ignored"
    return posixpath.join(parent_rel or "/", target), None


class OverlayDiff(UnionDiff):
    """What overlay entries mean: whiteouts, opaque directories and redirects."""

    private_xattrs = ("trusted.overlay.", "user.overlay.")

    def read_entry(self, evidence: Evidence, host_dir: str, entry: DirEntry, into: LayerDir) -> None:
        st = entry.stat
        if (st.is_char and st.rdev == 0) or (
            st.is_file and st.size == 0 and self._xattr_whiteout(evidence, host_dir, entry.name)
        ):
            into.whiteouts.add(entry.name)
        else:
            into.entries[entry.name] = st

    def read_opaque(self, evidence: Evidence, host_dir: str, rel: str, into: LayerDir) -> None:
        if rel not in ("", "/"):
            xattrs = evidence.xattrs(host_dir)
            into.opaque = any(xattrs.get(n) == b"y" for n in _OPAQUE_XATTRS)

    @staticmethod
    def _xattr_whiteout(evidence: Evidence, host_dir: str, name: str) -> bool:
        xattrs = evidence.xattrs(posixpath.join(host_dir, name))
        return any(n in xattrs for n in _WHITEOUT_XATTRS)

    def redirect(self, evidence: Evidence, host_dir: str, parent_rel: str) -> tuple[str | None, str | None]:
        xattrs = evidence.xattrs(host_dir)
        for n in _REDIRECT_XATTRS:
            value = xattrs.get(n)
            if value:
                return check_redirect(value, parent_rel)
        return None, None


class Overlay2(OverlayDiff):
    """overlay2's layout below ``<root>/<store>/``; a subclass for another store directory (Podman's
    ``overlay``) sets ``store`` only: ``store_dirs`` and the path patterns are built from it."""

    name = "overlay2"
    records_lowers = True
    #: the directory below the data root that holds the layers
    store = "overlay2"
    store_dirs: tuple[str, ...] = ("overlay2",)
    _CONTENTS: re.Pattern[str]
    _META: re.Pattern[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._build_patterns()

    @classmethod
    def _build_patterns(cls) -> None:
        store = re.escape(cls.store)
        cls.store_dirs = (cls.store,)
        cls._CONTENTS = re.compile(rf"^{store}/(?P<id>[^/]+)/(?:diff|merged)(?P<rest>/.*)?$")
        cls._META = re.compile(rf"^{store}/(?P<id>[^/]+)(?:/(?:link|lower|work)(?:/.*)?)?$")

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        return posixpath.join(data_root, self.store, cache_id, "diff")

    def layer_store(self, data_root: str) -> str | None:
        return posixpath.join(data_root, self.store)

    def place(self, rel: str) -> LayerPlace | None:
        m = self._CONTENTS.match(rel)
        if m:
            return LayerPlace(m.group("id"), m.group("rest") or "/")
        m = self._META.match(rel)
        if m:
            return LayerPlace(m.group("id"), None, bookkeeping=rel.count("/") > 1)
        return None

    def lowers(self, evidence: Evidence, data_root: str, cache_id: str) -> list[str] | None:
        """Cache ids of the layer's lowers, top first, from its ``lower`` file ([] when it has
        none, None when the layer directory itself is gone; ``?l/<short>`` for a dangling link)."""
        base = posixpath.join(data_root, self.store)
        text = _read_small(evidence, posixpath.join(base, cache_id, "lower"))
        if text is None:
            return None if not evidence.exists(posixpath.join(base, cache_id)) else []
        out = []
        for short in parse_lower(text):
            try:
                target = evidence.readlink(posixpath.join(base, "l", short))
            except (EvidenceError, OSError):
                out.append(f"?l/{short}")
                continue
            out.append(posixpath.basename(posixpath.dirname(target)))
        return out


Overlay2._build_patterns()


def parse_lower(text: str) -> list[str]:
    """The short link names of an overlay2 ``lower`` file (``l/<short>:l/<short>``), top first."""
    return [posixpath.basename(part) for part in text.strip().split(":") if part]


def link_names(evidence: Evidence, data_root: str) -> dict[str, str]:
    """overlay2 short link name -> layer id, from each layer's ``link`` file."""
    out: dict[str, str] = {}
    base = posixpath.join(data_root, "overlay2")
    try:
        names = evidence.listdir(base)
    except (EvidenceError, OSError):
        return out
    for name in names:
        try:
            link = (
                evidence.read_bytes(posixpath.join(base, name, "link"), 64).decode("ascii", "replace").strip()
            )
        except (EvidenceError, OSError):
            continue
        if link:
            out[link] = name
    return out


def overlay2_contents(data_root: str, layer_id: str) -> str:
    """The evidence path of an overlay2 layer's contents."""
    return posixpath.join(data_root, "overlay2", layer_id, "diff")


class Overlay(OverlayDiff):
    """The legacy overlay driver: image layers are whole ``root/`` snapshots."""

    name = "overlay"
    store_dirs = ("overlay",)
    native_diff = False  # moby's overlay driver has no native differ: the naive stat diff

    _CONTENTS = re.compile(r"^overlay/(?P<id>[^/]+)/(?:root|upper|merged)(?P<rest>/.*)?$")

    def layer_path(self, evidence: Evidence, data_root: str, cache_id: str, role: str = "image") -> str:
        root = posixpath.join(data_root, "overlay", cache_id, "root")
        if evidence.is_dir(root):
            return root
        return posixpath.join(data_root, "overlay", cache_id, "upper")

    def is_snapshot(self, layer: Layer) -> bool:
        return (layer.path or "").endswith("/root")

    def layer_form(self, path: str) -> str:
        return "snapshot" if path.endswith("/root") else "overlay-upper"

    def subsumes_init(self, layers: list[Layer]) -> bool:
        return (
            len(layers) >= 2
            and layers[-1].role == "rw"
            and layers[-2].role == "init"
            and (layers[-1].path or "").endswith("/upper")
        )

    def place(self, rel: str) -> LayerPlace | None:
        m = self._CONTENTS.match(rel)
        return LayerPlace(m.group("id"), m.group("rest") or "/") if m else None
