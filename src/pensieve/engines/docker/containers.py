"""Docker containers from a data root (moby container/ and daemon/ packages).

``containers/<id>/config.v2.json`` holds the container (Config, State, MountPoints,
NetworkSettings, LogPath ...), ``hostconfig.json`` how it was run (Privileged, CapAdd, Binds,
PortBindings, LogConfig ...).  State names follow moby's ``State.StateString()``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from pensieve.engines.docker.root import DockerRoot, read_json
from pensieve.evidence import EvidenceError
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records import Container, Layer, Mount, PortBinding, Problem

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


def endpoint(settings: Doc, *extra: tuple[str, str]) -> dict:
    """The non-empty addresses of a network endpoint (NetworkSettings or one of its Networks)."""
    keys = (("ip", "IPAddress"), ("ipv6", "GlobalIPv6Address"), ("mac", "MacAddress"), ("gateway", "Gateway"))
    out: dict[str, Any] = {}
    for name, key in keys + extra:
        value = settings.list_of_str(key) if key == "Aliases" else settings.str(key)
        if value:
            out[name] = value
    return out


def state_name(state: Doc) -> str:
    """moby State.StateString()."""
    if state.bool("Running"):
        if state.bool("Paused"):
            return "paused"
        if state.bool("Restarting"):
            return "restarting"
        return "running"
    if state.bool("RemovalInProgress"):
        return "removing"
    if state.bool("Dead"):
        return "dead"
    started = state.str("StartedAt")
    if not started or started.startswith("0001-01-01"):
        return "created"
    return "exited"


def _mount(dest: str, mp: Doc, root: DockerRoot) -> Mount:
    name = mp.str("Name") or None
    mtype = mp.str("Type") or ("volume" if name else "bind")
    source = mp.str("Source") or None
    driver = mp.str("Driver")
    host_path = source
    if mtype == "volume" and name and driver in (None, "", "local"):
        host_path = root.join("volumes", name, "_data")
    return Mount(
        type=mtype,
        destination=mp.str("Destination") or dest,
        source=source or name,
        name=name,
        driver=driver or None,
        mode=mp.str("Mode") or None,
        rw=mp.bool("RW", True),
        propagation=mp.str("Propagation") or mp.obj("Spec").obj("BindOptions").str("Propagation"),
        host_path=host_path,
    )


def _mounts(config: Doc, host: Doc, root: DockerRoot) -> list[Mount]:
    out = [_mount(dest, mp, root) for dest, mp in config.items_of_obj("MountPoints")]
    for dest, opts in sorted(host.dict_of_str("Tmpfs").items()):
        out.append(Mount(type="tmpfs", destination=dest, mode=opts or None, rw="ro" not in opts.split(",")))
    return out


def _risks(c: Container, host: Doc) -> list[str]:
    risks: list[str] = []
    if c.privileged:
        risks.append("privileged")
    for cap in c.cap_add:
        risks.append(f"cap-add {cap}")
    for key, label in (("PidMode", "pid"), ("IpcMode", "ipc"), ("UTSMode", "uts"), ("UsernsMode", "userns")):
        if host.str(key) == "host":
            risks.append(f"host {label} namespace")
    if c.network_mode == "host":
        risks.append("host network namespace")
    for opt in c.security_opt:
        if opt.replace("=", ":") in ("seccomp:unconfined", "apparmor:unconfined", "label:disable"):
            risks.append(f"security-opt {opt}")
    devices = host.list("Devices")
    if devices:
        risks.append(f"{len(devices)} host device(s) mapped")
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


def _ports(ns: Doc, host: Doc) -> list[PortBinding]:
    ports: list[PortBinding] = []
    seen: set[tuple] = set()
    for source in (ns.obj("Ports"), host.obj("PortBindings")):
        for cport in sorted(source.keys()):
            for b in source.list_of_obj(cport):
                key = (cport, b.str("HostIp") or None, b.str("HostPort") or None)
                if key not in seen:
                    seen.add(key)
                    ports.append(PortBinding(*key))
    return ports


def _command(config: Doc) -> list[str]:
    path = config.str("Path")
    return [path] + (config.list_of_str("Args") or []) if path else []


def parse_container(cid: str, config: Doc, host: Doc, root: DockerRoot, path: str) -> Container:
    """A Container from its config.v2.json and hostconfig.json (type problems go to the docs'
    problems list, the rest of the record survives them)."""
    cfg = config.obj("Config", required=True)
    state = config.obj("State", required=True)
    ns = config.obj("NetworkSettings")
    log_cfg = host.obj("LogConfig")
    c = Container(
        id=config.str("ID") or cid,
        engine="docker",
        name=(config.str("Name") or "").lstrip("/") or None,
        image=cfg.str("Image"),
        image_id=config.str("Image"),
        state=state_name(state),
        exit_code=state.int("ExitCode"),
        oom_killed=state.bool("OOMKilled"),
        error=state.str("Error") or None,
        created=config.time("Created"),
        started=state.time("StartedAt"),
        finished=state.time("FinishedAt"),
        pid=state.int("Pid") or None,
        command=_command(config),
        entrypoint=cfg.str_slice("Entrypoint"),
        cmd=cfg.str_slice("Cmd"),
        env=cfg.list_of_str("Env") or [],
        labels=cfg.dict_of_str("Labels"),
        user=cfg.str("User") or None,
        working_dir=cfg.str("WorkingDir") or None,
        hostname=cfg.str("Hostname") or None,
        exposed_ports=sorted(cfg.dict_keys("ExposedPorts")),
        network_mode=host.str("NetworkMode") or None,
        restart_count=config.int("RestartCount") or 0,
        restart_policy=host.obj("RestartPolicy").str("Name") or None,
        privileged=host.bool("Privileged"),
        cap_add=host.list_of_str("CapAdd") or [],
        cap_drop=host.list_of_str("CapDrop") or [],
        pid_mode=host.str("PidMode") or None,
        ipc_mode=host.str("IpcMode") or None,
        security_opt=host.list_of_str("SecurityOpt") or [],
        log_driver=log_cfg.str("Type") or None,
        log_path=config.str("LogPath") or None,
        storage_driver=config.str("Driver") or None,
        config_path=path,
        data_root=root.path,
    )
    c.published_ports = _ports(ns, host)
    for net, ep in ns.items_of_obj("Networks"):
        c.networks[net] = endpoint(
            ep, ("network_id", "NetworkID"), ("endpoint_id", "EndpointID"), ("aliases", "Aliases")
        )
    c.mounts = _mounts(config, host, root)
    c.risks = _risks(c, host)
    return c


def _refused_dir(cid: str, cdir: str, root: DockerRoot) -> Container:
    """The placeholder of a containers/<id> that is a symlink: never followed (it may lead
    anywhere: /etc, outside the root, another container's directory)."""
    try:
        target = root.evidence.readlink(cdir)
    except (EvidenceError, OSError):
        target = "?"
    msg = f"container directory is a symlink (-> {target[:200]!r}): not followed, container not read"
    return _placeholder(cid, root, cdir, msg)


def read_container(
    root: DockerRoot, cid: str, cdir: str, raw: bytes, problems: list[Problem], name: str = "config.v2.json"
) -> Container:
    """One container from its directory (RAW: the bytes of its config NAME), every problem on
    the record and in PROBLEMS."""
    path = posixpath.join(cdir, name)
    mine: list[Problem] = []
    try:
        config = load(raw, path, mine, subject=cid)
    except UntrustedJSONError as exc:
        c = _placeholder(cid, root, path, f"corrupt container config: {exc}".replace(f"{path}: ", ""))
        problems.extend(c.problems)
        return c
    host = read_json(root.evidence, posixpath.join(cdir, "hostconfig.json"), mine, cid)
    if host is None:
        host = Doc({}, posixpath.join(cdir, "hostconfig.json"), mine, "", cid)
    c = parse_container(cid, config, host, root, path)
    c.problems = mine
    problems.extend(mine)
    return c


def list_containers(root: DockerRoot, problems: list[Problem]) -> list[Container]:
    """Every container under containers/ of a data root; corrupt ones are kept with problems,
    and so is a containers/<id> that is a symlink (a placeholder, never followed)."""
    ev = root.evidence
    base = root.join("containers")
    try:
        entries = sorted(ev.scandir(base), key=lambda e: e.name)
    except (EvidenceError, OSError) as exc:
        problems.append(Problem(base, f"cannot list containers: {exc}"))
        return []
    out: list[Container] = []
    for entry in entries:
        cid = entry.name
        cdir = posixpath.join(base, cid)
        if entry.stat.is_symlink:
            refused = _refused_dir(cid, cdir, root)
            problems.extend(refused.problems)
            out.append(refused)
            continue
        if not entry.stat.is_dir:
            continue  # a stray file in containers/
        path = posixpath.join(cdir, "config.v2.json")
        try:
            raw = ev.read_bytes(path, (64 << 20) + 1)
        except (EvidenceError, OSError) as exc:
            if ev.is_file(posixpath.join(cdir, "config.json")):
                continue  # v1 layout: read by the legacy parser
            msg = f"container config missing or unreadable: {exc}"
            out.append(_unreadable(cid, root, path, msg, problems))
            continue
        out.append(read_container(root, cid, cdir, raw, problems))
    return out


def _placeholder(cid: str, root: DockerRoot, path: str, message: str) -> Container:
    """What we still know of a container whose config cannot be read."""
    c = Container(id=cid, engine="docker", state="unknown", config_path=path, data_root=root.path)
    c.problems.append(Problem(path, message, cid))
    return c


def _unreadable(cid: str, root: DockerRoot, path: str, message: str, problems: list[Problem]) -> Container:
    """The placeholder of a container whose config at PATH cannot be read; the problem recorded."""
    c = _placeholder(cid, root, path, message)
    problems.extend(c.problems)
    return c


def add_problem(c: Container, problems: list[Problem], source: str, message: str) -> None:
    """One problem about container C: on the record and in the host's channel (the same record)."""
    p = Problem(source, message, c.id)
    c.problems.append(p)
    problems.append(p)


def _find_driver(c: Container, root: DockerRoot) -> str | None:
    """The container's storage driver: as recorded, else the first driver whose layerdb/mounts
    holds it."""
    if c.storage_driver:
        return c.storage_driver
    for d in root.drivers():
        if c.id in root.mounts(d):
            return d
    return None


def _chain_from_lowers(c: Container, root: DockerRoot, driver: str) -> list[Layer]:
    """Image metadata gone: the image layers rebuilt from what the driver records below the RW
    layer (bottom first), with a problem on the container when any were found."""
    layers: list[Layer] = []
    for cache_id in reversed(root.lowers(driver, c.rw_layer or "") or []):
        if cache_id == c.init_layer or cache_id.startswith("?"):
            continue
        path, _form = root.layer_path(driver, cache_id)
        layers.append(Layer(role="image", cache_id=cache_id, path=path, driver=driver))
    if layers:
        c.problems.append(
            Problem(
                c.config_path or c.id,
                f"image metadata missing: layer chain rebuilt from {driver} lower file",
                c.id,
            )
        )
    return layers


def drop_missing_layers(
    c: Container, problems: list[Problem], layers: list[Layer], present: Callable[[Layer], bool]
) -> None:
    """Each of LAYERS with a path whose contents are not PRESENT: a problem, and its path None."""
    for layer in layers:
        if layer.path and not present(layer):
            add_problem(
                c,
                problems,
                layer.path,
                f"{layer.role} layer {layer.cache_id} contents missing at {layer.path}",
            )
            layer.path = None


def container_layers(
    c: Container, root: DockerRoot, image_chain: list[Layer], problems: list[Problem]
) -> None:
    """Fill c.layers (image layers then init and RW) and the RW/init ids from layerdb/mounts."""
    driver = _find_driver(c, root)
    if not driver:
        add_problem(
            c, problems, c.config_path or c.id, "no storage driver recorded and no layerdb mount entry"
        )
        return
    c.storage_driver = driver
    mount = root.mounts(driver).get(c.id)
    if mount is None or not mount.mount_id:
        msg = f"layerdb/mounts/{c.id}/mount-id missing: RW layer unknown"
        add_problem(c, problems, root.join("image", driver, "layerdb", "mounts", c.id), msg)
    else:
        c.rw_layer = mount.mount_id
        c.init_layer = mount.init_id
    layers = list(image_chain)
    if not layers and c.rw_layer:
        layers = _chain_from_lowers(c, root, driver)
    try:
        if c.init_layer:
            path, _ = root.layer_path(driver, c.init_layer, "init")
            layers.append(Layer(role="init", cache_id=c.init_layer, path=path, driver=driver))
        if c.rw_layer:
            path, _ = root.layer_path(driver, c.rw_layer, "rw")
            layers.append(Layer(role="rw", cache_id=c.rw_layer, path=path, driver=driver))
    except EvidenceError as exc:
        add_problem(c, problems, c.config_path or c.id, str(exc))
    # image layers of a known image are checked once per image by DockerHost.image_layers
    own = [layer for layer in layers if not (layer.role == "image" and image_chain)]
    drop_missing_layers(
        c, problems, own, lambda layer: bool(layer.cache_id and root.has_layer_dir(driver, layer.cache_id))
    )
    c.layers = layers
