"""A bounded reader of the protobuf wire format over a ``byte_source.Source``: the fields of one message,
with length-delimited fields either entered (a sub-message, checked to end where its length says) or
skipped by seeking (a tensor's raw bytes are never read). No generated code and no library: the format
readers (ONNX) name the fields they want and skip every other one."""

from __future__ import annotations

from collections.abc import Iterator

from .byte_source import Broken, Budget, Source

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MAX_DEPTH = 32


class Message:
    """The fields between ``src.pos`` and ``end``."""

    def __init__(self, src: Source, end: int, budget: Budget, depth: int = 0, *, cut: bool = False) -> None:
        """``cut``: this message is the whole file, which may be cut short: a field that runs past its end
        is still handed out (its reader then stops where the bytes do, keeping what came before)."""
        if depth > MAX_DEPTH:
            raise Broken("messages nested too deeply")
        self.src, self.end, self.budget, self.depth, self.cut = src, end, budget, depth, cut

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.src.read(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise Broken("a varint longer than 10 bytes")

    def fields(self) -> Iterator[tuple[int, int, int]]:
        """(field number, wire type, value): the value of a varint or fixed field, the length of a
        length-delimited one — which the caller must ``enter``, ``text``, ``packed`` or ``skip``."""
        src = self.src
        while src.pos < self.end:
            self.budget.spend_ops(1)
            key = self.varint()
            number, wtype = key >> 3, key & 7
            if number == 0:
                raise Broken("field number 0")
            if wtype == VARINT:
                value = self.varint()
            elif wtype == FIXED64:
                value = int.from_bytes(src.read(8), "little")
            elif wtype == FIXED32:
                value = int.from_bytes(src.read(4), "little")
            elif wtype == LENGTH:
                value = self.varint()
                if src.pos + value > self.end:
                    if not self.cut:
                        raise Broken(f"field {number} runs past the end of its message")
            else:
                raise Broken(f"wire type {wtype} (groups are not read)")
            start = src.pos
            yield number, wtype, value
            if wtype == LENGTH and src.pos == start:
                self.skip(value)  # the caller did not use it (past the end of a cut file: Broken)
            if src.pos > self.end:
                raise Broken("a field runs past the end of its message")
        if src.pos != self.end:
            raise Broken("a message ends inside a field")

    def enter(self, length: int) -> Message:
        return Message(self.src, self.src.pos + length, self.budget, self.depth + 1)

    def skip(self, length: int) -> None:
        if length:
            self.src.skip(length, self.budget)

    def text(self, length: int, keep: int = 256) -> str:
        if length > keep:
            self.skip(length)
            return "<long text>"
        return self.src.read(length).decode("utf-8", "replace")

    def packed(self, length: int) -> list[int]:
        """A packed repeated varint field (bounded: callers pass short fields only)."""
        sub = self.enter(length)
        out = []
        while self.src.pos < sub.end:
            self.budget.spend_ops(1)
            out.append(sub.varint())
        if self.src.pos != sub.end:
            raise Broken("a packed field ends inside a varint")
        return out


def signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v
