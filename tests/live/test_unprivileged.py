"""``live ps`` and ``live net`` run as nobody (``setpriv --reuid nobody --regid nogroup
--clear-groups``), beside the same commands as root, on real processes:

* a root-owned holder (python: a TCP listener on 127.0.0.1 and a unix socketpair, in the host's
  network namespace) and a nobody-owned one (the same, started through setpriv);
* unprivileged, both commands exit 5 with valid JSON; ``live ps`` still lists the root holder
  (stat, status, cmdline and cgroup are world-readable) without its executable hash or
  namespaces, and its record names each refused read (``/proc/PID/exe``, ``/proc/PID/ns``); the
  run's warnings name the refused files once with their counts;
* ``live net``: the host namespace's sockets are read through the reader's own pid, so the root
  holder's listener is listed but not joined to it (its ``fd`` refused), the nobody holder's
  sockets are joined to it with their unix peers (sock_diag in the reader's own namespace needs
  no privilege); the warnings name ``ns/net`` and ``fd`` with the refused pids; as root the same
  listener is joined to the root holder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)"
)

NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
SRC = str(Path(__file__).resolve().parents[2] / "src")

HOLDER = r"""
import os, socket, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
a, b = socket.socketpair()
print(l.getsockname()[1], os.fstat(l.fileno()).st_ino, os.fstat(a.fileno()).st_ino,
      os.fstat(b.fileno()).st_ino, flush=True)
time.sleep(120)
"""


def _holder(*prefix: str) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True, cwd="/"
    )
    line = proc.stdout.readline()
    assert line, "the holder did not start"
    return proc, [int(x) for x in line.split()]


def _pensieve(*args: str, user: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [*user, sys.executable, "-m", "pensieve.cli", *args, "--root", "/none", "--json"],
        capture_output=True, text=True, timeout=300, cwd="/", env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def holders():
    root, root_ids = _holder()
    nobody, nobody_ids = _holder(*NOBODY)
    try:
        yield (root.pid, root_ids), (nobody.pid, nobody_ids)
    finally:
        for p in (root, nobody):
            p.kill()
            p.wait(10)


def test_live_ps_as_nobody(holders):
    (rpid, _), (npid, _) = holders
    res = _pensieve("live", "ps", user=NOBODY)
    assert res.returncode == 5, res.stderr
    rows = {r["pid"]: r for r in json.loads(res.stdout)}
    theirs, mine = rows[rpid], rows[npid]
    assert theirs["cmdline"][-2] == "-c" and theirs["uids"][0] == 0  # world-readable parts
    assert theirs["exe_sha256"] is None and theirs["namespaces"] == {}
    refused = {p["source"]: p["message"] for p in theirs["problems"]}
    assert refused == {f"/proc/{rpid}/exe": "permission denied", f"/proc/{rpid}/ns": "permission denied"}
    assert mine["namespaces"] and mine["uids"][0] == 65534
    assert mine["exe"] == os.path.realpath(sys.executable)  # its own exe link: readable
    said = [line for line in res.stderr.splitlines() if "not root" in line]
    assert len(said) == 1 and "exe of " in said[0] and "ns of " in said[0], res.stderr
    # as root, the same process in full
    full = {r["pid"]: r for r in json.loads(_pensieve("live", "ps", user=[]).stdout)}
    assert full[rpid]["exe_sha256"] and full[rpid]["namespaces"] and not full[rpid]["problems"]


def test_live_net_as_nobody(holders):
    (rpid, (rport, rlisten, _, _)), (npid, (nport, nlisten, na, nb)) = holders
    res = _pensieve("live", "net", user=NOBODY)
    assert res.returncode == 5, res.stderr
    rows = {r["inode"]: r for r in json.loads(res.stdout)}
    theirs = rows[rlisten]
    assert (theirs["state"], theirs["local_port"], theirs["pids"]) == ("LISTEN", rport, [])
    assert rows[nlisten]["pids"] == [npid] and rows[nlisten]["local_port"] == nport
    assert (rows[na]["peer_inode"], rows[na]["peer_pids"]) == (nb, [npid])
    assert (rows[nb]["peer_inode"], rows[nb]["peer_pids"]) == (na, [npid])
    said = [line for line in res.stderr.splitlines() if "not root" in line]
    ns = next(line for line in said if "ns/net of " in line)
    fd = next((line for line in said if " fd of " in line), None)
    assert "pids 1, 2" in ns and int(ns.split("ns/net of ")[1].split()[0]) >= 2, ns
    # the root holder's fd denied: either its ns/net was refused first (then it is not placed)
    assert fd is None or "their sockets not joined" in fd
    as_root = {r["inode"]: r for r in json.loads(_pensieve("live", "net", user=[]).stdout)}
    assert as_root[rlisten]["pids"] == [rpid]
