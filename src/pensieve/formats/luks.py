"""LUKS1 and LUKS2 encrypted volumes: header, key slots, and sector decryption (pure: the bytes
come from a ``pread(offset, size)`` callable).

Sources: "LUKS On-Disk Format Specification" version 1.2.3 (Clemens Fruhwirth) and "LUKS2
On-Disk Format Specification" version 1.1.x (Milan Broz); dm-crypt's IV generators (kernel
``drivers/md/dm-crypt.c``).  Why an own reader: libluksde (libluksde-python 20260902) opens
LUKS1 only ("invalid master key size" on a LUKS2 header) and its ``set_key`` refuses 512-bit
volume keys (the aes-xts default), so the tests use it as the LUKS1 reference, nothing more.

* a key slot is opened with a passphrase: PBKDF2 (LUKS1, LUKS2 ``pbkdf2``) or Argon2i/Argon2id
  (LUKS2) gives the slot key, which decrypts the slot's anti-forensic split key material
  (sector IVs counted from the slot area), merged with the AF hash diffusion; the result is the
  volume key when its PBKDF2 digest matches the header's;
* a volume key given directly (``--key-file``: the raw key bytes, as cryptsetup's
  ``--volume-key-file`` takes them) is checked against the same digest;
* data sectors are decrypted with the segment's cipher: ``aes-xts-plain64``, ``aes-xts-plain``,
  ``aes-cbc-essiv:sha256``, ``aes-cbc-plain(64)``; the IV of a sector is its number counted in
  512-byte units from the start of the payload (plus LUKS2's ``iv_tweak``), dm-crypt's default.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LuksError", "LuksHeader", "LuksVolume", "parse_header", "unlock"]

MAGIC1 = b"LUKS\xba\xbe"
MAGIC2 = b"SKUL\xba\xbe"  # a LUKS2 secondary header
_KEYSLOT_ACTIVE = 0x00AC71F3
#: the JSON area of a LUKS2 header is read at most this large (the spec's largest is 4 MiB)
_MAX_JSON = 4 << 20
#: a key slot's KDF asks for at most this much memory (Argon2 memory cost, KiB)
_MAX_ARGON_KIB = 4 << 20
#: PBKDF2 iterations and AF stripes accepted at most (cryptsetup's benchmark-chosen counts are far
#: below; a header asking more is hostile or corrupt, and would take hours)
_MAX_ITERATIONS = 20_000_000
_MAX_STRIPES = 1 << 16

Pread = Callable[[int, int], bytes]


class LuksError(ValueError):
    """The LUKS header does not parse, or no key slot opens with the key given."""


@dataclass
class KeySlot:
    """One active key slot: how its key is derived and where its split key material lies."""

    number: int
    kdf: dict
    area_offset: int
    key_bytes: int
    stripes: int
    af_hash: str
    cipher: str


@dataclass
class LuksHeader:
    """What opening a LUKS volume needs from its header."""

    version: int
    uuid: str
    cipher: str  # e.g. "aes-xts-plain64"
    key_bytes: int
    payload_offset: int  # bytes
    payload_size: int | None  # bytes; None: to the end of the device
    sector_size: int
    iv_tweak: int
    digest: dict  # {"hash", "iterations", "salt", "digest"}
    slots: list[KeySlot] = field(default_factory=list)


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace")


def _luks1(head: bytes) -> LuksHeader:
    cipher = f"{_cstr(head[8:40])}-{_cstr(head[40:72])}"
    hash_spec = _cstr(head[72:104])
    payload, key_bytes = struct.unpack(">II", head[104:112])
    digest = {"hash": hash_spec, "digest": head[112:132], "salt": head[132:164]}
    digest["iterations"] = struct.unpack(">I", head[164:168])[0]
    hdr = LuksHeader(1, _cstr(head[168:208]), cipher, key_bytes, payload * 512, None, 512, 0, digest)
    for i in range(8):
        active, iters, salt, area, stripes = struct.unpack(">II32sII", head[208 + 48 * i : 256 + 48 * i])
        if active == _KEYSLOT_ACTIVE:
            kdf = {"type": "pbkdf2", "hash": hash_spec, "iterations": iters, "salt": salt}
            hdr.slots.append(KeySlot(i, kdf, area * 512, key_bytes, stripes, hash_spec, cipher))
    return hdr


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _luks2(pread: Pread, head: bytes) -> LuksHeader:
    hdr_size = struct.unpack(">Q", head[8:16])[0]
    if not 4096 < hdr_size <= _MAX_JSON + 4096:
        raise LuksError(f"LUKS2 header size {hdr_size} out of range")
    try:
        meta = json.loads(pread(4096, hdr_size - 4096).split(b"\0", 1)[0])
        seg_id = min(meta["segments"], key=int)
        seg = meta["segments"][seg_id]
        dig = next(d for d in meta["digests"].values() if seg_id in d.get("segments", []))
        digest = {
            "hash": dig["hash"],
            "iterations": int(dig["iterations"]),
            "salt": _b64(dig["salt"]),
            "digest": _b64(dig["digest"]),
        }
        size = None if seg["size"] == "dynamic" else int(seg["size"])
        hdr = LuksHeader(
            2,
            _cstr(head[168:208]),
            seg["encryption"],
            0,
            int(seg["offset"]),
            size,
            int(seg.get("sector_size", 512)),
            int(seg.get("iv_tweak", "0")),
            digest,
        )
        for sid, ks in sorted(meta["keyslots"].items(), key=lambda kv: int(kv[0])):
            if ks.get("type") != "luks2" or sid not in dig.get("keyslots", []):
                continue
            area, af = ks["area"], ks["af"]
            kdf = dict(ks["kdf"])
            kdf["salt"] = _b64(kdf["salt"])
            hdr.key_bytes = int(ks["key_size"])
            hdr.slots.append(
                KeySlot(
                    int(sid),
                    kdf,
                    int(area["offset"]),
                    int(ks["key_size"]),
                    int(af["stripes"]),
                    af["hash"],
                    area["encryption"],
                )
            )
    except (KeyError, ValueError, TypeError, StopIteration, json.JSONDecodeError) as exc:
        raise LuksError(f"LUKS2 JSON metadata unreadable: {exc}") from exc
    return hdr


def parse_header(pread: Pread) -> LuksHeader:
    """The header of the LUKS volume read by PREAD; LuksError when it is not one."""
    head = pread(0, 4096)
    if len(head) < 592 or head[:6] != MAGIC1:
        raise LuksError("no LUKS header")
    version = struct.unpack(">H", head[6:8])[0]
    if version == 1:
        return _luks1(head)
    if version == 2:
        return _luks2(pread, head)
    raise LuksError(f"LUKS version {version} is not supported")


# ---- key derivation and the anti-forensic splitter ---------------------------------------


def _kdf(kdf: dict, passphrase: bytes, length: int) -> bytes:
    kind = kdf["type"]
    if kind == "pbkdf2":
        _bounded("key slot iterations", int(kdf["iterations"]), _MAX_ITERATIONS)
        return hashlib.pbkdf2_hmac(
            _hash_name(kdf["hash"]), passphrase, kdf["salt"], int(kdf["iterations"]), length
        )
    if kind in ("argon2i", "argon2id"):
        from cryptography.hazmat.primitives.kdf import argon2

        memory = int(kdf["memory"])
        if memory > _MAX_ARGON_KIB:
            raise LuksError(f"key slot asks Argon2 for {memory} KiB of memory (over {_MAX_ARGON_KIB})")
        algo = argon2.Argon2id if kind == "argon2id" else argon2.Argon2i
        return algo(
            salt=kdf["salt"],
            length=length,
            iterations=int(kdf["time"]),
            lanes=int(kdf["cpus"]),
            memory_cost=memory,
        ).derive(passphrase)
    raise LuksError(f"key derivation {kind} is not supported")


def _hash_name(name: object) -> str:
    """NAME when this Python can hash with it, else a LuksError (a header names its hashes)."""
    try:
        hashlib.new(str(name))
    except (ValueError, TypeError) as exc:
        raise LuksError(f"unsupported hash {name!r} in the LUKS header") from exc
    return str(name)


def _diffuse(block: bytes, hash_name: str) -> bytes:
    size = hashlib.new(hash_name).digest_size
    out = bytearray()
    for i in range(0, len(block), size):
        chunk = block[i : i + size]
        out += hashlib.new(hash_name, struct.pack(">I", i // size) + chunk).digest()[: len(chunk)]
    return bytes(out)


def af_merge(material: bytes, key_bytes: int, stripes: int, hash_name: str) -> bytes:
    """The key anti-forensically split into STRIPES blocks of MATERIAL (LUKS1 spec, AFmerge)."""
    hash_name = _hash_name(hash_name)  # once, not per stripe
    d = bytes(key_bytes)
    for i in range(stripes - 1):
        block = material[i * key_bytes : (i + 1) * key_bytes]
        d = _diffuse(bytes(a ^ b for a, b in zip(d, block, strict=True)), hash_name)
    last = material[(stripes - 1) * key_bytes : stripes * key_bytes]
    return bytes(a ^ b for a, b in zip(d, last, strict=True))


def _bounded(what: str, value: int, limit: int) -> int:
    if not 0 < value <= limit:
        raise LuksError(f"{what} {value} out of range (1..{limit})")
    return value


def _digest_ok(hdr: LuksHeader, key: bytes) -> bool:
    dig = hdr.digest
    _bounded("key digest iterations", int(dig["iterations"]), _MAX_ITERATIONS)
    want = dig["digest"]
    return (
        hashlib.pbkdf2_hmac(_hash_name(dig["hash"]), key, dig["salt"], dig["iterations"], len(want)) == want
    )


# ---- sector ciphers ----------------------------------------------------------------------


class SectorCipher:
    """Decrypts whole sectors of one dm-crypt cipher specification with one key."""

    def __init__(self, spec: str, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._cipher, self._algorithms, self._modes = Cipher, algorithms, modes
        parts = spec.split("-", 2)
        if len(parts) != 3 or parts[0] != "aes":
            raise LuksError(f"cipher {spec} is not supported (aes-xts-plain64, aes-cbc-essiv:sha256 are)")
        self.mode, self.iv = parts[1], parts[2]
        self.key = key
        if self.mode not in ("xts", "cbc") or self.iv not in ("plain", "plain64", "essiv:sha256"):
            raise LuksError(f"cipher {spec} is not supported")
        self._essiv = None
        if self.iv.startswith("essiv"):
            salt = hashlib.sha256(key).digest()
            self._essiv = Cipher(algorithms.AES(salt), modes.ECB()).encryptor()

    def _iv(self, sector: int) -> bytes:
        if self.iv == "plain":
            sector &= 0xFFFFFFFF
        raw = struct.pack("<Q", sector) + bytes(8)
        return self._essiv.update(raw) if self._essiv is not None else raw

    def decrypt(self, data: bytes, first_sector: int, sector_size: int = 512) -> bytes:
        """DATA (whole sectors of SECTOR_SIZE), whose first sector has IV number FIRST_SECTOR
        (counted in 512-byte units)."""
        out = bytearray()
        step = sector_size // 512
        algo = self._algorithms.AES(self.key)
        for i in range(0, len(data), sector_size):
            iv = self._iv(first_sector + (i // sector_size) * step)
            mode = self._modes.XTS(iv) if self.mode == "xts" else self._modes.CBC(iv)
            dec = self._cipher(algo, mode).decryptor()
            out += dec.update(data[i : i + sector_size]) + dec.finalize()
        return bytes(out)


def unlock(pread: Pread, hdr: LuksHeader, passphrase: bytes | None = None, key: bytes | None = None) -> bytes:
    """The volume key, from PASSPHRASE (each active key slot tried) or KEY (checked); LuksError
    when neither opens the volume."""
    if key is not None:
        if _digest_ok(hdr, key):
            return key
        raise LuksError("the volume key given does not match this LUKS volume's key digest")
    if passphrase is None:
        raise LuksError("locked: no passphrase or key given")
    for slot in hdr.slots:
        _bounded("key slot stripes", slot.stripes, _MAX_STRIPES)
        _bounded("key size", slot.key_bytes, 128)
        slot_key = _kdf(slot.kdf, passphrase, slot.key_bytes)
        length = slot.key_bytes * slot.stripes
        length += -length % 512
        material = pread(slot.area_offset, length)
        if len(material) < length:
            continue
        try:
            plain = SectorCipher(slot.cipher, slot_key).decrypt(material, 0)
            candidate = af_merge(plain, slot.key_bytes, slot.stripes, slot.af_hash)
        except ValueError as exc:  # a cipher key the header's sizes make invalid, an unknown hash
            raise LuksError(f"key slot {slot.number} unusable: {exc}") from exc
        if _digest_ok(hdr, candidate):
            return candidate
    raise LuksError(f"wrong passphrase: no key slot of this LUKS{hdr.version} volume opens with it")


class LuksVolume:
    """The decrypted payload of an unlocked LUKS volume of SIZE bytes (device size given)."""

    def __init__(self, pread: Pread, hdr: LuksHeader, volume_key: bytes, device_size: int) -> None:
        self._pread = pread
        self.header = hdr
        self._cipher = SectorCipher(hdr.cipher, volume_key)
        end = device_size if hdr.payload_size is None else hdr.payload_offset + hdr.payload_size
        self.size = max(0, min(end, device_size) - hdr.payload_offset)

    def read(self, offset: int, size: int) -> bytes:
        ss = self.header.sector_size
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        first = offset - offset % ss
        last = end + (-end % ss)
        data = self._pread(self.header.payload_offset + first, last - first)
        data = data[: len(data) - len(data) % ss]
        plain = self._cipher.decrypt(data, first // 512 + self.header.iv_tweak, ss)
        return plain[offset - first : end - first]
