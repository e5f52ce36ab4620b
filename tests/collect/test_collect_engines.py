"""``pensieve collect`` of Podman and containerd containers on the captured roots (Podman 4.3's
graphroot, Podman 5's sqlite store, rootless Podman 4.3 and 5.8 host trees, containerd 1.6's
root): each container's bundle verifies and, as a SOURCE, gives that container's record and diff
as the root does; the evidence is left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, run_cli, tree_digest, unpack
from test_collect import _settled_digest

from pensieve import api
from pensieve.collect import collect

NOPROC = "/nonexistent-proc"
ROOTS = {
    "podman4.3": ("podman/podman-4.3-root.tar.xz", "storage"),
    "podman5": ("podman5/podman-5-storage.tar.xz", ""),
    "containerd1.6": ("containerd/containerd-1.6-root.tar.xz", ""),
    "podman4.3-rootless": ("podman-rootless/podman-4.3-rootless-root.tar.xz", ""),
    "podman5.8-rootless": ("podman-rootless/podman-5.8-rootless-root.tar.xz", ""),
}


@pytest.fixture(scope="module", params=sorted(ROOTS))
def root(request, tmp_path_factory) -> Path:
    tarball, below = ROOTS[request.param]
    base = unpack(FIXTURE_ROOT / tarball, tmp_path_factory.mktemp(request.param))
    return base / below if below else base


def not_collected(bundle_err: str, root_err: str) -> bool:
    """The bundle adds no warning to the root's."""
    return not set(bundle_err.splitlines()) - set(root_err.splitlines())


def _record(source: Path, cid: str) -> dict:
    rows = json.loads(run_cli("containers", source, "--json")[1])
    return next(r for r in rows if r["id"] == cid)


def test_every_container_collected_reads_as_the_root(root, tmp_path):
    before = _settled_digest(root)
    cids = [c.id for c in api.open_host(str(root)).containers() if c.layers]
    assert cids
    for cid in cids:
        out = tmp_path / cid[:12]
        result = collect(cid, str(out), roots=[str(root)], proc=NOPROC, argv=["pensieve", "collect"])
        assert [b["id"] for b in result.bundles] == [cid]
        doc = json.loads((out / "manifest.json").read_text())
        assert doc["engine"] in ("podman", "containerd") and doc["layers"], doc
        assert all(x["tar"] for x in doc["layers"]), doc["layers"]
        assert run_cli("collect", "verify", out)[0] == 0
        assert _record(out, cid) == _record(root, cid)
        a, b = run_cli("diff", out, cid, "--json"), run_cli("diff", root, cid, "--json")
        assert json.loads(a[1]) == json.loads(b[1])
        # the bundle warns of nothing the root does not: other containers' parts, left out on
        # purpose, are not "missing" (Evidence.not_collected)
        assert a[0] == b[0] and not_collected(a[2], b[2]), (a[2], b[2])
        if doc["image_archive"]:
            code, _, err = run_cli("verify", out / "image.tar")
            assert code == 0, err
    assert tree_digest(root) == before, "collect changed the evidence"


# ---- CRI logs ---------------------------------------------------------------------------------
CRI_FIX = FIXTURE_ROOT / "containerd2" / "containerd-2.1-root.tar.xz"


def _log_lines(source: Path, ref: str) -> list[dict]:
    code, out, err = run_cli("logs", source, ref, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()] if out.lstrip()[:1] != "[" else json.loads(out)


@pytest.fixture(scope="module")
def cri_root(tmp_path_factory) -> Path:
    """The real containerd 2.1 capture (a CRI pod, logs/pods/ as the kubelet's /var/log/pods)."""
    return unpack(CRI_FIX, tmp_path_factory.mktemp("cri-logs"))


def test_cri_logs_are_collected_with_the_container(cri_root, tmp_path):
    before = _settled_digest(cri_root)
    pods = list((cri_root / "logs" / "pods").iterdir())
    assert len(pods) == 1
    for name in ("app", "migrate"):
        ref = f"shop/web/{name}"
        out = tmp_path / name
        cid = next(c.id for c in api.open_host(str(cri_root)).containers()
                   if c.k8s_container == name and (name == "app" or c.attempt == 1))  # fmt: skip
        collect(cid, str(out), roots=[str(cri_root)], proc=NOPROC, argv=["pensieve", "collect"])
        attempt = 1 if name == "migrate" else 0
        want = sorted(str(p.relative_to(cri_root)) for p in (pods[0] / name).glob(f"{attempt}.log*"))
        assert want, name
        copied = sorted(str(p.relative_to(out)) for p in out.rglob("*.log*") if p.is_file())
        assert [w for w in want if not any(c.endswith(w) for c in copied)] == [], (want, copied)
        assert run_cli("collect", "verify", out)[0] == 0
        ours, theirs = _log_lines(out, cid), _log_lines(cri_root, cid)
        assert theirs and ours == theirs, (ref, ours, theirs)
    assert _settled_digest(cri_root) == before, "collect changed the evidence"
