"""Evidence that is a disk image: the filesystem inside a raw/dd (also split), E01 or qcow2 image,
read through The Sleuth Kit (pytsk3) without mounting and without writing a byte.

Image specification (what ``open_evidence`` accepts):

``disk.img``
    Any supported image.  With a volume system (MBR/DOS with logical partitions, GPT, ...) every
    allocated partition is probed and the filesystem holding a Docker data root (or else a root
    filesystem: ``/etc`` with ``/usr``, ``/bin`` or ``/var``) is chosen, the first one on the disk
    when several qualify.  Without a volume system the filesystem starts at offset 0.
``disk.img@2``
    Partition number 2, numbered the way Linux names partitions (``sda2``): GPT entry number;
    MBR primaries 1-4, logical partitions 5, 6, ... in chain order.
``disk.img@offset=1048576``
    The filesystem at that byte offset (``@offset=2048s`` counts 512-byte sectors).

Image formats, sniffed from the content, not the name:

* raw / dd, and split raw: ``x.001, x.002, ...`` (or ``.000``-based, any width) and ``x.aa, x.ab, ...``
  segments are concatenated, in order, from the first one (naming a later segment opens the set);
* E01 / Ex01 (EnCase, libewf via ``pyewf`` from libewf-python), segment files found by libewf;
* qcow2 / qcow (``pyqcow`` from libqcow-python);
* VMDK, VHD(X) and VDI are recognised and refused with a hint (``qemu-img convert -O raw``).

Image files are opened ``O_RDONLY`` (``O_NOATIME`` where allowed) and only ever read with
``pread``: never written, never mapped.  Memory stays bounded on multi-GB images: file content is
streamed in chunks (``open`` returns a seekable file object over ``File.read_random``), The Sleuth
Kit keeps its own small block cache, and directory listings and stats are kept in LRU caches
bounded by entry count.

Metadata comes from The Sleuth Kit: type and mode, owner, size, times with nanoseconds, inode,
link count.  What it does not expose on ext2/3/4 is read from the inode itself with a small
ext4 inode-table reader (superblock, group descriptors incl. 64-bit and ``meta_bg`` layouts):
device numbers of character/block devices (so overlay whiteouts come through as char 0/0) and
extended attributes, in the inode body and in the xattr block (``trusted.overlay.opaque`` and the
other overlay, security and user attributes; POSIX ACLs are returned in the kernel's xattr
format; values in EA inodes are followed).

Symlinks are followed only in directory components, chroot-style (an absolute target restarts at
the filesystem root, ``..`` stops there), like ``DirectoryEvidence``; a final symlink is never
followed.  Only allocated directory entries are listed: names of deleted files that The Sleuth
Kit finds in directory slack, and its virtual ``$OrphanFiles`` directory, are not part of this view.
"""

from __future__ import annotations

import io
import posixpath
import stat as statmod
import struct
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, BinaryIO

from pensieve.evidence.base import (
    DirEntry,
    Evidence,
    EvidenceError,
    FileStat,
    NotFound,
    follow_dir_link,
    normalize,
)
from pensieve.evidence.disk_images import (
    EWF,
    QCOW,
    RAW,
    SPLIT_RAW,
    DiskImage,
    ImageError,
    Partition,
    as_tsk,
    image_format,
    is_disk_image,
    list_partitions,
    open_image,
    raw_segments,
    sniff_filesystem,
    split_spec,
    tsk_module,
    volume_path,
    what_is_at,
)
from pensieve.evidence.vdisk import problems_of
from pensieve.evidence.volumes import keys_given
from pensieve.formats.ext4 import Ext4, Ext4Error, inode_rdev
from pensieve.records import Problem

__all__ = [
    "EWF",
    "QCOW",
    "RAW",
    "SPLIT_RAW",
    "DiskImage",
    "DiskImageEvidence",
    "ImageError",
    "Partition",
    "TskFile",
    "image_format",
    "is_disk_image",
    "list_partitions",
    "open_disk_image",
    "open_image",
    "raw_segments",
    "sniff_filesystem",
    "split_spec",
]

_CHUNK = 1 << 20  # largest single read from the image
#: directory entries (name -> stat) kept across all cached directories
_DIR_CACHE_ENTRIES = 100_000
_STAT_CACHE_ENTRIES = 50_000


# ---- file objects ---------------------------------------------------------------------------


class TskFile(io.RawIOBase):
    """A read-only, seekable view of one file's content, read on demand from the image."""

    def __init__(self, tsk_file, size: int, name: str) -> None:
        super().__init__()
        self._f = tsk_file
        self._size = size
        self._pos = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def _read_at(self, pos: int, n: int) -> bytes:
        try:
            return self._f.read_random(pos, n)
        except OSError as exc:
            raise OSError(5, f"cannot read {self.name} at {pos}: {exc}") from exc

    def readinto(self, b) -> int:
        n = min(len(b), self._size - self._pos, _CHUNK)
        if n <= 0:
            return 0
        data = self._read_at(self._pos, n)
        got = len(data)
        b[:got] = data
        self._pos += got
        return got

    def readall(self) -> bytes:
        chunks = []
        while self._pos < self._size:
            data = self._read_at(self._pos, min(_CHUNK, self._size - self._pos))
            if not data:
                break
            chunks.append(data)
            self._pos += len(data)
        return b"".join(chunks)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        n = min(size, self._size - self._pos)
        if n <= 0:
            return b""
        out = []
        while n > 0:
            data = self._read_at(self._pos, min(n, _CHUNK))
            if not data:
                break
            out.append(data)
            self._pos += len(data)
            n -= len(data)
        return b"".join(out)


# ---- the evidence ---------------------------------------------------------------------------


class _LRU:
    """A mapping bounded by total weight (a directory listing weighs its entry count)."""

    def __init__(self, limit: int) -> None:
        self._d: OrderedDict = OrderedDict()  # key -> (value, weight)
        self.limit = limit
        self.weight = 0

    def get_hit(self, key):
        hit = self._d.get(key)
        if hit is None:
            return None
        self._d.move_to_end(key)
        return hit[0]

    def put(self, key, value, weight: int = 1) -> None:
        old = self._d.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        self._d[key] = (value, weight)
        self.weight += weight
        while self.weight > self.limit and len(self._d) > 1:
            _, (_, w) = self._d.popitem(last=False)
            self.weight -= w

    def __len__(self) -> int:
        return len(self._d)


class DiskImageEvidence(Evidence):
    """Read-only view of one filesystem inside a disk image (see the module docstring)."""

    #: the image the filesystem is read from
    image: DiskImage
    #: byte offset of the filesystem in the image
    offset: int
    #: the filesystem type as The Sleuth Kit names it ("ext4", "xfs", "fat32" ...)
    fs_type: str
    #: the ext2/3/4 filesystem parsed by :mod:`pensieve.formats.ext4` (None for other types, or
    #: when its superblock does not parse: a problem says so)
    ext4: Ext4 | None

    def __init__(
        self, img: DiskImage, offset: int = 0, partition: Partition | None = None, label: str | None = None
    ) -> None:
        pytsk3 = tsk_module()
        self.image = img
        self.offset = offset
        self.partition = partition
        self.partitions: list[Partition] = []
        self.image_files: list[str] = list(img.boundaries())
        self.problems: list[Problem] = []
        where = label or (partition.label() if partition else f"offset {offset}")
        name = img.describe()
        try:
            self.fs = pytsk3.FS_Info(as_tsk(img), offset=offset)
        except OSError as exc:
            what = what_is_at(img, offset)
            raise ImageError(f"{name} {where}: {what}: not readable by The Sleuth Kit ({exc})") from exc
        self.fs_type = _fs_type_name(int(self.fs.info.ftype))
        self.description = f"{self.fs_type} in {name} {where}"
        self.root_inum = int(self.fs.info.root_inum)
        self._last_inum = int(self.fs.info.last_inum)
        self.ext4 = None
        if self.fs_type.startswith("ext"):
            try:
                self.ext4 = Ext4(img.read, offset)
            except (Ext4Error, struct.error) as exc:
                self.problems.append(Problem(self.description, f"extended attributes unavailable: {exc}"))
        self._dirs = _LRU(_DIR_CACHE_ENTRIES)  # dir inode -> {name: FileStat}
        self._stats = _LRU(_STAT_CACHE_ENTRIES)  # inode -> FileStat
        self._dir_inodes = _LRU(_STAT_CACHE_ENTRIES)  # (path, depth) -> inode
        self._types = _meta_types(pytsk3)
        self._alloc = int(pytsk3.TSK_FS_NAME_FLAG_ALLOC)

    # ---- lifecycle ------------------------------------------------------------------------
    def boundaries(self) -> list[str]:
        return list(self.image_files)

    def close(self) -> None:
        self.image.close()

    def __enter__(self) -> DiskImageEvidence:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- metadata -------------------------------------------------------------------------
    def _meta_stat(self, meta) -> FileStat:
        fmt = self._types.get(int(meta.type), 0)
        ino = int(meta.addr)
        rdev = 0
        atime_ns = int(meta.atime) * 1_000_000_000 + int(meta.atime_nano)
        mtime_ns = int(meta.mtime) * 1_000_000_000 + int(meta.mtime_nano)
        ctime_ns = int(meta.ctime) * 1_000_000_000 + int(meta.ctime_nano)
        if self.ext4 is not None:
            # TSK reads ext timestamps as unsigned 32-bit seconds: take them as the kernel does
            try:
                raw = self.ext4.raw_inode(ino)
                atime_ns, mtime_ns, ctime_ns = self.ext4.times_ns(raw)
                if fmt in (statmod.S_IFCHR, statmod.S_IFBLK):
                    rdev = inode_rdev(raw)
            except (Ext4Error, struct.error):
                pass
        return FileStat(
            mode=fmt | (int(meta.mode) & 0o7777),
            ino=ino,
            nlink=int(meta.nlink),
            uid=int(meta.uid),
            gid=int(meta.gid),
            size=int(meta.size) if fmt not in (statmod.S_IFCHR, statmod.S_IFBLK, statmod.S_IFIFO) else 0,
            atime_ns=atime_ns,
            mtime_ns=mtime_ns,
            ctime_ns=ctime_ns,
            rdev=rdev,
        )

    def _open_meta(self, ino: int, path: str):
        try:
            f = self.fs.open_meta(inode=ino)
        except OSError as exc:
            raise EvidenceError(f"cannot read inode {ino} ({path}): {exc}") from exc
        if f.info.meta is None:
            raise EvidenceError(f"inode {ino} ({path}) has no metadata")
        return f

    def _stat_inode(self, ino: int, path: str) -> FileStat:
        st = self._stats.get_hit(ino)
        if st is None:
            st = self._meta_stat(self._open_meta(ino, path).info.meta)
            self._stats.put(ino, st)
        return st

    def _listing(self, ino: int, path: str) -> dict[str, FileStat]:
        """Allocated entries of directory inode INO, name -> stat (cached)."""
        entries = self._dirs.get_hit(ino)
        if entries is not None:
            return entries
        st = self._stat_inode(ino, path)
        if not st.is_dir:
            raise EvidenceError(f"not a directory: {path}")
        try:
            d = self.fs.open_dir(inode=ino)
        except OSError as exc:
            raise EvidenceError(f"cannot list {path}: {exc}") from exc
        entries = {}
        is_root = ino == self.root_inum
        for f in d:
            info = f.info
            nm = info.name
            if nm is None or not int(nm.flags) & self._alloc:
                continue
            raw = nm.name
            if raw in (b".", b"..") or not raw:
                continue
            if is_root and int(nm.meta_addr) == self._last_inum and raw == b"$OrphanFiles":
                continue
            name = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
            meta = info.meta
            if meta is None or int(meta.addr) != int(nm.meta_addr):
                self.problems.append(Problem(path, f"entry {name!r}: inode {int(nm.meta_addr)} unreadable"))
                continue
            entries[name] = self._meta_stat(meta)
        self._dirs.put(ino, entries, max(1, len(entries)))
        return entries

    # ---- path resolution ------------------------------------------------------------------
    def _dir_inode(self, path: str, depth: int) -> int:
        """Inode of directory PATH, symlinks in it followed chroot-style."""
        if path == "/":
            return self.root_inum
        key = (path, depth)
        hit = self._dir_inodes.get_hit(key)
        if hit is not None:
            return hit
        parent, name = posixpath.split(path)
        pino = self._dir_inode(parent, depth)
        st = self._listing(pino, parent).get(name)
        if st is None:
            raise NotFound(f"no such directory in evidence: {path}")
        ino = st.ino
        if st.is_symlink:
            resolved = follow_dir_link(path, parent, depth, lambda: self._readlink_inode(st, path))
            ino = self._dir_inode(resolved, depth + 1)
        self._dir_inodes.put(key, ino)
        return ino

    def _entry(self, path: str) -> FileStat:
        """Stat of PATH itself (the last component not followed)."""
        path = normalize(path)
        if path == "/":
            return self._stat_inode(self.root_inum, path)
        parent, name = posixpath.split(path)
        try:
            pino = self._dir_inode(parent, 0)
            st = self._listing(pino, parent).get(name)
        except NotFound as exc:
            raise NotFound(f"no such path in evidence: {path}") from exc
        except EvidenceError as exc:
            if "not a directory" in str(exc):
                raise NotFound(f"no such path in evidence: {path}") from exc
            raise
        if st is None:
            raise NotFound(f"no such path in evidence: {path}")
        return st

    def _readlink_inode(self, st: FileStat, path: str) -> str:
        f = self._open_meta(st.ino, path)
        link = f.info.meta.link
        if link:
            raw = link if isinstance(link, bytes) else str(link).encode("utf-8", "surrogateescape")
        else:
            try:
                raw = f.read_random(0, st.size) if st.size else b""
            except OSError as exc:
                raise EvidenceError(f"cannot readlink {path}: {exc}") from exc
        return raw.decode("utf-8", "surrogateescape")

    # ---- primitives -----------------------------------------------------------------------
    def lstat(self, path: str) -> FileStat:
        return self._entry(path)

    def scandir(self, path: str) -> Iterator[DirEntry]:
        path = normalize(path)
        ino = self._dir_inode(path, 0)
        return iter([DirEntry(n, st) for n, st in self._listing(ino, path).items()])

    def listdir(self, path: str) -> list[str]:
        """Names only.  A listing already cached answers; on ext2/3/4 the directory's blocks are
        parsed directly (no inode read per entry); otherwise The Sleuth Kit lists it."""
        path = normalize(path)
        ino = self._dir_inode(path, 0)
        cached = self._dirs.get_hit(ino)
        if cached is not None:
            return list(cached)
        if self.ext4 is not None:
            st = self._stat_inode(ino, path)
            if not st.is_dir:
                raise EvidenceError(f"not a directory: {path}")
            try:
                names = self.ext4.dir_names(
                    ino, st.size, lambda off, n: self._open_meta(ino, path).read_random(off, n)
                )
            except (Ext4Error, EvidenceError, OSError, struct.error):
                names = None
            if names is not None:
                return names
        return list(self._listing(ino, path))

    def open(self, path: str) -> BinaryIO:
        st = self._entry(path)
        if st.is_symlink:
            raise EvidenceError(f"refusing to follow symlink: {path}")
        if not st.is_file:
            raise EvidenceError(f"not a regular file: {path}")
        f = self._open_meta(st.ino, path)
        return io.BufferedReader(TskFile(f, st.size, path), buffer_size=1 << 16)  # type: ignore[return-value]

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        st = self._entry(path)
        if st.is_symlink:
            raise EvidenceError(f"refusing to follow symlink: {path}")
        if not st.is_file:
            raise EvidenceError(f"not a regular file: {path}")
        want = st.size if limit is None else min(limit, st.size)
        if want <= 0:
            return b""
        f = self._open_meta(st.ino, path)
        return TskFile(f, st.size, path).read(want)

    def readlink(self, path: str) -> str:
        st = self._entry(path)
        if not st.is_symlink:
            raise EvidenceError(f"not a symlink: {path}")
        return self._readlink_inode(st, path)

    def xattrs(self, path: str) -> dict[str, bytes]:
        if self.ext4 is None:
            return {}
        st = self._entry(path)

        def read_ea_inode(inum: int, size: int) -> bytes:
            try:
                return self.fs.open_meta(inode=inum).read_random(0, size)
            except OSError:
                return b""

        try:
            return self.ext4.xattrs(st.ino, read_ea_inode)
        except (Ext4Error, struct.error) as exc:
            self.problems.append(Problem(path, f"cannot read extended attributes: {exc}"))
            return {}

    # ---- about the image ------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "image_files": self.image_files,
            "image_format": self.image.format,
            "offset": self.offset,
            "partition": self.partition.as_dict() if self.partition else None,
            "fs_type": self.fs_type,
        }


def _meta_types(pytsk3) -> dict[int, int]:
    m = {
        "REG": statmod.S_IFREG,
        "DIR": statmod.S_IFDIR,
        "FIFO": statmod.S_IFIFO,
        "CHR": statmod.S_IFCHR,
        "BLK": statmod.S_IFBLK,
        "LNK": statmod.S_IFLNK,
        "SOCK": statmod.S_IFSOCK,
    }
    return {int(getattr(pytsk3, f"TSK_FS_META_TYPE_{k}")): v for k, v in m.items()}


def _fs_type_name(ftype: int) -> str:
    pytsk3 = tsk_module()
    for n in dir(pytsk3):
        skip = n.endswith(("_DETECT", "_ENUM", "_UNSUPP"))
        if n.startswith("TSK_FS_TYPE_") and not skip and int(getattr(pytsk3, n)) == ftype:
            return n[len("TSK_FS_TYPE_") :].lower()
    return f"filesystem type {ftype:#x}"


# ---- choosing the filesystem ----------------------------------------------------------------


def _score(ev: DiskImageEvidence) -> int:
    """3: holds a Docker data root (host root or the data root itself); 1: a root filesystem."""
    if ev.is_dir("/var/lib/docker") or (ev.is_dir("/image") and ev.is_dir("/containers")):
        return 3
    if ev.is_file("/etc/docker/daemon.json"):
        return 2
    if ev.is_dir("/etc") and any(ev.exists(p) for p in ("/usr", "/bin", "/var")):
        return 1
    return 0


def _open_fs(
    img: DiskImage, offset: int = 0, partition: Partition | None = None, label: str | None = None
) -> DiskImageEvidence:
    """The filesystem at OFFSET of IMG (the one place a volume becomes a filesystem view): XFS
    through :mod:`pensieve.evidence.xfs`, the rest through TSK."""
    from pensieve.evidence.xfs import XfsEvidence, is_xfs

    return (XfsEvidence if is_xfs(img, offset) else DiskImageEvidence)(img, offset, partition, label)


def open_disk_image(source: str) -> DiskImageEvidence:
    """The filesystem of a disk image specification (see the module docstring)."""
    base, number, offset = split_spec(source)
    volpath = volume_path(source)
    img = open_image(base)
    name = img.describe()
    try:
        if volpath is not None:
            from pensieve.evidence.volumes import find_volume

            vol = find_volume(img, volpath)
            ev = _open_fs(vol.image, 0, vol.partition, label=vol.path)
            ev.problems[:0] = problems_of(img)
            return ev
        if offset is not None:
            return _open_fs(img, offset)
        vsname, parts = list_partitions(img)
        if number is not None:
            if not parts:
                if number in (0, 1):  # a bare filesystem: its only "partition"
                    return _open_fs(img, 0)
                raise ImageError(f"{name} has no partition table: there is no partition {number}")
            chosen = next((p for p in parts if p.number == number), None)
            if chosen is None:
                have = ", ".join(f"{p.number} ({p.description})" for p in parts)
                raise ImageError(f"{name} has no partition {number} ({vsname}: {have})")
            return _open_fs(img, chosen.offset, chosen)
        best = _choose(img, name, vsname, parts)
        best.problems[:0] = problems_of(img)
        return best
    except BaseException:
        img.close()
        raise


def _volumes(img: DiskImage, parts: list[Partition]) -> tuple[list[Any], list[str]]:
    """(the volumes that may hold a filesystem, the problems of the others): the partitions (read
    at their offset, as always), and the LVM / LUKS volumes inside any of them.  ImageError when
    a key was given and no LUKS volume opens with it (a wrong passphrase)."""
    from pensieve.evidence.volumes import volume_tree

    tree = volume_tree(img)
    leaves, problems, refused, unlocked = [], [], [], 0
    by_number = {p.number: p for p in parts}
    for vol in tree.walk():
        if vol.partition is not None:  # the caller's Partition objects carry what is found
            vol.partition = by_number.get(vol.partition.number, vol.partition)
        leaf_partition = vol.partition is not None and not vol.children and vol.image is not None
        if vol.problem and not leaf_partition:  # a partition probed: named as it always was
            problems.append(f"{vol.label()}{' not read' if vol.image is None else ''}: {vol.problem}")
        if vol.kind.startswith("LUKS"):
            unlocked += vol.image is not None
            if vol.image is None and keys_given():
                refused.append(vol)
        if not vol.children and vol.image is not None and not (vol is tree and parts):
            leaves.append(vol)
    if refused and not unlocked:
        raise ImageError(f"{img.describe()}@{refused[0].path}: {refused[0].problem}")
    return leaves, problems


def _probe(img: DiskImage, vol: Any, parts: list[Partition], unreadable: list[Partition], others: list[str]):
    """The filesystem on volume VOL, None (recorded in UNREADABLE / OTHERS) when there is none."""
    p = vol.partition
    try:
        if p is not None:
            return _open_fs(img, p.offset, p)
        if not vol.path:
            return _open_fs(img, 0, None, label="(no partition table)")
        return _open_fs(vol.image, 0, None, label=vol.path)
    except EvidenceError as exc:
        if p is not None:
            p.error = str(exc)
            p.fs_type = what_is_at(img, p.offset)
            unreadable.append(p)
        elif not vol.path and not parts:
            raise
        else:
            others.append(f"{vol.label()} not read: {vol.content or 'no recognised filesystem'}")
        return None


def _tsk_refused(p: Partition) -> str:
    return f"{p.fs_type}: not readable by The Sleuth Kit"


def _choose(img: DiskImage, name: str, vsname: str | None, parts: list[Partition]) -> DiskImageEvidence:
    """The filesystem holding a Docker data root (else a root filesystem), the first on the disk
    when several qualify; every volume not read is a problem on it."""
    best: DiskImageEvidence | None = None
    best_score = -1
    unreadable: list[Partition] = []
    leaves, others = _volumes(img, parts)
    for vol in leaves:
        ev = _probe(img, vol, parts, unreadable, others)
        if ev is None:
            continue
        score = _score(ev)
        if vol.partition is not None:
            vol.partition.readable, vol.partition.fs_type, vol.partition.score = True, ev.fs_type, score
        if score > best_score:
            best, best_score = ev, score
    if best is None:
        lines = "; ".join([f"{p.label()}: {p.fs_type}" for p in unreadable] + others)
        raise ImageError(f"{name} ({vsname}): no partition holds a filesystem pensieve can read: {lines}")
    for p in unreadable:
        best.problems.append(
            Problem(name, f"{p.label()} not read: {p.error if p.fs_type == 'xfs' else _tsk_refused(p)}")
        )
    for line in others:
        best.problems.append(Problem(name, line))
    best.partitions = parts
    return best
