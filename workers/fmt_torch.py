"""Tensor names, dtypes and shapes of a PyTorch checkpoint, read from its pickle's opcodes without loading it.

``torch.save`` pickles each tensor as a call of ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)`` whose storage is a persistent id ``('storage', torch.FloatStorage, key, location, numel)``; a
state dict is an ``OrderedDict`` filled by SETITEMS. The walker of ``pickle_walk`` (the one the safety scan
uses: same byte boundaries, same bounds) is run with a few handlers that model exactly these values: a
storage's dtype, a tensor's shape, and dicts of named tensors. Nothing is imported or called; a value the
walk does not model stays opaque. The zip format's pickle is its ``data.pkl`` member; the legacy (non-zip)
format is several pickles in a row, the fourth of which holds the tensors.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .byte_source import Broken, Budget, NotInspected, Source
from .inflate import zip_member
from .pickle_walk import _HANDLERS, Findings, Global, Obj, Walker  # noqa: PLC2701 - same package
from .tensor_tally import TensorTally

MAX_ENTRIES = 300_000  # named values kept over all dicts of one pickle (~150 bytes each)
MAX_DEPTH = 16
MAX_LEGACY_PICKLES = 8
# An nn.Module pickled whole keeps its tensors in these attributes; state_dict() leaves them out of names.
_MODULE_DICTS = {"_parameters", "_buffers", "_modules"}
_REBUILD = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"}
_PARAMETER = {"_rebuild_parameter", "_rebuild_parameter_with_state"}
_STORAGE_DTYPES = {
    "Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16", "Long": "int64",
    "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool",
    "ComplexFloat": "complex64", "ComplexDouble": "complex128", "QInt8": "qint8", "QUInt8": "quint8",
    "QInt32": "qint32", "QUInt4x2": "quint4x2", "QUInt2x4": "quint2x4",
}


@dataclass(frozen=True)
class Storage:
    dtype: str


@dataclass(frozen=True, eq=False)
class Tensor:
    dtype: str
    shape: tuple[int, ...]


@dataclass(eq=False)
class Named:
    """A dict (or OrderedDict) as far as it names tensors or other such dicts."""

    entries: list[tuple[str, Any]] = field(default_factory=list)


class TensorWalker(Walker):
    """The safety walker, with dicts, storages and tensor rebuilds modelled."""

    def __init__(self, src: Source, budget: Budget) -> None:
        super().__init__(src, budget, Findings())
        self.tensors: list[Tensor] = []
        self.kept = 0

    def walk(self) -> None:
        handlers = _TENSOR_HANDLERS
        src, budget = self.src, self.budget
        while True:
            budget.spend_ops(1)
            pos = src.pos
            if self.frame_end is not None and pos >= self.frame_end:
                self.frame_end = None
            code = src.read(1)[0]
            h = handlers.get(code)
            if h is None:
                raise Broken(f"invalid opcode 0x{code:02x} at byte {pos}")
            if h(self):
                return

    def name_pairs(self, target: Any, items: list[Any]) -> None:
        if not isinstance(target, Named):
            if isinstance(target, Obj) and isinstance(target.state, Named):
                target = target.state
            else:
                return
        for i in range(0, len(items) - 1, 2):
            k, v = items[i], items[i + 1]
            if isinstance(k, (str, int)) and isinstance(v, (Tensor, Named, Obj)):
                if self.kept >= MAX_ENTRIES:
                    raise NotInspected("too many named values to list")
                self.kept += 1
                target.entries.append((str(k), v))


def _storage_dtype(g: Any) -> str:
    if isinstance(g, Global) and g.name and g.name.endswith("Storage"):
        base = g.name[:-len("Storage")]
        return _STORAGE_DTYPES.get(base, base.lower() or "unknown")
    return "unknown"


def _binpersid(w: Walker) -> None:
    pid = w.pop()
    if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
        w.stack.append(Storage(_storage_dtype(pid[1])))
    else:
        w.stack.append(Storage("unknown"))


def _rebuilt(fn: Any, args: Any, depth: int = 0) -> Tensor | None:
    """The tensor a call of ``fn(*args)`` would rebuild, when it is one of torch's rebuild functions."""
    if not isinstance(fn, Global) or not isinstance(args, tuple) or not args or depth > 2:
        return None
    if fn.module == "torch._utils":
        if fn.name in _REBUILD and len(args) >= 3 and isinstance(args[0], Storage):
            size = args[2]
            if isinstance(size, tuple) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in size):
                return Tensor(args[0].dtype, size)
        if fn.name in _PARAMETER and isinstance(args[0], Tensor):
            return args[0]
    if (fn.module, fn.name) == ("torch._tensor", "_rebuild_from_type_v2") and len(args) >= 3:
        # A tensor with attributes or of a subclass: (func, type, func's args, state)
        return _rebuilt(args[0], args[2], depth + 1)
    return None


def _reduce(w: Walker) -> None:
    args = w.pop()
    fn = w.pop()
    assert isinstance(w, TensorWalker)
    t = _rebuilt(fn, args)
    if t is not None:
        if not isinstance(args[0], Tensor):  # a parameter wraps a tensor already counted
            w.tensors.append(t)
        w.stack.append(t)
        return
    if isinstance(fn, Global) and (fn.module, fn.name) == ("collections", "OrderedDict"):
        w.stack.append(Named())
        return
    w.stack.append(Obj(fn, args))


def _empty_dict(w: Walker) -> None:
    w.stack.append(Named())


def _dict(w: Walker) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Broken("odd number of items for DICT")
    d = Named()
    assert isinstance(w, TensorWalker)
    w.name_pairs(d, items)
    w.stack.append(d)


def _setitem(w: Walker) -> None:
    v = w.pop()
    k = w.pop()
    assert isinstance(w, TensorWalker)
    w.name_pairs(w.top(), [k, v])


def _setitems(w: Walker) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Broken("odd number of items for SETITEMS")
    assert isinstance(w, TensorWalker)
    w.name_pairs(w.top(), items)


def _build(w: Walker) -> None:
    state = w.pop()
    target = w.top()
    if isinstance(target, Obj):
        target.state = state  # an nn.Module pickled whole: its __dict__ names its parameters


_TENSOR_HANDLERS: dict[int, Callable[[Walker], Any]] = {
    **_HANDLERS, ord("Q"): _binpersid, ord("R"): _reduce, ord("}"): _empty_dict, ord("d"): _dict,
    ord("s"): _setitem, ord("u"): _setitems, ord("b"): _build,
}


def _flatten(root: Any, tally: TensorTally) -> set[int]:
    """Every tensor reachable from ``root`` by names, dotted as ``state_dict()`` keys are; returns their ids."""
    seen: set[int] = set()
    named: set[int] = set()
    todo: list[tuple[str, Any, int]] = [("", root, 0)]
    while todo:
        prefix, value, depth = todo.pop()
        if isinstance(value, Tensor):
            tally.add(prefix or "<root>", value.dtype, value.shape)
            named.add(id(value))
            continue
        module = isinstance(value, Obj)
        if module:
            value = value.state
        if not isinstance(value, Named) or id(value) in seen or depth > MAX_DEPTH:
            continue
        seen.add(id(value))
        for k, v in reversed(value.entries):
            if module and k in _MODULE_DICTS:
                todo.append((prefix, v, depth + 1))  # named as state_dict() names them: "0.weight"
            else:
                todo.append((f"{prefix}.{k}" if prefix else k, v, depth + 1))
    return named


def _structure(walkers: list[TensorWalker], roots: list[Any]) -> dict[str, Any]:
    tally = TensorTally()
    named: set[int] = set()
    for root in roots:
        named |= _flatten(root, tally)
    unnamed = [t for w in walkers for t in w.tensors if id(t) not in named]
    for i, t in enumerate(unnamed):
        tally.add(f"<unnamed {i}>", t.dtype, t.shape)
    return tally.into({})


def read_zip_checkpoint(f: IO[bytes], budget: Budget) -> tuple[dict[str, Any], str]:
    """(structure fields, problem) of a ``torch.save`` zip: its ``<folder>/data.pkl`` walked for tensors.
    ``problem`` is empty when the walk reached the pickle's end."""
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)  # type: ignore[arg-type]
        infos = [i for i in zf.infolist() if i.filename.endswith("data.pkl") and i.filename.count("/") <= 1]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, KeyError, IndexError,
            UnicodeDecodeError) as exc:
        return {}, f"the zip could not be read ({type(exc).__name__})"
    if not infos:
        return {}, "no data.pkl member"
    info = infos[0]
    walker: TensorWalker | None = None
    try:
        open_at = zip_member(f, info.header_offset, info.compress_type, info.compress_size, budget)
        walker = TensorWalker(open_at(0), budget)
        walker.walk()
    except (Broken, NotInspected) as exc:
        got = _structure([walker] if walker else [], [])
        return got, f"data.pkl read up to a problem ({exc}); what was seen before it is listed"
    return _structure([walker], walker.stack[-1:]), ""


def read_legacy_checkpoint(f: IO[bytes], size: int, budget: Budget) -> tuple[dict[str, Any], str]:
    """(structure fields, problem) of a legacy (non-zip) ``torch.save`` file: its pickles walked in a row."""
    src = Source.of_file(f, 0, size)
    walkers: list[TensorWalker] = []
    roots: list[Any] = []
    problem = ""
    for _ in range(MAX_LEGACY_PICKLES):
        if src.at_end():
            break
        walker = TensorWalker(src, budget)
        walkers.append(walker)
        try:
            walker.walk()
        except (Broken, NotInspected) as exc:
            if not walker.tensors:
                break  # the raw storage bytes after the last pickle
            problem = f"a pickle read up to a problem ({exc}); what was seen before it is listed"
            break
        roots.extend(walker.stack[-1:])
        if walker.tensors:
            break  # the object pickle; what follows is the storage keys and their bytes
    return _structure(walkers, roots), problem
