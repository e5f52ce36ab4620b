"""Container filesystems: the merged layered view with per-entry provenance (``layered``), what a
container changed against its image (``diff``), export of a merged tree (``export``), and which
layer, image and container a host path belongs to (``whence``)."""
