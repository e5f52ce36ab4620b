"""Disk image files as byte sources: the image formats pensieve reads (sniffed from the content),
their segment files, the volume systems inside them, and what filesystem sits at an offset.

* raw / dd, and split raw: ``x.001, x.002, ...`` (or ``.000``-based, any width) and ``x.aa, x.ab, ...``
  segments are concatenated, in order, from the first one (naming a later segment opens the set);
* E01 / Ex01 (EnCase, libewf via ``pyewf`` from libewf-python), segment files found by libewf;
* qcow2 read by :mod:`pensieve.formats.qcow2`, qcow version 1 through ``pyqcow`` (libqcow-python);
* VMDK (every subformat qemu-img writes; split extents found beside the descriptor), VHD (fixed,
  dynamic, differencing with its parent found beside it) and VHDX, through ``pyvmdk`` and
  ``pyvhdi`` (libvmdk-python, libvhdi-python): :mod:`pensieve.evidence.vdisk`;
* ``disk.raw`` as the first member of a ``.tar`` / ``.tar.gz`` (a Google Cloud image export,
  GNU sparse or not): :mod:`pensieve.evidence.tar_disk`, read in place in an uncompressed tar,
  decompressed once into a spool (:mod:`pensieve.evidence.spool`) when compressed;
* VDI is recognised and refused with a hint (``qemu-img convert -O raw``).

Every image class derives from :class:`DiskImage`: ``read(offset, size)``, ``get_size()``,
``format``, ``files``, ``describe()``, ``boundaries()``, ``close()``, and ``tsk()``, the pytsk3
``Img_Info`` over it that The Sleuth Kit reads through (pytsk3 is imported only then).  Image files
are opened ``O_RDONLY`` (``O_NOATIME`` where allowed) and only ever read with ``pread``.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import stat as statmod
from typing import Any

from pensieve.evidence.base import EvidenceError, NotFound, open_noatime
from pensieve.formats import qcow2


class ImageError(EvidenceError):
    """The image, its volume system or its filesystem cannot be read."""


def tsk_module():
    """pytsk3, or ImageError saying how to get it."""
    try:
        import pytsk3
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImageError("reading disk images needs pytsk3 (pip install pytsk3)") from exc
    return pytsk3


# ---- image specification --------------------------------------------------------------------

_SPEC = re.compile(r"^(?P<base>.+)@(?:(?P<part>\d+)|offset=(?P<off>\d+)(?P<unit>s?))$")


def volume_path(source: str) -> str | None:
    """The volume path of SOURCE (``p2/lvm:vg0/lv_root/luks``: see :mod:`pensieve.evidence.volumes`)
    when it has one beyond a plain ``@N`` / ``@offset=B``; None otherwise."""
    if os.path.exists(source) or "@" not in source:
        return None
    base, _, path = source.rpartition("@")
    if not os.path.exists(base) or _SPEC.match(source):
        return None
    return path


def split_spec(source: str) -> tuple[str, int | None, int | None]:
    """(image path, partition number or None, byte offset or None) of an image specification
    (the image path alone for a volume path, :func:`volume_path`).

    A path that exists as given is taken whole, even if it has an ``@`` in it."""
    if os.path.exists(source):
        return source, None, None
    m = _SPEC.match(source)
    if not m or not os.path.exists(m["base"]):
        if volume_path(source) is not None:
            return source.rpartition("@")[0], None, None
        return source, None, None
    if m["part"] is not None:
        return m["base"], int(m["part"]), None
    off = int(m["off"]) * (512 if m["unit"] else 1)
    return m["base"], None, off


# ---- image formats --------------------------------------------------------------------------

RAW, SPLIT_RAW, EWF, QCOW = "raw", "split raw", "E01", "qcow"
VMDK, VHD, VHDX, TAR_DISK = "VMDK", "VHD", "VHDX", "disk.raw in tar"

#: (offset, magic, format) of the virtual disk formats read through libvmdk / libvhdi
_VIRTUAL = [
    (0, b"KDMV", VMDK),  # hosted sparse extent (monolithicSparse, streamOptimized, split sparse)
    (0, b"COWD", VMDK),  # ESX sparse extent
    (0, b"# Disk DescriptorFile", VMDK),  # descriptor text file
    (0, b"vhdxfile", VHDX),
    (0, b"conectix", VHD),  # dynamic / differencing: a copy of the footer leads the file
]

_REFUSED = [
    (64, b"\x7f\x10\xda\xbe", "VDI (VirtualBox) image"),
    (0, b"\xfd7zXZ\x00", "xz-compressed file"),
    (0, b"\x1f\x8b", "gzip-compressed file"),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed file"),
    (0, b"BZh", "bzip2-compressed file"),
]


def _read_head(path: str, size: int = 4096) -> bytes:
    fd = _open_ro(path)
    try:
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _open_ro(path: str) -> int:
    try:
        return open_noatime(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ImageError(f"cannot open image {path}: {exc.strerror}") from exc


def _fixed_vhd(path: str) -> bool:
    """Whether PATH ends with a VHD footer (a fixed VHD: the raw disk, then 512 bytes of footer)."""
    fd = _open_ro(path)
    try:
        size = os.fstat(fd).st_size
        return size >= 1024 and size % 512 == 0 and os.pread(fd, 8, size - 512) == b"conectix"
    finally:
        os.close(fd)


def image_format(path: str) -> str:
    """RAW, SPLIT_RAW, EWF, QCOW, VMDK, VHD, VHDX or TAR_DISK; ImageError for a format recognised
    but not supported."""
    head = _read_head(path)
    for off, magic, fmt in _VIRTUAL:
        if head[off : off + len(magic)] == magic:
            return fmt
    if os.path.isfile(path) and _fixed_vhd(path):
        return VHD
    from pensieve.evidence.tar_disk import disk_member

    if disk_member(path) is not None:
        return TAR_DISK
    if head[:8] in (b"EVF\x09\x0d\x0a\xff\x00", b"EVF2\x0d\x0a\x81\x00"):
        return EWF
    if head[:8] in (b"LVF\x09\x0d\x0a\xff\x00", b"LEF2\x0d\x0a\x81\x00"):
        raise ImageError(f"{path}: a logical evidence file (L01/Lx01) holds files, not a disk image")
    if head[:4] == b"QFI\xfb":
        return QCOW
    for off, magic, what in _REFUSED:
        if head[off : off + len(magic)] == magic:
            hint = "decompress it first" if "compressed" in what else "qemu-img convert -O raw makes one"
            raise ImageError(f"{path}: {what}: not a supported disk image format ({hint})")
    if len(raw_segments(path)) > 1:
        return SPLIT_RAW
    return RAW


_NUMERIC_SEG = re.compile(r"^(?P<stem>.*\.)(?P<num>\d{2,4})$")
_ALPHA_SEG = re.compile(r"^(?P<stem>.*[._-]?)(?P<seq>[a-z]{2})$")


def raw_segments(path: str) -> list[str]:
    """The segment files of a split raw image named by any of its segments ([path] if unsplit)."""
    m = _NUMERIC_SEG.match(path)
    if m:
        stem, width = m["stem"], len(m["num"])
        start = next((s for s in (0, 1) if os.path.isfile(f"{stem}{s:0{width}d}")), None)
        if start is not None:
            segs = []
            i = start
            while os.path.isfile(seg := f"{stem}{i:0{width}d}"):
                segs.append(seg)
                i += 1
            if len(segs) > 1 and path in segs:
                return segs
    m = _ALPHA_SEG.match(path)
    if m and os.path.isfile(m["stem"] + "aa") and os.path.isfile(m["stem"] + "ab"):
        segs = []
        for i in range(26 * 26):
            seg = m["stem"] + chr(97 + i // 26) + chr(97 + i % 26)
            if not os.path.isfile(seg):
                break
            segs.append(seg)
        if path in segs:
            return segs
    return [path]


# ---- image classes ----------------------------------------------------------------------------


class DiskImage:
    """The bytes of a disk image: what every image format provides."""

    format: str = RAW
    files: list[str]
    _size: int = 0
    _tsk_img: Any = None

    def read(self, offset: int, size: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def get_size(self) -> int:
        return self._size

    def describe(self) -> str:
        if not self.files:
            return "image"
        name = os.path.basename(self.files[0])
        extra = f" (+{len(self.files) - 1} segments)" if len(self.files) > 1 else ""
        return f"{name}{extra}"

    def boundaries(self) -> list[str]:
        """The host files this image is made of (the output sink refuses them and their directory)."""
        return list(self.files)

    def close(self) -> None:
        """Release the image's file handles."""

    def tsk(self):
        """The pytsk3 ``Img_Info`` reading through this image (made once)."""
        if self._tsk_img is None:
            self._tsk_img = _tsk_adapter()(self)
        return self._tsk_img


_ADAPTER: type | None = None


def _tsk_adapter() -> type:
    """A pytsk3 Img_Info subclass that reads through a DiskImage (built on first use)."""
    global _ADAPTER
    if _ADAPTER is None:
        pytsk3 = tsk_module()

        class TskImage(pytsk3.Img_Info):
            def __init__(self, image: DiskImage) -> None:
                self._image = image
                super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

            def read(self, offset: int, size: int) -> bytes:
                return self._image.read(offset, size)

            def get_size(self) -> int:
                return self._image.get_size()

            def close(self) -> None:
                return None  # the DiskImage owns the file handles

        _ADAPTER = TskImage
    return _ADAPTER


def as_tsk(img):
    """The pytsk3 image of IMG (a DiskImage, or already a pytsk3 image)."""
    return img.tsk() if isinstance(img, DiskImage) else img


class RawImage(DiskImage):
    """Raw image, one file or the concatenation of split segments, read with pread."""

    def __init__(self, files: list[str]) -> None:
        self.files = files
        self.format = SPLIT_RAW if len(files) > 1 else RAW
        self._fds: list[int] = []
        self._starts: list[int] = []
        total = 0
        try:
            for f in files:
                fd = _open_ro(f)
                self._fds.append(fd)
                self._starts.append(total)
                st = os.fstat(fd)
                size = os.lseek(fd, 0, os.SEEK_END) if statmod.S_ISBLK(st.st_mode) else st.st_size
                total += size
        except BaseException:
            self.close()
            raise
        self._size = total

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def read(self, offset: int, size: int) -> bytes:
        out = []
        end = min(offset + size, self._size)
        i = 0
        n = len(self._starts)
        while offset < end:
            while i + 1 < n and self._starts[i + 1] <= offset:
                i += 1
            seg_end = self._starts[i + 1] if i + 1 < n else self._size
            data = os.pread(self._fds[i], min(end, seg_end) - offset, offset - self._starts[i])
            if not data:
                break
            out.append(data)
            offset += len(data)
        return b"".join(out)


class _HandleImage(DiskImage):
    """An image read through a libyal handle ``_h`` (pyewf, pyqcow) of media size ``_size``."""

    _h: Any

    @staticmethod
    def _binding(module: str, path: str, what: str, package: str) -> Any:
        """The libyal Python binding MODULE; ImageError naming PACKAGE to install when it is absent."""
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise ImageError(f"{path} is {what}: reading it needs {package} (pip install {package})") from exc

    #: the image files, each opened by pensieve (O_RDONLY, O_NOATIME) and handed to the binding as
    #: a file object, so the library never opens a path itself
    _objects: tuple[io.FileIO, ...] = ()

    def _open_objects(self, paths: list[str]) -> list[io.FileIO]:
        opened = tuple(io.FileIO(_open_ro(p), "rb", closefd=True) for p in paths)
        self._objects += opened
        return list(opened)

    def close(self) -> None:
        try:
            self._h.close()
        except (OSError, RuntimeError, AttributeError):
            pass
        for f in self._objects:
            f.close()
        self._objects = ()

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self._size - offset))
        return self._h.read_buffer_at_offset(size, offset) if size else b""


class EwfImage(_HandleImage):
    """EnCase (E01/Ex01) image through libewf."""

    format = EWF

    def __init__(self, path: str) -> None:
        pyewf = self._binding("pyewf", path, "an E01 image", "libewf-python")
        try:
            self.files = pyewf.glob(path)
            self._h = pyewf.handle()
            self._h.open_file_objects(self._open_objects(self.files), "r")
        except (OSError, RuntimeError) as exc:
            raise ImageError(f"cannot open E01 image {path}: {exc}") from exc
        self._size = self._h.get_media_size()


class QcowImage(_HandleImage):
    """QEMU qcow (version 1) image through libqcow."""

    format = QCOW

    def __init__(self, path: str) -> None:
        pyqcow = self._binding("pyqcow", path, "a qcow image", "libqcow-python")
        self.files = [path]
        try:
            self._h = pyqcow.file()
            self._h.open_file_object(self._open_objects(self.files)[0], "r")
        except (OSError, RuntimeError) as exc:
            raise ImageError(
                f"cannot open qcow image {path}: {exc} (images with a backing file, or encrypted ones, "
                "are not supported: qemu-img convert -O raw)"
            ) from exc
        self._size = self._h.get_media_size()


class Qcow2Image(DiskImage):
    """QEMU qcow2 (versions 2 and 3), read by :class:`pensieve.formats.qcow2.Qcow2` with pread."""

    format = QCOW

    def __init__(self, path: str) -> None:
        self.files = [path]
        self._fd = _open_ro(path)
        try:
            self._guest = qcow2.Qcow2(self._pread)
        except qcow2.Qcow2Error as exc:
            self.close()
            raise ImageError(f"{path}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._size = self._guest.size

    def _pread(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self, offset: int, size: int) -> bytes:
        return self._guest.read(offset, size)


def open_image(path: str) -> DiskImage:
    """The DiskImage of PATH, its format sniffed from the content."""
    if not os.path.exists(path):
        raise NotFound(f"source does not exist: {path}")
    if os.path.isdir(path):
        raise ImageError(f"{path} is a directory, not a disk image")
    fmt = image_format(path)
    if fmt == EWF:
        return EwfImage(path)
    if fmt in (VMDK, VHD, VHDX):
        from pensieve.evidence.vdisk import VhdImage, VmdkImage

        return VmdkImage(path) if fmt == VMDK else VhdImage(path)
    if fmt == TAR_DISK:
        from pensieve.evidence.tar_disk import TarDiskImage

        return TarDiskImage(path)
    if fmt == QCOW:
        return Qcow2Image(path) if qcow2.version(_read_head(path, 8)) >= 2 else QcowImage(path)
    return RawImage(raw_segments(path))


def is_disk_image(source: str) -> bool:
    """Whether SOURCE looks like a disk image pensieve reads (for routing a regular file).

    True for an image specification (``x.img@2``), E01/qcow signatures, split raw sets, a boot
    sector / partition table signature, or a filesystem superblock at offset 0."""
    base, part, off = split_spec(source)
    if part is not None or off is not None:
        return True
    if not os.path.isfile(base) and not os.path.exists(base):
        return False
    if os.path.isdir(base):
        return False
    try:
        head = _read_head(base, 1 << 16 | 0x100)
    except EvidenceError:
        return False
    if head[:8] in (b"EVF\x09\x0d\x0a\xff\x00", b"EVF2\x0d\x0a\x81\x00") or head[:4] == b"QFI\xfb":
        return True
    if any(head[off : off + len(magic)] == magic for off, magic, _fmt in _VIRTUAL):
        return True
    if len(raw_segments(base)) > 1:
        return True
    from pensieve.evidence.tar_disk import disk_member

    if disk_member(base) is not None:
        return True  # a cloud image export: disk.raw in a tar
    if head[257:262] == b"ustar":
        return False  # a tar archive
    if os.path.isfile(base) and _fixed_vhd(base):
        return True
    return head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART" or sniff_filesystem(head) is not None


# ---- filesystem sniffing (for the messages about what cannot be read) ------------------------


def sniff_filesystem(head: bytes) -> str | None:
    """A name for the filesystem or container whose first 64 KiB (+) are HEAD, None if unknown."""
    if head[:4] == b"XFSB":
        return "xfs"
    if head[0x10040:0x10048] == b"_BHRfS_M":
        return "btrfs"
    if head[:6] == b"LUKS\xba\xbe" or head[:6] == b"SKUL\xba\xbe":
        return "LUKS encrypted volume"
    for sector in range(4):
        if head[512 * sector : 512 * sector + 8] == b"LABELONE":
            return "LVM2 physical volume"
    if head[:4] in (b"hsqs", b"sqsh"):
        return "squashfs"
    if head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if head[1024:1028] == b"\x10\x20\xf5\xf2":
        return "f2fs"
    if head[1080:1082] == b"\x53\xef":
        return "ext2/3/4"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[3:8] == b"EXFAT":
        return "exfat"
    if head[82:87] == b"FAT32" or head[54:59] in (b"FAT12", b"FAT16"):
        return "fat"
    if head[0x8001:0x8006] == b"CD001":
        return "iso9660"
    if head[:4] == b"ZFS\x00" or b"\x0c\xb1\xba\x00\x00\x00\x00\x00" in head[0x20000 : 0x20000 + 0x400]:
        return "zfs"
    return None


def what_is_at(img, offset: int) -> str:
    """What lies at OFFSET of IMG, for a message about why it cannot be read."""
    try:
        head = img.read(offset, 0x10100)
    except OSError:
        return "unreadable data"
    name = sniff_filesystem(head)
    if name:
        return name
    if not head.strip(b"\0"):
        return "no filesystem (zero-filled)"
    return "no recognised filesystem"


# ---- volume systems -------------------------------------------------------------------------


class Partition:
    """One partition of a volume system (or the whole image, number 0, when there is none)."""

    __slots__ = ("number", "offset", "length", "description", "fs_type", "readable", "error", "score")

    def __init__(self, number: int, offset: int, length: int, description: str) -> None:
        self.number = number
        self.offset = offset
        self.length = length
        self.description = description
        self.fs_type: str | None = None
        self.readable = False
        self.error: str | None = None
        self.score = 0

    def label(self) -> str:
        if self.number == 0:
            return f"offset {self.offset}"
        desc = f" ({self.description})" if self.description else ""
        return f"partition {self.number}{desc}, offset {self.offset}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "offset": self.offset,
            "length": self.length,
            "description": self.description,
            "fs_type": self.fs_type,
            "readable": self.readable,
            "error": self.error,
        }


def list_partitions(img) -> tuple[str | None, list[Partition]]:
    """(volume system name, allocated partitions) of IMG; (None, []) without a volume system."""
    pytsk3 = tsk_module()
    try:
        vs = pytsk3.Volume_Info(as_tsk(img))
    except OSError:
        return None, []
    vstype = int(vs.info.vstype)
    bs = int(vs.info.block_size)
    names = {
        int(getattr(pytsk3, f"TSK_VS_TYPE_{n}", -1)): n.lower() for n in ("DOS", "GPT", "BSD", "SUN", "MAC")
    }
    vsname = names.get(vstype, f"volume system {vstype}")
    alloc = int(pytsk3.TSK_VS_PART_FLAG_ALLOC)
    out: list[Partition] = []
    count = 0
    for part in vs:
        if not int(part.flags) & alloc:
            continue
        count += 1
        table, slot = int(part.table_num), int(part.slot_num)
        if vsname == "gpt" and slot >= 0:
            number = slot + 1
        elif vsname == "dos" and slot >= 0:
            number = slot + 1 if table <= 0 else 4 + table
        else:
            number = count
        desc = part.desc.decode("utf-8", "replace") if isinstance(part.desc, bytes) else str(part.desc)
        out.append(Partition(number, int(part.start) * bs, int(part.len) * bs, desc))
    return vsname, out
