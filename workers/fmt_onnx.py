"""An ONNX model's interface read from its protobuf bytes without importing onnx: IR version, opsets,
producer, the graph's inputs and outputs (name, element type, shape with symbolic dimensions), its
initializers (names, types, shapes, parameter count) and operator counts. The weights' bytes are skipped by
seeking. ONNX has no magic number: a file is taken for one only when its top-level message parses to the
file's last byte and holds a graph."""

from __future__ import annotations

from collections import Counter
from typing import IO, Any

from .byte_source import Broken, Budget, NotInspected, Source
from .protobuf_wire import LENGTH, VARINT, Message, signed64
from .tensor_tally import TensorTally

MAX_IO = 1000  # inputs / outputs listed
MAX_OPS = 200  # distinct operator types listed
MAX_IR_VERSION = 64
# onnx.TensorProto.DataType names
ELEM_TYPES = {
    0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
    15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2",
}


def may_be_onnx(head: bytes) -> bool:
    # ModelProto.ir_version (field 1, varint) is what every exporter writes first.
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= MAX_IR_VERSION


def read_onnx(f: IO[bytes], size: int, budget: Budget) -> tuple[dict[str, Any], str] | None:
    """(structure, detail) of an ONNX model, or None when the bytes are not one. A model whose graph cannot
    be read to its end (truncated) keeps what was read, with ``partial``."""
    src = Source.of_file(f, 0, size)
    model = Message(src, size, budget, cut=True)
    structure: dict[str, Any] = {"format": "onnx"}
    opsets: dict[str, int] = {}
    graph_seen = False
    try:
        for number, wtype, value in model.fields():
            if number == 1 and wtype == VARINT:
                if not 1 <= value <= MAX_IR_VERSION:
                    return None
                structure["ir_version"] = value
            elif number == 8 and wtype == LENGTH:
                domain, version = "", 0
                for n, w, v in model.enter(value).fields():
                    if n == 1 and w == LENGTH:
                        domain = model.text(v)
                    elif n == 2 and w == VARINT:
                        version = signed64(v)
                opsets[domain or "ai.onnx"] = version
            elif number in (2, 3, 4) and wtype == LENGTH:
                structure[{2: "producer_name", 3: "producer_version", 4: "domain"}[number]] = model.text(value)
            elif number == 5 and wtype == VARINT:
                structure["model_version"] = signed64(value)
            elif number == 7 and wtype == LENGTH:
                graph_seen = True
                _graph(model.enter(value), structure)
    except (Broken, NotInspected) as exc:
        if not graph_seen or "ir_version" not in structure or not _read_something(structure):
            return None  # not ONNX (or not enough of it to say so)
        structure["partial"] = f"read up to byte {src.pos} ({exc}); what came before is listed"
    if not graph_seen or "ir_version" not in structure:
        return None
    structure["opset"] = opsets
    ins, outs = len(structure.get("inputs", ())), len(structure.get("outputs", ()))
    return structure, (f"ONNX IR {structure['ir_version']}, opset {opsets.get('ai.onnx', '?')}, "
                       f"{ins} input(s), {outs} output(s), {structure.get('parameters', 0)} parameters")


def _read_something(structure: dict[str, Any]) -> bool:
    """A cut-short graph counts as ONNX only when a part of it was read as such."""
    return bool(structure.get("inputs") or structure.get("outputs") or structure.get("nodes")
                or structure.get("tensor_count") or structure.get("graph"))


def _graph(g: Message, structure: dict[str, Any]) -> None:
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    ops: Counter[str] = Counter()
    tally = TensorTally()
    nodes = 0
    # Written into the structure as they are read, so that a truncated graph keeps what came before.
    structure.update(inputs=inputs, outputs=outputs)
    try:
        for number, wtype, value in g.fields():
            if wtype != LENGTH:
                continue
            if number == 2:
                structure["graph"] = g.text(value)
            elif number == 1:
                nodes += 1
                op = _op_type(g.enter(value))
                if op in ops or len(ops) < MAX_OPS:
                    ops[op] += 1
            elif number == 5:
                name, dtype, dims = _tensor(g.enter(value))
                tally.add(name, dtype, dims)
            elif number in (11, 12):
                target = inputs if number == 11 else outputs
                info = _value_info(g.enter(value))
                if len(target) < MAX_IO:
                    target.append(info)
    finally:
        structure["nodes"] = nodes
        structure["ops"] = dict(sorted(ops.items()))
        tally.into(structure)


def _op_type(node: Message) -> str:
    op = "?"
    for number, wtype, value in node.fields():
        if number == 4 and wtype == LENGTH:
            op = node.text(value, 128)
    return op


def _tensor(t: Message) -> tuple[str, str, list[int]]:
    name, dtype, dims = "", "UNDEFINED", []
    for number, wtype, value in t.fields():
        if number == 1:
            if wtype == VARINT:
                dims.append(signed64(value))
            elif wtype == LENGTH:
                dims.extend(signed64(v) for v in t.packed(value))
        elif number == 2 and wtype == VARINT:
            dtype = ELEM_TYPES.get(value, str(value))
        elif number == 8 and wtype == LENGTH:
            name = t.text(value, 512)
    if any(d < 0 for d in dims) or len(dims) > 64:
        raise Broken(f"initializer {name[:80]!r} has an impossible shape")
    return name, dtype, dims


def _value_info(v: Message) -> dict[str, Any]:
    info: dict[str, Any] = {"name": ""}
    for number, wtype, value in v.fields():
        if number == 1 and wtype == LENGTH:
            info["name"] = v.text(value, 512)
        elif number == 2 and wtype == LENGTH:
            _type(v.enter(value), info)
    return info


def _type(t: Message, info: dict[str, Any]) -> None:
    kinds = {4: "sequence", 5: "map", 8: "sparse_tensor", 9: "optional"}
    for number, wtype, value in t.fields():
        if wtype != LENGTH:
            continue
        if number == 1:
            tensor = t.enter(value)
            for n, w, v in tensor.fields():
                if n == 1 and w == VARINT:
                    info["elem_type"] = ELEM_TYPES.get(v, str(v))
                elif n == 2 and w == LENGTH:
                    info["shape"] = _shape(tensor.enter(v))
        elif number in kinds:
            info["type"] = kinds[number]


def _shape(s: Message) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for number, wtype, value in s.fields():
        if number == 1 and wtype == LENGTH:
            dim: int | str | None = None
            d = s.enter(value)
            for n, w, v in d.fields():
                if n == 1 and w == VARINT:
                    dim = signed64(v)
                elif n == 2 and w == LENGTH:
                    dim = d.text(v, 128)
            if len(dims) < 64:
                dims.append(dim)
    return dims
