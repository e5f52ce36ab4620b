"""Live response: a running host's processes, sockets and cgroups through ``/proc`` and the cgroup
filesystem, each attributed to its container (and pod), and the acquisition of one container
without stopping it.

``procfs`` is the only reader of ``/proc``; ``attribution`` names a cgroup path's container.
"""
