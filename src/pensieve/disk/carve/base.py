"""What the carving engine and every validator share: the carving types, their bounds, the
verdict a validator returns, and the windowed reader of the image it validates through."""

from __future__ import annotations

from collections.abc import Iterator

from pensieve.evidence.disk_images import DiskImage

TYPES = ("elf", "script", "gzip", "zip", "tar", "pdf", "jpeg", "png", "sqlite", "json", "log")
ALIASES = {
    "jar": "zip",
    "jpg": "jpeg",
    "shell": "script",
    "sh": "script",
    "python": "script",
    "py": "script",
    "text": "log",
    "gz": "gzip",
    "sqlite3": "sqlite",
    "db": "sqlite",
}
EXTENSIONS = {
    "elf": "elf",
    "script": "sh",
    "gzip": "gz",
    "zip": "zip",
    "tar": "tar",
    "pdf": "pdf",
    "jpeg": "jpg",
    "png": "png",
    "sqlite": "sqlite",
    "json": "json",
    "log": "log",
}
#: largest length a validator will follow for each type (bytes); longer is carved partial
MAX_LENGTH = {
    "elf": 256 << 20,
    "script": 8 << 20,
    "gzip": 256 << 20,
    "zip": 1 << 30,
    "tar": 1 << 30,
    "pdf": 64 << 20,
    "jpeg": 64 << 20,
    "png": 64 << 20,
    "sqlite": 1 << 30,
    "json": 16 << 20,
    "log": 16 << 20,
}
#: largest decompressed output followed when inflating (gzip members, zip members)
MAX_INFLATE = 1 << 30

COMPLETE, PARTIAL, HEADER_ONLY = "complete", "partial", "header-only"

CHUNK = 8 << 20
PIECE = 1 << 20
WINDOW = 1 << 18


class Verdict:
    """What a validator found: the length that validated, how sure, the details; TYPE when it
    names a more precise type than the one it was asked for."""

    __slots__ = ("length", "confidence", "details", "type")

    def __init__(self, length: int, confidence: str, details: dict, type_: str | None = None) -> None:
        self.length = length
        self.confidence = confidence
        self.details = details
        self.type = type_

    @classmethod
    def failed(cls, length: int, confidence: str, details: dict, why: str) -> Verdict:
        """A verdict that validated only LENGTH bytes: WHY is recorded as ``details["failed"]``."""
        details["failed"] = why
        return cls(length, confidence, details)


# ---- reading the image ---------------------------------------------------------------------------


class BufferImage(DiskImage):
    """Bytes posing as an image (``read(offset, size)``, ``get_size()``): for carving a buffer."""

    format = "buffer"

    def __init__(self, data: bytes, name: str = "buffer") -> None:
        self._data = data
        self._size = len(data)
        self.files = []
        self.name = name

    def read(self, offset: int, size: int) -> bytes:
        return self._data[offset : offset + size]

    def describe(self) -> str:
        return self.name


class Source:
    """Reads of the image through a few cached windows (validators read small pieces often)."""

    def __init__(self, img) -> None:
        self._img = img
        self.size = int(img.get_size())
        self._windows: dict[int, bytes] = {}
        self._order: list[int] = []

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n <= 0 or off >= self.size:
            return b""
        n = min(n, self.size - off)
        if n >= WINDOW:
            return self._img.read(off, n)
        base = off - off % WINDOW
        if off + n <= base + WINDOW:
            return self._window(base)[off - base : off - base + n]
        first = self._window(base)[off - base :]
        return first + self._window(base + WINDOW)[: n - len(first)]

    def _window(self, base: int) -> bytes:
        w = self._windows.get(base)
        if w is None:
            w = self._img.read(base, WINDOW)
            self._windows[base] = w
            self._order.append(base)
            if len(self._order) > 16:
                self._windows.pop(self._order.pop(0), None)
        return w

    def pieces(self, off: int, end: int, size: int = PIECE) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) pieces of [off, end)."""
        while off < end:
            data = self._img.read(off, min(size, end - off))
            if not data:
                return
            yield off, data
            off += len(data)


class Context:
    """What a validator knows about the hit: the reader, its length bound, its scan range."""

    __slots__ = ("src", "bound", "range_end", "grid")

    def __init__(self, src: Source, bound: int, range_end: int, grid: int) -> None:
        self.src = src
        self.bound = bound  # absolute offset a validator must not read past
        self.range_end = range_end  # end of the scanned range the hit lies in
        self.grid = grid  # block size of the space it lies in (where files start)
