"""An engine's log files, read one after another (the rotated ones first, as each engine orders
them): a gzip-compressed rotation is read through gzip, and a file that cannot be read -- or
breaks off in the middle -- is one problem naming it and how far it got, never the end of the
listing.  Docker's json-file and local drivers and the CRI logs of Kubernetes read through here."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, TypeVar

from pensieve.evidence.base import Evidence, EvidenceError
from pensieve.records import Problem

T = TypeVar("T")


@contextlib.contextmanager
def open_log(evidence: Evidence, path: str) -> Iterator[BinaryIO]:
    """The bytes of the log file PATH, decompressed where its name ends in ``.gz``."""
    with evidence.open(path) as fh:
        if path.endswith(".gz"):
            with gzip.open(fh, "rb") as gz:
                yield gz  # type: ignore[misc]  # GzipFile is a binary file object
        else:
            yield fh


def each_file(
    evidence: Evidence,
    files: Iterable[str],
    read: Callable[[BinaryIO, str], Iterable[T]],
    problems: list[Problem],
    container_id: str | None,
    unit: str = "lines",
) -> Iterator[T]:
    """What READ(stream, path) yields for each of FILES in turn; an unreadable or truncated file
    (OSError covers gzip.BadGzipFile, EOFError a cut gzip stream) is a problem saying after how
    many UNIT it stopped, and the next file is read."""
    for path in files:
        count = 0
        try:
            with open_log(evidence, path) as stream:
                for item in read(stream, path):
                    count += 1
                    yield item
        except (EvidenceError, OSError, EOFError, zlib.error) as exc:
            where = f" after {count} {unit}" if count else ""
            problems.append(Problem(path, f"cannot read log file {path}{where}: {exc}", container_id))


def container_logs(host, c, problems: list[Problem]) -> tuple[Iterator, str | None]:
    """(the log lines of container C, oldest first; why there are none, or None) on every engine:
    Docker's json-file and local drivers, the CRI logs of containerd and CRI-O containers
    (``/var/log/pods``), Podman's k8s-file.  What cannot be read goes to PROBLEMS.  A containerd
    container started outside CRI has no log in files: a problem says so (its output went to
    the client that started it)."""
    import posixpath

    from pensieve.engines.docker.logs import log_files, read_logs

    if c.engine in ("containerd", "cri-o") and (c.log_driver == "cri" or c.pod_name):
        from pensieve.engines.containerd.cri import cri_log_files, read_cri_logs

        files = cri_log_files(host.evidence, c)
        missing = None if files else f"no CRI log files (recorded {c.log_path or 'nowhere'})"
        return read_cri_logs(host.evidence, c.id, files, problems), missing
    if c.engine == "containerd":
        note = f"the logs of {c.id} are not in files: containerd keeps none for a container started "
        note += "outside CRI (its output went to the client that started it: ctr's terminal or --log-uri)"
        problems.append(Problem(c.config_path or c.id, note, c.id))
        return iter(()), None
    if c.engine == "podman":
        from pensieve.engines.podman.logs import podman_log_files, read_podman_logs

        before = len(problems)
        files = podman_log_files(host.evidence, c, problems)
        missing = (
            None
            if files or len(problems) != before
            else f"no k8s-file log (recorded {c.log_path or 'nowhere'})"
        )
        return read_podman_logs(host.evidence, c, files, problems), missing
    cdir = posixpath.dirname(c.config_path or "")
    files = log_files(host.evidence, cdir, c.log_path, c.log_driver)
    missing = None if files else f"no log files (driver {c.log_driver or 'unknown'})"
    return read_logs(host.evidence, c.id, files, problems), missing
