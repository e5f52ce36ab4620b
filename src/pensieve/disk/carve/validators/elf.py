"""ELF executables and libraries (the System V gABI / ``elf(5)``): header fields, program
headers, section headers (null section 0, names in the section-name table); the length is the end
of the last segment, section or header table.

One step per part of the file the gABI describes ("ELF Header", "Program Header", "Sections"):
the ELF header says where the two tables are; each table is read and its entries bound the file."""

from __future__ import annotations

import struct
from typing import Any

from pensieve.disk.carve.base import COMPLETE, HEADER_ONLY, PARTIAL, Context, Source, Verdict
from pensieve.disk.carve.validators.common import printable
from pensieve.records.core import record

#: the magic bytes, and their offset in the file
SIGNATURE = (b"\x7fELF", 0)


#: e_type -> what the file is (gABI, "ELF Header")
_KINDS = {1: "relocatable", 2: "executable", 3: "shared object", 4: "core"}
#: ELFCLASS32 / ELFCLASS64 -> (header layout after e_ident, e_ehsize, e_phentsize, e_shentsize)
_LAYOUTS = {1: ("HHIIIIIHHHHHH", (52, 32, 40)), 2: ("HHIQQQIHHHHHH", (64, 56, 64))}
_PT_NULL, _PT_LOAD, _SHT_NULL, _SHT_STRTAB, _SHT_NOBITS = 0, 1, 0, 3, 8
_SHN_XINDEX = 0xFFFF


@record
class _Header:
    """The ELF header fields the validation uses (gABI, "ELF Header")."""

    cls: int  # e_ident[EI_CLASS]: 1 = 32-bit, 2 = 64-bit
    endian: str  # struct prefix from e_ident[EI_DATA]
    etype: int
    machine: int
    entry: int
    phoff: int
    shoff: int
    ehsize: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int
    shstrndx: int


def _header(h: bytes) -> _Header | None:
    """The ELF header in H (its first 64 bytes), or None where e_ident or a field is not one
    the gABI allows (version 1, a known type, a machine, the entry sizes of its class)."""
    if len(h) < 52:
        return None
    cls, data, ver = h[4], h[5], h[6]
    if cls not in (1, 2) or data not in (1, 2) or ver != 1 or any(h[9:16]):
        return None
    if cls == 2 and len(h) < 64:
        return None
    fmt, want = _LAYOUTS[cls]
    e = "<" if data == 1 else ">"
    etype, machine, version, entry, phoff, shoff, _flags, *sizes = struct.unpack_from(e + fmt, h, 16)
    ehsize, phentsize, phnum, shentsize, shnum, shstrndx = sizes
    if version != 1 or etype not in _KINDS or ehsize != want[0] or machine == 0:
        return None
    if (phnum and phentsize != want[1]) or (shnum and shentsize != want[2]):
        return None
    if shnum and shstrndx >= shnum and shstrndx != _SHN_XINDEX:
        return None
    return _Header(
        cls, e, etype, machine, entry, phoff, shoff, ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    )


def _segments_end(src: Source, off: int, limit: int, hd: _Header, details: dict) -> int | Verdict:
    """The program header table (gABI, "Program Header"): the end of the header, the table and
    every segment's file image, or the verdict where the table does not hold."""
    end = hd.ehsize
    if not hd.phnum:
        return end
    size = hd.phnum * hd.phentsize
    if hd.phoff < hd.ehsize or off + hd.phoff + size > limit:
        return Verdict.failed(
            min(hd.ehsize, limit - off), HEADER_ONLY, details, "program header table beyond the bound"
        )
    table = src.read(off + hd.phoff, size)
    if len(table) < size:
        return Verdict.failed(hd.ehsize, HEADER_ONLY, details, "program header table truncated")
    end = max(end, hd.phoff + size)
    for i in range(hd.phnum):
        if hd.cls == 2:
            ptype, _pflags, poff, _va, _pa, filesz, memsz, _al = struct.unpack_from(
                hd.endian + "IIQQQQQQ", table, i * hd.phentsize
            )
        else:
            ptype, poff, _va, _pa, filesz, memsz, _pflags, _al = struct.unpack_from(
                hd.endian + "IIIIIIII", table, i * hd.phentsize
            )
        if ptype == _PT_NULL:
            continue
        if filesz > memsz and ptype == _PT_LOAD:
            why = f"program header {i}: file size above memory size"
            return Verdict.failed(hd.ehsize, HEADER_ONLY, details, why)
        end = max(end, poff + filesz)
    return end


def _section_table(
    src: Source, off: int, limit: int, hd: _Header, end: int, details: dict
) -> tuple[list[tuple[int, int, int, int]], int] | Verdict:
    """The section header table (gABI, "Sections"): its (sh_name, sh_type, sh_offset, sh_size)
    entries and the end of the file they make, or the verdict where the table does not hold
    (section 0 must be the null section; SHT_NOBITS sections have no bytes in the file)."""
    sh_size = hd.shnum * hd.shentsize
    if hd.shoff < hd.ehsize or off + hd.shoff + sh_size > limit:
        why = "section header table beyond the bound (truncated or hostile)"
        return Verdict.failed(min(end, limit - off), PARTIAL if hd.phnum else HEADER_ONLY, details, why)
    table = src.read(off + hd.shoff, sh_size)
    if len(table) < sh_size:
        return Verdict.failed(min(end, src.size - off), PARTIAL, details, "section header table truncated")
    fmt = hd.endian + ("IIQQQQIIQQ" if hd.cls == 2 else "IIIIIIIIII")
    sections = []
    for i in range(hd.shnum):
        name, stype, _fl, _addr, soff, ssize, _link, _info, _al, _es = struct.unpack_from(
            fmt, table, i * hd.shentsize
        )
        sections.append((name, stype, soff, ssize))
    end = max(end, hd.shoff + sh_size)
    if sections[0][1] != _SHT_NULL or sections[0][2] != 0:
        return Verdict.failed(min(end, limit - off), PARTIAL, details, "section 0 is not the null section")
    for _name, stype, soff, ssize in sections[1:]:
        if stype != _SHT_NOBITS and ssize:
            end = max(end, soff + ssize)
    if off + end > limit:
        return Verdict.failed(limit - off, PARTIAL, details, "a section lies beyond the bound")
    return sections, end


def _section_names(
    src: Source, off: int, hd: _Header, sections: list[tuple[int, int, int, int]]
) -> tuple[list[str], str | None]:
    """The section names out of the section-name table e_shstrndx (an SHT_STRTAB section), and
    why they do not resolve (None when they do, or when the file names no such table)."""
    names: list[str] = []
    if hd.shstrndx in (0, _SHN_XINDEX) or hd.shstrndx >= hd.shnum:
        return names, None
    _n, stype, soff, ssize = sections[hd.shstrndx]
    strtab = src.read(off + soff, min(ssize, 1 << 20))
    if stype != _SHT_STRTAB or len(strtab) < ssize:
        return names, "section-name table is not a string table"
    for name, *_ in sections[1:]:
        stop = strtab.find(b"\0", name)
        raw = strtab[name:stop] if 0 <= name < len(strtab) and stop >= 0 else None
        if raw is None or not printable(raw):
            return names, "section names do not resolve in the section-name table"
        names.append(raw.decode("ascii"))
    return names, None


def validate(ctx: Context, off: int) -> Verdict | None:
    """The ELF file at OFF: its header, program headers, then section headers and names."""
    src = ctx.src
    hd = _header(src.read(off, 64))
    if hd is None:
        return None
    details: dict[str, Any] = {
        "class": 64 if hd.cls == 2 else 32,
        "endian": "little" if hd.endian == "<" else "big",
        "elf_type": _KINDS[hd.etype],
        "machine": hd.machine,
        "entry": hd.entry,
        "program_headers": hd.phnum,
        "sections": hd.shnum,
    }
    limit = ctx.bound
    end = _segments_end(src, off, limit, hd, details)
    if isinstance(end, Verdict):
        return end
    if not hd.shnum:
        if hd.shoff:
            return None
        if off + end > limit:
            return Verdict.failed(limit - off, PARTIAL, details, "segments beyond the bound")
        return Verdict(end, COMPLETE, details)
    table = _section_table(src, off, limit, hd, end, details)
    if isinstance(table, Verdict):
        return table
    sections, end = table
    names, why = _section_names(src, off, hd, sections)
    if why is not None:
        return Verdict.failed(end, PARTIAL, details, why)
    details["section_names"] = names[:12]
    return Verdict(end, COMPLETE, details)
