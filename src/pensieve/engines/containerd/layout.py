"""Where containerd keeps things below its root (containerd's plugin directory names: the
metadata plugin ``io.containerd.metadata.v1.bolt``, the content store
``io.containerd.content.v1.content``, the snapshotters ``io.containerd.snapshotter.v1.<name>``),
and the namespaces dockerd uses in the containerd it runs.  Constants only: discovery reads them
without importing the readers."""

META_DB = "io.containerd.metadata.v1.bolt/meta.db"
CONTENT_DIR = "io.containerd.content.v1.content"
SNAPSHOTTER_DIR = "io.containerd.snapshotter.v1."
#: the namespaces dockerd keeps in its containerd (moby daemon/containerd: images; moby_history)
MOBY_NAMESPACES = ("moby", "moby_history")
