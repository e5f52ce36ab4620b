"""Typed records: the one shape every engine produces and every output consumes.

Engines (docker; containerd and podman next) turn evidence into these records, analyses add their
own, and the outputs (tables, JSON, JSONL, CSV) only ever see records. Every record class is
declared with ``@record`` (:mod:`pensieve.records.core`), in the module of its domain:

* ``core`` -- the mechanism (``record``, ``field``, ``to_dict``) and ``Problem``, the one channel
  for what could not be read;
* ``host`` -- Container, Image, Layer, HistoryStep, Mount, PortBinding, Volume, LogLine;
* ``filesystem`` -- FileEntry, Change, Attribution;
* ``memory`` -- Process, OpenFile, Socket, MemoryMap;
* ``findings`` -- Finding.
"""

from __future__ import annotations

from pensieve.records.core import Problem, field, fields, is_record, record, record_fields, to_dict
from pensieve.records.filesystem import Attribution, Change, FileEntry
from pensieve.records.findings import Finding
from pensieve.records.host import Container, HistoryStep, Image, Layer, LogLine, Mount, PortBinding, Volume
from pensieve.records.memory import MemoryMap, OpenFile, Process, Socket

__all__ = [
    "Attribution",
    "Change",
    "Container",
    "FileEntry",
    "Finding",
    "HistoryStep",
    "Image",
    "Layer",
    "LogLine",
    "MemoryMap",
    "Mount",
    "OpenFile",
    "PortBinding",
    "Problem",
    "Process",
    "Socket",
    "Volume",
    "field",
    "fields",
    "is_record",
    "record",
    "record_fields",
    "to_dict",
]
