"""Docker volumes (moby volume/local): ``volumes/<name>/_data`` holds the data, ``opts.json`` the
local driver's mount options; ``volumes/metadata.db`` (bbolt) keeps labels and driver names.

metadata.db (moby volume/service/db.go): bucket ``volumes``, key = volume name, value = JSON
``{"Name", "Driver", "Labels", "Options"}`` - what ``docker volume inspect`` shows.  Volumes of
plugin drivers live only there; a local volume listed there without its directory was removed
behind the daemon's back (or the directory was lost).
"""

from __future__ import annotations

import posixpath
import re

from pensieve.engines.docker.root import DockerRoot, read_json
from pensieve.evidence import Evidence, EvidenceError
from pensieve.formats.bolt import BoltDB, BoltError
from pensieve.formats.untrusted_json import UntrustedJSONError, load
from pensieve.records import Container, Problem, Volume

_ANON = re.compile(r"^[0-9a-f]{64}$")


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def read_volume_metadata(root: DockerRoot, problems: list[Problem]) -> dict[str, dict]:
    """volume name -> {"Driver", "Labels", "Options"} from volumes/metadata.db ({} if absent)."""
    ev = root.evidence
    path = root.join("volumes", "metadata.db")
    if not ev.is_file(path):
        return {}
    try:
        with ev.open(path) as fh:
            db = BoltDB(fh)
            bucket = db.bucket(b"volumes")
            entries = list(bucket.items()) if bucket is not None else []
    except (BoltError, EvidenceError, OSError) as exc:
        problems.append(Problem(path, f"corrupt volume metadata.db: {exc}"))
        return {}
    out: dict[str, dict] = {}
    for key, value in entries:
        name = key.decode("utf-8", "backslashreplace")
        try:
            meta = load(value, f"{path}[{name}]", problems, subject=name).value
        except UntrustedJSONError as exc:
            problems.append(Problem(path, f"corrupt metadata.db entry: {exc}", name))
            continue
        out[name] = {
            "Driver": meta.get("Driver") if isinstance(meta.get("Driver"), str) else None,
            "Labels": _str_map(meta.get("Labels")),
            "Options": _str_map(meta.get("Options")),
        }
    return out


def _volume_users(root: DockerRoot, containers: list[Container]) -> dict[str, list[str]]:
    """volume name -> ids of this root's containers that mount it."""
    users: dict[str, list[str]] = {}
    for c in containers:
        if c.data_root != root.path:
            continue
        for m in c.mounts:
            if m.type == "volume" and m.name:
                users.setdefault(m.name, []).append(c.id)
    return users


def _data_usage(ev: Evidence, data: str) -> tuple[int, int]:
    """(entries, bytes of regular files) below the volume data directory DATA."""
    count = size = 0
    for _dirpath, entries in ev.walk(data):
        for e in entries:
            count += 1
            if e.stat.is_file:
                size += e.stat.size
    return count, size


def _opts_json(ev: Evidence, vdir: str, name: str, problems: list[Problem]) -> dict[str, str]:
    """The local driver's mount options from ``opts.json`` of the volume directory ({} if absent)."""
    opts = posixpath.join(vdir, "opts.json")
    if not ev.exists(opts):
        return {}
    doc = read_json(ev, opts, problems, name, limit=1 << 20)
    if doc is None:
        return {}
    wanted = {"type": "MountType", "device": "MountDevice", "o": "MountOpts"}
    return {k: v for k, key in wanted.items() if (v := doc.str(key))}


def _volume_dir(
    ev: Evidence, vdir: str, name: str, meta: dict | None, problems: list[Problem]
) -> Volume | None:
    """The volume kept in directory VDIR (None when VDIR is not a directory), with what
    metadata.db says of it (META)."""
    try:
        vst = ev.lstat(vdir)
    except (EvidenceError, OSError):
        return None
    if not vst.is_dir:
        return None  # metadata.db and friends
    vol = Volume(name=name, engine="docker", driver="local", anonymous=bool(_ANON.match(name)))
    # moby's local driver reports the volume directory's mtime as CreatedAt
    vol.created = vst.mtime_ns
    if meta is not None:
        vol.driver = meta["Driver"] or vol.driver
        vol.labels = dict(meta["Labels"])
    data = posixpath.join(vdir, "_data")
    if ev.is_dir(data):
        vol.path = data
        vol.file_count, vol.size = _data_usage(ev, data)
    if meta is not None:
        vol.options = dict(meta["Options"])  # what `docker volume inspect` shows
    vol.options = {**_opts_json(ev, vdir, name, problems), **vol.options}
    return vol


def list_volumes(root: DockerRoot, containers: list[Container], problems: list[Problem]) -> list[Volume]:
    ev = root.evidence
    base = root.join("volumes")
    try:
        names = sorted(ev.listdir(base))
    except (EvidenceError, OSError):
        return []
    users = _volume_users(root, containers)
    metadata = read_volume_metadata(root, problems)
    out: list[Volume] = []
    for name in names:
        vdir = posixpath.join(base, name)
        vol = _volume_dir(ev, vdir, name, metadata.get(name), problems)
        if vol is None:
            continue
        metadata.pop(name, None)
        vol.used_by = sorted(users.get(name, []))
        out.append(vol)
    # known only to metadata.db: plugin volumes (data lives with the plugin), or local volumes
    # whose directory was removed
    db_path = root.join("volumes", "metadata.db")
    for name, meta in sorted(metadata.items()):
        driver = meta["Driver"] or "local"
        vol = Volume(
            name=name,
            engine="docker",
            driver=driver,
            labels=dict(meta["Labels"]),
            options=dict(meta["Options"]),
            anonymous=bool(_ANON.match(name)),
            used_by=sorted(users.get(name, [])),
        )
        if driver == "local":
            problems.append(Problem(db_path, "volume in metadata.db but its directory is gone", name))
        out.append(vol)
    return out
