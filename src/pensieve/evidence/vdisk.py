"""Virtual machine disk images: VMDK (VMware), VHD and VHDX (Microsoft), read through the libyal
bindings ``pyvmdk`` (libvmdk-python) and ``pyvhdi`` (libvhdi-python).

Both bindings are given file objects that pensieve opened itself (``O_RDONLY``, ``O_NOATIME``),
never a path, so the libraries cannot open (or create) anything beside the evidence.

VMDK (VMware "Virtual Disk Format 1.1"): the descriptor (a text file, or embedded in a monolithic
sparse extent) names its extents; each is looked up beside the descriptor by its base name
(a recorded absolute or ``..`` path is not followed outside the descriptor's directory).
monolithicSparse, monolithicFlat, twoGbMaxExtentSparse / Flat (split) and streamOptimized
read as ``qemu-img convert -O raw`` reads them (tests compare the sha256 of the whole disk).
A missing extent is an ImageError naming it.  libvmdk refuses a flat extent shorter than its
descriptor says ("invalid extent size value out of bounds"); pensieve then reads the flat
extents itself (a flat extent is the disk's bytes from its descriptor offset), what is missing
as zeros, with a problem in :attr:`VirtualDisk.problems` naming the extent.  A truncated
*sparse* extent is left to libvmdk (an ImageError when it refuses it).
A VMDK with a parent (snapshot delta, ``parentFileNameHint``) is opened with its parent found
beside it the same way.

VHD (Microsoft "Virtual Hard Disk Image Format Specification" 1.0): fixed, dynamic and
differencing.  A differencing disk's parent is found beside it by the name recorded in its
header (``pyvhdi.file.parent_filename``: the relative or absolute Windows path; its last
component is looked up in the child's directory), opened the same way (recursively, bounded),
and handed to libvhdi with ``set_parent``.  Without it: an ImageError naming the parent.
The size read is the footer's *current size* (libvhdi); ``qemu-img`` reads a *fixed* VHD as the
whole file, so its raw output has the 512-byte footer appended: tests compare the first
*current size* bytes.  VHDX ("[MS-VHDX]" v1.0): fixed, dynamic and differencing, the same way.

Binding checks made (libvmdk-python 20260714, libvhdi-python 20260901): pyvmdk opens every
extent from file objects read-only; pyvhdi's ``set_parent`` resolves differencing disks.
``qemu-img`` cannot create differencing VHDs (its vpc driver has no backing files), so that case
is tested against a differencing VHD the tests write themselves (the format is small).
"""

from __future__ import annotations

import os
from typing import Any

from pensieve.evidence.disk_images import DiskImage, ImageError, _HandleImage
from pensieve.records import Problem

__all__ = ["VHD", "VHDX", "VMDK", "VhdImage", "VmdkImage"]

VMDK, VHD, VHDX = "VMDK", "VHD", "VHDX"

#: parents followed at most (a differencing chain that loops, or is absurdly long)
_MAX_CHAIN = 16


def beside(ref_path: str, recorded: str) -> str:
    """Where a file that REF_PATH's image records as RECORDED is looked for: its last path
    component (Windows or POSIX separators) in REF_PATH's directory."""
    name = recorded.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return os.path.join(os.path.dirname(os.path.abspath(ref_path)), name)


class VirtualDisk(_HandleImage):
    """What VMDK and VHD(X) images share: problems found while opening, a parent chain."""

    problems: list[Problem]
    parent: VirtualDisk | None = None

    def close(self) -> None:
        super().close()
        if self.parent is not None:
            self.parent.close()

    def boundaries(self) -> list[str]:
        own = list(self.files)
        return own + (self.parent.boundaries() if self.parent is not None else [])


class VmdkImage(VirtualDisk):
    """A VMware VMDK image (descriptor and extents) through libvmdk."""

    format = VMDK

    def __init__(self, path: str, depth: int = 0) -> None:
        pyvmdk = self._binding("pyvmdk", path, "a VMDK image", "libvmdk-python")
        self.problems = []
        self.files = [path]
        self._objects = ()
        self._h = pyvmdk.handle()
        try:
            self._h.open_file_object(self._open_objects([path])[0], "r")
        except (OSError, RuntimeError) as exc:
            self.close()
            raise ImageError(f"cannot open VMDK image {path}: {exc}") from exc
        try:
            self._open_extents(path)
            self._open_parent(path, depth)
        except BaseException:
            self.close()
            raise
        self._size = self._flat_size if hasattr(self, "_runs") else self._h.get_media_size()

    def _open_extents(self, path: str) -> None:
        extents: list[str | None] = []
        descriptors = list(self._h.extent_descriptors)
        for d in descriptors:
            name = d.filename
            if not name:
                extents.append(None)  # a zero or sparse-without-data extent
                continue
            ext_path = path if os.path.basename(name) == os.path.basename(path) else beside(path, name)
            if not os.path.isfile(ext_path):
                raise ImageError(f"{path}: VMDK extent {name} not found (looked for {ext_path})")
            if ext_path != path:
                self.files.append(ext_path)
            extents.append(ext_path)
            self._check_extent(ext_path, d)
        if self.problems and all(int(d.type) == 1 for d in descriptors):
            self._flat_runs(descriptors, extents)  # libvmdk refuses a short flat extent
            return
        objects = iter(self._open_objects([p for p in extents if p]))
        try:
            self._h.open_extent_data_files_as_file_objects([next(objects) if p else None for p in extents])
        except (OSError, RuntimeError) as exc:
            raise ImageError(f"cannot open the extents of VMDK image {path}: {exc}") from exc

    def _flat_runs(self, descriptors: list[Any], extents: list[str | None]) -> None:
        """Read flat extents directly: each is the disk's bytes from its descriptor offset (VMDK
        spec, "FLAT" extents); what a truncated one lacks reads as zeros."""
        self._runs: list[tuple[int, int, int, int]] = []  # (disk offset, length, fd, file offset)
        at = 0
        for d, ext_path in zip(descriptors, extents, strict=True):
            obj = self._open_objects([ext_path])[0] if ext_path else None
            length = int(d.size)
            if obj is not None:
                self._runs.append((at, length, obj.fileno(), int(d.offset)))
            at += length
        self._flat_size = at

    def read(self, offset: int, size: int) -> bytes:
        runs = getattr(self, "_runs", None)
        if runs is None:
            return super().read(offset, size)
        end = min(offset + size, self._size)
        out = bytearray()
        for start, length, fd, file_off in runs:
            lo, hi = max(offset, start), min(end, start + length)
            if lo < hi:
                out += bytes(lo - offset - len(out))
                data = os.pread(fd, hi - lo, file_off + lo - start)
                out += data + bytes(hi - lo - len(data))
        return bytes(out) + bytes(max(0, end - offset - len(out)))

    def _check_extent(self, ext_path: str, descriptor: Any) -> None:
        """A problem when a flat extent file is shorter than the descriptor says."""
        if int(descriptor.type) != 1:  # FLAT: its bytes are the disk's, one for one
            return
        have = os.stat(ext_path).st_size
        want = int(descriptor.offset) + int(descriptor.size)
        if have < want:
            self.problems.append(
                Problem(
                    ext_path,
                    f"VMDK flat extent truncated: {have} of {want} bytes; "
                    "the rest of the disk reads as zeros",
                )
            )

    def _open_parent(self, path: str, depth: int) -> None:
        name = self._h.parent_filename
        if not name:
            return
        if depth >= _MAX_CHAIN:
            raise ImageError(f"{path}: more than {_MAX_CHAIN} parent images")
        parent_path = beside(path, name)
        if not os.path.isfile(parent_path):
            raise ImageError(f"{path}: its parent image {name} is missing (looked for {parent_path})")
        self.parent = VmdkImage(parent_path, depth + 1)
        self._h.set_parent(self.parent._h)


class VhdImage(VirtualDisk):
    """A Microsoft VHD or VHDX image through libvhdi (a differencing one with its parents)."""

    def __init__(self, path: str, depth: int = 0) -> None:
        pyvhdi = self._binding("pyvhdi", path, "a VHD/VHDX image", "libvhdi-python")
        self.problems = []
        self.files = [path]
        self._objects = ()
        self._h = pyvhdi.file()
        try:
            self._h.open_file_object(self._open_objects([path])[0], "r")
        except (OSError, RuntimeError) as exc:
            self.close()
            raise ImageError(f"cannot open VHD/VHDX image {path}: {exc}") from exc
        self.format = VHDX if os.pread(self._objects[0].fileno(), 8, 0) == b"vhdxfile" else VHD
        try:
            self._open_parent(path, depth)
        except BaseException:
            self.close()
            raise
        self._size = self._h.get_media_size()

    def _open_parent(self, path: str, depth: int) -> None:
        if int(self._h.disk_type) != 4:  # 4: differencing
            return
        name = self._h.parent_filename or ""
        if depth >= _MAX_CHAIN:
            raise ImageError(f"{path}: more than {_MAX_CHAIN} parent images")
        parent_path = beside(path, name) if name else ""
        if not name or not os.path.isfile(parent_path):
            raise ImageError(
                f"{path}: differencing {self.format} whose parent {name or '(unnamed)'} is missing"
                + (f" (looked for {parent_path})" if parent_path else "")
            )
        self.parent = VhdImage(parent_path, depth + 1)
        try:
            self._h.set_parent(self.parent._h)
        except (OSError, RuntimeError) as exc:
            raise ImageError(f"{path}: parent {parent_path} does not match: {exc}") from exc


def problems_of(img: DiskImage) -> list[Problem]:
    """The problems found while opening IMG (VMDK/VHD only have any)."""
    return list(getattr(img, "problems", []))
