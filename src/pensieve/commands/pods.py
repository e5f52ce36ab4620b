"""``pods``: the Kubernetes pods of a node's container runtime, each with its containers."""

from __future__ import annotations

from pensieve.commands.common import SOURCE, Commands, full_ids, open_host
from pensieve.output import columns

COMMANDS = Commands()
command = COMMANDS.command
add_parser = COMMANDS.add_parser


def host_pods(host) -> list:
    """The pods of every engine of HOST that keeps them (containerd's CRI plugin today)."""
    hosts = getattr(host, "hosts", None) or [host]
    return [pod for h in hosts if hasattr(h, "pods") for pod in h.pods()]


@command("pods", "Kubernetes pods (CRI): sandbox, uid, state and their containers by attempt", SOURCE)
def cmd_pods(o):
    """Kubernetes pods made through the CRI: name, namespace, uid, state (from the runtime's task
    state directory when it is on the evidence), created, sandbox id, and the pod's containers
    with name, restart attempt, state and image."""
    from pensieve.output.render import emit
    from pensieve.records.kubernetes import Pod

    host = open_host(o.source)
    pods = host_pods(host)
    emit(pods, o.fmt, columns.pods(full_ids(o)), title=f"{len(pods)} pods", record_type=Pod)
    return host.problems
