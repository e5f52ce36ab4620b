"""Images on their own: archives as sources (``docker save``, OCI layouts and archives, ``docker
export``), an image compared across two sources, and integrity -- host layers rebuilt from their
directories and tar-split records (``verify_layers``), archive blobs against their digests
(``verify_archive``)."""
