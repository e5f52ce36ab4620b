"""Docker containers from a data root (moby container/ and daemon/ packages).

``containers/<id>/config.v2.json`` holds the container (Config, State, MountPoints,
NetworkSettings, LogPath ...), ``hostconfig.json`` how it was run (Privileged, CapAdd, Binds,
PortBindings, LogConfig ...).  State names follow moby's ``State.StateString()``.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from pensieve.engines.docker.root import DockerRoot
from pensieve.evidence import EvidenceError
from pensieve.records import Container, Layer, Mount, PortBinding, Problem

ZERO_TIME = "0001-01-01T00:00:00Z"

#: host paths whose bind mount into a container hands it the host
SENSITIVE_BINDS = {
    "/": "host root filesystem bind-mounted",
    "/var/run/docker.sock": "docker socket bind-mounted",
    "/run/docker.sock": "docker socket bind-mounted",
    "/run/containerd/containerd.sock": "containerd socket bind-mounted",
    "/etc": "host /etc bind-mounted",
    "/proc": "host /proc bind-mounted",
    "/sys": "host /sys bind-mounted",
    "/dev": "host /dev bind-mounted",
    "/root": "host /root bind-mounted",
    "/home": "host /home bind-mounted",
    "/var/lib/docker": "docker data root bind-mounted",
    "/var/run": "host /var/run bind-mounted",
    "/run": "host /run bind-mounted",
    "/boot": "host /boot bind-mounted",
}


def _time(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    return value


def endpoint(settings: dict, *extra: tuple[str, str]) -> dict:
    """The non-empty addresses of a network endpoint (NetworkSettings or one of its Networks)."""
    keys = (("ip", "IPAddress"), ("ipv6", "GlobalIPv6Address"), ("mac", "MacAddress"), ("gateway", "Gateway"))
    return {name: settings[key] for name, key in keys + extra if settings.get(key)}


def state_name(state: dict) -> str:
    """moby State.StateString()."""
    if state.get("Running"):
        if state.get("Paused"):
            return "paused"
        if state.get("Restarting"):
            return "restarting"
        return "running"
    if state.get("RemovalInProgress"):
        return "removing"
    if state.get("Dead"):
        return "dead"
    if not _time(state.get("StartedAt")):
        return "created"
    return "exited"


def _mounts(config: dict, host: dict, root: DockerRoot) -> list[Mount]:
    out: list[Mount] = []
    for dest, mp in sorted((config.get("MountPoints") or {}).items()):
        if not isinstance(mp, dict):
            continue
        mtype = mp.get("Type") or ("volume" if mp.get("Name") else "bind")
        name = mp.get("Name") or None
        source = mp.get("Source") or None
        host_path = source
        if mtype == "volume" and name and (mp.get("Driver") in (None, "", "local")):
            host_path = root.join("volumes", name, "_data")
        spec = mp.get("Spec") or {}
        mode = mp.get("Mode") or None
        out.append(
            Mount(
                type=mtype,
                destination=mp.get("Destination") or dest,
                source=source or name,
                name=name,
                driver=mp.get("Driver") or None,
                mode=mode,
                rw=bool(mp.get("RW", True)),
                propagation=mp.get("Propagation") or (spec.get("BindOptions") or {}).get("Propagation"),
                host_path=host_path,
            )
        )
    for dest, opts in sorted((host.get("Tmpfs") or {}).items()):
        out.append(
            Mount(type="tmpfs", destination=dest, mode=opts or None, rw="ro" not in (opts or "").split(","))
        )
    return out


def _risks(c: Container, host: dict) -> list[str]:
    risks: list[str] = []
    if c.privileged:
        risks.append("privileged")
    for cap in c.cap_add:
        risks.append(f"cap-add {cap}")
    for key, label in (("PidMode", "pid"), ("IpcMode", "ipc"), ("UTSMode", "uts"), ("UsernsMode", "userns")):
        if host.get(key) == "host":
            risks.append(f"host {label} namespace")
    if c.network_mode == "host":
        risks.append("host network namespace")
    for opt in c.security_opt:
        if opt.replace("=", ":") in ("seccomp:unconfined", "apparmor:unconfined", "label:disable"):
            risks.append(f"security-opt {opt}")
    if host.get("Devices"):
        risks.append(f"{len(host['Devices'])} host device(s) mapped")
    for m in c.mounts:
        if m.type != "bind" or not m.source:
            continue
        src = posixpath.normpath(m.source)
        label = SENSITIVE_BINDS.get(src)
        if label is None and src.endswith(("/docker.sock", "/containerd.sock", "/podman.sock")):
            label = "container engine socket bind-mounted"
        if label:
            risks.append(f"{label} ({src} -> {m.destination}{'' if m.rw else ', ro'})")
    return risks


def parse_container(
    cid: str, config_raw: bytes, host_raw: bytes | None, root: DockerRoot, problems: list[Problem], path: str
) -> Container:
    config = json.loads(config_raw)
    if not isinstance(config, dict):
        raise ValueError("config.v2.json is not a JSON object")
    host: dict = {}
    if host_raw is not None:
        try:
            host = json.loads(host_raw)
            if not isinstance(host, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            host = {}
            problems.append(
                Problem(
                    posixpath.join(posixpath.dirname(path), "hostconfig.json"),
                    f"corrupt hostconfig.json: {exc}",
                    cid,
                )
            )
    cfg = config.get("Config") or {}
    state = config.get("State") or {}
    ns = config.get("NetworkSettings") or {}
    log_cfg = host.get("LogConfig") or {}
    name = (config.get("Name") or "").lstrip("/") or None
    c = Container(
        id=config.get("ID") or cid,
        engine="docker",
        name=name,
        image=cfg.get("Image"),
        image_id=config.get("Image"),
        state=state_name(state),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or None,
        created=_time(config.get("Created")),
        started=_time(state.get("StartedAt")),
        finished=_time(state.get("FinishedAt")),
        pid=state.get("Pid") or None,
        command=[config.get("Path") or ""] + list(config.get("Args") or []) if config.get("Path") else [],
        entrypoint=cfg.get("Entrypoint"),
        cmd=cfg.get("Cmd"),
        env=list(cfg.get("Env") or []),
        labels=dict(cfg.get("Labels") or {}),
        user=cfg.get("User") or None,
        working_dir=cfg.get("WorkingDir") or None,
        hostname=cfg.get("Hostname") or None,
        exposed_ports=sorted((cfg.get("ExposedPorts") or {}).keys()),
        network_mode=host.get("NetworkMode") or None,
        restart_count=int(config.get("RestartCount") or 0),
        restart_policy=((host.get("RestartPolicy") or {}).get("Name") or None),
        privileged=bool(host.get("Privileged")),
        cap_add=list(host.get("CapAdd") or []),
        cap_drop=list(host.get("CapDrop") or []),
        pid_mode=host.get("PidMode") or None,
        ipc_mode=host.get("IpcMode") or None,
        security_opt=list(host.get("SecurityOpt") or []),
        log_driver=log_cfg.get("Type") or None,
        log_path=config.get("LogPath") or None,
        storage_driver=config.get("Driver") or None,
        config_path=path,
        data_root=root.path,
    )
    ports: list[PortBinding] = []
    seen: set[tuple] = set()
    for source in (ns.get("Ports") or {}, host.get("PortBindings") or {}):
        for cport, bindings in sorted(source.items()):
            for b in bindings or []:
                key = (cport, b.get("HostIp") or None, b.get("HostPort") or None)
                if key not in seen:
                    seen.add(key)
                    ports.append(PortBinding(*key))
    c.published_ports = ports
    for net, ep in sorted((ns.get("Networks") or {}).items()):
        ep = ep or {}
        c.networks[net] = endpoint(
            ep, ("network_id", "NetworkID"), ("endpoint_id", "EndpointID"), ("aliases", "Aliases")
        )
    c.mounts = _mounts(config, host, root)
    c.risks = _risks(c, host)
    return c


def list_containers(root: DockerRoot, problems: list[Problem]) -> list[Container]:
    """Every container under containers/ of a data root; corrupt ones are kept with problems."""
    ev = root.evidence
    base, ids = root.listdir_sorted("containers", problems, "containers")
    out: list[Container] = []
    for cid in ids:
        cdir = posixpath.join(base, cid)
        path = posixpath.join(cdir, "config.v2.json")
        try:
            raw = ev.read_bytes(path, 64 << 20)
        except (EvidenceError, OSError) as exc:
            if not ev.is_dir(cdir):
                continue  # a stray file in containers/
            legacy = posixpath.join(cdir, "config.json")
            if ev.is_file(legacy):
                continue  # v1 layout: read by the legacy parser
            msg = f"container config missing or unreadable: {exc}"
            out.append(_unreadable(cid, root, path, msg, problems))
            continue
        try:
            host_raw = ev.read_bytes(posixpath.join(cdir, "hostconfig.json"), 64 << 20)
        except (EvidenceError, OSError):
            host_raw = None
        try:
            c = parse_container(cid, raw, host_raw, root, problems, path)
        except (ValueError, TypeError, AttributeError) as exc:
            out.append(_unreadable(cid, root, path, f"corrupt container config: {exc}", problems))
            continue
        out.append(c)
    return out


def _placeholder(cid: str, root: DockerRoot, path: str, message: str) -> Container:
    """What we still know of a container whose config cannot be read."""
    c = Container(id=cid, engine="docker", state="unknown", config_path=path, data_root=root.path)
    c.problems.append(message)
    return c


def _unreadable(cid: str, root: DockerRoot, path: str, message: str, problems: list[Problem]) -> Container:
    """The placeholder of a container whose config at PATH cannot be read; the problem recorded."""
    problems.append(Problem(path, message, cid))
    return _placeholder(cid, root, path, message)


def container_layers(
    c: Container, root: DockerRoot, image_chain: list[Layer], problems: list[Problem]
) -> None:
    """Fill c.layers (image layers then init and RW) and the RW/init ids from layerdb/mounts."""
    driver = c.storage_driver
    if not driver:
        for d in root.drivers():
            if c.id in root.mounts(d):
                driver = d
                break
    if not driver:
        msg = "no storage driver recorded and no layerdb mount entry"
        c.problems.append(msg)
        problems.append(Problem(c.config_path or c.id, msg, c.id))
        return
    c.storage_driver = driver
    mount = root.mounts(driver).get(c.id)
    if mount is None or not mount.mount_id:
        msg = f"layerdb/mounts/{c.id}/mount-id missing: RW layer unknown"
        c.problems.append(msg)
        problems.append(Problem(root.join("image", driver, "layerdb", "mounts", c.id), msg, c.id))
    else:
        c.rw_layer = mount.mount_id
        c.init_layer = mount.init_id
    layers = list(image_chain)
    if not layers and c.rw_layer and driver == "overlay2":
        # image metadata gone: rebuild the chain from the RW layer's ``lower`` file
        lowers = root.overlay2_lowers(c.rw_layer) or []
        for cache_id in reversed(lowers):
            if cache_id == c.init_layer or cache_id.startswith("?"):
                continue
            path, fmt = root.layer_path(driver, cache_id)
            layers.append(Layer(role="image", cache_id=cache_id, path=path, driver=driver))
        if layers:
            c.problems.append("image metadata missing: layer chain rebuilt from overlay2 lower file")
    try:
        if c.init_layer:
            path, _ = root.layer_path(driver, c.init_layer, "init")
            layers.append(Layer(role="init", cache_id=c.init_layer, path=path, driver=driver))
        if c.rw_layer:
            path, _ = root.layer_path(driver, c.rw_layer, "rw")
            layers.append(Layer(role="rw", cache_id=c.rw_layer, path=path, driver=driver))
    except EvidenceError as exc:
        c.problems.append(str(exc))
        problems.append(Problem(c.config_path or c.id, str(exc), c.id))
    for layer in layers:
        if layer.role == "image" and image_chain:
            continue  # checked once per image by DockerHost.image_layers
        if layer.path and not (layer.cache_id and root.has_layer_dir(driver, layer.cache_id)):
            msg = f"{layer.role} layer {layer.cache_id} contents missing at {layer.path}"
            c.problems.append(msg)
            problems.append(Problem(layer.path, msg, c.id))
            layer.path = None
    c.layers = layers
