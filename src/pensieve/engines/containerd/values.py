"""Reading containerd's bbolt buckets as untrusted data: every value checked, every problem named.

Value encodings (containerd metadata/*.go and snapshots/storage/bolt.go, Go standard library):

* times (``createdat``, ``updatedat``): Go ``time.Time.MarshalBinary``: version byte 1 (or 2, which
  appends one byte of offset seconds), seconds since 0001-01-01 UTC as a big-endian int64,
  nanoseconds as a big-endian int32, the zone offset in minutes as a big-endian int16
  (-1 = UTC).  15 or 16 bytes.
* sizes, ``inodes``, the schema ``version``: ``binary.PutVarint`` (zigzag varint, signed).
* the snapshotter's ``id``: ``binary.PutUvarint``; ``kind``: one byte.
* strings (names, digests, media types, labels): raw bytes, UTF-8 in practice.
* ``spec``, runtime ``options`` and extensions: a protobuf ``google.protobuf.Any``
  (1: type_url string, 2: value bytes).

A :class:`BucketView` reads a bucket's entries once (a corrupt page mid-way is one problem; what
was read before it is kept) and hands out typed values; a value of the wrong shape is a problem
naming the bucket and key, and the getter returns None.
"""

from __future__ import annotations

from pensieve.formats.bolt import BoltError, Bucket
from pensieve.formats.protobuf_schema import BYTES, STRING, Field, ProtobufError, decode, read_varint
from pensieve.records.core import Problem

#: seconds from 0001-01-01T00:00:00Z (Go's time zero) to the Unix epoch
GO_EPOCH_OFFSET = 62135596800
#: snapshots.Kind (snapshots/snapshotter.go)
SNAPSHOT_KINDS = {0: "unknown", 1: "view", 2: "active", 3: "committed"}

ANY_SCHEMAS = {"Any": {1: Field("type_url", STRING), 2: Field("value", BYTES)}}


def name_text(raw: bytes) -> str:
    """A bucket or key name as text (undecodable bytes kept as backslash escapes)."""
    return raw.decode("utf-8", "backslashreplace")


def go_time(raw: bytes) -> int:
    """Nanoseconds since the Unix epoch of a Go MarshalBinary time; ValueError when malformed.
    The zero time ("never set") is 0 here; callers turn it into None."""
    if len(raw) not in (15, 16) or raw[0] not in (1, 2) or (raw[0] == 2) != (len(raw) == 16):
        raise ValueError(f"not a Go binary time ({len(raw)} bytes, version {raw[:1].hex() or 'none'})")
    seconds = int.from_bytes(raw[1:9], "big", signed=True)
    nanos = int.from_bytes(raw[9:13], "big", signed=True)
    if not 0 <= nanos < 1_000_000_000:
        raise ValueError(f"nanoseconds {nanos} out of range")
    if seconds == 0 and nanos == 0:
        return 0
    return (seconds - GO_EPOCH_OFFSET) * 1_000_000_000 + nanos


def uvarint(raw: bytes) -> int:
    """A whole value holding exactly one unsigned varint; ValueError otherwise."""
    try:
        value, end = read_varint(raw, 0, len(raw))
    except ProtobufError as exc:
        raise ValueError(exc.message) from None
    if end != len(raw):
        raise ValueError(f"{len(raw) - end} bytes after the varint")
    return value


def varint(raw: bytes) -> int:
    """A whole value holding exactly one zigzag (signed) varint."""
    value = uvarint(raw)
    return (value >> 1) ^ -(value & 1)


def decode_any(raw: bytes) -> tuple[str, bytes]:
    """(type_url, value) of a protobuf Any; ValueError when it does not decode."""
    try:
        msg = decode(raw, "Any", ANY_SCHEMAS)
    except ProtobufError as exc:
        raise ValueError(str(exc)) from None
    return msg.get("type_url", ""), msg.get("value", b"")


class BucketView:
    """One bucket's plain values and sub-buckets, read once, with typed, checked getters."""

    __slots__ = ("path", "source", "problems", "subject", "values", "children")

    def __init__(
        self,
        bucket: Bucket | None,
        path: str,
        source: str,
        problems: list[Problem],
        subject: str | None = None,
    ) -> None:
        self.path = path  # "/v1/<ns>/containers/<id>": the bucket, as problems name it
        self.source = source  # evidence path of the database file
        self.problems = problems
        self.subject = subject
        self.values: dict[bytes, bytes] = {}
        self.children: dict[bytes, Bucket] = {}
        if bucket is None:
            return
        try:
            for key, value in bucket.items():
                self.values[key] = value
        except BoltError as exc:
            self.problem(f"entries unreadable: {exc}")
        try:
            for key, child in bucket.buckets():
                self.children[key] = child
        except BoltError as exc:
            self.problem(f"sub-buckets unreadable: {exc}")

    # ---- plumbing
    def problem(self, message: str, key: bytes | None = None) -> None:
        where = self.path if key is None else f"{self.path} key {name_text(key)!r}"
        self.problems.append(Problem(self.source, f"{where}: {message}", self.subject))

    def child(self, name: bytes) -> BucketView:
        """The sub-bucket NAME (empty when absent; a problem when NAME is a plain value)."""
        if name in self.values and name not in self.children:
            self.problem("expected a bucket, found a value", name)
        return BucketView(
            self.children.get(name),
            f"{self.path}/{name_text(name)}",
            self.source,
            self.problems,
            self.subject,
        )

    def sub_views(self) -> list[tuple[str, BucketView]]:
        """(name, view) of every sub-bucket, in key order."""
        return [(name_text(k), self.child(k)) for k in self.children]

    def raw(self, key: bytes) -> bytes | None:
        """The plain value KEY unchecked (None when absent; a problem when it is a bucket)."""
        if key in self.children:
            self.problem("expected a value, found a bucket", key)
            return None
        return self.values.get(key)

    # ---- typed values
    def text(self, key: bytes) -> str | None:
        raw = self.raw(key)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.problem("not UTF-8 text", key)
            return raw.decode("utf-8", "backslashreplace")

    def time(self, key: bytes) -> int | None:
        raw = self.raw(key)
        if raw is None:
            return None
        try:
            ns = go_time(raw)
        except ValueError as exc:
            self.problem(str(exc), key)
            return None
        return ns or None

    def _number(self, key: bytes, reader) -> int | None:
        raw = self.raw(key)
        if raw is None:
            return None
        try:
            return reader(raw)
        except ValueError as exc:
            self.problem(f"not a varint: {exc}", key)
            return None

    def varint(self, key: bytes) -> int | None:
        return self._number(key, varint)

    def uvarint(self, key: bytes) -> int | None:
        return self._number(key, uvarint)

    def any(self, key: bytes) -> tuple[str, bytes] | None:
        raw = self.raw(key)
        if raw is None:
            return None
        try:
            return decode_any(raw)
        except ValueError as exc:
            self.problem(f"not a protobuf Any: {exc}", key)
            return None

    def labels(self, name: bytes = b"labels") -> dict[str, str]:
        """A string map kept as a sub-bucket (labels, annotations)."""
        view = self.child(name)
        for key in view.children:
            view.problem("expected a string value, found a bucket", key)
        return {name_text(k): t for k in view.values if (t := view.text(k)) is not None}
