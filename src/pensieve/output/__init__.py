"""Everything pensieve writes: tables, JSON, JSONL and CSV of records (``render``, with the table
columns of each record type in ``columns``), text made safe for terminals and JSON (``text``),
the one progress bar (``progress``) and the one sink every output file goes through (``sink``)."""
