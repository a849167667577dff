"""The header of a GGUF file (llama.cpp's format): version, architecture, quantisation (``general.file_type``),
the scalar metadata, and every tensor's name, type and shape with the parameter count. Only the header is
read, sequentially and bounded (arrays such as a tokenizer's 150k tokens are skipped element by element,
never kept); the tensor data never is. A header cut short keeps what was read and says where it stopped."""

from __future__ import annotations

import struct
from typing import IO, Any

from .byte_source import Broken, Budget, NotInspected, Source
from .tensor_tally import TensorTally

MAGIC = b"GGUF"
MAX_KV = 1_000_000
MAX_TENSORS = 10_000_000
MAX_STRING = 16 * 1024 * 1024
MAX_DIMS = 8  # GGML has 4
MAX_METADATA = 100
MAX_VALUE_TEXT = 256

# gguf-py's GGMLQuantizationType and LlamaFileType (names as llama.cpp prints them; checked against gguf-py).
GGML_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
    27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}
FILE_TYPES = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K",
    19: "MOSTLY_IQ2_XXS", 20: "MOSTLY_IQ2_XS", 21: "MOSTLY_Q2_K_S", 22: "MOSTLY_IQ3_XS", 23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S", 25: "MOSTLY_IQ4_NL", 26: "MOSTLY_IQ3_S", 27: "MOSTLY_IQ3_M", 28: "MOSTLY_IQ2_S",
    29: "MOSTLY_IQ2_M", 30: "MOSTLY_IQ4_XS", 31: "MOSTLY_IQ1_M", 32: "MOSTLY_BF16", 36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0", 38: "MOSTLY_MXFP4_MOE",
}
# value type -> struct format of a fixed-size scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
               8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}


def is_gguf(head: bytes) -> bool:
    return head[:4] == MAGIC


class _Reader:
    def __init__(self, src: Source, budget: Budget, wide: bool) -> None:
        self.src, self.budget, self.wide = src, budget, wide

    def u32(self) -> int:
        return struct.unpack("<I", self.src.read(4))[0]

    def count(self) -> int:  # version 1 wrote 32-bit counts and lengths
        return struct.unpack("<Q", self.src.read(8))[0] if self.wide else self.u32()

    def string(self, keep: int) -> str | None:
        n = self.count()
        if n > MAX_STRING:
            raise NotInspected(f"a string of {n} bytes in the header")
        if n > keep:
            self.src.skip(n, self.budget)
            return None
        return self.src.read(n).decode("utf-8", "replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        self.budget.spend_ops(1)
        fmt = _SCALARS.get(vtype)
        if fmt is not None:
            return struct.unpack(fmt, self.src.read(struct.calcsize(fmt)))[0]
        if vtype == _STRING:
            s = self.string(4 * MAX_VALUE_TEXT)
            return "<long string>" if s is None else s[:MAX_VALUE_TEXT]
        if vtype == _ARRAY and depth < 4:
            itype = self.u32()
            n = self.count()
            fmt = _SCALARS.get(itype)
            if fmt is not None:
                self.src.skip(n * struct.calcsize(fmt), self.budget)
            else:
                for _ in range(n):
                    self.value(itype, depth + 1)
            return f"[{n} x {_TYPE_NAMES.get(itype, itype)}]"
        raise Broken(f"unknown GGUF value type {vtype}")


def read_gguf(f: IO[bytes], size: int, budget: Budget) -> tuple[dict[str, Any], str]:
    """(structure, detail) of a GGUF file; the structure has ``partial`` when the header could not be read
    to its end."""
    src = Source.of_file(f, 0, size)
    structure: dict[str, Any] = {"format": "gguf"}
    tally = TensorTally()
    try:
        src.read(4)
        version = struct.unpack("<I", src.read(4))[0]
        if version > 0xFFFF:
            structure["partial"] = "a big-endian GGUF file (its header is not read)"
            return structure, "GGUF file (big-endian, not read)"
        structure["version"] = version
        r = _Reader(src, budget, wide=version >= 2)
        n_tensors, n_kv = r.count(), r.count()
        if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
            raise NotInspected(f"{n_tensors} tensors and {n_kv} metadata entries declared")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string(1024) or "<long key>"
            value = r.value(r.u32())
            if len(meta) < MAX_METADATA:
                meta[key[:256]] = value
            if key == "general.architecture":
                structure["architecture"] = value
            elif key == "general.file_type" and isinstance(value, int):
                structure["file_type"] = FILE_TYPES.get(value, str(value))
        structure["metadata"] = meta
        for _ in range(n_tensors):
            budget.spend_ops(1)
            name = r.string(1024) or "<long name>"
            n_dims = r.u32()
            if n_dims > MAX_DIMS:
                raise Broken(f"a tensor with {n_dims} dimensions")
            dims = [r.count() for _ in range(n_dims)]
            ttype = r.u32()
            src.read(8)  # the tensor's offset in the data section
            tally.add(name, GGML_TYPES.get(ttype, str(ttype)), dims)
        if tally.count < n_tensors:
            structure["partial"] = f"{tally.count} of {n_tensors} tensors read"
    except (Broken, NotInspected) as exc:
        structure["partial"] = f"the header was read up to byte {src.pos} ({exc}); what came before is listed"
    tally.into(structure)
    quant = structure.get("file_type", "")
    return structure, (f"GGUF {structure.get('architecture', '')} {quant}".replace("  ", " ").strip()
                       + f", {tally.count} tensors, {tally.parameters} parameters")
