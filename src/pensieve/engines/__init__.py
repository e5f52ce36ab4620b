"""Container engines, each implementing the Host interface of :mod:`pensieve.engines.base`.

* ``docker/`` -- Docker data roots (v2 and the pre-1.10 v1 graph) and their storage drivers
  (``docker/drivers/``);
* ``containerd/`` -- containerd roots (metadata store, snapshotters, content store), also those of
  k3s, rke2, microk8s, k0s and Docker's containerd image store;
* ``discover.py`` -- which engines a piece of evidence holds, and one Host over all of them.

The storage drivers of every engine are found through the registry in ``base.py``.
"""
