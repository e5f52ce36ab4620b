"""Deleted data on disk images: files back from the ext4 journal and orphan list (``recover``) and
files carved from unallocated space by their content (``carve``)."""
