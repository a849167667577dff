"""The datasets of an HDF5 file (Keras ``.h5``/``.weights.h5``): every dataset's path, dtype and shape, and the
parameter count — read by a small reader of the superblock, object headers and group structures, not by
the HDF5 C library. Why not h5py: libhdf5 is a large C parser whose malformed-file bugs crash the process
(a hostile file must give a recorded note, never take the ingest down), and it is not needed to list shapes.

What is read: superblocks 0-3; object headers 1 and 2 with their continuations; groups as symbol tables
(B-tree 1 + local heap: what h5py writes by default), as compact link messages, or in dense storage (link
messages in a fractal heap's direct blocks, under a root direct or indirect block: newer defaults for groups
of more than 8 links). Attributes are not read; a heap laid out otherwise (filtered, nested indirect
blocks) is named in ``partial``. Every address is checked against the file's size, every object is visited
once, and the walk is bounded in objects, depth and bytes read.
"""

from __future__ import annotations

import struct
from typing import IO, Any

from .byte_source import Broken, Budget, NotInspected
from .tensor_tally import TensorTally

SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_OBJECTS = 200_000
MAX_DEPTH = 64
MAX_BLOCK = 16 * 1024 * 1024  # one object header chunk, one local heap
MAX_NAME = 1024
MAX_READ = 256 * 1024 * 1024  # metadata bytes read in all (a hostile file can point many headers at one block)


class _File:
    def __init__(self, f: IO[bytes], size: int, base: int, so: int, sl: int, budget: Budget) -> None:
        self.f, self.size, self.base, self.so, self.sl, self.budget = f, size, base, so, sl, budget
        self.undefined = (1 << (8 * so)) - 1
        self.read_left = MAX_READ

    def at(self, addr: int, n: int) -> bytes:
        """``n`` bytes at file address ``addr`` (relative to the base), checked against the file's end."""
        self.budget.spend_ops(1)
        self.read_left -= n
        if self.read_left < 0:
            raise NotInspected(f"more than {MAX_READ} bytes of metadata to read")
        if n > MAX_BLOCK or addr >= self.undefined:
            raise Broken(f"a block of {n} bytes at {addr:#x}")
        pos = self.base + addr
        if pos < 0 or pos + n > self.size:
            raise Broken(f"address {addr:#x} (+{n}) is past the end of the file")
        self.f.seek(pos)
        data = self.f.read(n)
        if len(data) != n:
            raise Broken("short read")
        return data

    def offset(self, b: bytes, i: int) -> int:
        return int.from_bytes(b[i:i + self.so], "little")

    def length(self, b: bytes, i: int) -> int:
        return int.from_bytes(b[i:i + self.sl], "little")


def find_superblock(f: IO[bytes], size: int) -> int | None:
    offset = 0
    while offset + 8 <= size and offset <= 1 << 30:
        f.seek(offset)
        if f.read(8) == SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def read_hdf5(f: IO[bytes], size: int, budget: Budget) -> tuple[dict[str, Any], str]:
    """(structure, detail) of an HDF5 file; ``partial`` says what could not be followed."""
    structure: dict[str, Any] = {"format": "hdf5"}
    tally = TensorTally()
    problems: list[str] = []
    groups = 0
    try:
        sb = find_superblock(f, size)
        if sb is None:
            raise Broken("no superblock")
        f.seek(sb)
        head = f.read(64)
        version = head[8]
        structure["superblock_version"] = version
        if version in (0, 1):
            so, sl = head[13], head[14]
            if so not in (2, 4, 8) or sl not in (2, 4, 8):
                raise Broken("odd sizes of offsets/lengths")
            start = 24 if version == 0 else 28
            f.seek(sb)
            block = f.read(start + 6 * so + 24)
            base = int.from_bytes(block[start:start + so], "little")
            entry = start + 4 * so  # the root group's symbol table entry
            hf = _File(f, size, base, so, sl, budget)
            root = hf.offset(block, entry + so)
        elif version in (2, 3):
            so, sl = head[9], head[10]
            if so not in (2, 4, 8) or sl not in (2, 4, 8):
                raise Broken("odd sizes of offsets/lengths")
            f.seek(sb)
            block = f.read(12 + 4 * so)
            base = int.from_bytes(block[12:12 + so], "little")
            hf = _File(f, size, base, so, sl, budget)
            root = hf.offset(block, 12 + 3 * so)
        else:
            raise Broken(f"superblock version {version}")
        seen: set[int] = set()
        todo: list[tuple[str, int, int]] = [("", root, 0)]
        while todo:
            path, addr, depth = todo.pop()
            if addr in seen:
                continue
            seen.add(addr)
            if len(seen) > MAX_OBJECTS:
                raise NotInspected(f"more than {MAX_OBJECTS} objects")
            try:
                kind, info = _object(hf, addr)
            except (Broken, NotInspected) as exc:
                problems.append(f"{path or '/'}: {exc}")
                continue
            if kind == "dataset":
                tally.add(path, info["dtype"], info["shape"])
            elif kind == "group":
                groups += 1
                if info.get("dense"):
                    problems.append(f"{path or '/'}: links in dense storage not all read")
                if depth >= MAX_DEPTH:
                    problems.append(f"{path}: nested deeper than {MAX_DEPTH}")
                    continue
                for name, child in reversed(info["links"]):
                    todo.append((f"{path}/{name}", child, depth + 1))
    except (Broken, NotInspected) as exc:
        problems.append(str(exc))
    structure["groups"] = groups
    tally.into(structure)
    if problems:
        structure["partial"] = "; ".join(problems[:20])[:1500]
    return structure, f"HDF5 file, {tally.count} datasets, {tally.parameters} values"


# -- object headers --------------------------------------------------------------------------------------


def _messages(hf: _File, addr: int) -> list[tuple[int, bytes]]:
    """Every (type, body) of the object header at ``addr``, continuations followed."""
    out: list[tuple[int, bytes]] = []
    first = hf.at(addr, 4)
    chunks: list[tuple[int, int, int]] = []  # (address, length, version)
    if first == b"OHDR":
        h = hf.at(addr, 6)
        flags = h[5]
        i = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        raw = hf.at(addr + i, width)
        chunks.append((addr + i + width, int.from_bytes(raw, "little"), 2))
        creation_order = bool(flags & 0x04)
    elif first[0] == 1:
        h = hf.at(addr, 16)
        chunks.append((addr + 16, struct.unpack("<I", h[8:12])[0], 1))
        creation_order = False
    else:
        raise Broken(f"object header version {first[0]}")
    visited = 0
    while chunks:
        caddr, clen, ver = chunks.pop(0)
        visited += 1
        if visited > 10_000:
            raise NotInspected("too many object header continuations")
        data = hf.at(caddr, clen)
        i = 0
        if ver == 2 and data[:4] == b"OCHK":
            i = 4
        end = len(data) - (4 if ver == 2 else 0)  # version 2 chunks end with a checksum
        while i < end:
            hf.budget.spend_ops(1)
            if ver == 1:
                if i + 8 > end:
                    break
                mtype, msize = struct.unpack("<HH", data[i:i + 4])
                body = data[i + 8:i + 8 + msize]
                i += 8 + msize
                i += -i % 8 if i % 8 else 0
            else:
                if i + 4 > end:
                    break  # a gap
                mtype, msize = data[i], struct.unpack("<H", data[i + 1:i + 3])[0]
                i += 4 + (2 if creation_order else 0)
                body = data[i:i + msize]
                i += msize
            if len(body) != msize:
                raise Broken("a header message runs past its chunk")
            if mtype == 0x10:  # continuation
                chunks.append((hf.offset(body, 0), hf.length(body, hf.so), ver))
            else:
                out.append((mtype, body))
    return out


def _object(hf: _File, addr: int) -> tuple[str, dict[str, Any]]:
    msgs = _messages(hf, addr)
    shape: list[int] | None = None
    dtype: str | None = None
    links: list[tuple[str, int]] = []
    group = False
    dense = False
    for mtype, body in msgs:
        if mtype == 0x01:
            shape = _dataspace(hf, body)
        elif mtype == 0x03:
            dtype = _datatype(body)
        elif mtype == 0x11:
            group = True
            links.extend(_symbol_table(hf, hf.offset(body, 0), hf.offset(body, hf.so)))
        elif mtype == 0x06:
            group = True
            link = _link(hf, body)
            if link is not None:
                links.append(link)
        elif mtype == 0x02:
            group = True
            flags = body[1]
            heap = hf.offset(body, 2 + (8 if flags & 1 else 0))
            if heap != hf.undefined:
                found, complete = _dense_links(hf, heap)
                links.extend(found)
                dense = not complete
    if shape is not None and dtype is not None and not group:
        return "dataset", {"shape": shape, "dtype": dtype}
    if group:
        return "group", {"links": links, "dense": dense}
    return "other", {}


def _dataspace(hf: _File, b: bytes) -> list[int]:
    version, rank, flags = b[0], b[1], b[2]
    if rank > 32:
        raise Broken(f"a dataspace of rank {rank}")
    if version == 1:
        i = 8
    elif version == 2:
        if b[3] == 0:  # scalar
            return []
        i = 4
    else:
        raise Broken(f"dataspace version {version}")
    del flags
    if len(b) < i + rank * hf.sl:
        raise Broken("a dataspace message cut short")
    return [hf.length(b, i + k * hf.sl) for k in range(rank)]


def _datatype(b: bytes) -> str:
    cls = b[0] & 0x0F
    bits = b[1]
    size = struct.unpack("<I", b[4:8])[0]
    if cls == 0:
        return f"{'int' if bits & 0x08 else 'uint'}{size * 8}"
    if cls == 1:
        return f"float{size * 8}"
    if cls == 3:
        return f"S{size}"
    if cls == 9:
        return "vlen-string" if bits & 0x0F == 1 else "vlen"
    return {2: "time", 4: "bitfield", 5: "opaque", 6: "compound", 7: "reference", 8: "enum",
            10: "array"}.get(cls, f"class{cls}")


def _link(hf: _File, b: bytes) -> tuple[str, int] | None:
    flags = b[1]
    i = 2
    ltype = 0
    if flags & 0x08:
        ltype = b[i]
        i += 1
    if flags & 0x04:
        i += 8
    if flags & 0x10:
        i += 1
    width = 1 << (flags & 3)
    n = int.from_bytes(b[i:i + width], "little")
    i += width
    name = b[i:i + min(n, MAX_NAME)].decode("utf-8", "replace")
    i += n
    if ltype != 0:
        return None  # soft and external links name no object of this file
    return name, hf.offset(b, i)


def _symbol_table(hf: _File, btree: int, heap: int) -> list[tuple[str, int]]:
    h = hf.at(heap, 8 + 2 * hf.sl + hf.so)
    if h[:4] != b"HEAP":
        raise Broken("a group's local heap has no signature")
    heap_size = hf.length(h, 8)
    names = hf.at(hf.offset(h, 8 + 2 * hf.sl), heap_size)
    out: list[tuple[str, int]] = []
    todo = [btree]
    seen: set[int] = set()
    entry = 2 * hf.so + 24
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        sig = hf.at(node, 4)
        if sig == b"SNOD":
            h2 = hf.at(node, 8)
            count = struct.unpack("<H", h2[6:8])[0]
            body = hf.at(node + 8, count * entry)
            for k in range(count):
                e = body[k * entry:(k + 1) * entry]
                off = hf.offset(e, 0)
                end = names.find(b"\0", off)
                name = names[off:end if end >= 0 else len(names)][:MAX_NAME].decode("utf-8", "replace")
                out.append((name, hf.offset(e, hf.so)))
            continue
        if sig != b"TREE":
            raise Broken("a group's B-tree node has no signature")
        h2 = hf.at(node, 8 + 2 * hf.so)
        if h2[4] != 0:
            raise Broken("a group B-tree of another type")
        used = struct.unpack("<H", h2[6:8])[0]
        body = hf.at(node + 8 + 2 * hf.so, used * (hf.sl + hf.so) + hf.sl)
        for k in range(used):
            todo.append(hf.offset(body, hf.sl + k * (hf.sl + hf.so)))
    return out


# -- dense link storage: link messages kept as objects of a fractal heap ---------------------------------


def _dense_links(hf: _File, heap: int) -> tuple[list[tuple[str, int]], bool]:
    """The links of a group stored densely, read from every direct block of its fractal heap in order (a
    model file is written once: its objects lie back to back). Returns (links, complete): a heap laid out
    otherwise (filtered, nested indirect blocks) gives what was read and ``complete`` False."""
    so, sl = hf.so, hf.sl
    h = hf.at(heap, 4 + 1 + 2 + 2 + 1 + 4 + sl + so + sl + so + 4 * sl + 4 * sl + 2 + 2 * sl + 2 + 2 + so + 2)
    if h[:4] != b"FRHP":
        raise Broken("a dense group's fractal heap has no signature")
    filters = struct.unpack("<H", h[7:9])[0]
    flags = h[9]
    i = 10 + 4 + sl + so + sl + so + 3 * sl + sl + 4 * sl
    width = struct.unpack("<H", h[i:i + 2])[0]
    start_size = hf.length(h, i + 2)
    max_direct = hf.length(h, i + 2 + sl)
    max_heap_bits = struct.unpack("<H", h[i + 2 + 2 * sl:i + 4 + 2 * sl])[0]
    root = hf.offset(h, i + 2 + 2 * sl + 4)
    rows = struct.unpack("<H", h[i + 2 + 2 * sl + 4 + so:i + 2 + 2 * sl + 6 + so])[0]
    if filters or not width or not start_size or start_size > MAX_BLOCK or max_direct > MAX_BLOCK:
        return [], False
    offset_bytes = (max_heap_bits + 7) // 8
    checksummed = bool(flags & 0x02)
    direct: list[tuple[int, int]] = []  # (address, size)
    complete = True
    if rows == 0:
        direct.append((root, start_size))
    else:
        ib = hf.at(root, 5 + so + offset_bytes)
        if ib[:4] != b"FHIB":
            raise Broken("a fractal heap's indirect block has no signature")
        max_direct_rows = (max_direct.bit_length() - 1) - (start_size.bit_length() - 1) + 2
        direct_rows = min(rows, max_direct_rows)
        entries = hf.at(root + 5 + so + offset_bytes, direct_rows * width * so)
        for r in range(direct_rows):
            size = start_size if r < 2 else start_size << (r - 1)
            for c in range(width):
                addr = hf.offset(entries, (r * width + c) * so)
                if addr != hf.undefined:
                    direct.append((addr, size))
        complete = rows <= max_direct_rows
    links: list[tuple[str, int]] = []
    for addr, size in direct:
        block = hf.at(addr, size)
        if block[:4] != b"FHDB":
            raise Broken("a fractal heap's direct block has no signature")
        j = 5 + so + offset_bytes + (4 if checksummed else 0)
        while j < size and block[j] == 1:  # a link message (version 1); free space is zeros
            hf.budget.spend_ops(1)
            end = _link_end(hf, block, j)
            if end is None:
                complete = False
                break
            link = _link(hf, block[j:end])
            if link is not None:
                links.append(link)
            j = end
    return links, complete


def _link_end(hf: _File, b: bytes, i: int) -> int | None:
    """Where the link message starting at ``b[i]`` ends, or None when it cannot end inside ``b``."""
    if i + 2 > len(b):
        return None
    flags = b[i + 1]
    j = i + 2 + (1 if flags & 0x08 else 0) + (8 if flags & 0x04 else 0) + (1 if flags & 0x10 else 0)
    ltype = b[i + 2] if flags & 0x08 else 0
    width = 1 << (flags & 3)
    n = int.from_bytes(b[j:j + width], "little")
    j += width + n
    if ltype == 0:
        j += hf.so
    else:
        j += 2 + int.from_bytes(b[j:j + 2], "little")
    return j if j <= len(b) else None
