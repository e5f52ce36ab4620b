"""Podman containers: libpod's ContainerConfig/ContainerState joined with containers/storage's
entry (libpod/container_config.go, container_inspect.go; containers/storage containers.go).

Pod membership is not a field of the shared Container record yet: it is answered by
``PodmanHost.pod_of`` (the labels stay exactly the labels podman reports).
"""

from __future__ import annotations

import posixpath

from pensieve.engines.podman.libpod import LibpodContainer, state_name
from pensieve.engines.podman.storage import StorageContainer
from pensieve.formats.untrusted_json import Doc
from pensieve.records import Container, Mount, PortBinding


def _ports(config: Doc) -> list[PortBinding]:
    """``newPortMappings`` (4.x and 5.x: container_port, host_ip, host_port, protocol, range)."""
    out: list[PortBinding] = []
    for pm in config.list_of_obj("newPortMappings") or config.list_of_obj("portMappings"):
        cport, hport = pm.int("container_port"), pm.int("host_port")
        count = max(1, min(pm.int("range") or 1, 65536))
        for i in range(count):
            out.append(
                PortBinding(
                    f"{(cport or 0) + i}/{pm.str('protocol') or 'tcp'}",
                    pm.str("host_ip") or None,
                    str(hport + i) if hport else None,
                )
            )
    return out


def _mounts(config: Doc, spec: Doc, graphroot: str) -> list[Mount]:
    """Named volumes (``namedVolumes``) and the user's bind mounts (``mounts``: destinations of
    the spec mounts the user asked for)."""
    out: list[Mount] = []
    for nv in config.list_of_obj("namedVolumes"):
        name = nv.str("volumeName") or None
        options = nv.list_of_str("options") or []
        out.append(
            Mount(
                type="volume",
                destination=nv.str("dest") or "",
                source=name,
                name=name,
                driver="local",
                rw="ro" not in options,
                propagation=next((o for o in options if o.endswith(("private", "shared", "slave"))), None),
                host_path=posixpath.join(graphroot, "volumes", name, "_data")
                if name and "/" not in name
                else None,
            )
        )
    user_binds = set(config.list_of_str("mounts") or [])
    for m in spec.list_of_obj("mounts"):
        dest = m.str("destination") or ""
        if dest not in user_binds:
            continue
        options = m.list_of_str("options") or []
        out.append(
            Mount(
                type=m.str("type") or "bind",
                destination=dest,
                source=m.str("source") or None,
                rw="ro" not in options,
                propagation=next((o for o in options if o.endswith(("private", "shared", "slave"))), None),
                host_path=m.str("source") or None,
            )
        )
    return out


def _env_hostname(env: list[str]) -> str | None:
    """HOSTNAME from the environment libpod set: the hostname of a container sharing another's
    UTS namespace (a pod member), whose own spec names none; libpod's Hostname() falls back to
    the first 12 characters of the id."""
    return next((e.split("=", 1)[1] or None for e in env if e.startswith("HOSTNAME=")), None)


def _network_mode(config: Doc) -> str | None:
    ns_ctr = config.str("netNsCtr")
    if ns_ctr:
        return f"container:{ns_ctr}"
    return "bridge" if config.bool("createNetNS") else None


def parse_container(
    lp: LibpodContainer | None,
    sc: StorageContainer | None,
    graphroot: str,
    state_path: str | None,
    runtime_spec: Doc | None = None,
) -> Container:
    """One Container from libpod's record LP and/or the storage entry SC (either may be missing:
    a buildah working container has no libpod record, a half-removed one no storage entry).
    RUNTIME_SPEC, the spec the container was started with, wins over the creation-time one."""
    cid = lp.id if lp is not None else sc.id  # type: ignore[union-attr]
    if lp is None:
        name = sc.names[0] if sc and sc.names else None
        return Container(
            id=cid,
            engine="podman",
            name=name,
            image=str(sc.metadata.get("image-name") or "") or None if sc else None,
            image_id=sc.image if sc else None,
            created=sc.created if sc else None,
            storage_driver="overlay",
            rw_layer=sc.layer if sc else None,
            config_path=posixpath.join(graphroot, "overlay-containers", "containers.json"),
            data_root=graphroot,
        )
    config, state = lp.config, lp.state
    spec = runtime_spec if runtime_spec else config.obj("spec")
    process = spec.obj("process")
    exit_code = state.int("exitCode")
    if exit_code is None:  # omitted when 0 (omitempty); the exit-code bucket keeps it too
        exit_code = lp.exit_code if lp.exit_code is not None else 0
    c = Container(
        id=cid,
        engine="podman",
        name=config.str("name") or None,
        image=config.str("rootfsImageName") or config.str("RawImageName") or None,
        image_id=config.str("rootfsImageID") or (sc.image if sc else None),
        state=state_name(state),
        exit_code=exit_code,
        oom_killed=state.bool("oomKilled"),
        error=state.str("error") or None,
        created=config.time("createdTime"),
        started=state.time("startedTime"),
        finished=state.time("finishedTime"),
        pid=state.int("pid") or None,
        command=process.list_of_str("args") or [],
        entrypoint=config.list_of_str("entrypoint"),
        cmd=config.list_of_str("command"),
        env=process.list_of_str("env") or [],
        labels=config.dict_of_str("labels"),
        user=config.str("user") or None,
        working_dir=process.str("cwd") or None,
        hostname=spec.str("hostname") or _env_hostname(process.list_of_str("env") or []) or cid[:12],
        network_mode=_network_mode(config),
        privileged=config.bool("privileged"),
        log_driver=config.str("logDriver") or None,
        log_path=config.str("logPath") or None,
        storage_driver="overlay",
        rw_layer=sc.layer if sc else None,
        config_path=state_path,
        data_root=graphroot,
    )
    c.published_ports = _ports(config)
    c.mounts = _mounts(config, spec, graphroot)
    if c.privileged:
        c.risks.append("privileged")
    return c
