"""``pods``: the pods of a host's container engines, each with its containers: the Kubernetes pods
of containerd's CRI plugin and Podman's own pods (libpod)."""

from __future__ import annotations

from pensieve.commands.common import SOURCE, Commands, full_ids, open_host
from pensieve.output import columns

COMMANDS = Commands()
command = COMMANDS.command
add_parser = COMMANDS.add_parser


def host_pods(host) -> list:
    """The pods (records/kubernetes.py Pod) of every engine of HOST that keeps them: containerd's
    CRI plugin (``pods()``) and Podman (``pod_records()``, its ``pods()`` being libpod's own)."""
    from pensieve.engines.discover import engine_hosts

    pods: list = []
    for h in engine_hosts(host):
        if hasattr(h, "pod_records"):
            pods += h.pod_records()
        elif hasattr(h, "pods"):
            pods += h.pods()
    return pods


@command("pods", "pods: Kubernetes (CRI) and Podman pods, sandbox, uid, state and their containers", SOURCE)
def cmd_pods(o):
    """Kubernetes pods made through the CRI: name, namespace, uid, state (from the runtime's task
    state directory when it is on the evidence), created, sandbox id, and the pod's containers
    with name, restart attempt, state and image.  Podman pods: no namespace or uid, the infra
    container as sandbox (its state the pod's), and every member container."""
    from pensieve.output.render import emit
    from pensieve.records.kubernetes import Pod

    host = open_host(o.source)
    pods = host_pods(host)
    emit(pods, o.fmt, columns.pods(full_ids(o)), title=f"{len(pods)} pods", record_type=Pod)
    return host.problems
