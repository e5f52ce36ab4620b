"""Two real containers talking over a UNIX socket in a shared bind-mounted directory: ``live net``
names, at each end, the container at the other end.

A private rootful Podman (tests/live/private_podman.py: private graphroot/runroot, ``--network
none``, so each container has a network namespace of its own) runs two containers of a busybox
image whose /usr is the host's, bind-mounted read-only (the host's python3 runs inside: busybox has
no AF_UNIX client); a host directory is bind-mounted into both at /shared:

* ``ux-server`` listens on /shared/s.sock and accepts one connection;
* ``ux-client`` connects to it.

Both ends' sockets are in the CLIENT's namespace: the kernel makes the accepted socket in the
namespace of the socket that connects (net/unix/af_unix.c unix_stream_connect: ``unix_create1(net,
...)`` with ``net = sock_net(sk)``), while the server's pid holds it; the server's namespace has
only the listener.  So the server's end is attributed by its holder (the fd join), not by the
namespace it sits in, and each end's peer is found by sock_diag in the client's namespace (entered
with setns).  Checked against ``nsenter -t PID -n ss -xpanH`` in each
container's namespace and against ``podman inspect`` (ids, pids) and ``podman top`` (host pids).

Needs root, podman + conmon + runc, busybox-static and ss (skipped otherwise); about 20 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from private_containerd import static_busybox
from private_podman import PrivatePodman, missing_prerequisites
from test_live_dockerd import pensieve_cli
from test_unixdiag import ss_unix

pytestmark = pytest.mark.live

IMAGE = "localhost/pensieve/ux:1.0"
#: the python the containers run (only its standard library): the host's, under the /usr they get
PYTHON = next(
    (c for c in ("/usr/bin/python3", os.path.realpath(sys.executable)) if os.access(c, os.X_OK)), ""
)

SERVER = r"""
import os, socket, time
l = socket.socket(socket.AF_UNIX); l.bind("/shared/s.sock"); l.listen(1)
s, _ = l.accept()
open("/shared/accepted", "w").write(str(os.fstat(s.fileno()).st_ino))
time.sleep(100000)
"""
CLIENT = r"""
import os, socket, time
while not os.path.exists("/shared/s.sock"): time.sleep(0.05)
c = socket.socket(socket.AF_UNIX); c.connect("/shared/s.sock")
open("/shared/connected", "w").write(str(os.fstat(c.fileno()).st_ino))
time.sleep(100000)
"""


@pytest.fixture(scope="module")
def pair():
    why = missing_prerequisites() or (None if static_busybox() else "busybox-static is not installed")
    why = why or (None if shutil.which("ss") else "ss (iproute2) is not installed")
    if not why and not PYTHON.startswith("/usr/"):
        why = "no python3 under /usr (the containers get the host's /usr)"
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="plux.", dir="/tmp"))
    tmp.chmod(0o755)
    p = PrivatePodman(tmp)
    try:
        p.setup()
        root = tmp / "rootfs"
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "busybox").write_bytes(Path(static_busybox()).read_bytes())
        (root / "bin" / "busybox").chmod(0o755)
        for applet in ("sh", "sleep"):
            (root / "bin" / applet).symlink_to("busybox")
        for d in ("usr", "etc", "tmp", "shared"):
            (root / d).mkdir()
        for link in ("lib", "lib64", "sbin"):
            (root / link).symlink_to(f"usr/{link}")
        tar = tmp / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tar), "."], check=True)
        p.run("import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE)
        shared = tmp / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        mounts = ["-v", "/usr:/usr:ro", "-v", f"{shared}:/shared"]
        for name, script in (("ux-server", SERVER), ("ux-client", CLIENT)):
            p.run("run", "-d", "--name", name, *p.container_flags(), *mounts, IMAGE, PYTHON, "-c", script)
        deadline = time.monotonic() + 30
        while not ((shared / "accepted").exists() and (shared / "connected").exists()):
            if time.monotonic() > deadline:
                logs = {n: p.run("logs", n, check=False).stderr for n in ("ux-server", "ux-client")}
                pytest.fail(f"the containers never connected: {logs}")
            time.sleep(0.1)
        time.sleep(0.2)  # the files are written; their contents too
        yield p, int((shared / "accepted").read_text()), int((shared / "connected").read_text())
    finally:
        problems = p.teardown()
        assert not problems, problems


def _top(p: PrivatePodman, name: str) -> set[int]:
    lines = p.run("top", name, "hpid").stdout.splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.strip()}


def test_each_end_names_the_other_container(pair):
    p, accepted, connected = pair
    server, client = (p.json("container", "inspect", n)[0] for n in ("ux-server", "ux-client"))
    spid, cpid = server["State"]["Pid"], client["State"]["Pid"]
    assert os.stat(f"/proc/{spid}/ns/net").st_ino != os.stat(f"/proc/{cpid}/ns/net").st_ino
    assert _top(p, "ux-server") == {spid} and _top(p, "ux-client") == {cpid}
    res = json.loads(pensieve_cli("live", "net", "--root", str(p.evidence), "--json", ok=(0, 5)))
    by_inode = {r["inode"]: r for r in res if r["protocol"] == "unix"}
    srv, cli = by_inode[accepted], by_inode[connected]
    assert (srv["container_id"], srv["container_name"], srv["pids"]) == (server["Id"], "ux-server", [spid])
    assert (cli["container_id"], cli["container_name"], cli["pids"]) == (client["Id"], "ux-client", [cpid])
    server_ns, client_ns = (os.stat(f"/proc/{pid}/ns/net").st_ino for pid in (spid, cpid))
    assert srv["netns"] == cli["netns"] == client_ns  # the accepted socket: the connector's namespace
    # each end names the other
    assert (srv["peer_inode"], srv["peer_pids"]) == (connected, [cpid])
    assert (srv["peer_container_id"], srv["peer_container_name"]) == (client["Id"], "ux-client")
    assert (cli["peer_inode"], cli["peer_pids"]) == (accepted, [spid])
    assert (cli["peer_container_id"], cli["peer_container_name"]) == (server["Id"], "ux-server")
    assert srv["peer_fds"] == [f"{cpid}:{cli['fds'][0].split(':')[1]}"]
    listener = next(r for r in res if r["protocol"] == "unix" and r["local"] == "/shared/s.sock")
    assert listener["state"] == "LISTEN" and listener["peer_inode"] is None
    assert listener["container_name"] == "ux-server" and listener["netns"] == server_ns
    # ss inside each container's namespace: the same peers and holders
    for pid in (spid, cpid):
        theirs = ss_unix(pid)
        ours = {i: r for i, r in by_inode.items() if r["netns"] == os.stat(f"/proc/{pid}/ns/net").st_ino}
        assert {i: r["peer_inode"] or 0 for i, r in ours.items()} == {i: v[0] for i, v in theirs.items()}
        assert {i: {tuple(map(int, f.split(":"))) for f in r["fds"]} for i, r in ours.items()} == {
            i: v[1] for i, v in theirs.items()
        }
    # one container asked for: its socket still names the other end
    one = json.loads(
        pensieve_cli("live", "net", "--root", str(p.evidence), "-c", "ux-client", "--json", ok=(0, 5))
    )
    mine = next(r for r in one if r["inode"] == connected)
    assert mine["peer_container_name"] == "ux-server" and {r["container_name"] for r in one} == {"ux-client"}
    # the server's end sits in the client's namespace: still listed for the server alone
    theirs = json.loads(
        pensieve_cli("live", "net", "--root", str(p.evidence), "-c", "ux-server", "--json", ok=(0, 5))
    )
    assert {r["inode"] for r in theirs if r["protocol"] == "unix"} == {accepted, listener["inode"]}
    assert next(r for r in theirs if r["inode"] == accepted)["peer_container_name"] == "ux-client"
    table = pensieve_cli("live", "net", "--root", str(p.evidence), "-c", "ux-server", ok=(0, 5))
    assert f"*{connected}" in table and "ux-client" in table
