"""``live``: a running host, container-aware, read through ``/proc`` and the cgroup filesystem.

Each view reads ``/proc`` directly (no engine CLI or socket is needed) and attributes every process
to its container by its cgroup path; the engines' records (read offline from the host's data roots,
``--root``) add the container's name, image and pod.  ``--proc DIR`` reads another proc (a
container that mounts the host's, or a copy); ``--root DIR`` (repeatable) names the host root or
engine data roots whose records are joined (default ``/``).  Running without root gives what an
unprivileged user can read, and says what is missing.

  ps       every process grouped by container: host pid and NSpid, users inside and outside,
           executable hash, namespaces shared with the host, capabilities, seccomp, cgroup
  net      every socket of every network namespace, joined to its processes and containers
  cgroups  per container: memory, CPU and throttling, pids, IO (cgroup v1 and v2)
  watch    poll processes and sockets, write JSONL events until stopped or --for ends
"""

from __future__ import annotations

import argparse

from pensieve.commands.common import EPILOG, add_output, described_parser, full_ids

__all__ = ["add_parser"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--proc", default="/proc", metavar="DIR", help="the proc filesystem to read (default /proc)"
    )
    p.add_argument(
        "--root",
        action="append",
        metavar="DIR",
        dest="roots",
        help="host root or engine data root whose records name the containers (repeatable; default /)",
    )
    p.add_argument(
        "--container",
        "-c",
        action="append",
        metavar="C",
        dest="containers",
        help="only this container: id or prefix, name, or Kubernetes ns/pod/container (repeatable)",
    )


def _context(o: argparse.Namespace):
    from pensieve.live.context import LiveContext

    return LiveContext(o.proc, o.roots)


def cmd_ps(o: argparse.Namespace) -> list:
    """Every process of the host grouped by container (and pod)."""
    from pensieve import api
    from pensieve.output import columns
    from pensieve.output.render import emit
    from pensieve.records.live import LiveProcess

    processes, problems = api.live_ps(o.proc, o.roots, o.containers)
    emit(processes, o.fmt, columns.live_processes(full_ids(o)), record_type=LiveProcess)
    return problems


def cmd_net(o: argparse.Namespace) -> list:
    """Every socket of every container, per network namespace, joined to its processes."""
    from pensieve import api
    from pensieve.output import columns
    from pensieve.output.render import emit
    from pensieve.records.live import LiveSocket

    sockets, problems = api.live_net(o.proc, o.roots, o.containers)
    emit(sockets, o.fmt, columns.live_sockets(full_ids(o)), record_type=LiveSocket)
    return problems


def cmd_cgroups(o: argparse.Namespace) -> list:
    """Per container: memory, CPU, pids and IO from its cgroup."""
    from pensieve import api
    from pensieve.output import columns
    from pensieve.output.render import emit
    from pensieve.records.live import CgroupUsage

    usages, problems = api.live_cgroups(o.proc, o.roots, o.containers, o.cgroupfs)
    emit(usages, o.fmt, columns.live_cgroups(full_ids(o)), record_type=CgroupUsage)
    return problems


def cmd_watch(o: argparse.Namespace) -> list:
    """Poll processes and sockets; write JSONL events.

    One JSON object a line, written as each poll ends: process-present/-started/-exited,
    listener-present/-appeared/-closed, connection-present/-opened/-closed, with the poll's time,
    the container (name, engine, pod) and the details.  Stops after --for seconds, or at ^C
    (what was seen is written; exit 0).  What starts and ends between two polls is not seen."""
    from pensieve.api import live_watch

    return live_watch(
        o.proc, o.roots, o.containers, interval=o.interval, duration=o.duration, out=o.out,
        refresh=o.refresh, unix=o.unix,
    )  # fmt: skip


def add_parser(subparsers) -> None:
    """``live`` with its sub-commands."""
    live = described_parser(
        subparsers, "live", "a running host's processes, sockets, cgroups by container", __doc__
    )
    subs = live.add_subparsers(dest="live_command", metavar="COMMAND", required=True)
    for name, fn, output in (("ps", cmd_ps, True), ("net", cmd_net, True), ("cgroups", cmd_cgroups, True)):
        p = subs.add_parser(
            name, help=(fn.__doc__ or "").splitlines()[0], description=fn.__doc__, epilog=EPILOG
        )
        _common(p)
        if output:
            add_output(p)
        p.set_defaults(func=fn)
    subs.choices["cgroups"].add_argument(
        "--cgroupfs",
        default="/sys/fs/cgroup",
        metavar="DIR",
        help="the cgroup filesystem, for hierarchies mountinfo does not list (default /sys/fs/cgroup)",
    )
    p = subs.add_parser(
        "watch", help=cmd_watch.__doc__.splitlines()[0], description=cmd_watch.__doc__, epilog=EPILOG
    )
    _common(p)
    p.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between polls (default 1)"
    )
    p.add_argument(
        "--for", dest="duration", type=float, metavar="S", help="stop after S seconds (default: until ^C)"
    )
    p.add_argument("--out", metavar="FILE", help="write the JSONL events to FILE (default: standard output)")
    p.add_argument(
        "--refresh",
        type=float,
        default=10.0,
        metavar="S",
        help="re-read each namespace's socket tables at least every S seconds (default 10); between, only "
        "when its processes' socket descriptors change",
    )
    p.add_argument(
        "--unix",
        action="store_true",
        help="follow unix sockets too: a connection names its peer's bound path (a container talking to "
        "/run/docker.sock); off by default, since every local IPC of a host is an event",
    )
    p.set_defaults(func=cmd_watch)
