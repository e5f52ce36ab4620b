"""Evidence that is an XFS filesystem inside a disk image, read through libfsxfs (``pyfsxfs``).

Why the binding and not an own reader: libfsxfs-python gives every field the engines and the
overlay driver read (checked against the kernel by ``tests/evidence/test_xfs_evidence.py``, which
walks a real XFS fixture here and through a read-only loop mount): file mode with type, owner, link
count, size, access/modification/change times in nanoseconds (``*_as_integer``, bigtime
included), device numbers (whiteouts are char 0/0), extended attributes by full name with their
namespace prefix (``trusted.overlay.opaque``, ``trusted.overlay.redirect``, ``user.*``,
``security.*``), symlink targets (inline and remote), and file data over extent and btree forks
with holes read as zeros.  The Sleuth Kit has no XFS support at all.  The superblock is parsed
and checked first by :mod:`pensieve.formats.xfs`, so a corrupt or unsupported filesystem is
refused with a reason, and the filesystem is read only through a window of the image that
pensieve opened read-only (:class:`ImageWindow`): the library never opens a path, never writes.

What libfsxfs 20260901 does NOT read (found against the kernel; each is a Problem on the path,
never a wrong answer): names that are not valid UTF-8 (the entry is left out of its directory),
data forks in btree format deeper than it supports ("unsupported B+ tree node level": a file of
thousands of extents, e.g. a long-grown log), and attribute values in remote blocks of a
node-format attribute fork (that attribute is left out).  An own reader (formats/xfs.py holds
the superblock part of one) is the way past these.

Path resolution, caching and the image bookkeeping are :class:`DiskImageEvidence`'s (this class
replaces its four inode primitives); everything said there about symlinks in directory
components, the bounded caches and ``$OrphanFiles`` holds here.  A directory whose listing
libfsxfs cannot read is an EvidenceError for that directory only; an entry whose inode cannot
be read is a Problem and left out, as on ext4.
"""

from __future__ import annotations

import io
import os
import stat as statmod
from typing import Any, BinaryIO

from pensieve.evidence.base import EvidenceError, FileStat
from pensieve.evidence.disk import _LRU, DiskImageEvidence, TskFile
from pensieve.evidence.disk_images import DiskImage, ImageError, Partition
from pensieve.formats.xfs import Superblock, XfsError, inode_size
from pensieve.records import Problem

#: libfsxfs raises these for unreadable structures (its errors are OSError/IOError)
_LIB_ERRORS = (OSError, RuntimeError, ValueError, TypeError, OverflowError)
#: entries of one directory pensieve lists at most (a hostile count is cut there, with a problem)
MAX_DIR_ENTRIES = 10_000_000
#: bytes of superblock read (the largest sector size)
_SB_READ = 32768
_DIR_CACHE_ENTRIES = 100_000
_STAT_CACHE_ENTRIES = 50_000


def _pyfsxfs():
    try:
        import pyfsxfs
    except ImportError as exc:
        raise ImageError("reading XFS needs libfsxfs-python (pip install libfsxfs-python)") from exc
    return pyfsxfs


def is_xfs(img: DiskImage, offset: int) -> bool:
    """Whether the filesystem at OFFSET of IMG is XFS (its superblock magic)."""
    try:
        return img.read(offset, 4) == b"XFSB"
    except OSError:
        return False


class ImageWindow:
    """A read-only file object over bytes [offset, offset + size) of a DiskImage, for libfsxfs."""

    def __init__(self, img: DiskImage, offset: int, size: int) -> None:
        self._img = img
        self._offset = offset
        self._size = max(0, size)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        size = max(0, min(size, self._size - self._pos))
        data = self._img.read(self._offset + self._pos, size) if size else b""
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:
        return self._size

    def close(self) -> None:
        """Nothing: the DiskImage owns the file handles."""


class _EntryReader:
    """``read_random(offset, size)`` over a pyfsxfs file entry (what TskFile reads through)."""

    def __init__(self, entry: Any) -> None:
        self._entry = entry

    def read_random(self, offset: int, size: int) -> bytes:
        try:
            return self._entry.read_buffer_at_offset(size, offset)
        except _LIB_ERRORS as exc:
            raise OSError(5, str(exc)) from exc


class XfsEvidence(DiskImageEvidence):
    """Read-only view of an XFS filesystem inside a disk image (see the module docstring)."""

    #: the checked primary superblock
    superblock: Superblock

    def __init__(  # noqa: PLR0913 - the DiskImageEvidence signature
        self, img: DiskImage, offset: int = 0, partition: Partition | None = None, label: str | None = None
    ) -> None:
        # DiskImageEvidence.__init__ opens The Sleuth Kit, which has no XFS: the same attributes here
        self.image = img
        self.offset = offset
        self.partition = partition
        self.partitions: list[Partition] = []
        self.image_files = list(img.files)
        self.problems: list[Problem] = []
        self.ext4 = None
        self.fs = None
        self.fs_type = "xfs"
        where = label or (partition.label() if partition else f"offset {offset}")
        name = img.describe()
        self.description = f"xfs in {name} {where}"
        self.superblock = self._check_superblock(f"{name} {where}")
        room = (partition.length if partition else img.get_size() - offset) or 0
        if room < self.superblock.size:
            self.problems.append(
                Problem(
                    self.description, f"filesystem spans {self.superblock.size} bytes, the image holds {room}"
                )
            )
        self._window = ImageWindow(img, offset, max(room, self.superblock.size))
        self.volume = self._open_volume(f"{name} {where}")
        self.root_inum = self.superblock.rootino
        self._last_inum = -1
        self._dirs = _LRU(_DIR_CACHE_ENTRIES)
        self._stats = _LRU(_STAT_CACHE_ENTRIES)
        self._dir_inodes = _LRU(_STAT_CACHE_ENTRIES)

    def _check_superblock(self, where: str) -> Superblock:
        try:
            sb = Superblock(self.image.read(self.offset, _SB_READ))
        except (XfsError, OSError) as exc:
            raise ImageError(f"{where}: corrupt XFS superblock: {exc}") from exc
        refused = sb.unreadable()
        if refused:
            raise ImageError(f"{where}: XFS {refused}")
        if sb.crc_ok is False:
            self.problems.append(Problem(self.description, "XFS superblock checksum does not match"))
        return sb

    def _open_volume(self, where: str) -> Any:
        volume = _pyfsxfs().volume()
        try:
            volume.open_file_object(self._window)
        except _LIB_ERRORS as exc:
            raise ImageError(f"{where}: XFS not readable by libfsxfs ({_short(exc)})") from exc
        return volume

    def close(self) -> None:
        try:
            self.volume.close()
        except _LIB_ERRORS:
            pass
        super().close()

    # ---- the inode primitives DiskImageEvidence resolves paths with --------------------------
    def _file_entry(self, ino: int, path: str) -> Any:
        try:
            return self.volume.get_file_entry_by_inode(ino)
        except _LIB_ERRORS as exc:
            raise EvidenceError(f"cannot read inode {ino} ({path}): {_short(exc)}") from exc

    def _dir_size(self, ino: int) -> int:
        """``di_size`` of directory inode INO, read from its inode core (libfsxfs answers 0)."""
        try:
            at = self.superblock.inode_offset(ino)
            return inode_size(self.image.read(self.offset + at, 64))
        except (XfsError, OSError):
            return 0

    def _entry_stat(self, entry: Any) -> FileStat:
        mode = int(entry.file_mode)
        fmt = statmod.S_IFMT(mode)
        ino = int(entry.inode_number)
        size = 0
        if fmt == statmod.S_IFDIR:
            size = self._dir_size(ino)
        elif fmt not in (statmod.S_IFCHR, statmod.S_IFBLK, statmod.S_IFIFO):
            size = int(entry.size)
        rdev = 0
        if fmt in (statmod.S_IFCHR, statmod.S_IFBLK):
            major_minor = entry.get_device_number()
            if major_minor is not None:
                rdev = os.makedev(*major_minor)
        return FileStat(
            mode=mode,
            ino=ino,
            nlink=int(entry.number_of_links),
            uid=int(entry.owner_identifier),
            gid=int(entry.group_identifier),
            size=size,
            atime_ns=int(entry.get_access_time_as_integer()),
            mtime_ns=int(entry.get_modification_time_as_integer()),
            ctime_ns=int(entry.get_inode_change_time_as_integer()),
            rdev=rdev,
        )

    def _stat_inode(self, ino: int, path: str) -> FileStat:
        st = self._stats.get_hit(ino)
        if st is None:
            entry = self._file_entry(ino, path)
            try:
                st = self._entry_stat(entry)
            except _LIB_ERRORS as exc:
                raise EvidenceError(f"cannot read inode {ino} ({path}): {_short(exc)}") from exc
            self._stats.put(ino, st)
        return st

    def _listing(self, ino: int, path: str) -> dict[str, FileStat]:
        """Entries of directory inode INO, name -> stat (cached)."""
        entries = self._dirs.get_hit(ino)
        if entries is not None:
            return entries
        st = self._stat_inode(ino, path)
        if not st.is_dir:
            raise EvidenceError(f"not a directory: {path}")
        directory = self._file_entry(ino, path)
        try:
            count = int(directory.get_number_of_sub_file_entries())
        except _LIB_ERRORS as exc:
            raise EvidenceError(f"cannot list {path}: {_short(exc)}") from exc
        if count > MAX_DIR_ENTRIES:
            self.problems.append(Problem(path, f"{count} directory entries: only {MAX_DIR_ENTRIES} listed"))
            count = MAX_DIR_ENTRIES
        entries = {}
        for i in range(count):
            try:
                child = directory.get_sub_file_entry(i)
                name = child.name
                entries[name] = self._entry_stat(child)
            except _LIB_ERRORS as exc:
                self.problems.append(Problem(path, f"entry {i}: unreadable: {_short(exc)}"))
                continue
        self._dirs.put(ino, entries, max(1, len(entries)))
        return entries

    def _readlink_inode(self, st: FileStat, path: str) -> str:
        entry = self._file_entry(st.ino, path)
        try:
            target = entry.symbolic_link_target
        except _LIB_ERRORS as exc:
            raise EvidenceError(f"cannot readlink {path}: {_short(exc)}") from exc
        if target is None:
            raise EvidenceError(f"cannot readlink {path}: no target")
        return target

    # ---- primitives that read data -----------------------------------------------------------
    def _regular(self, path: str) -> tuple[FileStat, Any]:
        st = self._entry(path)
        if st.is_symlink:
            raise EvidenceError(f"refusing to follow symlink: {path}")
        if not st.is_file:
            raise EvidenceError(f"not a regular file: {path}")
        return st, self._file_entry(st.ino, path)

    def open(self, path: str) -> BinaryIO:
        st, entry = self._regular(path)
        raw = TskFile(_EntryReader(entry), st.size, path)
        return io.BufferedReader(raw, buffer_size=1 << 16)  # type: ignore[return-value]

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        st, entry = self._regular(path)
        want = st.size if limit is None else min(limit, st.size)
        return TskFile(_EntryReader(entry), st.size, path).read(want) if want > 0 else b""

    def listdir(self, path: str) -> list[str]:
        return [e.name for e in self.scandir(path)]

    def xattrs(self, path: str) -> dict[str, bytes]:
        st = self._entry(path)
        entry = self._file_entry(st.ino, path)
        out: dict[str, bytes] = {}
        try:
            count = int(entry.get_number_of_extended_attributes())
        except _LIB_ERRORS as exc:
            self.problems.append(Problem(path, f"cannot read extended attributes: {_short(exc)}"))
            return out
        for i in range(count):
            try:
                attr = entry.get_extended_attribute(i)
                out[attr.name] = attr.read_buffer_at_offset(int(attr.size), 0) if attr.size else b""
            except _LIB_ERRORS as exc:
                self.problems.append(Problem(path, f"extended attribute {i} unreadable: {_short(exc)}"))
        return out

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["xfs"] = self.superblock.describe()
        return out


def _short(exc: BaseException) -> str:
    """libfsxfs's error without the function names it prefixes: the innermost two reasons (its
    message reads "binding: what failed. innermost: why. outer: ...")."""
    reasons = [p.split(": ", 1)[-1].strip().rstrip(".") for p in str(exc).split(". ") if p.strip()]
    return "; ".join(reasons[1:3]) if len(reasons) > 1 else (reasons[0] if reasons else repr(exc))
