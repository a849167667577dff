"""Decompression as a bounded stream: compressed joblib files and zip members are inflated chunk by chunk
(never more than asked for at a time) and every inflated byte is charged to the sniff's budget. Sizes
declared by the file (a zip's central directory, a gzip trailer) are never trusted to bound anything."""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable
from typing import IO, Any

from .byte_source import Budget, NotInspected, Source

READ = 64 * 1024


def compression_of(head: bytes) -> str | None:
    """The compressor joblib (or a user) wrapped a pickle in, from the first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if head.startswith(b"ZF0x"):
        return "zlib (old joblib)"
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0 and head[0] >> 4 <= 7:
        return "zlib"
    return None


def _decompressor(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(31)
    if kind in ("zlib", "zlib (old joblib)"):
        return zlib.decompressobj()
    if kind == "deflate":
        return zlib.decompressobj(-15)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    if kind == "lz4":
        try:
            import lz4.frame  # optional: only joblib's lz4 files need it
        except ImportError:
            raise NotInspected("lz4-compressed (the lz4 package is not installed)") from None
        return lz4.frame.LZ4FrameDecompressor()
    raise NotInspected(f"{kind} compression")


class Inflater:
    """``read(n)`` over the decompressed bytes of ``read_raw`` (the compressed bytes)."""

    def __init__(self, kind: str, read_raw: Callable[[int], bytes], budget: Budget) -> None:
        self.kind = kind
        self._raw = read_raw
        self._budget = budget
        self._d = _decompressor(kind)
        self._zlib = isinstance(self._d, _ZLIB)
        self._pending = b""  # compressed input not yet fed
        self._eof = False

    def read(self, n: int) -> bytes:
        out: list[bytes] = []
        got = 0
        try:
            while got < n and not self._eof:
                d = self._d
                if d.eof:
                    rest = (d.unused_data or b"") + self._pending
                    if self.kind not in _MULTI_MEMBER:
                        self._eof = True
                        break
                    rest = rest or self._raw(READ)
                    if not rest:
                        self._eof = True
                        break
                    self._d = d = _decompressor(self.kind)  # the next member of a multi-member stream
                    self._pending = rest
                if self._zlib and d.unconsumed_tail:
                    chunk = d.decompress(d.unconsumed_tail, n - got)
                else:
                    data = b""
                    if self._zlib or d.needs_input:
                        data, self._pending = self._pending or self._raw(READ), b""
                        if not data:
                            self._eof = True
                            break
                    chunk = d.decompress(data, n - got)
                self._budget.spend_inflated(len(chunk) + 1)
                out.append(chunk)
                got += len(chunk)
        except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError, RuntimeError) as exc:
            raise NotInspected(f"{self.kind} data could not be decompressed: {exc}") from None
        return b"".join(out)


_ZLIB = type(zlib.decompressobj())
_MULTI_MEMBER = ("gzip", "bz2", "xz", "lz4")


def open_compressed(f: IO[bytes], kind: str, size: int, budget: Budget) -> Callable[[int], Source]:
    """A factory of Sources over the decompressed bytes of a whole compressed file, at any position."""
    start = 0
    if kind == "zlib (old joblib)":
        f.seek(0)
        header = f.read(32)
        # joblib < 0.10: b"ZF" + the length as "0x..." padded to 19 characters, then a zlib stream
        start = 2 + 19 if len(header) >= 21 else 0

    def at(pos: int) -> Source:
        state = {"raw": start}

        def raw(n: int) -> bytes:
            f.seek(state["raw"])
            data = f.read(n)
            state["raw"] += len(data)
            return data

        src = Source(Inflater(kind, raw, budget).read)
        if pos:
            src.skip(pos, budget)
        return src

    return at


def zip_member(f: IO[bytes], header_offset: int, method: int, compress_size: int, budget: Budget
               ) -> Callable[[int], Source]:
    """A factory of Sources over one zip member's bytes, read from its local header (names and sizes in
    the central directory are not trusted: the inflater stops at the deflate stream's own end)."""
    f.seek(header_offset)
    local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise NotInspected("a zip member without its local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    data_start = header_offset + 30 + name_len + extra_len
    kinds = {0: None, 8: "deflate", 12: "bz2"}
    if method not in kinds:
        raise NotInspected(f"zip compression method {method}")
    kind = kinds[method]

    def at(pos: int) -> Source:
        state = {"raw": data_start, "left": compress_size}

        def raw(n: int) -> bytes:
            n = min(n, state["left"])
            if n <= 0:
                return b""
            f.seek(state["raw"])
            data = f.read(n)
            state["raw"] += len(data)
            state["left"] -= len(data)
            return data

        if kind is None:
            src = Source(raw)
        else:
            src = Source(Inflater(kind, raw, budget).read)
        if pos:
            src.skip(pos, budget)
        return src

    return at
