"""Readers for on-disk file formats that container engines keep their state in (bbolt, ...).

Every reader here is read-only, written from the format's facts, and treats its input as
hostile: corrupt bytes raise the reader's own error type, never hang or allocate without bound.
"""
