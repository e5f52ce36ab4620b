"""Cases: one triage of many sources kept as one DuckDB file (``store``, ``schema``), the tasks
that fill it (``triage``), and its exports (``export``)."""
