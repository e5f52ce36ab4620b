"""A Podman container's log as the evidence holds it.

Podman's log drivers (podman-run(1) ``--log-driver``; libpod ``define/config.go``):

* ``k8s-file`` -- conmon writes the CRI container log format (``<RFC3339Nano> <stdout|stderr>
  <P|F> <msg>``, read by :mod:`pensieve.formats.cri_log`) to the container's ``LogPath``, by
  default ``<graphroot>/overlay-containers/<id>/userdata/ctr.log`` (the container's static
  directory: ``StaticDir`` of podman inspect), or to the file ``--log-opt path=`` names.  conmon's
  ``--log-size-max`` truncates the live file (it writes ``<path>.tmp`` and renames it over the
  log, conmon ``src/ctr_logging.c``), so there are no rotations to read;
* ``journald`` -- the lines go to the systemd journal, not to a file;
* ``none`` -- nothing is kept; ``passthrough`` / ``passthrough-tty`` -- the output went straight
  to podman's own stdout and stderr.

The recorded ``LogPath`` is a path on the host at capture time: below the graphroot as it was
mounted then (the capture may sit elsewhere now), so its tail from ``overlay-containers/<id>/``
is looked for below the graphroot as found; the recorded path itself is tried too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from pensieve.engines.containerd.cri import read_cri_logs
from pensieve.evidence.base import Evidence, EvidenceError
from pensieve.records import Container, LogLine, Problem

__all__ = ["FILE_DRIVERS", "NOT_IN_FILES", "log_candidates", "podman_log_files", "read_podman_logs"]

#: the log drivers that write a file pensieve reads (an empty driver: Podman's default, k8s-file)
FILE_DRIVERS = ("k8s-file", "")
#: the drivers whose lines are not in any file, and where they went instead
NOT_IN_FILES = {
    "journald": "the lines went to the systemd journal (read it with journalctl CONTAINER_ID=...)",
    "none": "the container's output was not kept",
    "passthrough": "the output went straight to podman's own stdout and stderr",
    "passthrough-tty": "the output went straight to podman's own terminal",
}
DEFAULT_LOG = ("userdata", "ctr.log")


def _clean(path: str) -> list[str]:
    """PATH's parts, without empty, ``.`` and ``..`` parts (a recorded path is untrusted)."""
    return [p for p in path.split("/") if p not in ("", ".", "..")]


def log_candidates(c: Container) -> list[str]:
    """Evidence paths where C's k8s-file log may be, most likely first: the recorded LogPath's
    tail from ``overlay-containers/<id>/`` below the graphroot as found; the recorded path
    itself; the default ``userdata/ctr.log`` when no path was recorded."""
    root = c.data_root or "/"
    store = posixpath.join(root, "overlay-containers", c.id)
    out: list[str] = []
    if c.log_path:
        parts = _clean(c.log_path)
        for i in range(len(parts) - 2):
            if parts[i] == "overlay-containers" and parts[i + 1] == c.id:
                out.append(posixpath.join(store, *parts[i + 2 :]))
        if c.log_path.startswith("/") and parts:
            out.append("/" + "/".join(parts))
    else:
        out.append(posixpath.join(store, *DEFAULT_LOG))
    return list(dict.fromkeys(out))


def podman_log_files(evidence: Evidence, c: Container, problems: list[Problem]) -> list[str]:
    """The log file of C in the evidence (one at most: conmon keeps no rotations); none, with a
    problem, when C's driver does not write one."""
    driver = c.log_driver or ""
    if driver not in FILE_DRIVERS:
        where = NOT_IN_FILES.get(driver, "pensieve reads only k8s-file logs")
        problems.append(
            Problem(
                c.config_path or c.id,
                f"the logs of {c.id} are not in files: log driver {driver}: {where}",
                c.id,
            )
        )
        return []
    for path in log_candidates(c):
        try:
            if evidence.is_file(path):
                return [path]
        except (EvidenceError, OSError):
            continue
    return []


def read_podman_logs(
    evidence: Evidence, c: Container, files: list[str], problems: list[Problem]
) -> Iterator[LogLine]:
    """The lines of C's k8s-file log (the CRI format: P records joined)."""
    return read_cri_logs(evidence, c.id, files, problems)
