"""The spool budget, and compression bombs under a resource limit.

Bombs are generated here, streaming (nothing decompressed is ever held): a gzip member of zeros
built from one full-flush deflate piece repeated (RFC 1951 stored alignment after Z_FULL_FLUSH),
and a zstd frame of 128 KiB RLE blocks (RFC 8878 3.1.1.2: 4 bytes each) -- 2 MiB of gzip
claiming 2 GiB, 96 KiB of zstd claiming 3 GiB, the shapes of the issue.  They sit in a docker
save archive, an OCI archive and a checkpoint archive; the CLI runs in a subprocess with its
address space limited to 1 GiB and a small spool budget (``PENSIEVE_MAX_SPOOL``), each file it
writes limited to the budget, and the spools it holds in the temp dir sampled while it runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path

import pytest
import zstandard
from conftest import FIXTURE_ROOT

from pensieve.evidence import spool
from pensieve.evidence.tar import TarEvidence

GIB = 1 << 30
BUDGET = 64 << 20
GZIP_CLAIM = 2 * GIB
ZSTD_CLAIM = 3 * GIB
SRC = Path(__file__).resolve().parents[2] / "src"


# ---- bombs --------------------------------------------------------------------------------------


def gzip_bomb(fh, total: int, chunk: int = 16 << 20) -> None:
    """A gzip member of TOTAL zero bytes, written to FH without holding them."""
    zeros = bytes(chunk)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)  # gzip header + the first piece
    again = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)  # every later piece is this one
    n = total // chunk
    fh.write(first)
    for _ in range(n - 1):
        fh.write(again)
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(zeros, crc)
    fh.write(b"\x03\x00" + struct.pack("<II", crc, (n * chunk) & 0xFFFFFFFF))  # empty final block


def zstd_bomb(total: int) -> bytes:
    """A zstd frame of TOTAL zero bytes: 128 KiB RLE blocks, 4 bytes each."""
    block = 128 << 10
    n = total // block
    rle = (1 << 1 | block << 3).to_bytes(3, "little") + b"\0"
    last = (1 | 1 << 1 | block << 3).to_bytes(3, "little") + b"\0"
    return b"\x28\xb5\x2f\xfd" + bytes([0x00, 7 << 3]) + rle * (n - 1) + last  # window 128 KiB


def zeros_digest(total: int) -> str:
    h, zeros = hashlib.sha256(), bytes(16 << 20)
    for _ in range(total // len(zeros)):
        h.update(zeros)
    return "sha256:" + h.hexdigest()


def small_layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("etc/hello", b"hello\n"), ("srv/www/index.html", b"<p>hi</p>\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _config(diff_ids: list[str]) -> bytes:
    history = [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(diff_ids))]
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
    ).encode()


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    good = small_layer()
    good_id = "sha256:" + hashlib.sha256(good).hexdigest()
    gz = d / "gzip-bomb"
    with open(gz, "wb") as fh:
        gzip_bomb(fh, GZIP_CLAIM)
    zst = zstd_bomb(ZSTD_CLAIM)
    out = {}
    # docker save: a plain layer and a gzip layer (docker load takes compressed layer.tar too)
    cfg = _config([good_id, zeros_digest(GZIP_CLAIM)])
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    with tarfile.open(d / "save.tar", "w") as tf:
        _add(tf, cfg_name, cfg)
        _add(tf, "a" * 64 + "/layer.tar", good)
        tf.add(gz, "b" * 64 + "/layer.tar")
        manifest = [
            {
                "Config": cfg_name,
                "RepoTags": ["bomb:gzip"],
                "Layers": ["a" * 64 + "/layer.tar", "b" * 64 + "/layer.tar"],
            }
        ]
        _add(tf, "manifest.json", json.dumps(manifest).encode())
    out["save"] = d / "save.tar"
    # OCI archive: a gzip layer and a zstd layer
    good_gz = zlib.compress(good, 6, wbits=31)
    cfg = _config([good_id, zeros_digest(ZSTD_CLAIM)])
    blobs = {hashlib.sha256(b).hexdigest(): b for b in (good_gz, zst, cfg)}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + hashlib.sha256(cfg).hexdigest(),
            "size": len(cfg),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + hashlib.sha256(b).hexdigest(),
                "size": len(b),
            }
            for b in (good_gz, zst)
        ],
    }
    raw = json.dumps(manifest).encode()
    blobs[hashlib.sha256(raw).hexdigest()] = raw
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + hashlib.sha256(raw).hexdigest(),
                "size": len(raw),
                "annotations": {"org.opencontainers.image.ref.name": "bomb:zstd"},
            }
        ],
    }
    with tarfile.open(d / "oci.tar", "w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tf, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            _add(tf, f"blobs/sha256/{digest}", data)
    out["oci"] = d / "oci.tar"
    # a checkpoint archive (zstd) whose last member inflates past any budget
    plain = (
        zstandard.ZstdDecompressor()
        .stream_reader(
            open(FIXTURE_ROOT / "criu-containers" / "podman-after.tar.zst", "rb")  # noqa: SIM115
        )
        .read()
    )
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        last = tf.getmembers()[-1]
        end = last.offset_data + (last.size + 511) // 512 * 512
    info = tarfile.TarInfo("checkpoint/pages-99.img")
    info.size = ZSTD_CLAIM - 4096
    head = plain[:end] + info.tobuf(tarfile.GNU_FORMAT)
    (d / "ck.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(head) + zst)
    out["checkpoint"] = d / "ck.tar.zst"
    return out


# ---- running the CLI under limits --------------------------------------------------------------


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (GIB, GIB))
    resource.setrlimit(resource.RLIMIT_FSIZE, (BUDGET + (1 << 20), BUDGET + (1 << 20)))


def _spooled(pid: int, tmpdir: str) -> int:
    """Bytes in PID's open files under TMPDIR (the spools, unlinked but open)."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(tmpdir):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
    return total


def run_limited(tmp_path: Path, *args: str) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, most bytes seen spooled) of the CLI under the limits."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir), PENSIEVE_MAX_SPOOL=str(BUDGET), PYTHONPATH=str(SRC))
    code = "import sys; from pensieve.cli import main; sys.exit(main())"
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limits,  # noqa: PLW1509 - no threads in the test runner at this point
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _spooled(proc.pid, str(tmpdir)))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        done.set()
        sampler.join()
    assert list(tmpdir.iterdir()) == []  # nothing left behind
    return proc.returncode, out, err, peak[0]


def _check(code: int, err: str, peak: int, layer: str) -> None:
    assert code == 5, err
    assert "Traceback" not in err and "MemoryError" not in err
    assert "too large to spool" in err and layer in err, err
    assert peak <= BUDGET


def test_images_and_fs_ls_on_a_docker_save_with_a_gzip_bomb(bombs, tmp_path):
    layer = "b" * 64 + "/layer.tar"
    code, out, err, peak = run_limited(tmp_path, "images", str(bombs["save"]), "--json")
    _check(code, err, peak, layer)
    assert [i["tags"] for i in json.loads(out)] == [["bomb:gzip"]]
    code, out, err, peak = run_limited(tmp_path, "fs", str(bombs["save"]), "bomb:gzip", "ls", "/srv/www")
    _check(code, err, peak, layer)
    assert "index.html" in out  # the other layer is read


def test_images_and_fs_ls_on_an_oci_archive_with_a_zstd_bomb(bombs, tmp_path):
    layer = hashlib.sha256(zstd_bomb(ZSTD_CLAIM)).hexdigest()
    code, out, err, peak = run_limited(tmp_path, "images", str(bombs["oci"]), "--json")
    _check(code, err, peak, layer)
    assert [i["tags"] for i in json.loads(out)] == [["bomb:zstd"]]
    code, out, err, peak = run_limited(tmp_path, "fs", str(bombs["oci"]), "bomb:zstd", "ls", "/etc")
    _check(code, err, peak, layer)
    assert "hello" in out


@pytest.mark.parametrize("name", ["save", "oci"])
def test_verify_streams_bombs_without_spooling(bombs, tmp_path, name):
    """A hash pass needs no spool: every layer, bombs included, is hashed and found ok."""
    code, out, err, peak = run_limited(tmp_path, "verify", str(bombs[name]), "--json")
    assert code == 0, err
    verdicts = json.loads(out)
    assert len(verdicts) == 2 and all(v["status"] == "ok" for v in verdicts), verdicts
    assert max(v["stream_size"] for v in verdicts) >= GZIP_CLAIM
    assert peak == 0


def test_checkpoint_archive_bomb_keeps_what_came_before(bombs, tmp_path):
    code, out, err, peak = run_limited(tmp_path, "mem", "ps", str(bombs["checkpoint"]))
    _check(code, err, peak, str(bombs["checkpoint"]))
    assert "PID" in out and len(out.splitlines()) > 3  # the processes are listed


# ---- the budget itself ---------------------------------------------------------------------------


def test_parse_size_and_budget_settings(monkeypatch):
    assert spool.parse_size("1000") == 1000
    assert spool.parse_size("64k") == 64 << 10
    assert spool.parse_size("512M") == 512 << 20
    assert spool.parse_size("4GiB") == 4 << 30
    assert spool.parse_size("1.5g") == 3 << 29
    with pytest.raises(ValueError):
        spool.parse_size("lots")
    monkeypatch.setenv(spool.ENV, "2M")
    assert spool.budget() == 2 << 20
    spool.set_budget(12345)
    try:
        assert spool.budget() == 12345
    finally:
        spool.set_budget(None)
    monkeypatch.delenv(spool.ENV)
    assert 0 < spool.budget() <= spool.DEFAULT_CAP


def test_budget_is_shared_and_given_back(tmp_path, monkeypatch):
    """Two layers of 40 KiB under a 64 KiB budget: the second is refused while the first is open,
    accepted once it is closed."""
    monkeypatch.delenv(spool.ENV, raising=False)
    layer = small_layer() + bytes(40 << 10)
    path = tmp_path / "l.tar.gz"
    path.write_bytes(zlib.compress(layer, 6, wbits=31))
    spool.set_budget(64 << 10)
    try:
        first = TarEvidence(str(path))
        assert spool.in_use() == len(layer)
        with pytest.raises(spool.SpoolTooLarge, match="too large to spool"):
            TarEvidence(str(path))
        assert spool.in_use() == len(layer)
        first.close()
        assert spool.in_use() == 0
        second = TarEvidence(str(path))
        assert second.read_bytes("/etc/hello") == b"hello\n"
        second.close()
        partial = TarEvidence(str(path), partial=True)  # alone: it fits
        partial.close()
    finally:
        spool.set_budget(None)
