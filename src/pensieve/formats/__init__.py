"""Pure parsers of the file formats evidence is made of, no I/O policy: ext4 and its jbd2 journal,
qcow2, tar headers and tar-split records, compressed streams, bbolt databases, the protobuf wire
format, CRIU images (``criu/``), and the typed loader for JSON an attacker may have written.

Every reader here is read-only, written from the format's facts, and treats its input as
hostile: corrupt bytes raise the reader's own error type, never hang or allocate without bound.
"""
