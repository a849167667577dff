"""Every reading a loader could do of a file's bytes as pickles, walked without running anything.

* From the start, as ``pickle.load`` / ``torch.load`` (legacy) / ``joblib.load`` do, whatever the file's name or
  other format: an old protocol 0/1 pickle has no header to recognise it by.
* After each STOP, the next pickle (``torch.load``'s legacy format is five pickles in a row).
* joblib's arrays: after the BUILD of a ``NumpyArrayWrapper`` joblib reads the array's bytes itself (or a nested
  pickle for object arrays), while ``pickle.load`` of the same file reads on through those bytes as opcodes.
  Both readings are walked. The array's size comes from its dtype and shape as NumPy would compute them, and
  only from dtypes built exactly as NumPy pickles them; anything else is "not inspected".
* ``.npy`` files whose dtype holds objects (their payload is a pickle).

A reading that breaks where CPython's reader raises too ends harmlessly (nothing after it runs); a reading
that stops on one of our own limits leaves bytes unread, and the file is then "not inspected" (unsafe).
"""

from __future__ import annotations

import ast
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .byte_source import Broken, Budget, NotInspected, Source
from .pickle_walk import Findings, Global, Obj, Walker

MAX_PICKLES_IN_FILE = 10_000
MAX_NPY_HEADER = 1024 * 1024
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C

OpenAt = Callable[[int], Source]


@dataclass
class PickleReading:
    complete: bool = False  # the first pickle reached its STOP
    claims_pickle: bool = False  # starts with a protocol 2-5 header: it says it is a pickle
    first_value: Any = None
    pickles: int = 0
    broke: str = ""


def claims_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _note(findings: Findings, where: str, exc: Exception) -> None:
    findings.not_inspected.append(f"{where}: {exc}" if where else str(exc))


def scan_pickles(open_at: OpenAt, budget: Budget, findings: Findings, *, start: int = 0, where: str = "",
                 strict: bool = True) -> PickleReading:
    """Walk the pickle at ``start`` and every pickle after it, plus joblib's readings of its arrays.

    ``strict``: bytes that start with a pickle header but break before their STOP are not vouched for (the
    file says it is a pickle). Raw data inside a container (a zip's tensor members) can start like one by
    chance (4 in 65,536); there a break only means that reading fails, so only the imports before it count.
    """
    src = open_at(start)
    reading = PickleReading(claims_pickle=claims_pickle(src.peek(2)))
    forks: list[tuple[int, int]] = []  # (position, protocol) where joblib's first array starts
    hook = _joblib_hook(budget, findings, forks)
    walker = Walker(src, budget, findings, on_wrapper=hook)
    try:
        walker.walk()
        reading.complete = True
        reading.pickles = 1
        reading.first_value = walker.stack[-1] if walker.stack else None
        while reading.pickles < MAX_PICKLES_IN_FILE and not src.at_end():
            # A loader that unpickles again (legacy torch.load) reads on; where that breaks, every such
            # loader fails too (e.g. the raw tensor bytes after a legacy checkpoint's last pickle).
            try:
                Walker(src, budget, findings, on_wrapper=hook).walk()
            except Broken:
                break
            reading.pickles += 1
    except Broken as exc:
        reading.broke = f"byte {src.pos}: {exc}"
        if reading.claims_pickle and strict:
            findings.not_inspected.append(f"{where + ': ' if where else ''}the pickle breaks at {reading.broke}")
    except NotInspected as exc:
        _note(findings, where, exc)
    for pos, proto in forks[:1]:
        # pickle.load of a joblib file: from the first array's bytes on, they are read as opcodes.
        try:
            plain = Walker(open_at(pos), budget, findings, lenient=True)
            plain.proto = proto
            plain.walk()
        except Broken:
            pass
        except NotInspected as exc:
            _note(findings, where, exc)
    return reading


def _joblib_hook(budget: Budget, findings: Findings, forks: list[tuple[int, int]]
                 ) -> Callable[[Walker, Obj], None]:
    def on_wrapper(w: Walker, wrapper: Obj) -> None:
        if w.frame_end is not None:
            if w.src.pos != w.frame_end:
                # joblib reads the array from the file, i.e. from the end of the frame, not from here
                raise NotInspected("a joblib array inside a pickle frame")
            w.frame_end = None
        forks.append((w.src.pos, w.proto))
        layout = array_layout(wrapper.state)
        findings.joblib_arrays += 1
        if layout is None:
            # An object array: a nested pickle read by a fresh (plain) unpickler.
            Walker(w.src, budget, findings).walk()
            return
        if isinstance(wrapper.state, dict) and wrapper.state.get("numpy_array_alignment_bytes") is not None:
            pad = w.read(1)[0]
            w.skip(pad)
        w.skip(layout)

    return on_wrapper


# -- joblib array sizes, exactly as NumPy derives them -----------------------------------------------------

_WRAPPER_KEYS = {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}
_NUMERIC = re.compile(r"([biufc])(\d{1,2})")
_FLEXIBLE = re.compile(r"([USV])(\d{1,9})")
_ORDERS = ("<", ">", "|", "=")
_MAX_ARRAY_BYTES = 1 << 62


def array_layout(state: Any) -> int | None:
    """The byte size of a joblib array's raw data, or None for an object array (a nested pickle)."""
    if not isinstance(state, dict) or not set(state) <= _WRAPPER_KEYS or not {"shape", "dtype"} <= set(state):
        raise NotInspected("a joblib array wrapper with an unexpected state")
    shape = state["shape"]
    if not isinstance(shape, tuple) or len(shape) > 64 or not all(
            type(x) is int and x >= 0 for x in shape):
        raise NotInspected("a joblib array of unknown shape")
    if state.get("order", "C") not in ("C", "F"):
        raise NotInspected("a joblib array of unknown order")
    itemsize = dtype_itemsize(state["dtype"], 0)
    if itemsize is None:
        return None
    n = itemsize
    for x in shape:
        n *= x
        if n > _MAX_ARRAY_BYTES:
            raise Broken("a joblib array larger than any file")
    return n


def dtype_itemsize(dt: Any, depth: int) -> int | None:
    """Item size of a pickled ``numpy.dtype`` built exactly as NumPy pickles one; None when it holds Python
    objects. Anything else (a lying size, odd flags, subarrays, metadata) is not inspected."""
    if depth > 4 or not isinstance(dt, Obj) or dt.callable != Global("numpy", "dtype"):
        raise NotInspected("a joblib array whose dtype is not a plain numpy.dtype")
    args, st = dt.args, dt.state
    if not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[0], str) and args[1:] == (False, True)):
        raise NotInspected("a joblib array with an unusual dtype")
    if not (isinstance(st, tuple) and len(st) in (8, 9) and st[0] in (3, 4) and st[1] in _ORDERS
            and st[2] is None):
        raise NotInspected("a joblib array with an unusual dtype state")
    code = args[0]
    names, fields, elsize, align, flags = st[3:8]
    if code == "O8" and st[3:8] == (None, None, -1, -1, 63):
        return None
    m = _NUMERIC.fullmatch(code)
    if m and st[3:8] == (None, None, -1, -1, 0):
        return int(m.group(2))
    if code in ("M8", "m8") and st[3:8] == (None, None, -1, -1, 0) and st[0] == 4:
        return 8
    m = _FLEXIBLE.fullmatch(code)
    if m is None or len(st) != 8:
        raise NotInspected(f"a joblib array of dtype {code[:20]!r}")
    kind, count = m.group(1), int(m.group(2))
    size = count * 4 if kind == "U" else count
    if elsize != size:
        raise NotInspected("a joblib array whose dtype size disagrees with its type")
    if kind == "U" and (names, fields, align, flags) == (None, None, 4, 8):
        return size
    if kind in ("S", "V") and (names, fields, flags) == (None, None, 0) and align == 1:
        return size
    if kind == "V" and isinstance(names, tuple) and isinstance(fields, dict) and flags in (16, 144) \
            and len(names) == len(fields) and set(names) == set(fields):
        for value in fields.values():
            if not (isinstance(value, tuple) and len(value) == 2 and type(value[1]) is int):
                raise NotInspected("a joblib structured array with odd fields")
            sub = dtype_itemsize(value[0], depth + 1)
            if sub is None or not 0 <= value[1] <= size - sub:
                raise NotInspected("a joblib structured array with an object or out-of-range field")
        return size
    raise NotInspected(f"a joblib array of dtype {code[:20]!r}")


# -- .npy ------------------------------------------------------------------------------------------------

NPY_MAGIC = b"\x93NUMPY"


def scan_npy(open_at: OpenAt, budget: Budget, findings: Findings, where: str = "") -> dict[str, Any]:
    """Structure of a ``.npy`` file; an object array's payload is walked as the pickle it is."""
    src = open_at(0)
    try:
        head = src.read(8)
        major = head[6]
        if major == 1:
            (hlen,) = struct.unpack("<H", src.read(2))
        elif major in (2, 3):
            (hlen,) = struct.unpack("<I", src.read(4))
        else:
            raise NotInspected(f"npy format version {major}")
        if hlen > MAX_NPY_HEADER:
            raise NotInspected("an .npy header too large to read")
        text = src.read(hlen).decode("latin1" if major < 3 else "utf-8")
        header = ast.literal_eval(text)
        descr, shape = header["descr"], header["shape"]
    except Broken as exc:
        return {"format": "npy", "error": str(exc)}  # numpy cannot load it either
    except (NotInspected, ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError,
            UnicodeDecodeError) as exc:
        _note(findings, where, NotInspected(f"an .npy header that could not be read ({type(exc).__name__})"))
        return {"format": "npy"}
    structure: dict[str, Any] = {"format": "npy", "dtype": str(descr)[:200],
                                 "shape": list(shape)[:64] if isinstance(shape, tuple) else None}
    if _descr_has_object(descr, 0):
        payload = src.pos
        scan_pickles(lambda pos: open_at(payload + pos), budget, findings,
                     where=(where + ": " if where else "") + "object array payload")
        structure["objects"] = True
    return structure


def _descr_has_object(descr: Any, depth: int) -> bool:
    if depth > 32:
        raise NotInspected("an .npy dtype nested too deeply")
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        for field in descr:
            if not isinstance(field, tuple) or len(field) < 2:
                raise NotInspected("an .npy dtype that could not be read")
            if _descr_has_object(field[1], depth + 1):
                return True
        return False
    if isinstance(descr, tuple) and len(descr) == 2:
        return _descr_has_object(descr[0], depth + 1)
    raise NotInspected("an .npy dtype that could not be read")


def legacy_torch(reading: PickleReading) -> bool:
    return reading.complete and reading.first_value == LEGACY_TORCH_MAGIC and reading.pickles >= 5


__all__ = ["PickleReading", "array_layout", "claims_pickle", "legacy_torch", "scan_npy",
           "scan_pickles"]
