"""A case as Parquet files, one per table, for the tools analysts already use (pandas, Spark,
DuckDB elsewhere, Timesketch importers).

DuckDB writes each table to a private temporary file (Parquet, zstd), which is then copied into
the destination through :class:`~pensieve.output.sink.OutputSink` -- so the export is refused in
the evidence (every source of the case is a boundary), never overwrites an earlier one, and its
manifest holds each file's sha256.
"""

from __future__ import annotations

import os
import tempfile

from pensieve.case.schema import TABLES
from pensieve.case.store import CaseStore
from pensieve.output.sink import OutputSink

CHUNK = 1 << 20


def export_parquet(case: str, dest: str) -> list[str]:
    """Every table of CASE as ``DEST/<table>.parquet``; returns the names written."""
    store = CaseStore(case, read_only=True)
    try:
        _names, rows = store.query("SELECT path FROM sources")
        boundaries = [r[0] for r in rows]
        written: list[str] = []
        with OutputSink(dest, boundaries, kind="dir") as sink, tempfile.TemporaryDirectory() as tmp:
            for t in TABLES:
                path = os.path.join(tmp, f"{t.name}.parquet")
                store.db.execute(f"COPY {t.name} TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
                with open(path, "rb") as src, sink.create(f"{t.name}.parquet") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                os.unlink(path)
                written.append(f"{t.name}.parquet")
        return written
    finally:
        store.close()
