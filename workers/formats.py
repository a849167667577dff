"""Tell an artifact's format from its bytes, without ever executing it.

Pickle-based formats are inspected by walking their opcodes with ``pickletools.genops`` and a tiny symbolic
stack (literals only): nothing is unpickled, imported or called. ``unsafe=False`` means "every import is a
known model/array class"; it is a triage signal, not a proof that loading the file is harmless.
"""

from __future__ import annotations

import io
import json
import pickletools
import posixpath
import re
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from fsspec.implementations.local import LocalFileSystem

from eventstore.errors import ArtifactError

SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Tensors listed in a structure record; an event payload is capped at 1 MiB, big LLMs have thousands.
MAX_TENSORS_LISTED = 2000
MAX_PICKLE_OPS = 5_000_000
MAX_PICKLES_IN_FILE = 10_000
MAX_ZIP_PICKLE = 512 * 1024 * 1024
# Opcode arguments larger than this are skipped over rather than read (array payloads).
_SKIP_ARG_BYTES = 1024 * 1024

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".jbl", ".jl", ".sav", ".bin", ".pt", ".pth", ".ckpt")

# Exact names that are reconstructors/containers of model state.
ALLOW_EXACT = frozenset(
    {
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "builtins.slice",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "builtins.range",
        "builtins.object",
        "__builtin__.set",
        "__builtin__.frozenset",
        "__builtin__.object",
        "copyreg._reconstructor",
        "copy_reg._reconstructor",
        "_codecs.encode",
        "datetime.datetime",
        "datetime.date",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ma.core._mareconstruct",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random.mtrand.RandomState",
        # Bit generators a fitted estimator's random_state pickles with (e.g. MLPClassifier).
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random._generator.Generator",
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.Size",
        "torch.device",
    }
)
ALLOW_PATTERNS = (
    re.compile(r"^numpy\.(dtypes\.\w+DType|u?int(8|16|32|64)|float(16|32|64)|complex(64|128)|bool_?)$"),
    re.compile(r"^torch\.\w*Storage$"),
    re.compile(r"^torch\.(float|double|half|bfloat16|int|long|short|uint8|int8|int16|int32|int64|bool"
               r"|float16|float32|float64|complex64|complex128)$"),
    re.compile(r"^torch\.nn\.modules\.[\w.]+$"),
    re.compile(r"^sklearn\.[\w.]+$"),
    re.compile(r"^scipy\.sparse\.[\w.]+$"),
)
# Inside an allowed package, these still reach code execution, files or the network.
DENY_PATTERNS = (
    re.compile(r"^(os|posix|nt|posixpath|ntpath|subprocess|sys|shutil|importlib|socket|runpy|pty|pickle|_pickle"
               r"|marshal|code|codeop|ctypes|multiprocessing|asyncio|webbrowser|urllib|http|ftplib|smtplib"
               r"|tempfile|pathlib|io|_io|glob|signal|threading|_thread|types|inspect|pdb|timeit|cProfile"
               r"|profile|trace|dill|cloudpickle|setuptools|pip|distutils|zipimport|operator|functools)(\.|$)"),
    re.compile(r"^(builtins|__builtin__)\.(eval|exec|compile|getattr|setattr|delattr|__import__|open|input"
               r"|breakpoint|globals|locals|vars|help|exit|quit|memoryview|type|super|classmethod"
               r"|staticmethod|property)$"),
    re.compile(r"(^|\.)_?testing(\.|$)"),
    re.compile(r"^sklearn\.(datasets|utils\._show_versions|externals)(\.|$)"),
    re.compile(r"^numpy\.(load|save|f2py|distutils|testing|lib\.npyio|ctypeslib)(\.|$)"),
    re.compile(r"^torch\.(load|hub|jit|package|storage\._load_from_bytes|serialization)(\.|$)"),
    re.compile(r"\.__\w+__(\.|$)"),  # dunder attribute chains (e.g. x.__globals__, object.__subclasses__)
)


@dataclass(frozen=True)
class FormatInfo:
    format: str
    structure: dict[str, Any] | None = None
    unsafe: bool = False
    imports: tuple[str, ...] = ()
    detail: str = ""


def classify_import(name: str) -> str:
    """'allowed', 'denied' or 'unknown' for a ``module.qualname`` a pickle would import."""
    if any(p.search(name) for p in DENY_PATTERNS) and name not in ALLOW_EXACT:
        return "denied"
    if name in ALLOW_EXACT or any(p.match(name) for p in ALLOW_PATTERNS):
        return "allowed"
    return "unknown"


# -- pickle walking -------------------------------------------------------------------------------------


class _WalkStopped(Exception):
    pass


@dataclass
class _Global:
    name: str


@dataclass
class _Obj:
    callable: Any
    args: Any
    state: Any = None


class _Opaque:
    """A value we do not model (persistent ids, skipped payloads, ...)."""


_MARK = object()


class _Skipped:
    """Stands in for a huge opcode argument: only its length is known (pickletools checks len())."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _SkippingReader:
    """File proxy for genops: big argument reads seek past the bytes instead of loading them."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f

    def read(self, n: int = -1) -> Any:
        if n is not None and n > _SKIP_ARG_BYTES:
            start = self.f.tell()
            # A length taken from arbitrary bytes may point far past the end (or past what seek accepts):
            # then the pickle is truncated, which ends the walk; it is never an error of the ingest.
            try:
                size = self.f.seek(0, 2)
                if start + n > size:
                    return b""
                self.f.seek(start + n)
            except (OSError, ValueError, OverflowError):
                return b""
            return _Skipped(n)
        return self.f.read(n)

    def readline(self) -> bytes:
        line = self.f.readline(64 * 1024)
        return line

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, pos: int) -> int:
        return self.f.seek(pos)


_LITERAL_OPS = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
    "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES",
    "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
}  # fmt: skip
_IGNORED_OPS = {"PROTO", "FRAME", "READONLY_BUFFER"}


@dataclass
class _Walk:
    imports: list[str] = field(default_factory=list)
    unresolved: int = 0
    joblib_arrays: int = 0
    pickles: int = 0
    ops: int = 0
    stopped: str = ""
    trailing: bool = False

    def add_import(self, name: str) -> None:
        if name not in self.imports:
            self.imports.append(name)


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise _WalkStopped("MARK not found")


def _itemsize(dtype: Any) -> int | None:
    if not isinstance(dtype, _Obj) or not isinstance(dtype.callable, _Global):
        return None
    if dtype.callable.name not in ("numpy.dtype",):
        return None
    state = dtype.state
    if isinstance(state, tuple) and len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
        return state[5]
    args = dtype.args
    if not isinstance(args, tuple) or not args or not isinstance(args[0], str):
        return None
    code = args[0]
    if code.lstrip("<>|=").startswith("O"):
        return 0  # object arrays are a nested pickle, not raw bytes
    m = re.match(r"^[<>|=]?[a-zA-Z?](\d+)$", code)
    if m:
        return int(m.group(1))
    if code in ("?", "b", "B"):
        return 1
    return None


def _joblib_array_bytes(obj: _Obj, f: IO[bytes], walk: _Walk) -> None:
    """After a NumpyArrayWrapper's BUILD, joblib writes the array itself: skip it (or walk its pickle)."""
    state = obj.state
    if not isinstance(state, dict):
        raise _WalkStopped("joblib array wrapper without a readable state")
    itemsize = _itemsize(state.get("dtype"))
    shape = state.get("shape")
    if itemsize is None or not isinstance(shape, tuple) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise _WalkStopped("joblib array of unknown size")
    walk.joblib_arrays += 1
    if itemsize == 0:
        _walk_one(f, walk)  # object dtype: a nested pickle (protocol 5) of the array
        return
    if state.get("numpy_array_alignment_bytes") is not None:
        pad = f.read(1)
        if len(pad) != 1:
            raise _WalkStopped("truncated joblib array")
        f.seek(f.tell() + pad[0])
    count = 1
    for x in shape:
        count *= x
    f.seek(f.tell() + count * itemsize)


def _walk_one(f: IO[bytes], walk: _Walk) -> None:
    """Walk one pickle from the current position to its STOP (inclusive)."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    walk.pickles += 1
    while True:
        restart = False
        for op, arg, _pos in pickletools.genops(_SkippingReader(f)):  # type: ignore[arg-type]
            walk.ops += 1
            if walk.ops > MAX_PICKLE_OPS:
                raise _WalkStopped("too many opcodes")
            name = op.name
            if name in _IGNORED_OPS:
                continue
            if name == "STOP":
                return
            if name in _LITERAL_OPS:
                stack.append(_Opaque() if isinstance(arg, _Skipped) else arg)
            elif name == "NONE":
                stack.append(None)
            elif name == "NEWTRUE":
                stack.append(True)
            elif name == "NEWFALSE":
                stack.append(False)
            elif name in ("EMPTY_LIST",):
                stack.append([])
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_SET":
                stack.append([])
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "LIST":
                stack.append(_pop_mark(stack))
            elif name in ("TUPLE", "FROZENSET"):
                stack.append(tuple(_pop_mark(stack)))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    raise _WalkStopped("stack underflow")
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append(_pairs({}, items))
            elif name == "APPEND":
                x = _pop(stack)
                if stack and isinstance(stack[-1], list):
                    stack[-1].append(x)
            elif name in ("APPENDS", "ADDITEMS"):
                items = _pop_mark(stack)
                if stack and isinstance(stack[-1], list):
                    stack[-1].extend(items)
            elif name == "SETITEM":
                v = _pop(stack)
                k = _pop(stack)
                if stack and isinstance(stack[-1], dict):
                    _pairs(stack[-1], [k, v])
            elif name == "SETITEMS":
                items = _pop_mark(stack)
                if stack and isinstance(stack[-1], dict):
                    _pairs(stack[-1], items)
            elif name == "POP":
                _pop(stack)
            elif name == "POP_MARK":
                _pop_mark(stack)
            elif name == "DUP":
                stack.append(stack[-1] if stack else _Opaque())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1] if stack else _Opaque()
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _Opaque()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg, _Opaque()))
            elif name in ("GLOBAL", "INST"):
                module, _, qual = str(arg).partition(" ")
                g = _Global(f"{module}.{qual}")
                walk.add_import(g.name)
                if name == "INST":
                    stack.append(_Obj(g, tuple(_pop_mark(stack))))
                else:
                    stack.append(g)
            elif name == "STACK_GLOBAL":
                qual = _pop(stack)
                module = _pop(stack)
                if isinstance(module, str) and isinstance(qual, str):
                    g = _Global(f"{module}.{qual}")
                    walk.add_import(g.name)
                else:
                    g = _Global("?")
                    walk.unresolved += 1
                stack.append(g)
            elif name in ("EXT1", "EXT2", "EXT4"):
                walk.unresolved += 1  # copyreg extension registry: could name anything
                stack.append(_Global("?"))
            elif name == "REDUCE":
                args = _pop(stack)
                fn = _pop(stack)
                stack.append(_Obj(fn, args))
            elif name == "NEWOBJ":
                args = _pop(stack)
                cls = _pop(stack)
                stack.append(_Obj(cls, args))
            elif name == "NEWOBJ_EX":
                _pop(stack)
                args = _pop(stack)
                cls = _pop(stack)
                stack.append(_Obj(cls, args))
            elif name == "OBJ":
                items = _pop_mark(stack)
                stack.append(_Obj(items[0] if items else _Opaque(), tuple(items[1:])))
            elif name == "BUILD":
                state = _pop(stack)
                target = stack[-1] if stack else None
                if isinstance(target, _Obj):
                    target.state = state
                    cls = target.callable
                    if isinstance(cls, _Global) and cls.name == "joblib.numpy_pickle.NumpyArrayWrapper":
                        _joblib_array_bytes(target, f, walk)
                        restart = True  # the file moved under genops: start a new generator here
                        break
            elif name == "PERSID":
                stack.append(_Opaque())
            elif name == "BINPERSID":
                _pop(stack)
                stack.append(_Opaque())
            elif name == "NEXT_BUFFER":
                stack.append(_Opaque())
            else:
                raise _WalkStopped(f"unexpected opcode {name}")
        if not restart:
            raise _WalkStopped("pickle ended without STOP")


def _pop(stack: list[Any]) -> Any:
    if not stack or stack[-1] is _MARK:
        raise _WalkStopped("stack underflow")
    return stack.pop()


def _pairs(d: dict[Any, Any], items: list[Any]) -> dict[Any, Any]:
    for i in range(0, len(items) - 1, 2):
        k = items[i]
        try:
            d[k] = items[i + 1]
        except TypeError:
            pass  # unhashable key (a modelled list, ...): the value does not matter for imports
    return d


def walk_pickle(f: IO[bytes]) -> _Walk:
    """Walk every pickle in a (seekable) stream and collect what it would import."""
    walk = _Walk()
    try:
        while walk.pickles < MAX_PICKLES_IN_FILE:
            _walk_one(f, walk)
            here = f.tell()
            nxt = f.read(1)
            if not nxt:
                break
            f.seek(here)
            if nxt != b"\x80":
                walk.trailing = True
                break
    except _WalkStopped as exc:
        walk.stopped = f"opcode walk stopped at byte {_safe_tell(f)}: {exc}"
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, struct.error) as exc:
        walk.stopped = f"opcode walk stopped at byte {_safe_tell(f)}: {type(exc).__name__}: {str(exc)[:120]}"
    return walk


def _safe_tell(f: IO[bytes]) -> int:
    try:
        return f.tell()
    except (OSError, ValueError):
        return -1


def _pickle_info(fmt: str, walk: _Walk) -> FormatInfo:
    classes = {n: classify_import(n) for n in walk.imports}
    denied = sorted(n for n, c in classes.items() if c == "denied")
    unknown = sorted(n for n, c in classes.items() if c == "unknown")
    # Bytes we could not walk may hold any import: an incomplete walk cannot vouch for the file.
    unsafe = bool(denied or unknown or walk.unresolved or walk.stopped or walk.trailing)
    parts = []
    if denied:
        parts.append("dangerous imports: " + ", ".join(denied))
    if unknown:
        parts.append("imports outside the allow-list: " + ", ".join(unknown[:20]))
    if walk.unresolved:
        parts.append(f"{walk.unresolved} import(s) could not be resolved")
    if walk.stopped:
        parts.append(walk.stopped)
    if walk.trailing:
        parts.append("bytes after the last pickle were not inspected")
    if not parts:
        parts.append("imports only allow-listed classes")
    structure = {"format": fmt, "pickles": walk.pickles, "imports": sorted(walk.imports)}
    if walk.joblib_arrays:
        structure["arrays"] = walk.joblib_arrays
    return FormatInfo(
        format=fmt, structure=structure, unsafe=unsafe, imports=tuple(sorted(walk.imports)), detail="; ".join(parts)
    )


# -- other formats ----------------------------------------------------------------------------------------


def _safetensors(f: IO[bytes], size: int) -> FormatInfo | None:
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > SAFETENSORS_MAX_HEADER or n + 8 > size:
        return None
    raw = f.read(n)
    if len(raw) != n or raw[:1] != b"{":
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    data_len = size - 8 - n
    tensors: dict[str, Any] = {}
    params = 0
    count = 0
    for name, t in header.items():
        if name == "__metadata__":
            if not isinstance(t, dict):
                return None
            continue
        if not isinstance(t, dict):
            return None
        dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offs, list):
            return None
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
            return None
        if len(offs) != 2 or not all(isinstance(x, int) for x in offs) or not 0 <= offs[0] <= offs[1] <= data_len:
            return None
        numel = 1
        for x in shape:
            numel *= x
        params += numel
        count += 1
        if len(tensors) < MAX_TENSORS_LISTED:
            tensors[name] = {"dtype": dtype, "shape": shape}
    structure: dict[str, Any] = {"format": "safetensors", "tensors": tensors, "parameters": params}
    if count > len(tensors):
        structure["tensors_truncated"] = count
    meta = header.get("__metadata__")
    if isinstance(meta, dict) and meta:
        structure["metadata"] = {str(k): str(v)[:1024] for k, v in list(meta.items())[:100]}
    return FormatInfo("safetensors", structure, False, (), f"{count} tensors, {params} parameters")


def _is_hdf5(f: IO[bytes], size: int) -> bool:
    # The superblock may sit at 0, 512, 1024, 2048, ... (a user block precedes it).
    offset = 0
    while offset + 8 <= size and offset <= 1 << 30:
        f.seek(offset)
        if f.read(8) == HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"ZF", "zlib (old joblib)"),
)


def _compression(head: bytes) -> str | None:
    for magic, name in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[0] == 0x78 and head[1] in (0x01, 0x5E, 0x9C, 0xDA):
        return "zlib"
    return None


def _zip(f: IO[bytes]) -> FormatInfo:
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)  # type: ignore[arg-type]
        names = zf.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return FormatInfo("unknown", None, False, (), "zip signature but unreadable archive")
    pkls = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if pkls:
        info = zf.getinfo(pkls[0])
        if info.file_size > MAX_ZIP_PICKLE:
            return FormatInfo("pytorch", None, True, (), "data.pkl too large to inspect")
        try:
            with zf.open(pkls[0]) as member:
                walk = walk_pickle(io.BytesIO(member.read()))
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            return FormatInfo("pytorch", None, True, (), f"data.pkl unreadable: {exc}")
        res = _pickle_info("pytorch", walk)
        assert res.structure is not None
        res.structure["tensors_stored"] = sum(1 for n in names if "/data/" in n)
        return res
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return FormatInfo("keras", {"format": "keras", "files": sorted(names)[:100]}, False, (), "Keras v3 archive")
    return FormatInfo("unknown", None, False, (), f"zip archive with {len(names)} entries")


def sniff(fs: Any, path: str, name: str | None = None) -> FormatInfo:
    """Read the format of one file in ``fs`` (any fsspec filesystem) from its bytes.

    ``name`` is the file's user-facing name (the store's paths are digests, without suffixes); it only
    helps to choose between "pickle" and "joblib" and to recognise compressed joblib files.
    """
    name = (name or posixpath.basename(path)).lower()
    try:
        # fsspec's local file object costs more than reading a small file: open local paths directly.
        with (open(path, "rb") if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")) as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(16)
            if head.startswith(HDF5_SIGNATURE) or (size > 512 and _is_hdf5(f, size)):
                return FormatInfo("hdf5", {"format": "hdf5"}, False, (), "HDF5 file (weights not inspected)")
            if head.startswith(b"PK\x03\x04"):
                return _zip(f)
            st = _safetensors(f, size)
            if st is not None:
                return st
            comp = _compression(head)
            if comp is not None:
                if any(s in name for s in PICKLE_SUFFIXES) or ".z" in name:
                    return FormatInfo(
                        "joblib-compressed", {"format": "joblib-compressed", "compression": comp}, True, (),
                        f"{comp}-compressed pickle not inspected",
                    )
                return FormatInfo("unknown", None, False, (), f"{comp}-compressed data")
            looks_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
            if looks_pickle or name.endswith(PICKLE_SUFFIXES):
                f.seek(0)
                walk = walk_pickle(f)
                if not looks_pickle and walk.stopped:
                    return FormatInfo("unknown", None, False, (), "not a recognised format")
                is_joblib = walk.joblib_arrays > 0 or "joblib.numpy_pickle.NumpyArrayWrapper" in walk.imports
                return _pickle_info("joblib" if is_joblib else "pickle", walk)
    except FileNotFoundError:
        raise ArtifactError(f"cannot sniff a missing file: {path}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    return FormatInfo("unknown", None, False, (), "not a recognised format")


# Most telling first: the format a folder is "about".
_RANK = ("safetensors", "pytorch", "keras", "hdf5", "joblib", "joblib-compressed", "pickle", "unknown")


def combine(results: Iterable[tuple[str, FormatInfo]]) -> FormatInfo:
    """One FormatInfo for a directory from its files' results."""
    items = list(results)
    if not items:
        return FormatInfo("unknown", {"format": "directory", "files": {}}, False, (), "empty directory")
    rank = {f: i for i, f in enumerate(_RANK)}
    main_path, main = min(items, key=lambda pr: (rank.get(pr[1].format, len(_RANK)), pr[0]))
    imports = sorted({i for _, r in items for i in r.imports})
    unsafe_files = [p for p, r in items if r.unsafe]
    structure: dict[str, Any] = {
        "format": main.format,
        "main": main_path,
        "files": {p: r.format for p, r in items[:1000]},
    }
    if main.structure is not None:
        structure["structure"] = main.structure
    detail = f"{main_path}: {main.detail}"
    if unsafe_files:
        detail += "; unsafe: " + ", ".join(unsafe_files[:20])
    return FormatInfo(main.format, structure, bool(unsafe_files), tuple(imports), detail)


def sniff_artifact(store: Any, info: Any) -> FormatInfo:
    """Sniff a stored artifact (``store``: a ``BlobStore``; ``info``: its ``ArtifactInfo``)."""
    results = []
    for entry in info.files:
        results.append((entry.path, sniff(store.fs, store.path_of(entry.digest), name=entry.path)))
    if info.kind == "file" and results:
        return results[0][1]
    return combine(results)


