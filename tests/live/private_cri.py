"""A miniature Kubernetes node for the live tests (no pytest in here): Debian's containerd with its
CRI plugin on, on private paths (tests/live/private_containerd.py), driven over its CRI socket by
fixtures/capture/cri_client.py playing the kubelet.

The CRI client needs the Python modules compiled from the CRI ``api.proto`` and a Python with
grpcio: fixtures/capture/sid_tree.sh makes both (``cri-py`` and ``grpc-venv`` below its tree,
default /var/tmp/pensieve-sid; PENSIEVE_CRI_PY / PENSIEVE_GRPC_PY point elsewhere).  The pod
sandbox ("pause") image and the app image are built locally from busybox-static and imported: no
registry is reached.  Pods run with host networking (no CNI here); the kubelet's log directory
(``/var/log/pods``) is ``ev/var/log/pods`` below the temp dir, beside containerd's ``ev/root``
and ``ev/state``, so ``ev`` reads as a node's tree.

Config facts: containerd 1.6's CRI plugin configuration (docs/cri/config.md, config version 2:
``sandbox_image``, ``cni.conf_dir``, ``containerd.runtimes.runc.options.Root``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from private_containerd import PrivateContainerd

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "fixtures" / "capture"
SID_DIR = Path(os.environ.get("PENSIEVE_SID_DIR", "/var/tmp/pensieve-sid"))
CRI_PY = Path(os.environ.get("PENSIEVE_CRI_PY", SID_DIR / "cri-py"))
GRPC_PY = Path(os.environ.get("PENSIEVE_GRPC_PY", SID_DIR / "grpc-venv" / "bin" / "python"))
APP_IMAGE = "docker.io/pensieve/busybox-app:1.0"
PAUSE_IMAGE = "docker.io/pensieve/pause:1.0"


def missing_cri() -> str | None:
    """Why the CRI client cannot run here, or None."""
    if not (CRI_PY / "api_pb2.py").is_file():
        return f"no compiled CRI api at {CRI_PY} (fixtures/capture/sid_tree.sh makes it)"
    if not GRPC_PY.is_file():
        return f"no Python with grpcio at {GRPC_PY} (fixtures/capture/sid_tree.sh makes it)"
    return None


class PrivateCri(PrivateContainerd):
    """A PrivateContainerd with the CRI plugin on, and the kubelet's part played by cri_client."""

    @property
    def pod_logs(self) -> Path:
        return self.evidence / "var" / "log" / "pods"

    def config_text(self) -> str:
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        return (
            "version = 2\n"
            f'root = "{self.root}"\nstate = "{self.state}"\n'
            f'[grpc]\n  address = "{self.sock}"\n'
            f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.tmp}/opt"\n'
            f"{cri}]\n"
            f'  sandbox_image = "{PAUSE_IMAGE}"\n'
            "  disable_tcp_service = true\n"
            '  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
            "  restrict_oom_score_adj = true\n"
            "  enable_selinux = false\n"
            f"{cri}.cni]\n"
            f'  bin_dir = "{self.tmp}/cni/bin"\n  conf_dir = "{self.tmp}/cni/net.d"\n'
            f'{cri}.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
            f"{cri}.containerd.runtimes.runc.options]\n"
            f'  Root = "{self.tmp}/runc"\n'
        )

    def start(self, timeout: float = 30) -> None:
        for d in (self.tmp / "cni" / "bin", self.tmp / "cni" / "net.d", self.pod_logs):
            d.mkdir(parents=True, exist_ok=True)
        super().start(timeout)

    def import_images(self, busybox: str) -> None:
        """Build the app and the pause image from BUSYBOX and import both into ``k8s.io``."""
        for script, name, image in (("containerd_image.py", "app.tar", APP_IMAGE),
                                    ("cri_pause_image.py", "pause.tar", PAUSE_IMAGE)):  # fmt: skip
            tar = self.tmp / name
            subprocess.run([sys.executable, str(CAPTURE / script), busybox, str(tar), image],
                           check=True, capture_output=True, timeout=120)  # fmt: skip
            self.ctr("images", "import", str(tar), ns="k8s.io")

    def cri(self, *args: str, timeout: float = 180) -> str:
        """``cri_client.py ARGS`` against our socket (its standard output)."""
        env = {**os.environ, "CRI_PY": str(CRI_PY)}
        res = subprocess.run([str(GRPC_PY), str(CAPTURE / "cri_client.py"), *args], capture_output=True,
                             text=True, timeout=timeout, env=env)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"cri_client {' '.join(args[:1])} -> {res.returncode}\n{res.stderr}\n"
                               f"--- containerd log ---\n{self.log_tail()}")  # fmt: skip
        return res.stdout

    def pods(self) -> str:
        """The capture's pod shop/web (app running; migrate exited, restarted, exited): its sandbox id."""
        return self.cri("pods", str(self.sock), str(self.pod_logs), f"/{self.cgroup_parent}/pod-web").strip()

    def record(self, out: Path) -> None:
        """The CRI's own answers (ListContainers, ContainerStatus, ...) as JSON into OUT."""
        self.cri("record", str(self.sock), str(out))


def which_all(*names: str) -> str | None:
    """The first of NAMES not on PATH, or None."""
    return next((n for n in names if shutil.which(n) is None), None)
