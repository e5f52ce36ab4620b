"""Hostile data roots, generated from the real captured root: every JSON field pensieve reads
mutated to every JSON type, nesting bombs in each JSON kind, symlinks / FIFOs / devices in place
of container directories and files.  Each case: no crash, a problem naming the file (and the
field), every other container still listed, exit 5 through the CLI; a time bound per case.

The captured root is copied once per module (``cp -a``); each case mutates the copy and puts
the original bytes back, so ~250 cases run in seconds, in-process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import run_cli, time_bound

from pensieve.engines.docker import DockerHost
from pensieve.engines.docker.logs import log_files, read_logs
from pensieve.evidence.directory import DirectoryEvidence

TYPES = {"int": "7", "bool": "true", "list": '[1, "a"]', "dict": '{"k": 1}', "str": '"s"', "null": "null",
         "huge": "1e400"}  # fmt: skip
BOMB = "[" * 100_000 + "]" * 100_000
SAVED: list[Path] = []  # where originals wait, outside the root, while a case runs

# field (dotted, inside the document) -> the JSON type pensieve reads it as
CONFIG_FIELDS = {
    "ID": "str", "Name": "str", "Image": "str", "Driver": "str", "Path": "str", "Args": "list",
    "Created": "str", "RestartCount": "int", "LogPath": "str", "State": "dict", "Config": "dict",
    "State.Running": "bool", "State.Pid": "int", "State.ExitCode": "int", "State.StartedAt": "str",
    "State.FinishedAt": "str", "State.OOMKilled": "bool", "State.Error": "str",
    "Config.Image": "str", "Config.Cmd": "list", "Config.Env": "list", "Config.Labels": "dict",
    "Config.User": "str", "Config.WorkingDir": "str", "Config.Hostname": "str",
    "Config.ExposedPorts": "dict", "NetworkSettings": "dict", "NetworkSettings.Ports": "dict",
    "NetworkSettings.Networks": "dict", "MountPoints": "dict",
}  # fmt: skip
HOSTCONFIG_FIELDS = {
    "Privileged": "bool", "CapAdd": "list", "CapDrop": "list", "NetworkMode": "str", "PidMode": "str",
    "IpcMode": "str", "SecurityOpt": "list", "LogConfig": "dict", "LogConfig.Type": "str",
    "RestartPolicy": "dict", "RestartPolicy.Name": "str", "PortBindings": "dict", "Tmpfs": "dict",
    "Devices": "list",
}  # fmt: skip
IMAGE_FIELDS = {
    "created": "str", "os": "str", "architecture": "str", "config": "dict", "config.Labels": "dict",
    "config.ExposedPorts": "dict", "config.Cmd": "list", "config.Env": "list", "history": "list",
    "rootfs": "dict", "rootfs.diff_ids": "list",
}  # fmt: skip
# null where the engine always writes an object is a problem too
REQUIRED = {"State", "Config"}
# a string stands for a one-item list in a command line (Go strslice)
ALSO_OK = {"Config.Cmd": ("str",), "config.Cmd": ("str",)}


# ---- the root ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(overlay2_root: Path, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("hostile") / "root"
    subprocess.run(["cp", "-a", str(overlay2_root), str(copy)], check=True)
    SAVED[:] = [copy.parent / "saved"]
    SAVED[0].mkdir()
    return copy


@pytest.fixture(scope="module")
def baseline(root: Path) -> dict:
    host = DockerHost(DirectoryEvidence(str(root)))
    cs = host.containers()
    images = host.images()
    return {
        "ids": {c.id for c in cs},
        "problems": {(p.source, p.message) for p in host.problems},
        "running": {c.id for c in cs if c.state in ("running", "paused", "restarting")},
        "images": [i.config_path for i in images if i.config_path],
    }


@contextmanager
def replaced(path: Path, make: Callable[[Path], None]) -> Iterator[None]:
    """PATH replaced by whatever MAKE puts there; the original kept outside the root meanwhile
    and put back afterwards."""
    saved = SAVED[0] / f"{path.parent.name}-{path.name}"
    os.rename(path, saved)
    try:
        make(path)
        yield
    finally:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        os.rename(saved, path)


def write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def inventory(root: Path) -> DockerHost:
    """Everything the inventory reads, in-process; any exception fails the case."""
    host = DockerHost(DirectoryEvidence(str(root)))
    with time_bound():
        host.containers()
        host.images()
        host.volumes()
    return host


def new_problems(host: DockerHost, baseline: dict) -> list:
    return [p for p in host.problems if (p.source, p.message) not in baseline["problems"]]


def _evidence_path(root: Path, path: Path) -> str:
    return "/" + str(path.relative_to(root))


def _set(doc: dict, dotted: str, value_json: str) -> str:
    """DOC (as JSON text) with the field at DOTTED set to VALUE_JSON (parents created)."""
    marker = "\u2603MARK\u2603"
    *parents, last = dotted.split(".")
    d = doc
    for key in parents:
        if not isinstance(d.get(key), dict):
            d[key] = {}
        d = d[key]
    d[last] = marker
    return json.dumps(doc).replace(json.dumps(marker), value_json)


def _mismatch(kind: str, want: str, field: str) -> bool:
    if kind == "null":
        return field in REQUIRED
    if kind == "huge":
        return True
    return kind != want and kind not in ALSO_OK.get(field, ())


# ---- the cases ----------------------------------------------------------------------------
def _cases() -> list[tuple[str, str, str, str]]:
    """(file kind, field, expected type, mutation type), a fixed sample of the whole product."""
    every = [
        (kind, f, want, t)
        for kind, fields in (
            ("config", CONFIG_FIELDS),
            ("hostconfig", HOSTCONFIG_FIELDS),
            ("image", IMAGE_FIELDS),
        )
        for f, want in fields.items()
        for t in TYPES
    ]
    rng = random.Random(15)
    sample = rng.sample(every, 200)
    # every kind's headline crashes are always in
    must = [("config", "RestartCount", "int", "huge"), ("config", "State", "dict", "list"),
            ("config", "State", "dict", "str"), ("config", "Config", "dict", "null"),
            ("config", "ID", "str", "int"), ("config", "Driver", "str", "bool"),
            ("config", "Image", "str", "list"), ("config", "Path", "str", "dict"),
            ("image", "config", "dict", "str"), ("image", "history", "list", "int"),
            ("image", "config.Labels", "dict", "list"),
            ("image", "config.ExposedPorts", "dict", "list")]  # fmt: skip
    return sorted(set(sample) | set(must))


CASES = _cases()


def _target(root: Path, baseline: dict, kind: str, index: int) -> tuple[Path, str | None]:
    """The file of KIND to mutate (a different container or image per case) and its subject."""
    ids = sorted(baseline["ids"] - baseline["running"]) or sorted(baseline["ids"])
    if kind == "image":
        paths = sorted(baseline["images"])
        return root / paths[index % len(paths)].lstrip("/"), None
    cid = ids[index % len(ids)]
    name = "config.v2.json" if kind == "config" else "hostconfig.json"
    return root / "containers" / cid / name, cid


@pytest.mark.parametrize(("kind", "field", "want", "mutation"), CASES, ids=["-".join(c) for c in CASES])
def test_type_mutation(root: Path, baseline: dict, kind: str, field: str, want: str, mutation: str) -> None:
    path, cid = _target(root, baseline, kind, CASES.index((kind, field, want, mutation)))
    original = json.loads(path.read_bytes())
    data = _set(original, field, TYPES[mutation]).encode()
    with replaced(path, write_bytes(data)):
        host = inventory(root)
        ids = {c.id for c in host.containers()}
        assert baseline["ids"] <= ids | ({cid} if field == "ID" else set()), "a container vanished"
        problems = new_problems(host, baseline)
        if _mismatch(mutation, want, field):
            where = _evidence_path(root, path)
            named = [p for p in problems if p.source == where and field.split(".")[-1] in p.message]
            assert named, (field, mutation, [p.message for p in problems])
            if cid is not None and field != "ID":
                c = host.container(cid)
                assert any(p.source == where for p in c.problems)  # on the record too


@pytest.mark.parametrize("kind", ["config", "hostconfig", "image", "repositories", "log", "opts"])
def test_nesting_bomb(root: Path, baseline: dict, kind: str) -> None:
    cid = sorted(baseline["ids"])[0]
    if kind in ("config", "hostconfig", "image"):
        path, _ = _target(root, baseline, kind, 0)
    elif kind == "repositories":
        path = root / "image" / "overlay2" / "repositories.json"
    elif kind == "opts":
        path = next(root.glob("volumes/*/opts.json"), root / "volumes" / "pvol" / "opts.json")
        if not path.exists():
            path.write_text("{}")
    else:
        path = next(root.glob("containers/*/*-json.log"))
        cid = path.parent.name
    with replaced(path, write_bytes(BOMB.encode() + b"\n")):
        host = inventory(root)
        assert baseline["ids"] <= {c.id for c in host.containers()}
        where = _evidence_path(root, path)
        if kind == "log":
            c = host.container(cid)
            problems: list = []
            ev = host.evidence
            with time_bound():
                list(
                    read_logs(
                        ev, c.id, log_files(ev, f"/containers/{c.id}", c.log_path, c.log_driver), problems
                    )
                )
            assert any(p.source == where and "nested" in p.message for p in problems)
        else:
            assert any(p.source == where and "nested" in p.message for p in new_problems(host, baseline))


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda p: os.symlink(target, p)


def _chain(length: int, other: str) -> Callable[[Path], None]:
    """A chain of LENGTH relative symlinks inside the root, ending at OTHER (a root path)."""

    def make(p: Path) -> None:
        root = p.parents[len(Path(other).parts) - 2]
        links = root / ".hostile-chain"
        links.mkdir(exist_ok=True)
        prev = os.path.relpath(root / other.lstrip("/"), links)
        for i in range(length):
            os.symlink(prev, links / f"{p.name}-{i}")
            prev = f"{p.name}-{i}"
        os.symlink(os.path.relpath(links / prev, p.parent), p)

    return make


def _forms(other: str) -> dict[str, Callable[[Path], None]]:
    """Every form a hostile entry takes; OTHER: the root path of the same entry of another
    container (a real target, reached through directories or a chain)."""
    return {
        "absolute-etc": _symlink("/etc"),
        "relative-climb": _symlink("../../../../../../.."),
        "outside-root": _symlink("/tmp"),
        "loop": lambda p: os.symlink(p.name, p),
        "long-chain": _chain(60, other),
        "through-dirs": _symlink("/containers/../image/../containers/" + other.split("/containers/", 1)[1]),
        "fifo": lambda p: os.mkfifo(p),
        "device": lambda p: os.mknod(p, 0o20600, os.makedev(1, 3)),
    }


FORMS = list(_forms("/containers/x"))


@pytest.mark.parametrize("what", ["containers/<id>", "config.v2.json", "hostconfig.json"])
@pytest.mark.parametrize("form", FORMS)
def test_not_a_plain_file(root: Path, baseline: dict, what: str, form: str) -> None:
    if what == "containers/<id>" and form in ("fifo", "device"):
        pytest.skip("a non-directory in containers/ is a stray file, not a container")
    ids = sorted(baseline["ids"])
    i = FORMS.index(form) % len(ids)
    cid, other_id = ids[i], ids[(i + 1) % len(ids)]
    cdir = root / "containers" / cid
    path = cdir if what == "containers/<id>" else cdir / what
    other = f"/containers/{other_id}" + ("" if what == "containers/<id>" else f"/{what}")
    try:
        with replaced(path, _forms(other)[form]):
            host = inventory(root)
            assert baseline["ids"] <= {c.id for c in host.containers()}
            c = host.container(cid)
            where = _evidence_path(root, path)
            assert any(p.source.startswith(where) for p in c.problems), [p.message for p in c.problems]
            assert any(p.source.startswith(where) for p in new_problems(host, baseline))
            if what == "containers/<id>":
                assert c.state == "unknown"
            if what == "hostconfig.json":
                assert c.state != "unknown"  # the rest of the record survives
    finally:
        shutil.rmtree(root / ".hostile-chain", ignore_errors=True)


def test_missing_hostconfig_is_a_problem(root: Path, baseline: dict) -> None:
    cid = sorted(baseline["ids"])[0]
    path = root / "containers" / cid / "hostconfig.json"
    with replaced(path, lambda p: None):
        host = inventory(root)
        c = host.container(cid)
        assert any(p.source.endswith("hostconfig.json") and "missing" in p.message for p in c.problems)


def test_daemon_json_bombs_and_types(tmp_path: Path) -> None:
    """A host root whose daemon.json (also a rootless user's) is hostile: a problem, no crash."""
    (tmp_path / "etc" / "docker").mkdir(parents=True)
    (tmp_path / "etc" / "docker" / "daemon.json").write_text(BOMB)
    user = tmp_path / "home" / "eve" / ".config" / "docker"
    user.mkdir(parents=True)
    (user / "daemon.json").write_text('{"data-root": ["/x"]}')
    data = tmp_path / "var" / "lib" / "docker"
    (data / "containers").mkdir(parents=True)
    (data / "image" / "overlay2").mkdir(parents=True)
    host = DockerHost(DirectoryEvidence(str(tmp_path)))
    sources = {p.source for p in host.problems}
    assert "/etc/docker/daemon.json" in sources
    assert "/home/eve/.config/docker/daemon.json" in sources
    assert host.containers() == []


@pytest.mark.parametrize("case", ["state-list", "config-null", "restart-huge", "symlinked-dir"])
def test_cli_exit_code_is_5_and_others_listed(root: Path, baseline: dict, case: str) -> None:
    cid = sorted(baseline["ids"])[1]
    cdir = root / "containers" / cid
    if case == "symlinked-dir":
        ctx = replaced(cdir, _symlink("/etc"))
    else:
        path = cdir / "config.v2.json"
        field, value = {"state-list": ("State", "[]"), "config-null": ("Config", "null"),
                        "restart-huge": ("RestartCount", "1e400")}[case]  # fmt: skip
        ctx = replaced(path, write_bytes(_set(json.loads(path.read_bytes()), field, value).encode()))
    with ctx:
        code, out, err = run_cli("containers", str(root), "--json")
    assert code == 5, err
    items = {i["id"]: i for i in json.loads(out)}
    assert baseline["ids"] <= set(items)
    assert items[cid]["problems"] and all({"source", "message"} <= set(p) for p in items[cid]["problems"])
    assert err.count(items[cid]["problems"][0]["message"]) == 1  # printed once
