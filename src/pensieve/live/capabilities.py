"""Linux capability masks (``CapEff``/``CapPrm``/``CapBnd`` of /proc/PID/status) decoded to names.

The bit numbers are those of capabilities(7) and ``include/uapi/linux/capability.h`` (CAP_CHOWN 0
... CAP_CHECKPOINT_RESTORE 40); a bit this table does not name is ``cap_N`` (``capsh --decode``
prints the bare number).  A full set is every bit up to the kernel's ``/proc/sys/kernel/cap_last_cap``.
"""

from __future__ import annotations

__all__ = ["CAPABILITIES", "DEFAULT_CONTAINER", "decode", "full_mask", "is_full", "parse_mask", "summary"]

#: bit number -> name, capabilities(7)
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_BIT = {name: bit for bit, name in enumerate(CAPABILITIES)}

#: the set Docker, containerd's CRI, Podman and CRI-O give a container by default (moby
#: oci/caps/defaults.go; the OCI runtime-spec example): 0xa80425fb
DEFAULT_CONTAINER = sum(
    1 << _BIT[f"CAP_{n}"]
    for n in (
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SYS_CHROOT",
        "MKNOD",
        "AUDIT_WRITE",
        "SETFCAP",
    )
)


def parse_mask(text: str | int | None) -> int | None:
    """The mask of a status value (``000001ffffffffff``, ``0x...``), or None when it is not hex."""
    if text is None or isinstance(text, int):
        return text
    try:
        return int(text.strip(), 16)
    except ValueError:
        return None


def name(bit: int) -> str:
    """The capabilities(7) name of BIT, ``cap_N`` for one this table lacks."""
    return CAPABILITIES[bit] if 0 <= bit < len(CAPABILITIES) else f"cap_{bit}"


def decode(mask: str | int | None) -> list[str]:
    """The names of the bits set in MASK (hex text or an int), lowest bit first."""
    value = parse_mask(mask)
    if not value:
        return []
    return [name(bit) for bit in range(value.bit_length()) if value >> bit & 1]


def full_mask(last_cap: int = len(CAPABILITIES) - 1) -> int:
    """Every bit from 0 to LAST_CAP (``/proc/sys/kernel/cap_last_cap``)."""
    return (1 << (last_cap + 1)) - 1


def is_full(mask: str | int | None, last_cap: int = len(CAPABILITIES) - 1) -> bool:
    """Whether MASK holds every capability the kernel knows (a full bounding set: what root on the
    host, or a ``--privileged`` container, has)."""
    value = parse_mask(mask)
    return value is not None and value & full_mask(last_cap) == full_mask(last_cap)


def _short(bits: int) -> str:
    return ",".join(name(b).removeprefix("CAP_") for b in range(bits.bit_length()) if bits >> b & 1)


def summary(mask: str | int | None, last_cap: int = len(CAPABILITIES) - 1) -> str:
    """A table cell for MASK: ``all``, ``none``, ``default`` (the engines' default container set),
    those with at most three added or removed (``all-SYS_RESOURCE``, ``default+SYS_ADMIN``), else
    ``N caps``; "" when unknown."""
    value = parse_mask(mask)
    if value is None:
        return ""
    if value == 0:
        return "none"
    full = full_mask(last_cap)
    for base, label in ((full, "all"), (DEFAULT_CONTAINER, "default")):
        added, removed = value & ~base, base & ~value
        if bin(added).count("1") + bin(removed).count("1") <= 3:
            text = label
            text += f"+{_short(added)}" if added else ""
            text += f"-{_short(removed)}" if removed else ""
            return text
    return f"{bin(value).count('1')} caps"
