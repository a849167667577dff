"""Which globals a pickle may name and still be recorded as safe: an exact allow-list of (module, qualified
name) pairs.

A loader resolves ``module`` with ``__import__`` and then walks ``name`` attribute by attribute (protocol 4+),
so only the exact pair says what is reached: ``sklearn._config`` + ``os.system`` is ``os.system``, and a
name outside the list is never allowed because its module is. Classes of scikit-learn, SciPy's sparse
matrices and ``torch.nn`` layers come from ``pickle_allowed_classes`` (generated from the libraries
themselves: only classes defined in the module that names them). Everything else a file imports makes it
unsafe; names that reach code execution, files, processes or the network are called out as dangerous.
"""

from __future__ import annotations

import _compat_pickle

from .pickle_allowed_classes import LIBRARY_CLASSES

# Containers, numbers and reconstructors of model state. Calling any of these builds data and runs nothing
# else the pickle chose (their arguments are themselves globals the walk checks).
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in ("set", "frozenset", "complex", "slice", "bytearray", "bytes", "list", "dict",
                               "tuple", "int", "float", "str", "bool", "range", "object", "len", "abs", "min",
                               "max", "sum", "round", "divmod", "Ellipsis", "NotImplemented")]
    + [("collections", n) for n in ("OrderedDict", "defaultdict", "deque", "Counter")]
    + [("copyreg", "_reconstructor"), ("_codecs", "encode"), ("__future__", "annotations")]
    + [("datetime", n) for n in ("datetime", "date", "time", "timedelta", "timezone")]
    + [("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID")]
    + [(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", n) for n in ("ndarray", "dtype", "matrix", "bool_", "int8", "int16", "int32", "int64", "uint8",
                              "uint16", "uint32", "uint64", "float16", "float32", "float64", "longdouble",
                              "complex64", "complex128", "clongdouble", "str_", "bytes_", "void", "datetime64",
                              "timedelta64", "object_", "intc", "uintc", "longlong", "ulonglong")]
    + [("numpy.dtypes", n + "DType") for n in (
        "Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float16", "Float32",
        "Float64", "LongDouble", "Complex64", "Complex128", "CLongDouble", "Str", "Bytes", "Void", "DateTime64",
        "TimeDelta64", "Object", "Long", "ULong", "LongLong", "ULongLong", "Byte", "UByte", "Short", "UShort",
        "Int", "UInt", "Half", "Float", "Double", "CDouble", "CFloat", "StringDType")]
    + [("numpy.ma.core", "_mareconstruct"), ("numpy.ma.core", "MaskedArray")]
    + [("numpy.random._pickle", n) for n in ("__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor")]
    + [("numpy.random.mtrand", "RandomState"), ("numpy.random._generator", "Generator"),
       ("numpy.random.bit_generator", "SeedSequence"), ("numpy.random._mt19937", "MT19937"),
       ("numpy.random._pcg64", "PCG64"), ("numpy.random._pcg64", "PCG64DXSM"), ("numpy.random._philox", "Philox"),
       ("numpy.random._sfc64", "SFC64")]
    + [("joblib.numpy_pickle", "NumpyArrayWrapper")]
    + [("torch._utils", n) for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                                     "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor",
                                     "_rebuild_sparse_tensor", "_rebuild_device_tensor_from_numpy",
                                     "_rebuild_wrapper_subclass", "_rebuild_meta_tensor_no_storage",
                                     "_rebuild_nested_tensor")]
    + [("torch._tensor", "_rebuild_from_type_v2"), ("torch", "Size"), ("torch", "device"), ("torch", "dtype"),
       ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch.storage", "UntypedStorage"),
       ("torch.storage", "TypedStorage"), ("torch.serialization", "_get_layout")]
    + [("torch", n) for n in ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
                              "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
                              "ComplexFloatStorage", "ComplexDoubleStorage", "QInt8Storage", "QUInt8Storage",
                              "QInt32Storage", "UntypedStorage")]
    + [("torch", n) for n in ("float", "double", "half", "bfloat16", "int", "long", "short", "uint8", "int8",
                              "int16", "int32", "int64", "bool", "float16", "float32", "float64", "complex64",
                              "complex128", "strided", "sparse_coo", "contiguous_format", "channels_last",
                              "preserve_format")]
    # TorchScript's own list helpers: each returns its argument.
    + [("torch.jit._pickle", n) for n in ("build_intlist", "build_floatlist", "build_boollist",
                                          "build_tensorlist", "build_doublelist", "build_complexlist",
                                          "build_tensor_from_id", "restore_type_tag")]
    + list(LIBRARY_CLASSES)
)

# Reported as "dangerous" rather than merely "outside the allow-list" (both make a file unsafe).
_DANGEROUS_MODULES = frozenset(
    "os posix nt posixpath ntpath subprocess sys shutil importlib socket runpy pty pickle _pickle marshal code "
    "codeop ctypes multiprocessing asyncio webbrowser urllib http ftplib smtplib tempfile pathlib io _io glob "
    "signal threading _thread types inspect pdb bdb timeit cProfile profile trace dill cloudpickle setuptools "
    "pip distutils zipimport operator _operator functools builtins __builtin__ requests aiohttp httplib idlelib "
    "pydoc venv ensurepip pkgutil doctest imaplib logging lib2to3 _aix_support _osx_support _pyrepl uuid ssl "
    "telnetlib poplib nntplib xmlrpc socketserver sqlite3 shelve dbm zipfile tarfile".split()
)
_DANGEROUS_BUILTINS = frozenset(
    "eval exec compile getattr setattr delattr __import__ open input breakpoint globals locals vars help exit "
    "quit memoryview type super classmethod staticmethod property apply execfile file reload".split()
)


def resolve(module: str, name: str, proto: int) -> tuple[str, str]:
    """The (module, name) a loader actually imports: protocols 0-2 map Python 2 names (``fix_imports``)."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def is_importable_name(module: str) -> bool:
    """A module name an installed package can have: dotted identifiers. (``__import__`` would also find a
    file called ``lass Net(Module):.py`` on ``sys.path``, but no installer writes one, and whoever can put
    files on a loader's path runs code without any pickle.) Text that is not a pickle at all, such as a
    TorchScript ``code/`` member starting with ``class``, reads as such a name and ends that reading."""
    return bool(module) and all(part.isidentifier() for part in module.split("."))


def classify(module: str, name: str) -> str:
    """'allowed', 'dangerous' or 'unknown' for the exact global ``module`` + ``name``."""
    if (module, name) in ALLOWED or module == "__torch__" or module.startswith("__torch__."):
        # ``__torch__.*`` are TorchScript type names resolved by its own loader; no Python module has the name.
        return "allowed"
    parts = set(module.split(".")) | set(name.split("."))
    if parts & _DANGEROUS_MODULES or any(p.startswith("__") and p.endswith("__") and p != "__init__"
                                         for p in name.split(".")):
        return "dangerous"
    if module.split(".")[0] in ("builtins", "__builtin__") and name in _DANGEROUS_BUILTINS:
        return "dangerous"
    return "unknown"


def classify_import(dotted: str) -> str:
    """'allowed', 'denied' or 'unknown' for a ``module.qualname`` string (kept for callers of the old API):
    allowed only when some split of it into module and name is an allowed pair."""
    parts = dotted.split(".")
    verdicts = {classify(".".join(parts[:i]), ".".join(parts[i:])) for i in range(1, len(parts))}
    if "allowed" in verdicts:
        return "allowed"
    return "denied" if "dangerous" in verdicts else "unknown"
