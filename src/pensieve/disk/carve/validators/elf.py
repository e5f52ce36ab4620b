"""ELF executables and libraries (the System V gABI / ``elf(5)``): header fields, program
headers, section headers (null section 0, names in the section-name table); the length is the end
of the last segment, section or header table."""

from __future__ import annotations

import struct
from typing import Any

from pensieve.disk.carve.base import (
    COMPLETE,
    HEADER_ONLY,
    PARTIAL,
    Context,
    Verdict,
)
from pensieve.disk.carve.validators.common import (
    printable,
)

#: the magic bytes, and their offset in the file
SIGNATURE = (b"\x7fELF", 0)


def validate(ctx: Context, off: int) -> Verdict | None:
    src = ctx.src
    h = src.read(off, 64)
    if len(h) < 52:
        return None
    cls, data, ver = h[4], h[5], h[6]
    if cls not in (1, 2) or data not in (1, 2) or ver != 1 or any(h[9:16]):
        return None
    e = "<" if data == 1 else ">"
    if cls == 2:
        if len(h) < 64:
            return None
        fmt, want = "HHIQQQIHHHHHH", (64, 56, 64)
    else:
        fmt, want = "HHIIIIIHHHHHH", (52, 32, 40)
    (
        etype,
        machine,
        version,
        entry,
        phoff,
        shoff,
        flags,
        ehsize,
        phentsize,
        phnum,
        shentsize,
        shnum,
        shstrndx,
    ) = struct.unpack_from(e + fmt, h, 16)
    if version != 1 or etype not in (1, 2, 3, 4) or ehsize != want[0] or machine == 0:
        return None
    if (phnum and phentsize != want[1]) or (shnum and shentsize != want[2]):
        return None
    if shnum and shstrndx >= shnum and shstrndx != 0xFFFF:
        return None
    kinds = {1: "relocatable", 2: "executable", 3: "shared object", 4: "core"}
    details: dict[str, Any] = {
        "class": 64 if cls == 2 else 32,
        "endian": "little" if data == 1 else "big",
        "elf_type": kinds[etype],
        "machine": machine,
        "entry": entry,
        "program_headers": phnum,
        "sections": shnum,
    }
    end = ehsize
    limit = ctx.bound
    # program headers
    if phnum:
        ph_end = off + phoff + phnum * phentsize
        if phoff < ehsize or ph_end > limit:
            details["failed"] = "program header table beyond the bound"
            return Verdict(min(ehsize, limit - off), HEADER_ONLY, details)
        table = src.read(off + phoff, phnum * phentsize)
        if len(table) < phnum * phentsize:
            details["failed"] = "program header table truncated"
            return Verdict(ehsize, HEADER_ONLY, details)
        end = max(end, phoff + phnum * phentsize)
        for i in range(phnum):
            if cls == 2:
                ptype, _pflags, poff, _va, _pa, filesz, memsz, _al = struct.unpack_from(
                    e + "IIQQQQQQ", table, i * phentsize
                )
            else:
                ptype, poff, _va, _pa, filesz, memsz, _pflags, _al = struct.unpack_from(
                    e + "IIIIIIII", table, i * phentsize
                )
            if ptype == 0:
                continue
            if filesz > memsz and ptype == 1:
                details["failed"] = f"program header {i}: file size above memory size"
                return Verdict(ehsize, HEADER_ONLY, details)
            end = max(end, poff + filesz)
    if not shnum:
        if shoff:
            return None
        if off + end > limit:
            details["failed"] = "segments beyond the bound"
            return Verdict(limit - off, PARTIAL, details)
        return Verdict(end, COMPLETE, details)
    sh_size = shnum * shentsize
    if shoff < ehsize or off + shoff + sh_size > limit:
        details["failed"] = "section header table beyond the bound (truncated or hostile)"
        return Verdict(min(end, limit - off), PARTIAL if phnum else HEADER_ONLY, details)
    table = src.read(off + shoff, sh_size)
    if len(table) < sh_size:
        details["failed"] = "section header table truncated"
        return Verdict(min(end, src.size - off), PARTIAL, details)
    sections = []
    for i in range(shnum):
        if cls == 2:
            name, stype, _fl, _addr, soff, ssize, _link, _info, _al, _es = struct.unpack_from(
                e + "IIQQQQIIQQ", table, i * shentsize
            )
        else:
            name, stype, _fl, _addr, soff, ssize, _link, _info, _al, _es = struct.unpack_from(
                e + "IIIIIIIIII", table, i * shentsize
            )
        sections.append((name, stype, soff, ssize))
    end = max(end, shoff + sh_size)
    if sections[0][1] != 0 or sections[0][2] != 0:
        details["failed"] = "section 0 is not the null section"
        return Verdict(min(end, limit - off), PARTIAL, details)
    for _name, stype, soff, ssize in sections[1:]:
        if stype != 8 and ssize:  # SHT_NOBITS has no bytes in the file
            end = max(end, soff + ssize)
    if off + end > limit:
        details["failed"] = "a section lies beyond the bound"
        return Verdict(limit - off, PARTIAL, details)
    names: list[str] = []
    if shstrndx not in (0, 0xFFFF) and shstrndx < shnum:
        _n, stype, soff, ssize = sections[shstrndx]
        strtab = src.read(off + soff, min(ssize, 1 << 20))
        if stype != 3 or len(strtab) < ssize:
            details["failed"] = "section-name table is not a string table"
            return Verdict(end, PARTIAL, details)
        for name, *_ in sections[1:]:
            stop = strtab.find(b"\0", name)
            raw = strtab[name:stop] if 0 <= name < len(strtab) and stop >= 0 else None
            if raw is None or not printable(raw):
                details["failed"] = "section names do not resolve in the section-name table"
                return Verdict(end, PARTIAL, details)
            names.append(raw.decode("ascii"))
    details["section_names"] = names[:12]
    return Verdict(end, COMPLETE, details)
