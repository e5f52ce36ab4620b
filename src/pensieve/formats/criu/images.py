"""CRIU image files: magic, entry framing and the extra payloads some entries carry.

Format facts (CRIU ``criu/include/magic.h``, ``criu/image-desc.c``, ``lib/py/images``):

* Since images v1.1 a file starts with two little-endian u32: ``IMG_COMMON`` (0x54564319) or, for
  service files (stats-dump, irmap-cache), ``IMG_SERVICE`` (0x55105940); then the image type's
  magic.  ``inventory.img`` starts with its type magic alone.  Raw images carry no magic at all:
  ``pages-N.img`` (page contents), ``ifaddr``/``route``/``iptables`` dumps, tmpfs tarballs.
* Then entries: ``u32 size`` + a protobuf message of that size, until the end of the file.
* Some entries are followed by an extra payload: pipe/fifo data (``bytes`` after each
  ``pipe_data_entry``), socket queues (``length`` after each ``sk_packet_entry``), TCP queues
  (``inq_len`` then ``outq_len`` bytes after the ``tcp_stream_entry``), BPF map data
  (``keys_bytes + values_bytes``) and ghost files (the rest of the file, or, with ``chunks``,
  ``ghost_chunk_entry`` + ``len`` bytes pairs).
* ``pagemap-*.img`` holds one ``pagemap_head`` then ``pagemap_entry`` messages.

Everything is bounds-checked: a bad magic, a truncated header, a size running past the end or an
undecodable message raises :class:`CriuImageError` naming the file and the byte offset.
"""

from __future__ import annotations

import struct

from pensieve.formats.criu.schemas import SCHEMAS
from pensieve.formats.protobuf_schema import ProtobufError, decode
from pensieve.records.core import field, record

IMG_COMMON = 0x54564319
IMG_SERVICE = 0x55105940

#: type magic -> (name, entry message or None when pensieve does not decode the entries)
MAGICS: dict[int, tuple[str, str | None]] = {
    0x58313116: ("INVENTORY", "inventory_entry"),
    0x50273030: ("PSTREE", "pstree_entry"),
    0x56213732: ("FDINFO", "fdinfo_entry"),
    0x56084025: ("PAGEMAP", "pagemap_entry"),
    0x55053847: ("CORE", "core_entry"),
    0x54432030: ("IDS", "task_kobj_ids_entry"),
    0x54123737: ("VMAS", "vma_entry"),
    0x56513555: ("PIPES", "pipe_entry"),
    0x56453709: ("PIPES_DATA", "pipe_data_entry"),
    0x58364939: ("FIFO", "fifo_entry"),
    0x59333054: ("FIFO_DATA", "pipe_data_entry"),
    0x55344201: ("SIGACT", "sa_entry"),
    0x54373943: ("UNIXSK", "unix_sk_entry"),
    0x56443851: ("INETSK", "inet_sk_entry"),
    0x60454618: ("PACKETSK", "packet_sock_entry"),
    0x57464056: ("ITIMERS", "itimer_entry"),
    0x52603957: ("POSIX_TIMERS", None),
    0x56264026: ("SK_QUEUES", "sk_packet_entry"),
    0x54473203: ("UTSNS", "utsns_entry"),
    0x54023547: ("CREDS", "creds_entry"),
    0x53115007: ("IPC_VAR", None),
    0x46283044: ("IPCNS_SHM", None),
    0x55453737: ("IPCNS_MSG", None),
    0x59573019: ("IPCNS_SEM", None),
    0x50363636: ("REG_FILES", "reg_file_entry"),
    0x59255641: ("EXT_FILES", "ext_file_entry"),
    0x51403912: ("FS", "fs_entry"),
    0x57492820: ("MM", "mm_entry"),
    0x59133954: ("REMAP_FPATH", "remap_file_path_entry"),
    0x52583605: ("GHOST_FILE", "ghost_file_entry"),
    0x51465506: ("TCP_STREAM", "tcp_stream_entry"),
    0x44523722: ("EVENTFD_FILE", "eventfd_file_entry"),
    0x45023858: ("EVENTPOLL_FILE", "eventpoll_file_entry"),
    0x44433746: ("EVENTPOLL_TFD", "eventpoll_tfd_entry"),
    0x57323820: ("SIGNALFD", "signalfd_entry"),
    0x48424431: ("INOTIFY_FILE", "inotify_file_entry"),
    0x54562009: ("INOTIFY_WD", None),
    0x55563928: ("MNTS", None),
    0x57373951: ("NETDEV", "net_device_entry"),
    0x55933752: ("NETNS", None),
    0x59433025: ("TTY_FILES", "tty_file_entry"),
    0x59453036: ("TTY_INFO", "tty_info_entry"),
    0x59413026: ("TTY_DATA", "tty_data_entry"),
    0x54323616: ("FILE_LOCKS", None),
    0x57113925: ("RLIMIT", None),
    0x55096122: ("FANOTIFY_FILE", "fanotify_file_entry"),
    0x56506035: ("FANOTIFY_MARK", None),
    0x59255647: ("SIGNAL", None),
    0x58005614: ("NETLINK_SK", "netlink_sk_entry"),
    0x61394011: ("NS_FILES", "ns_file_entry"),
    0x57143751: ("TUNFILE", "tunfile_entry"),
    0x59383330: ("CGROUP", None),
    0x50493712: ("TIMERFD", "timerfd_entry"),
    0x61404013: ("CPUINFO", None),
    0x55474906: ("USERNS", None),
    0x64413049: ("SECCOMP", None),
    0x67343323: ("BINFMT_MISC", None),
    0x49353943: ("AUTOFS", None),
    0x56303138: ("FILES", "file_entry"),
    0x48453499: ("MEMFD_INODE", "memfd_inode_entry"),
    0x43114433: ("TIMENS", None),
    0x61157326: ("PIDNS", None),
    0x57506142: ("BPFMAP_FILE", "bpfmap_file_entry"),
    0x64324033: ("BPFMAP_DATA", "bpfmap_data_entry"),
    0x59423047: ("APPARMOR", None),
    0x54435556: ("PIDFD", "pidfd_entry"),
    0x57093306: ("STATS", None),
    0x57004059: ("IRMAP_CACHE", None),
}
MAGIC_BY_NAME = {name: value for value, (name, _) in MAGICS.items()}

#: image types whose entries carry an extra payload pensieve cannot size: entries stop there
_OPAQUE_EXTRA = {"IPCNS_SHM", "IPCNS_MSG", "IPCNS_SEM"}

#: no image holds more than this (pages-*.img are never read whole)
MAX_IMAGE_SIZE = 256 << 20

_U32 = struct.Struct("<I")


class CriuImageError(ValueError):
    """An image file is not a readable CRIU image (or this part of it is corrupt)."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        self.message = message
        self.path = path
        self.offset = offset
        where = []
        if path is not None:
            where.append(str(path))
        if offset is not None:
            where.append(f"offset {offset:#x}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


@record
class Image:
    """One decoded image file: its type and its entries (dicts; payloads under ``extra``)."""

    path: str
    magic: str
    entries: list[dict] = field(default_factory=list)
    raw: bool = False  # entries were not decoded (no schema): each is {"_raw": bytes}


def image_magic(data: bytes, path: str | None = None) -> tuple[str, int]:
    """Return (type name, offset of the first entry) of an image's bytes."""
    if len(data) < 4:
        raise CriuImageError(f"too short for an image magic ({len(data)} bytes)", path, 0)
    first = _U32.unpack_from(data, 0)[0]
    if first in (IMG_COMMON, IMG_SERVICE):
        if len(data) < 8:
            raise CriuImageError("truncated after the common magic", path, 4)
        second = _U32.unpack_from(data, 4)[0]
        known = MAGICS.get(second)
        if known is None:
            raise CriuImageError(f"unknown image type magic {second:#010x}", path, 4)
        return known[0], 8
    known = MAGICS.get(first)
    if known is None:
        raise CriuImageError(f"not a CRIU image: unknown magic {first:#010x}", path, 0)
    return known[0], 4


def _decode(data: bytes, message: str, start: int, end: int, path: str | None) -> dict:
    try:
        return decode(data, message, SCHEMAS, start, end)
    except ProtobufError as exc:
        raise CriuImageError(f"bad {message}: {exc.message}", path, exc.offset) from None


def _take(data: bytes, pos: int, size: int, what: str, path: str | None) -> tuple[bytes, int]:
    if size > len(data) - pos:
        raise CriuImageError(f"{what}: {size} bytes needed, {len(data) - pos} left", path, pos)
    return data[pos : pos + size], pos + size


def _next_entry(data: bytes, pos: int, path: str | None) -> tuple[int, int]:
    """Read an entry header at POS; return (payload start, payload end)."""
    if len(data) - pos < 4:
        raise CriuImageError("truncated entry size", path, pos)
    size = _U32.unpack_from(data, pos)[0]
    if size > len(data) - pos - 4:
        raise CriuImageError(f"entry size {size} runs past the end of the file", path, pos)
    return pos + 4, pos + 4 + size


def parse_image(data: bytes, path: str | None = None) -> Image:
    """Decode the bytes of one (non-raw) image file."""
    magic, pos = image_magic(data, path)
    message = MAGICS[MAGIC_BY_NAME[magic]][1]
    img = Image(path or "<bytes>", magic)
    if message is None or magic in _OPAQUE_EXTRA:
        img.raw = True
        if magic in _OPAQUE_EXTRA:
            img.entries.append({"_raw": data[pos:]})
            return img
        while pos < len(data):
            p, q = _next_entry(data, pos, path)
            img.entries.append({"_raw": data[p:q]})
            pos = q
        return img
    if magic == "GHOST_FILE":
        return _ghost(img, data, pos, path)
    first = True
    while pos < len(data):
        entry_at = pos
        p, q = _next_entry(data, pos, path)
        name = "pagemap_head" if magic == "PAGEMAP" and first else message
        entry = _decode(data, name, p, q, path)
        pos = q
        first = False
        if magic in ("PIPES_DATA", "FIFO_DATA"):
            entry["extra"], pos = _take(data, pos, entry.get("bytes", 0), "pipe data", path)
        elif magic == "SK_QUEUES":
            entry["extra"], pos = _take(data, pos, entry.get("length", 0), "socket queue data", path)
        elif magic == "TCP_STREAM":
            inq, pos = _take(data, pos, entry.get("inq_len", 0), "TCP receive queue", path)
            outq, pos = _take(data, pos, entry.get("outq_len", 0), "TCP send queue", path)
            entry["extra"] = {"inq": inq, "outq": outq}
        elif magic == "BPFMAP_DATA":
            size = entry.get("keys_bytes", 0) + entry.get("values_bytes", 0)
            entry["extra"], pos = _take(data, pos, size, "BPF map data", path)
        entry["_offset"] = entry_at
        img.entries.append(entry)
    return img


def parse_partial(data: bytes, only: dict, path: str | None = None, first: bool = False) -> list[dict]:
    """The entries of an image of plain entries (no payloads after them), each decoded through
    the field filter ONLY (see :func:`~pensieve.formats.protobuf_schema.decode`); with FIRST, the
    first entry only (the others are framed, not decoded).

    For views that need a few fields of big entries (a task's state out of its core, the exe of
    its mm, file names out of files.img).  The framing of every entry is checked as
    :func:`parse_image` does; the fields left out are not decoded, so damage inside them goes
    unnoticed here (not in :func:`parse_image`)."""
    magic, pos = image_magic(data, path)
    message = MAGICS[MAGIC_BY_NAME[magic]][1]
    if message is None or magic in _OPAQUE_EXTRA or magic in _EXTRA_PAYLOAD or magic == "PAGEMAP":
        raise CriuImageError(f"{magic} entries are not decoded field by field", path, pos)
    out: list[dict] = []
    while pos < len(data):
        p, q = _next_entry(data, pos, path)
        if not (first and out):
            try:
                out.append(decode(data, message, SCHEMAS, p, q, 0, only))
            except ProtobufError as exc:
                raise CriuImageError(f"bad {message}: {exc.message}", path, exc.offset) from None
        pos = q
    return out


def parse_first(data: bytes, only: dict, path: str | None = None) -> dict | None:
    """The first entry of an image through the field filter ONLY (:func:`parse_partial`), None
    when the image has no entries."""
    got = parse_partial(data, only, path, first=True)
    return got[0] if got else None


#: image types whose entries carry a payload after them (parse_first does not frame those)
_EXTRA_PAYLOAD = {"PIPES_DATA", "FIFO_DATA", "SK_QUEUES", "TCP_STREAM", "BPFMAP_DATA", "GHOST_FILE"}


def _ghost(img: Image, data: bytes, pos: int, path: str | None) -> Image:
    p, q = _next_entry(data, pos, path)
    head = _decode(data, "ghost_file_entry", p, q, path)
    pos = q
    if head.get("chunks"):
        img.entries.append(head)
        while pos < len(data):
            p, q = _next_entry(data, pos, path)
            chunk = _decode(data, "ghost_chunk_entry", p, q, path)
            chunk["extra"], pos = _take(data, q, chunk.get("len", 0), "ghost file chunk", path)
            img.entries.append(chunk)
    else:
        head["extra"] = data[pos:]
        img.entries.append(head)
    return img
