"""Engine discovery: where containerd roots are looked for, what Host comes back, and how a
MultiHost combines several engines (listing, ref resolution, the moby-namespace twins)."""

from __future__ import annotations

import json
import posixpath
import shutil

import pytest
from conftest import FIXTURE_ROOT, FIXTURES, run_cli, unpack

from pensieve.engines.base import Host
from pensieve.engines.containerd.host import ContainerdHost
from pensieve.engines.containerd.metadata import META_DB
from pensieve.engines.discover import (
    CONTAINERD_PLACES,
    MultiHost,
    find_containerd_roots,
    open_engines,
    root_rows,
)
from pensieve.engines.docker import DockerHost
from pensieve.errors import LookupFailed, NotADataRoot
from pensieve.evidence import DirectoryEvidence
from pensieve.records import Container, Image, Problem


def plant_root(base, path: str) -> None:
    """A directory holding a (here empty) meta.db: enough to be found as a containerd root."""
    db = base / path.lstrip("/") / META_DB
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")


@pytest.mark.parametrize(("root", "state", "how"), CONTAINERD_PLACES)
def test_each_distribution_place(tmp_path, root, state, how):
    plant_root(tmp_path, root)
    assert find_containerd_roots(DirectoryEvidence(str(tmp_path)), [], []) == [(root, state, how)]


def test_config_toml_root_and_state(tmp_path):
    plant_root(tmp_path, "/data/ctr")
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text(
        'version = 2\nroot = "/data/ctr"\nstate = "/x/run"\n'
    )
    found = find_containerd_roots(DirectoryEvidence(str(tmp_path)), [], [])
    assert found == [("/data/ctr", "/x/run", "root in /etc/containerd/config.toml")]


def test_bad_config_toml_is_a_problem(tmp_path):
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text("root = [unterminated\n")
    problems: list[Problem] = []
    assert find_containerd_roots(DirectoryEvidence(str(tmp_path)), [], problems) == []
    assert problems and problems[0].source == "/etc/containerd/config.toml"


def test_docker_containerd_image_store(tmp_path):
    plant_root(tmp_path, "/srv/docker/containerd/daemon")
    found = find_containerd_roots(DirectoryEvidence(str(tmp_path)), ["/srv/docker"], [])
    assert [f[0] for f in found] == ["/srv/docker/containerd/daemon"]
    assert found[0][1] == "/run/docker/containerd/daemon"


def test_source_is_a_root(tmp_path):
    plant_root(tmp_path, "/")
    assert find_containerd_roots(DirectoryEvidence(str(tmp_path)), [], []) == [
        ("/", None, "source is a containerd root")
    ]


def test_nothing_found(tmp_path):
    with pytest.raises(NotADataRoot, match="containerd"):
        open_engines(DirectoryEvidence(str(tmp_path)))


def test_docker_only_is_a_plain_docker_host(overlay2_root):
    ev = DirectoryEvidence(str(overlay2_root))
    host = open_engines(ev)
    assert type(host) is DockerHost
    assert [c.id for c in host.containers()] == [c.id for c in DockerHost(ev).containers()]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The Docker overlay2 capture at /var/lib/docker and the containerd capture at /root."""
    base = tmp_path_factory.mktemp("both")
    unpack(FIXTURE_ROOT / "containerd" / "containerd-1.6-root.tar.xz", base)
    unpack(FIXTURES / "overlay2-root.tar.gz", base / "var/lib/docker")
    return base


def test_docker_and_containerd_together(both):
    host = open_engines(DirectoryEvidence(str(both)))
    assert isinstance(host, MultiHost)
    assert [h.engine for h in host.hosts] == ["docker", "containerd"]
    code, out, err = run_cli("containers", both, "--json")
    assert code in (0, 5), err
    engines = {c["engine"] for c in json.loads(out)}
    assert engines == {"docker", "containerd"}
    ctr = next(h for h in host.hosts if h.engine == "containerd")
    docker = next(h for h in host.hosts if h.engine == "docker")
    assert len(host.containers()) == len(ctr.containers()) + len(docker.containers())
    assert len(host.images()) == len(ctr.images()) + len(docker.images())
    # refs resolve across engines; a containerd ref works as on the root alone
    assert host.container("k8s.io/app-0").engine == "containerd"
    some = docker.containers()[0]
    assert host.container(some.id).engine == "docker"
    img = host.image("default/docker.io/pensieve/busybox-app:1.0")
    assert host.image_layers(img) == ctr.image_layers(img)
    assert set(host.boundaries()) >= set(docker.boundaries()) | set(ctr.boundaries())
    # whence goes to the engine whose root holds the path
    top = host.container("k8s.io/app-0").layers[-1].path
    assert host.whence(posixpath.join(top, "root/evidence.txt")).containers == ["app-0"]
    code, out, err = run_cli("diff", both, "default/web", "--json")
    assert code in (0, 5), err
    assert "/root/evidence.txt" in {c["path"] for c in json.loads(out)}


class FakeHost(Host):
    """A host answering from fixed lists (records only)."""

    def __init__(self, engine: str, containers: list[Container], images: list[Image] | None = None) -> None:
        self.engine = engine
        self.evidence = DirectoryEvidence("/")
        self.problems = [Problem(f"/{engine}", "something")]
        self._containers = containers
        self._images = images or []

    def containers(self):
        return self._containers

    def container(self, ref):
        found = [c for c in self._containers if ref in (c.id, c.name)]
        if not found:
            raise LookupFailed(f"no container {ref}")
        return found[0]

    def images(self):
        return self._images

    def image(self, ref):
        found = [i for i in self._images if ref in i.tags]
        if not found:
            raise LookupFailed(f"no image {ref}")
        return found[0]

    def image_layers(self, image):
        return []


def test_moby_twins_listed_once_and_ambiguity_names_candidates():
    cid = "a" * 64
    docker = FakeHost("docker", [Container(id=cid, engine="docker", name="web")])
    ctr = FakeHost(
        "containerd",
        [
            Container(id=cid, engine="containerd", namespace="moby"),
            Container(id="web", engine="containerd", namespace="default", name="web"),
        ],
    )
    multi = MultiHost(DirectoryEvidence("/"), [docker, ctr])
    assert [(c.engine, c.id) for c in multi.containers()] == [("docker", cid), ("containerd", "web")]
    assert multi.container(cid).engine == "docker"  # its moby twin is not a second match
    with pytest.raises(LookupFailed, match=r"ambiguous.*docker:aaaaaaaaaaaa.*containerd:default/web"):
        multi.container("web")
    with pytest.raises(LookupFailed, match="no container"):
        multi.container("nope")
    # problems: every engine's, and what callers add lands in the union
    multi.problems.append(Problem("/x", "added"))
    assert [p.source for p in multi.problems] == ["/x", "/docker", "/containerd"]


def test_lone_containerd_root_is_a_containerd_host(tmp_path_factory):
    base = unpack(FIXTURE_ROOT / "containerd" / "containerd-1.6-root.tar.xz", tmp_path_factory.mktemp("lone"))
    host = open_engines(DirectoryEvidence(str(base)))
    assert isinstance(host, ContainerdHost)
    assert (host.root, host.state) == ("/root", "/state")


def test_mixed_docker_root_lists_both_stores(tmp_path):
    """A v2 data root switched to the containerd snapshotter: the classic store (image/overlay2,
    20.10 capture) and the containerd store (containerd/daemon, Docker 28 capture) side by side.
    Both stores' images and containers are listed by the one DockerHost, each image's namespace
    saying which store (moby: containerd's), and every container's layers resolve in its own."""
    from conftest import FIXTURE_ROOT

    root = unpack(FIXTURES / "overlay2-root.tar.gz", tmp_path / "root")
    d28 = unpack(FIXTURE_ROOT / "docker-ctrd-store" / "docker-28-data.tar.xz", tmp_path / "d28") / "data"
    shutil.rmtree(root / "containerd")  # the 20.10 daemon's own containerd: task records only
    (d28 / "containerd").rename(root / "containerd")
    for c in (d28 / "containers").iterdir():
        c.rename(root / "containers" / c.name)
    host = open_engines(DirectoryEvidence(str(root)))
    assert isinstance(host, DockerHost)  # the store's containerd is not a second engine
    rows = root_rows(host)
    assert [r["layout"] for r in rows] == ["v2 + containerd image store"]
    by_store = {(i.namespace, t) for i in host.images() for t in i.tags}
    assert {(None, "pensieve/app:2"), ("moby", "pensieve/app:1.0"), ("moby", "pensieve/base:1.0")} <= by_store
    web, job = host.container("web"), host.container("job")
    assert web.namespace == "moby" and [x.role for x in web.layers][-1] == "rw"
    assert all(x.path for x in web.layers + job.layers)
    classic = host.container("c-modified")
    assert classic.namespace is None and classic.layers[-1].path.startswith("/overlay2/")
    assert not [p for p in host.problems if "mount-id missing" in p.message]
