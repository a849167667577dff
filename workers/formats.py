"""Tell an artifact's format from its bytes, without ever executing it.

A file is recorded ``unsafe: false`` only when every way a loader could read its bytes is safe: it is always
read as a pickle from its first byte (whatever its name or other format: polyglots and old protocols have
nothing else to recognise them by), and also as the container it is (zip members, ``.npy``, compressed
joblib, safetensors, HDF5). The pickle readings live in ``pickle_scan``; their allow-list in ``pickle_rules``.
What cannot be followed to the end is "not inspected", which counts as unsafe. Every sniff is bounded in
time and memory (``byte_source.Budget``) and a sniffing failure is a recorded detail, never an exception.
"""

from __future__ import annotations

import io
import json
import posixpath
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from fsspec.implementations.local import LocalFileSystem

from eventstore.errors import ArtifactError

from .byte_source import Budget, NotInspected, Source
from .inflate import compression_of, open_compressed
from .pickle_rules import classify_import
from .pickle_scan import NPY_MAGIC, PickleReading, legacy_torch, scan_npy, scan_pickles
from .pickle_walk import Findings
from .zip_scan import has_end_record, scan_zip

# The safetensors library refuses headers over 100 MB; reading one costs ~12x its size in memory, so only
# headers up to this bound are read for their structure (real ones are a few MB at most).
SAFETENSORS_MAX_HEADER = 8 * 1024 * 1024
SAFETENSORS_MAX_DIMS = 64
SMALL_FILE = 256 * 1024
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Tensors listed in a structure record; an event payload is capped at 1 MiB, big LLMs have thousands.
MAX_TENSORS_LISTED = 2000
MAX_IMPORTS_LISTED = 200
MAX_DETAIL = 1500
_ARCHIVES = ((b"7z\xbc\xaf\x27\x1c", "7z archive"), (b"Rar!\x1a\x07", "RAR archive"))

__all__ = ["FormatInfo", "classify_import", "combine", "sniff", "sniff_artifact"]


@dataclass(frozen=True)
class FormatInfo:
    format: str
    structure: dict[str, Any] | None = None
    unsafe: bool = False
    imports: tuple[str, ...] = ()  # the imports that make the file unsafe (all of them: structure["imports"])
    detail: str = ""


# -- safetensors --------------------------------------------------------------------------------------------

_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}


def _safetensors(f: IO[bytes], size: int) -> FormatInfo | None:
    """The header of a safetensors file, checked as the library checks it (every tensor's byte range must
    match its shape and dtype), with no products of unbounded size and no unbounded header."""
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n + 8 > size:
        return None
    if n > SAFETENSORS_MAX_HEADER:
        if f.read(1) == b"{":
            return FormatInfo("unknown", None, False, (),
                              f"safetensors-like header of {n} bytes not read (over {SAFETENSORS_MAX_HEADER})")
        return None
    raw = f.read(n)
    if len(raw) != n or raw[:1] != b"{":
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
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
        if len(shape) > SAFETENSORS_MAX_DIMS or not all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= data_len * 8 for x in shape):
            return None
        if len(offs) != 2 or not all(isinstance(x, int) for x in offs) or not 0 <= offs[0] <= offs[1] <= data_len:
            return None
        numel = 1
        for x in shape:
            numel *= x
            if numel > data_len * 8:  # larger than the data could hold even at one bit per element
                return None
        itemsize = _ST_ITEMSIZE.get(dtype)
        if itemsize is not None and numel * itemsize != offs[1] - offs[0]:
            return None
        params += numel
        count += 1
        if len(tensors) < MAX_TENSORS_LISTED:
            tensors[name] = {"dtype": dtype[:16], "shape": shape}
    structure: dict[str, Any] = {"format": "safetensors", "tensors": tensors, "parameters": params}
    if count > len(tensors):
        structure["tensors_truncated"] = count
    meta = header.get("__metadata__")
    if isinstance(meta, dict) and meta:
        structure["metadata"] = {str(k)[:256]: str(v)[:1024] for k, v in list(meta.items())[:100]}
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


# -- one file -------------------------------------------------------------------------------------------------


def sniff_file(f: IO[bytes]) -> FormatInfo:
    """Every reading of one open (seekable) file, within one budget."""
    size = f.seek(0, 2)
    if size == 0:
        return FormatInfo("unknown", None, False, (), "empty file")
    f.seek(0)
    if size <= SMALL_FILE:
        f = io.BytesIO(f.read())  # one read instead of a seek and a read per reading
    head = f.read(512)
    budget = Budget()
    findings = Findings()
    container: FormatInfo | None = None
    reading = PickleReading()
    try:
        reading = scan_pickles(lambda pos: Source.of_file(f, pos, size), budget, findings)
        container = _container(f, head, size, budget, findings)
    except NotInspected as exc:
        findings.not_inspected.append(str(exc))
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes must end in a recorded verdict, never a traceback
        findings.not_inspected.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    return _verdict(container, reading, findings)


def _container(f: IO[bytes], head: bytes, size: int, budget: Budget, findings: Findings) -> FormatInfo | None:
    if head.startswith(b"PK\x03\x04") or has_end_record(f, size):
        archive = scan_zip(f, size, budget, findings)
        if archive is not None:
            return FormatInfo(archive[0], archive[1], False, (), f"{archive[0]} archive")
    if head.startswith(NPY_MAGIC):
        structure = scan_npy(lambda pos: Source.of_file(f, pos, size), budget, findings)
        return FormatInfo("npy", structure, False, (), "NumPy array")
    comp = compression_of(head)
    if comp is not None:
        inner = scan_pickles(open_compressed(f, comp, size, budget), budget, findings,
                             where=f"{comp}-compressed data")
        fmt = "joblib-compressed" if inner.claims_pickle or inner.complete else "unknown"
        return FormatInfo(fmt, {"format": fmt, "compression": comp, "pickles": inner.pickles}, False, (),
                          f"{comp}-compressed " + ("pickle" if fmt != "unknown" else "data"))
    for magic, label in _ARCHIVES:
        if head.startswith(magic):
            findings.not_inspected.append(f"{label} (its members are not read)")
            return FormatInfo("unknown", None, False, (), label)
    if head[257:262] == b"ustar":
        findings.not_inspected.append("tar archive (its members are not read; old torch.save files are tars)")
        return FormatInfo("unknown", None, False, (), "tar archive")
    st = _safetensors(f, size)
    if st is not None:
        return st
    if head.startswith(HDF5_SIGNATURE) or (size > 512 and _is_hdf5(f, size)):
        return FormatInfo("hdf5", {"format": "hdf5"}, False, (), "HDF5 file (weights not inspected)")
    return None


def _verdict(container: FormatInfo | None, reading: PickleReading, findings: Findings) -> FormatInfo:
    flagged = findings.flagged()
    dangerous = set(findings.dangerous())
    parts = []
    if dangerous:
        parts.append("dangerous imports: " + ", ".join(sorted(dangerous)[:20]))
    outside = [n for n in flagged if n not in dangerous]
    if outside:
        parts.append("imports outside the allow-list: " + ", ".join(outside[:20]))
    if findings.unresolved:
        parts.append(f"{findings.unresolved} import(s) could not be resolved")
    if findings.not_inspected:
        parts.append("not inspected: " + "; ".join(dict.fromkeys(findings.not_inspected)))
    unsafe = bool(parts)
    imports = sorted(findings.imports)
    if container is not None:
        fmt, structure = container.format, dict(container.structure or {"format": container.format})
        if reading.complete:
            parts.append(f"also a complete pickle from byte 0 ({reading.pickles} pickle(s))")
        if not unsafe:
            parts.insert(0, container.detail)
    elif reading.complete:
        fmt = "pytorch" if legacy_torch(reading) else "joblib" if findings.joblib_arrays or any(
            i.startswith("joblib.numpy_pickle.") for i in imports) else "pickle"
        structure = {"format": fmt, "pickles": reading.pickles}
        if findings.joblib_arrays:
            structure["arrays"] = findings.joblib_arrays
        if not unsafe:
            parts.append("imports only allow-listed classes")
    elif reading.claims_pickle:
        fmt, structure = "pickle", {"format": "pickle"}
    else:
        fmt, structure = "unknown", None
        if not unsafe:
            parts.append("not a recognised format")
    if structure is not None and imports:
        structure["imports"] = imports[:MAX_IMPORTS_LISTED]
    detail = "; ".join(parts)
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL - 3] + "..."
    return FormatInfo(fmt, structure, unsafe, tuple(flagged), detail)


def sniff(fs: Any, path: str, name: str | None = None) -> FormatInfo:
    """Read the format of one file in ``fs`` (any fsspec filesystem) from its bytes.

    ``name`` (the file's user-facing name; the store's paths are digests) does not change the verdict: a
    file is read every way a loader could read it, whatever it is called.
    """
    del name  # kept in the signature: callers pass it; a file's name says nothing a loader must believe
    try:
        # fsspec's local file object costs more than reading a small file: open local paths directly.
        with (open(path, "rb") if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")) as f:
            return sniff_file(f)
    except FileNotFoundError:
        raise ArtifactError(f"cannot sniff a missing file: {path}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {posixpath.basename(path)}: {exc}") from exc


# Most telling first: the format a folder is "about".
_RANK = ("safetensors", "pytorch", "torchscript", "keras", "hdf5", "joblib", "joblib-compressed", "npz", "npy",
         "pickle", "zip", "unknown")


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
        detail += "; unsafe: " + "; ".join(f"{p} ({r.detail[:200]})" for p, r in items if r.unsafe)[:MAX_DETAIL]
    return FormatInfo(main.format, structure, bool(unsafe_files), tuple(imports), detail)


def sniff_artifact(store: Any, info: Any) -> FormatInfo:
    """Sniff a stored artifact (``store``: a ``BlobStore``; ``info``: its ``ArtifactInfo``)."""
    results = []
    for entry in info.files:
        with store.open_blob(entry.digest) as f:  # through the blob interface: any backend
            results.append((entry.path, sniff_file(f)))
    if info.kind == "file" and results:
        return results[0][1]
    return combine(results)
