"""Docker volumes (moby volume/local): ``volumes/<name>/_data`` holds the data, ``opts.json`` the
local driver's mount options; ``volumes/metadata.db`` (bbolt) keeps labels and driver names."""

from __future__ import annotations

import json
import posixpath
import re

from ...evidence import EvidenceError
from ...records import Container, Problem, Volume
from .root import DockerRoot

_ANON = re.compile(r"^[0-9a-f]{64}$")


def list_volumes(root: DockerRoot, containers: list[Container], problems: list[Problem]) -> list[Volume]:
    ev = root.evidence
    base = root.join("volumes")
    try:
        names = sorted(ev.listdir(base))
    except (EvidenceError, OSError):
        return []
    users: dict[str, list[str]] = {}
    for c in containers:
        if c.data_root != root.path:
            continue
        for m in c.mounts:
            if m.type == "volume" and m.name:
                users.setdefault(m.name, []).append(c.id)
    out: list[Volume] = []
    for name in names:
        vdir = posixpath.join(base, name)
        if not ev.is_dir(vdir):
            continue  # metadata.db and friends
        vol = Volume(name=name, engine="docker", driver="local", anonymous=bool(_ANON.match(name)))
        data = posixpath.join(vdir, "_data")
        if ev.is_dir(data):
            vol.path = data
            count = size = 0
            for _dirpath, entries in ev.walk(data):
                for e in entries:
                    count += 1
                    if e.stat.is_file:
                        size += e.stat.size
            vol.file_count, vol.size = count, size
        opts = posixpath.join(vdir, "opts.json")
        if ev.is_file(opts):
            try:
                data_opts = json.loads(ev.read_bytes(opts, 1 << 20))
                vol.options = {
                    k: str(v)
                    for k, v in {
                        "type": data_opts.get("MountType"),
                        "device": data_opts.get("MountDevice"),
                        "o": data_opts.get("MountOpts"),
                    }.items()
                    if v
                }
            except (EvidenceError, OSError, ValueError, AttributeError) as exc:
                problems.append(Problem(opts, f"corrupt volume options: {exc}", name))
        vol.used_by = sorted(users.get(name, []))
        out.append(vol)
    return out
