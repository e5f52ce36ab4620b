"""Volumes of a disk image, nested: MBR/GPT partitions (The Sleuth Kit), LVM2 logical volumes
(libvslvm via ``pyvslvm``) and LUKS1/LUKS2 encrypted volumes (:mod:`pensieve.formats.luks`),
each one a :class:`~pensieve.evidence.disk_images.DiskImage` of its own, read without writing.

**Volume paths** (after ``@`` in a SOURCE; see :func:`parse_volume_path`): steps joined by ``/``,
each step the volume inside the one before:

``N`` or ``pN``
    partition N of the disk's MBR/GPT (Linux numbering, as ``@N`` always was);
``offset=B`` / ``offset=Ns``
    the bytes from B (or sector N) to the end of what holds them (as ``@offset=`` always was);
``lvm:VG/LV``
    logical volume LV of volume group VG, the group's physical volumes found among the disk's
    volumes (the step's own ``/`` is part of it: LVM names never hold one);
``luks``
    the decrypted payload of the LUKS volume the path has reached.

So ``disk.img@p2/lvm:vg0/lv_root/luks`` is the LUKS volume in logical volume ``lv_root`` of
``vg0``, whose physical volume is partition 2.  :func:`volume_tree` lists every volume of a disk
with these paths (``pensieve roots IMAGE`` prints them).

**Keys**: :func:`set_keys` (the CLI's ``--passphrase-file F`` / ``--key-file F``, on every
command taking a SOURCE) holds one passphrase and/or one volume key for the process; every
LUKS volume opened tries them.  The passphrase is the file's content less one trailing newline;
the key file holds the raw volume key (cryptsetup's ``--volume-key-file``, ``luksDump
--dump-volume-key``).  Nothing is read from the environment.

LVM2: libvslvm reads the metadata and the logical volumes' data when every physical volume of
the group is on the disk.  libvslvm refuses a group with a physical volume missing (it checks
each PV's label), and does not expose segments, so pensieve parses the group's metadata text
itself (the newest copy in the first metadata area, "LVM2 on-disk format", lvm2's
``format_text``): a logical volume with a segment on a missing PV is listed unreadable with a
problem naming that PV, and the others are read from the metadata's linear segments (PV
``pe_start`` + extent x ``extent_size``, 512-byte units), which is all a linear LV is.  Only
linear (single-stripe ``striped``) segments are read; other segment types are named.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from pensieve.evidence.disk_images import (
    DiskImage,
    ImageError,
    Partition,
    list_partitions,
    sniff_filesystem,
)
from pensieve.formats import luks

__all__ = [
    "LuksImage",
    "LvImage",
    "SliceImage",
    "Volume",
    "find_volume",
    "parse_volume_path",
    "set_keys",
    "volume_tree",
]

# ---- keys ---------------------------------------------------------------------------------

_PASSPHRASE: bytes | None = None
_VOLUME_KEY: bytes | None = None


def set_keys(passphrase: bytes | None = None, volume_key: bytes | None = None) -> None:
    """The passphrase and/or volume key every LUKS volume opened from now on tries."""
    global _PASSPHRASE, _VOLUME_KEY
    _PASSPHRASE, _VOLUME_KEY = passphrase, volume_key


def keys_given() -> bool:
    return _PASSPHRASE is not None or _VOLUME_KEY is not None


def read_passphrase_file(path: str) -> bytes:
    """A passphrase file's content without one trailing newline."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    return data[:-1] if data.endswith(b"\n") else data


def read_key_file(path: str) -> bytes:
    """A volume key file's bytes (raw: 32 or 64 bytes for AES-XTS)."""
    with open(path, "rb") as f:
        return f.read(1024)


# ---- byte views ---------------------------------------------------------------------------


class FileView(io.RawIOBase):
    """A read-only, seekable file object over a DiskImage (what the libyal bindings read)."""

    def __init__(self, img: DiskImage) -> None:
        super().__init__()
        self._img = img
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._img.get_size()}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:
        return self._img.get_size()

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._img.get_size() - self._pos
        data = self._img.read(self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Inner(DiskImage):
    """A volume inside an image: reads through its parent, is made of the parent's files."""

    def __init__(self, parent: DiskImage, size: int, path: str) -> None:
        self.parent = parent
        self.files = parent.files
        self.format = parent.format
        self._size = size
        self.path = path

    def describe(self) -> str:
        return self.parent_image().describe()  # the evidence's label names the volume path

    def parent_image(self) -> DiskImage:
        img = self.parent
        while isinstance(img, _Inner):
            img = img.parent
        return img

    def boundaries(self) -> list[str]:
        return self.parent.boundaries()


class SliceImage(_Inner):
    """LENGTH bytes of PARENT from OFFSET (a partition)."""

    def __init__(self, parent: DiskImage, offset: int, length: int, path: str) -> None:
        super().__init__(parent, max(0, min(length, parent.get_size() - offset)), path)
        self.offset = offset

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self._size - offset))
        return self.parent.read(self.offset + offset, size) if size else b""


class _Zeros(DiskImage):
    """A stand-in of SIZE zero bytes for a physical volume that is not there."""

    def __init__(self, size: int) -> None:
        self.files = []
        self._size = size

    def read(self, offset: int, size: int) -> bytes:
        return bytes(max(0, min(size, self._size - offset)))


class LvImage(_Inner):
    """An LVM2 logical volume, read through libvslvm."""

    def __init__(self, parent: DiskImage, lv: Any, path: str, group: Any) -> None:
        super().__init__(parent, int(lv.size), path)
        self._lv = lv
        self._group = group  # keeps the handle and its file objects alive

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self._size - offset))
        return self._lv.read_buffer_at_offset(size, offset) if size else b""


class LinearLvImage(_Inner):
    """A linear LVM2 logical volume read from the group's metadata: segments of extents on
    physical volumes (used when libvslvm cannot open the group: a physical volume missing)."""

    def __init__(self, parent: DiskImage, runs: list[tuple[int, int, DiskImage, int]], size: int, path: str):
        super().__init__(parent, size, path)
        self._runs = runs  # (start byte in the LV, length, PV image, byte offset on the PV)

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self._size)
        out = bytearray()
        for start, length, pv, pv_off in self._runs:
            lo, hi = max(offset, start), min(end, start + length)
            if lo < hi:
                want = lo - offset - len(out)
                out += bytes(max(0, want))
                out += pv.read(pv_off + lo - start, hi - lo)
        return bytes(out) + bytes(max(0, end - offset - len(out)))


class LuksImage(_Inner):
    """The decrypted payload of an unlocked LUKS volume."""

    def __init__(self, parent: DiskImage, volume: luks.LuksVolume, path: str) -> None:
        super().__init__(parent, volume.size, path)
        self._volume = volume

    def read(self, offset: int, size: int) -> bytes:
        return self._volume.read(offset, size)


# ---- the tree -----------------------------------------------------------------------------


@dataclass
class Volume:
    """One volume of a disk: its path, type, size and what was found on it."""

    path: str  # "" for the whole disk
    kind: str  # "disk", "gpt partition", "LVM2 logical volume", "LUKS2" ...
    size: int
    image: DiskImage | None  # its bytes (None when unreadable)
    content: str | None = None  # what lies on it: a filesystem name, "LVM2 physical volume" ...
    problem: str | None = None
    partition: Partition | None = None
    children: list[Volume] = field(default_factory=list)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def label(self) -> str:
        return self.path or "(whole disk)"


def _join(parent: str, step: str) -> str:
    return f"{parent}/{step}" if parent else step


def _sniff(img: DiskImage) -> str | None:
    try:
        return sniff_filesystem(img.read(0, 0x10100))
    except OSError:
        return None


def _lvm_label(img: DiskImage) -> tuple[str, int, int] | None:
    """(PV uuid, metadata area offset, size) of the LVM2 physical volume IMG, None if not one."""
    head = img.read(0, 4096)
    for sector in range(4):
        label = head[512 * sector : 512 * (sector + 1)]
        if label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001":
            pvh = 512 * sector + struct.unpack("<I", label[20:24])[0]
            uuid = head[pvh : pvh + 32].decode("ascii", "replace")
            pos = pvh + 40
            while head[pos : pos + 16].strip(b"\0"):  # data areas
                pos += 16
            pos += 16
            off, size = struct.unpack("<QQ", head[pos : pos + 16])
            return uuid, off, size
    return None


def _lvm_metadata(img: DiskImage, mda: int) -> str:
    """The newest metadata text of a PV's first metadata area (LVM2 mda header, raw_locn 0)."""
    hdr = img.read(mda, 512)
    if hdr[4:20] != b" LVM2 x[5A%r0N*>":
        return ""
    off, size = struct.unpack("<QQ", hdr[40:56])
    if size > _MAX_METADATA:
        return ""
    return img.read(mda + off, size).split(b"\0", 1)[0].decode("utf-8", "replace")


#: an LVM2 metadata text is read at most this large (lvm2 keeps metadata areas of ~1 MiB)
_MAX_METADATA = 16 << 20

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n|(\{|\}|\[|\]|=|,)|("(?:[^"\\]|\\.)*")|([^\s{}\[\]=,"#]+))')


def parse_lvm_text(text: str) -> dict:
    """LVM2's metadata text (sections ``name { ... }``, ``key = value``, lists) as a dict."""
    tokens = [m.group(1) or m.group(2) or m.group(3) for m in _TOKEN.finditer(text) if m.group(0).strip()]
    tokens = [t for t in tokens if t is not None]
    pos = 0

    def value(t: str):
        if t.startswith('"'):
            return t[1:-1]
        try:
            return int(t)
        except ValueError:
            return t

    def section() -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != "}":
            name = tokens[pos]
            pos += 1
            if pos < len(tokens) and tokens[pos] == "{":
                pos += 1
                out[name] = section()
                pos += 1
            elif pos < len(tokens) and tokens[pos] == "=":
                pos += 1
                if tokens[pos] == "[":
                    pos += 1
                    items = []
                    while tokens[pos] != "]":
                        if tokens[pos] != ",":
                            items.append(value(tokens[pos]))
                        pos += 1
                    pos += 1
                    out[name] = items
                else:
                    out[name] = value(tokens[pos])
                    pos += 1
        return out

    return section()


def _luks_child(vol: Volume, img: DiskImage) -> None:
    path = _join(vol.path, "luks")

    def pread(off: int, n: int) -> bytes:
        return img.read(off, n)

    try:
        hdr = luks.parse_header(pread)
    except luks.LuksError as exc:
        vol.problem = f"LUKS header unreadable: {exc}"
        return
    vol.content = f"LUKS{hdr.version} encrypted volume ({hdr.cipher})"
    child = Volume(path, f"LUKS{hdr.version}", 0, None)
    vol.children.append(child)
    if not keys_given():
        child.problem = "locked: give --passphrase-file or --key-file"
        return
    try:
        key = luks.unlock(pread, hdr, _PASSPHRASE, _VOLUME_KEY)
        volume = luks.LuksVolume(pread, hdr, key, img.get_size())
    except (luks.LuksError, ValueError) as exc:
        child.problem = str(exc)
        return
    child.image = LuksImage(img, volume, path)
    child.size = volume.size
    _explore(child)


def _explore(vol: Volume) -> None:
    """Fill VOL's content and children (LUKS here; LVM groups after the whole tree is known)."""
    img = vol.image
    if img is None:
        return
    what = _sniff(img)
    vol.content = what
    if what == "LUKS encrypted volume":
        _luks_child(vol, img)
    elif what is None:
        try:
            head = img.read(0, 0x10100)
        except OSError:
            head = b""
        vol.content = "no filesystem (zero-filled)" if not head.strip(b"\0") else None


def _partitions(root: Volume) -> None:
    img = root.image
    assert img is not None
    vsname, parts = list_partitions(img)
    if not vsname:
        return
    root.content = f"{vsname} partition table"
    for p in parts:
        path = f"p{p.number}"
        child = Volume(path, f"{vsname} partition", p.length, SliceImage(img, p.offset, p.length, path))
        child.partition = p
        root.children.append(child)


@dataclass
class _Pv:
    volume: Volume
    uuid: str
    vg: str
    metadata: dict


def _groups(root: Volume) -> dict[str, list[_Pv]]:
    """Every LVM2 physical volume of the tree, grouped by volume group name."""
    out: dict[str, list[_Pv]] = {}
    for vol in list(root.walk()):
        if vol.content != "LVM2 physical volume" or vol.image is None:
            continue
        label = _lvm_label(vol.image)
        if label is None:
            continue
        uuid, mda, _size = label
        try:
            meta = parse_lvm_text(_lvm_metadata(vol.image, mda))
        except (IndexError, ValueError):
            meta = {}
        vg = next((k for k, v in meta.items() if isinstance(v, dict) and "physical_volumes" in v), None)
        if vg is None:
            vol.problem = "LVM2 physical volume whose metadata is unreadable"
            continue
        out.setdefault(vg, []).append(_Pv(vol, uuid.replace("-", ""), vg, meta[vg]))
    return out


def _lvm(root: Volume) -> None:
    """Open each volume group found in the tree and add its logical volumes."""
    for vg, pvs in _groups(root).items():
        try:
            _open_group(vg, pvs)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            pvs[0].volume.problem = f"LVM2 volume group {vg}: metadata unusable ({type(exc).__name__}: {exc})"
    for vol in list(root.walk()):
        if vol.kind == "LVM2 logical volume" and vol.image is not None and not vol.children:
            _explore(vol)


def _open_group(vg: str, pvs: list[_Pv]) -> None:
    import pyvslvm

    meta = pvs[0].metadata
    by_uuid = {pv.uuid: pv for pv in pvs}
    recorded = meta.get("physical_volumes", {})
    order, missing, views = [], set(), []
    for name, pvmeta in recorded.items():
        uuid = str(pvmeta.get("id", "")).replace("-", "")
        pv = by_uuid.get(uuid)
        if pv is None:
            missing.add(name)
            size = int(pvmeta.get("dev_size", 0)) * 512
            views.append(FileView(_Zeros(size)))
        else:
            views.append(FileView(pv.volume.image))
        order.append(name)
    host = pvs[0].volume
    if missing:
        names = ", ".join(f"{n} ({recorded[n].get('id', '?')})" for n in sorted(missing))
        host.problem = f"LVM2 volume group {vg}: physical volume {names} not in this evidence"
        present = {n: by_uuid.get(str(m.get("id", "")).replace("-", "")) for n, m in recorded.items()}
        _linear_group(vg, meta, present, host, missing)
        return
    try:
        h = pyvslvm.handle()
        h.open_file_object(views[order.index(next(n for n in order if n not in missing))])
        h.open_physical_volume_files_as_file_objects(views)
        group = h.get_volume_group()
    except (OSError, RuntimeError, StopIteration, ValueError) as exc:
        host.problem = f"LVM2 volume group {vg} unreadable: {exc}"
        return
    lvs_meta = meta.get("logical_volumes", {})
    keep = (h, views)
    for lv in group.logical_volumes:
        path = _join(host.path, f"lvm:{vg}/{lv.name}")
        child = Volume(path, "LVM2 logical volume", int(lv.size), None)
        host.children.append(child)
        problem = _lv_problem(lvs_meta.get(lv.name, {}), missing, recorded)
        if problem:
            child.problem = problem
            continue
        child.image = LvImage(host.image, lv, path, keep)


def _linear_group(vg: str, meta: dict, pvs: dict[str, _Pv | None], host: Volume, missing: set[str]) -> None:
    """The logical volumes of group VG read from its metadata (see the module docstring)."""
    extent = int(meta.get("extent_size", 0)) * 512
    recorded = meta.get("physical_volumes", {})
    for name, lv_meta in meta.get("logical_volumes", {}).items():
        if not isinstance(lv_meta, dict) or "VISIBLE" not in lv_meta.get("status", []):
            continue
        path = _join(host.path, f"lvm:{vg}/{name}")
        child = Volume(path, "LVM2 logical volume", 0, None)
        host.children.append(child)
        runs = []
        for key, seg in lv_meta.items():
            if key.startswith("segment") and isinstance(seg, dict):
                start = int(seg.get("start_extent", 0)) * extent
                count = int(seg.get("extent_count", 0)) * extent
                child.size = max(child.size, start + count)
                stripes = seg.get("stripes", [])
                pv = pvs.get(stripes[0]) if stripes else None
                if pv is not None and pv.volume.image is not None:
                    pe_start = int(recorded[stripes[0]].get("pe_start", 0)) * 512
                    runs.append((start, count, pv.volume.image, pe_start + int(stripes[1]) * extent))
        child.problem = _lv_problem(lv_meta, missing, recorded)
        if child.problem is None:
            child.image = LinearLvImage(host.image, runs, child.size, path)


def _lv_problem(lv_meta: dict, missing: set[str], recorded: dict) -> str | None:
    """Why a logical volume cannot be read: a segment on a missing PV, or not linear."""
    for key, seg in lv_meta.items():
        if not key.startswith("segment") or not isinstance(seg, dict):
            continue
        if seg.get("type") != "striped":
            return f"segment type {seg.get('type')} is not supported (linear volumes are)"
        stripes = seg.get("stripes", [])
        on = {s for s in stripes[0::2] if isinstance(s, str)}
        gone = on & missing
        if gone:
            ids = ", ".join(f"{g} ({recorded[g].get('id', '?')})" for g in sorted(gone))
            return f"on physical volume {ids}, which is not in this evidence"
    return None


def volume_tree(img: DiskImage) -> Volume:
    """Every volume of IMG: the whole disk, its partitions, LVM logical volumes and LUKS
    payloads, nested, each with its content sniffed (filesystem names) and problems."""
    root = Volume("", "disk", img.get_size(), img)
    _partitions(root)
    if not root.children:
        _explore(root)
    for child in root.children:
        _explore(child)
    _lvm(root)
    return root


# ---- volume paths ------------------------------------------------------------------------

_STEP = re.compile(
    r"p?(?P<part>\d+)|offset=(?P<off>\d+)(?P<unit>s?)|lvm:(?P<vg>[^/]+)/(?P<lv>[^/]+)|(?P<luks>luks)"
)


def parse_volume_path(path: str) -> list[tuple[str, Any]]:
    """The steps of a volume path: ("part", N), ("offset", bytes), ("lvm", (vg, lv)), ("luks", None);
    ValueError when PATH is not one."""
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if not m or (m.end() < len(path) and path[m.end()] != "/"):
            raise ValueError(f"not a volume path: {path!r} (at {path[pos:]!r})")
        if m["part"] is not None:
            steps.append(("part", int(m["part"])))
        elif m["off"] is not None:
            steps.append(("offset", int(m["off"]) * (512 if m["unit"] else 1)))
        elif m["vg"] is not None:
            steps.append(("lvm", (m["vg"], m["lv"])))
        else:
            steps.append(("luks", None))
        pos = m.end() + 1
    if not steps:
        raise ValueError("empty volume path")
    return steps


def canonical(steps: list[tuple[str, Any]]) -> str:
    """The path of STEPS as :func:`volume_tree` names volumes."""
    out = []
    for kind, val in steps:
        if kind == "part":
            out.append(f"p{val}")
        elif kind == "offset":
            out.append(f"offset={val}")
        elif kind == "lvm":
            out.append(f"lvm:{val[0]}/{val[1]}")
        else:
            out.append("luks")
    return "/".join(out)


def find_volume(img: DiskImage, path: str) -> Volume:
    """The volume at volume path PATH of IMG; ImageError naming what is there instead."""
    steps = parse_volume_path(path)
    if steps[0][0] == "offset":
        off = steps[0][1]
        sl = Volume(f"offset={off}", "byte range", max(0, img.get_size() - off), None)
        sl.image = SliceImage(img, off, img.get_size() - off, sl.path)
        _explore(sl)
        holder = Volume("", "disk", img.get_size(), img, children=[sl])
        _lvm(holder)
        tree = holder
    else:
        tree = volume_tree(img)
    want = canonical(steps)
    for vol in tree.walk():
        if vol.path == want:
            if vol.image is None:
                raise ImageError(f"{img.describe()}@{want}: {vol.problem or 'unreadable'}")
            return vol
    have = ", ".join(v.path for v in tree.walk() if v.path) or "none"
    raise ImageError(f"{img.describe()} has no volume {want} (volumes: {have})")
