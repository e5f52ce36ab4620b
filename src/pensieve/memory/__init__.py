"""Container memory from CRIU checkpoints: where checkpoints come from (``sources``: image
directories, Docker data roots, checkpoint archives), the views of one checkpoint (``views``:
processes, files, sockets, maps), and work on its pages (``scan``: dump, search, YARA, diff)."""
