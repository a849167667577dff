"""Walk one pickle opcode by opcode, as CPython's unpickler would read it, without running anything.

The walker is a decoder plus a symbolic stack: it keeps only what decides which globals a loader would
import (short strings, small ints, tuples, the state of a joblib array wrapper) and replaces everything
else by an opaque marker, so its memory does not grow with payload sizes. It reads exactly the byte
boundaries CPython does, and stops (``Broken``) only where CPython's reader raises too; where a value is
odd but CPython might accept it, the walk goes on (seeing more than a loader is safe, seeing less is not).

FRAME: CPython's C reader prefetches a frame and, reading from a file, drops what is left of it when an
opcode runs past its end; the pure-Python reader (joblib's) raises there; ``pickle.loads`` reads on. A
well-formed pickle never straddles a frame end, so any straddle is "not inspected" rather than guessed.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .byte_source import Broken, Budget, NotInspected, Source
from .pickle_rules import classify, is_importable_name, resolve

MAX_KEPT_STRING = 256  # longer strings are never module or class names a loader can import
MAX_KEPT_STRING_BYTES = 32 * 1024 * 1024
MAX_CONTAINER_ITEMS = 32
MAX_DICTS = 200_000
MAX_MEMO = 1_000_000
MAX_DISTINCT_IMPORTS = 10_000
MAX_LINE = 16 * 1024 * 1024  # CPython reads lines unbounded; a text opcode in a non-pickle can run long
WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")


class _Opaque:
    __slots__ = ()


OPAQUE = _Opaque()  # a value the walk does not model; it may be a str (a module name for STACK_GLOBAL)
NOT_STR = _Opaque()  # a value the walk does not model but knows is no str (a float, bytes, a list, ...)
MARK = object()


@dataclass(frozen=True)
class Global:
    module: str | None  # None: a global the walk could not resolve
    name: str | None


@dataclass
class Obj:
    callable: Any
    args: Any
    state: Any = None


@dataclass
class Findings:
    """What every reading of one file found: its imports and why it could not be followed."""

    imports: dict[str, str] = field(default_factory=dict)  # "module.name" -> allowed / dangerous / unknown
    unresolved: int = 0
    not_inspected: list[str] = field(default_factory=list)
    pickles: int = 0
    joblib_arrays: int = 0
    kept_bytes: int = 0
    dicts: int = 0

    def add_import(self, module: str, name: str) -> None:
        key = f"{module}.{name}"
        if key not in self.imports:
            if len(self.imports) >= MAX_DISTINCT_IMPORTS:
                raise NotInspected("too many distinct imports")
            self.imports[key] = classify(module, name)

    def flagged(self) -> list[str]:
        return sorted(k for k, v in self.imports.items() if v != "allowed")

    def dangerous(self) -> list[str]:
        return sorted(k for k, v in self.imports.items() if v == "dangerous")

    def unsafe(self) -> bool:
        return bool(self.flagged() or self.unresolved or self.not_inspected)


def _is_wrapper(x: Any) -> bool:
    return isinstance(x, Global) and (x.module, x.name) == WRAPPER


class Walker:
    """One pickle from the source's position to its STOP.

    ``lenient``: the walk starts in the middle of someone else's stack (the plain-pickle reading of a joblib
    file from its first array on), so pops of unknown items and memo misses give opaque values instead of
    the errors a fresh reader would raise. ``on_wrapper`` is called at the BUILD of a joblib array wrapper
    (joblib then reads the array's bytes from the file; plain readers do not).
    """

    def __init__(self, src: Source, budget: Budget, findings: Findings, *, lenient: bool = False,
                 on_wrapper: Callable[[Walker, Obj], None] | None = None) -> None:
        self.src = src
        self.budget = budget
        self.findings = findings
        self.lenient = lenient
        self.on_wrapper = on_wrapper
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.memo_uncertain = False
        self.proto = 0
        self.frame_end: int | None = None
        self.has_wrapper = False
        self.start = src.pos

    # -- reading, with frame checks -------------------------------------------------------------------

    def _check_frame(self, start: int, n: int) -> None:
        """An argument of an opcode that began inside a frame must end inside it (CPython's pickler never
        writes otherwise; readers disagree on what such bytes mean)."""
        fe = self.frame_end
        if fe is not None and start + n > fe:
            raise NotInspected(f"an opcode straddles the frame that ends at byte {fe} (readers disagree)")

    def read(self, n: int) -> bytes:
        self._check_frame(self.src.pos, n)
        return self.src.read(n)

    def skip(self, n: int) -> None:
        self._check_frame(self.src.pos, n)
        self.src.skip(n, self.budget)

    def readline(self) -> bytes:
        start = self.src.pos
        line = self.src.readline(MAX_LINE)
        self._check_frame(start, len(line))
        return line

    def counted(self, n: int, keep: Callable[[bytes], Any]) -> Any:
        """A length-prefixed argument: kept (decoded) when short, skipped otherwise."""
        if n <= MAX_KEPT_STRING:
            raw = self.read(n)
            f = self.findings
            f.kept_bytes += n
            if f.kept_bytes > MAX_KEPT_STRING_BYTES:
                return OPAQUE
            try:
                return keep(raw)
            except UnicodeDecodeError:
                # CPython decodes these arguments strictly and fails here too
                raise Broken("a string argument that does not decode") from None
        self.skip(n)
        return OPAQUE

    # -- the stack --------------------------------------------------------------------------------------

    def pop(self) -> Any:
        st = self.stack
        if not st or st[-1] is MARK:
            if self.lenient and not st:
                return OPAQUE
            raise Broken("stack underflow")
        return st.pop()

    def top(self) -> Any:
        st = self.stack
        if not st or st[-1] is MARK:
            if self.lenient and not st:
                return OPAQUE
            raise Broken("stack underflow")
        return st[-1]

    def pop_mark(self) -> list[Any]:
        st = self.stack
        for i in range(len(st) - 1, -1, -1):
            if st[i] is MARK:
                items = st[i + 1:]
                del st[i:]
                return items
        if self.lenient:
            items = st[:]
            st.clear()
            return items
        raise Broken("MARK not found")

    def guard(self, items: Any) -> None:
        """joblib reads array bytes after the BUILD of *any* NumpyArrayWrapper instance; only direct
        construction is followed, so the class used any other way (as an argument, in a container) is not."""
        if self.has_wrapper and any(_is_wrapper(x) for x in items):
            raise NotInspected("a joblib array wrapper class used indirectly")

    # -- globals ------------------------------------------------------------------------------------------

    def global_(self, module: Any, name: Any) -> Global:
        if not isinstance(module, str) or not isinstance(name, str):
            self.findings.unresolved += 1
            return Global(None, None)
        module, name = resolve(module, name, self.proto)
        if not is_importable_name(module):
            raise Broken(f"import of a module name no loader can import ({module[:40]!r})")
        self.findings.add_import(module, name)
        g = Global(module, name)
        if (module, name) == WRAPPER:
            self.has_wrapper = True
        return g

    # -- the walk -----------------------------------------------------------------------------------------

    def walk(self) -> None:
        """Walk to STOP (returns), or raise ``Broken`` / ``NotInspected``."""
        self.findings.pickles += 1
        src, budget = self.src, self.budget
        handlers = _HANDLERS
        while True:
            budget.spend_ops(1)
            pos = src.pos
            if self.frame_end is not None and pos >= self.frame_end:
                self.frame_end = None  # the frame ended exactly between two opcodes
            code = src.read(1)[0]
            h = handlers.get(code)
            if h is None:
                raise Broken(f"invalid opcode 0x{code:02x} at byte {pos}")
            if h(self):
                if self.frame_end is not None and src.pos < self.frame_end:
                    raise NotInspected("a frame goes on after STOP")
                return


# Each handler reads its argument and updates the stack; it returns True at STOP.

def _stop(w: Walker) -> bool:
    w.top()
    return True


def _proto(w: Walker) -> None:
    v = w.read(1)[0]
    if v > 5:
        raise Broken(f"unsupported pickle protocol {v}")
    w.proto = v


def _frame(w: Walker) -> None:
    (n,) = struct.unpack("<Q", w.read(8))
    if w.frame_end is not None and w.src.pos < w.frame_end:
        raise NotInspected("a frame starts inside another frame (readers disagree)")
    if n > sys.maxsize:
        raise Broken("frame length too large")
    w.frame_end = w.src.pos + n


def _push(value: Any) -> Callable[[Walker], None]:
    def h(w: Walker) -> None:
        w.stack.append(value)
    return h


def _int_line(w: Walker) -> None:
    line = w.readline()[:-1]
    if line == b"00":
        w.stack.append(False)
    elif line == b"01":
        w.stack.append(True)
    else:
        try:
            v = int(line) if len(line) < 20 else NOT_STR
        except ValueError:
            v = NOT_STR  # CPython fails or makes an int: never a str
        w.stack.append(v)


def _line_number(w: Walker) -> None:  # LONG, FLOAT as text
    w.readline()
    w.stack.append(NOT_STR)


def _binint(w: Walker) -> None:
    w.stack.append(struct.unpack("<i", w.read(4))[0])


def _binint1(w: Walker) -> None:
    w.stack.append(w.read(1)[0])


def _binint2(w: Walker) -> None:
    w.stack.append(struct.unpack("<H", w.read(2))[0])


def _binfloat(w: Walker) -> None:
    w.read(8)
    w.stack.append(NOT_STR)


def _long_n(size_fmt: str, size_len: int) -> Callable[[Walker], None]:
    def h(w: Walker) -> None:
        (n,) = struct.unpack(size_fmt, w.read(size_len))
        if n < 0:
            raise Broken("LONG with a negative byte count")
        w.stack.append(w.counted(n, lambda b: int.from_bytes(b, "little", signed=True)) if n <= 64
                       else _skip_opaque(w, n))
    return h


def _skip_opaque(w: Walker, n: int) -> Any:
    w.skip(n)
    return NOT_STR


def _ascii(b: bytes) -> Any:
    # Python 2 strings: ASCII by default, but a loader may pass encoding="latin1" and get a str anyway.
    try:
        return b.decode("ascii")
    except UnicodeDecodeError:
        return OPAQUE


def _utf8(b: bytes) -> str:
    return b.decode("utf-8", "surrogatepass")


def _string_line(w: Walker) -> None:  # STRING: a quoted, escaped Python 2 str
    line = w.readline()[:-1]
    if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in (b"'", b'"'):
        raise Broken("the STRING opcode argument must be quoted")
    body = line[1:-1]
    value: Any = OPAQUE
    if len(body) <= MAX_KEPT_STRING and b"\\" not in body:
        try:
            value = body.decode("ascii")
        except UnicodeDecodeError:
            value = OPAQUE
    w.stack.append(value)


def _unicode_line(w: Walker) -> None:  # UNICODE: raw-unicode-escape
    line = w.readline()[:-1]
    value: Any = OPAQUE
    try:
        decoded = line.decode("raw-unicode-escape")
    except UnicodeDecodeError:
        raise Broken("a UNICODE argument that does not decode") from None
    if len(line) <= MAX_KEPT_STRING:
        value = decoded
    w.stack.append(value)


def _counted(size_fmt: str, size_len: int, decode: Callable[[bytes], Any] | None, signed: bool = False
             ) -> Callable[[Walker], None]:
    def h(w: Walker) -> None:
        (n,) = struct.unpack(size_fmt, w.read(size_len))
        if n < 0:
            raise Broken("negative byte count")
        if n > sys.maxsize:
            raise Broken("byte count too large")
        if decode is None:
            w.skip(n)
            w.stack.append(NOT_STR)
        else:
            w.stack.append(w.counted(n, decode))
    return h


def _noop(w: Walker) -> None:
    return None


# Lists and sets never decide an import (arguments are tuples, states are dicts): they are opaque, so that a
# stream of EMPTY_LIST costs one stack slot each. Dicts are modelled up to MAX_DICTS per sniff.

def _empty_list(w: Walker) -> None:
    w.stack.append(NOT_STR)


def _empty_dict(w: Walker) -> None:
    f = w.findings
    f.dicts += 1
    w.stack.append({} if f.dicts <= MAX_DICTS else NOT_STR)


def _append(w: Walker) -> None:
    x = w.pop()
    w.top()
    w.guard((x,))


def _appends(w: Walker) -> None:
    items = w.pop_mark()
    w.top()
    w.guard(items)


def _list(w: Walker) -> None:
    w.guard(w.pop_mark())
    w.stack.append(NOT_STR)


def _tuple(w: Walker) -> None:
    items = w.pop_mark()
    w.guard(items)
    w.stack.append(tuple(items) if len(items) <= MAX_CONTAINER_ITEMS else NOT_STR)


def _tuple_n(n: int) -> Callable[[Walker], None]:
    def h(w: Walker) -> None:
        items = [w.pop() for _ in range(n)][::-1]
        w.guard(items)
        w.stack.append(tuple(items))
    return h


def _set_pairs(d: dict[Any, Any], items: list[Any]) -> None:
    for i in range(0, len(items) - 1, 2):
        if len(d) >= MAX_CONTAINER_ITEMS:
            return
        try:
            d[items[i]] = items[i + 1]
        except TypeError:
            pass  # an unhashable modelled key: the value does not decide any import


def _dict(w: Walker) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Broken("odd number of items for DICT")
    w.guard(items)
    f = w.findings
    f.dicts += 1
    if f.dicts > MAX_DICTS:
        w.stack.append(NOT_STR)
        return
    d: dict[Any, Any] = {}
    _set_pairs(d, items)
    w.stack.append(d)


def _setitem(w: Walker) -> None:
    v = w.pop()
    k = w.pop()
    target = w.top()
    w.guard((k, v))
    if isinstance(target, dict):
        _set_pairs(target, [k, v])


def _setitems(w: Walker) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Broken("odd number of items for SETITEMS")
    target = w.top()
    w.guard(items)
    if isinstance(target, dict):
        _set_pairs(target, items)


def _additems(w: Walker) -> None:
    items = w.pop_mark()
    w.top()
    w.guard(items)


def _frozenset(w: Walker) -> None:
    w.guard(w.pop_mark())
    w.stack.append(NOT_STR)


def _pop(w: Walker) -> None:
    st = w.stack
    if st and st[-1] is MARK:
        st.pop()  # CPython's POP removes a MARK that has nothing above it
    else:
        w.pop()


def _pop_mark(w: Walker) -> None:
    w.pop_mark()


def _dup(w: Walker) -> None:
    w.stack.append(w.top())


def _mark(w: Walker) -> None:
    w.stack.append(MARK)


def _memo_put(w: Walker, key: Any) -> None:
    if not isinstance(key, int):
        w.memo_uncertain = True
        return
    if key < 0:
        raise Broken("negative PUT argument")
    if len(w.memo) >= MAX_MEMO and key not in w.memo:
        raise NotInspected("too many memo entries")
    w.memo[key] = w.top()


def _memo_get(w: Walker, key: Any) -> None:
    if isinstance(key, int) and key in w.memo:
        w.stack.append(w.memo[key])
    elif w.lenient or w.memo_uncertain or not isinstance(key, int):
        w.stack.append(OPAQUE)
    else:
        raise Broken(f"memo value not found at index {key}")


def _put(w: Walker) -> None:
    line = w.readline()[:-1]
    try:
        key: Any = int(line) if len(line) < 20 else None
    except ValueError:
        key = None
    _memo_put(w, key)


def _binput(w: Walker) -> None:
    _memo_put(w, w.read(1)[0])


def _long_binput(w: Walker) -> None:
    _memo_put(w, struct.unpack("<I", w.read(4))[0])


def _memoize(w: Walker) -> None:
    if w.memo_uncertain:
        w.top()
        return
    _memo_put(w, len(w.memo))


def _get(w: Walker) -> None:
    line = w.readline()[:-1]
    try:
        key: Any = int(line) if len(line) < 20 else None
    except ValueError:
        key = None
    _memo_get(w, key)


def _binget(w: Walker) -> None:
    _memo_get(w, w.read(1)[0])


def _long_binget(w: Walker) -> None:
    _memo_get(w, struct.unpack("<I", w.read(4))[0])


def _ext(n: int) -> Callable[[Walker], None]:
    def h(w: Walker) -> None:
        w.read(n)
        # copyreg's extension registry is empty unless a program fills it (none of the loaders does):
        # the lookup fails. (A pickle that claims to be one still ends "not inspected" at this break.)
        raise Broken("an extension code (copyreg's registry is empty)")
    return h


def _name_line(w: Walker) -> str:
    raw = w.readline()[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Broken("a global name that is not UTF-8") from None


def _global(w: Walker) -> None:
    module = _name_line(w)
    name = _name_line(w)
    w.stack.append(w.global_(module, name))


def _inst(w: Walker) -> None:
    module = _name_line(w)
    name = _name_line(w)
    g = w.global_(module, name)
    args = w.pop_mark()
    w.guard(args)
    w.stack.append(Obj(g, tuple(args[:MAX_CONTAINER_ITEMS])))


def _stack_global(w: Walker) -> None:
    name = w.pop()
    module = w.pop()
    if (module is not OPAQUE and not isinstance(module, str)) or (name is not OPAQUE and not isinstance(name, str)):
        raise Broken("STACK_GLOBAL requires str")  # known non-str values (NOT_STR, None, numbers, tuples)
    w.stack.append(w.global_(module, name))


def _reduce(w: Walker) -> None:
    args = w.pop()
    fn = w.pop()
    w.stack.append(Obj(fn, args))


def _newobj(w: Walker) -> None:
    args = w.pop()
    cls = w.pop()
    w.stack.append(Obj(cls, args))


def _newobj_ex(w: Walker) -> None:
    kwargs = w.pop()
    args = w.pop()
    cls = w.pop()
    w.guard((kwargs,))
    w.stack.append(Obj(cls, args))


def _obj(w: Walker) -> None:
    items = w.pop_mark()
    if not items:
        if not w.lenient:
            raise Broken("OBJ without a class")
        items = [OPAQUE]
    w.guard(items[1:])
    w.stack.append(Obj(items[0], tuple(items[1:MAX_CONTAINER_ITEMS])))


def _build(w: Walker) -> None:
    state = w.pop()
    target = w.top()
    w.guard((state,))
    if isinstance(target, Obj):
        target.state = state
        if _is_wrapper(target.callable) and w.on_wrapper is not None:
            w.on_wrapper(w, target)
            w.stack[-1] = NOT_STR  # joblib replaces the wrapper by the array it read


def _persid(w: Walker) -> None:
    # Text persistent ids: plain readers have no persistent_load, PyTorch's accepts tuples only.
    w.readline()
    raise Broken("a text persistent id (no loader accepts one)")


def _binpersid(w: Walker) -> None:
    w.pop()
    w.stack.append(OPAQUE)


_HANDLERS: dict[int, Callable[[Walker], Any]] = {
    ord("."): _stop, 0x80: _proto, 0x95: _frame,
    ord("I"): _int_line, ord("J"): _binint, ord("K"): _binint1, ord("M"): _binint2,
    ord("L"): _line_number, 0x8A: _long_n("<B", 1), 0x8B: _long_n("<i", 4),
    ord("S"): _string_line, ord("T"): _counted("<i", 4, _ascii), ord("U"): _counted("<B", 1, _ascii),
    ord("B"): _counted("<I", 4, None), ord("C"): _counted("<B", 1, None), 0x8E: _counted("<Q", 8, None),
    0x96: _counted("<Q", 8, None), 0x97: _push(NOT_STR), 0x98: _noop,
    ord("N"): _push(None), 0x88: _push(True), 0x89: _push(False),
    ord("V"): _unicode_line, 0x8C: _counted("<B", 1, _utf8), ord("X"): _counted("<I", 4, _utf8),
    0x8D: _counted("<Q", 8, _utf8), ord("F"): _line_number, ord("G"): _binfloat,
    ord("]"): _empty_list, ord("a"): _append, ord("e"): _appends, ord("l"): _list,
    ord(")"): _push(()), ord("t"): _tuple, 0x85: _tuple_n(1), 0x86: _tuple_n(2), 0x87: _tuple_n(3),
    ord("}"): _empty_dict, ord("d"): _dict, ord("s"): _setitem, ord("u"): _setitems,
    0x8F: _empty_list, 0x90: _additems, 0x91: _frozenset,
    ord("0"): _pop, ord("2"): _dup, ord("("): _mark, ord("1"): _pop_mark,
    ord("g"): _get, ord("h"): _binget, ord("j"): _long_binget,
    ord("p"): _put, ord("q"): _binput, ord("r"): _long_binput, 0x94: _memoize,
    0x82: _ext(1), 0x83: _ext(2), 0x84: _ext(4),
    ord("c"): _global, 0x93: _stack_global, ord("R"): _reduce, ord("b"): _build, ord("i"): _inst,
    ord("o"): _obj, 0x81: _newobj, 0x92: _newobj_ex, ord("P"): _persid, ord("Q"): _binpersid,
}
