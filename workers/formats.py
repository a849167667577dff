"""Tell an artifact's format from its bytes, without ever executing it.

A file is recorded ``unsafe: false`` only when every way a loader could read its bytes is safe: it is always
read as a pickle from its first byte (whatever its name or other format: polyglots and old protocols have
nothing else to recognise them by), and also as the container it is (zip members, ``.npy``, compressed
joblib, safetensors, HDF5). The pickle readings live in ``pickle_scan``; their allow-list in ``pickle_rules``.
What cannot be followed to the end is "not inspected", which counts as unsafe. Every sniff is bounded in
time and memory (``byte_source.Budget``) and a sniffing failure is a recorded detail, never an exception.

The structure a file declares (tensors, shapes, dtypes, parameters, a model's interface) comes from one
reader module per format (``fmt_*``), each given an open file and the same budget; a reader that cannot
finish records what it read and ``partial``, and never changes the safety verdict. A folder's structure
sums its weight shards (``fmt_hf``).
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import IO, Any

from fsspec.implementations.local import LocalFileSystem

from eventstore.errors import ArtifactError

from .byte_source import Budget, NotInspected, Source
from .fmt_gguf import is_gguf, read_gguf
from .fmt_hdf5 import find_superblock, read_hdf5
from .fmt_hf import MAX_JSON, ReadJson, folder_structure, load_json
from .fmt_keras import read_keras_zip
from .fmt_onnx import may_be_onnx, read_onnx
from .fmt_safetensors import TooLarge, read_safetensors
from .fmt_torch import read_legacy_checkpoint, read_zip_checkpoint
from .inflate import compression_of, open_compressed
from .pickle_rules import classify_import
from .pickle_scan import NPY_MAGIC, PickleReading, legacy_torch, scan_npy, scan_pickles
from .pickle_walk import Findings
from .tensor_tally import fit
from .zip_scan import has_end_record, scan_zip

SMALL_FILE = 256 * 1024
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_IMPORTS_LISTED = 200
MAX_DETAIL = 1500
_ARCHIVES = ((b"7z\xbc\xaf\x27\x1c", "7z archive"), (b"Rar!\x1a\x07", "RAR archive"))

__all__ = ["FormatInfo", "classify_import", "combine", "sniff", "sniff_artifact", "sniff_blob", "sniff_file"]


@dataclass(frozen=True)
class FormatInfo:
    format: str
    structure: dict[str, Any] | None = None
    unsafe: bool = False
    imports: tuple[str, ...] = ()  # the imports that make the file unsafe (all of them: structure["imports"])
    detail: str = ""


# -- safetensors ----------------------------------------------------------------------------------------------


def _safetensors(f: IO[bytes], size: int) -> FormatInfo | None:
    try:
        found = read_safetensors(f, size)
    except TooLarge as exc:
        return FormatInfo("unknown", None, False, (), str(exc))
    return None if found is None else FormatInfo("safetensors", found[0], False, (), found[1])


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
    info = _verdict(container, reading, findings)
    return _with_tensors(info, f, size, container is not None, budget)


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
    if is_gguf(head):
        return _structured("gguf", lambda: read_gguf(f, size, budget))
    st = _safetensors(f, size)
    if st is not None:
        return st
    if head.startswith(HDF5_SIGNATURE) or (size > 512 and find_superblock(f, size) is not None):
        return _structured("hdf5", lambda: read_hdf5(f, size, budget))
    if may_be_onnx(head):
        onnx = _structured("onnx", lambda: read_onnx(f, size, budget))
        if onnx.structure is not None:
            return onnx
    return None


def _structured(fmt: str, read: Callable[[], tuple[dict[str, Any], str] | None]) -> FormatInfo:
    """A format reader's (structure, detail). It spends the sniff's one budget (so a file costs no more time
    than the bound, whatever it is) but its failures never change what is safe: a reader that fails on
    hostile bytes leaves a note in the structure, never a traceback or a "not inspected"."""
    try:
        found = read()
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes end in a recorded note, never a traceback
        return FormatInfo(fmt, {"format": fmt, "partial": f"not read ({type(exc).__name__})"}, False, (),
                          f"{fmt} file (its structure could not be read)")
    if found is None:
        return FormatInfo(fmt, None, False, (), "")
    return FormatInfo(fmt, found[0], False, (), found[1])


def _with_tensors(info: FormatInfo, f: IO[bytes], size: int, is_container: bool, budget: Budget) -> FormatInfo:
    """A PyTorch checkpoint's tensors, read from its pickle (a Keras archive's, from its config and weights),
    after the safety verdict, from what is left of the sniff's budget: listing tensors never changes what is
    safe. A walk that stops early (its own limits, or the budget spent) keeps what it saw and says so."""
    if info.format not in ("pytorch", "torchscript", "keras") or info.structure is None:
        return info
    try:
        if info.format == "keras":
            tensors, problem = read_keras_zip(f, budget)
        elif is_container:
            tensors, problem = read_zip_checkpoint(f, budget)
        else:
            tensors, problem = read_legacy_checkpoint(f, size, budget)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes end in a recorded note, never a traceback
        tensors, problem = {}, f"tensors not read ({type(exc).__name__})"
    structure = {**info.structure, **tensors}
    if problem:
        structure["partial"] = problem[:MAX_DETAIL]
    return replace(info, structure=structure)


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
_RANK = ("safetensors", "pytorch", "torchscript", "gguf", "onnx", "keras", "hdf5", "joblib", "joblib-compressed",
         "npz", "npy", "pickle", "zip", "unknown")


def combine(results: Iterable[tuple[str, FormatInfo]], read_json: ReadJson | None = None) -> FormatInfo:
    """One FormatInfo for a directory from its files' results. A folder of weight shards (a Hugging Face
    model) gets their sums, its shard index and its config (``read_json(path)``: a file's JSON or None)."""
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
    weights = folder_structure({p: (r.format, r.structure) for p, r in items},
                               read_json or (lambda _path: None))
    detail = f"{main_path}: {main.detail}"
    if weights is not None and (weights["shard_count"] > 1 or "index" in weights or "config" in weights):
        # Several shards, or one with an index / a config: the folder's sums say more than its first file.
        structure.update({k: v for k, v in weights.items() if k != "format"})
        detail = (f"{weights['shard_count']} {weights['format']} file(s), {weights['tensor_count']} tensors, "
                  f"{weights['parameters']} parameters")
    elif main.structure is not None:
        structure["structure"] = main.structure
    if unsafe_files:
        detail += "; unsafe: " + "; ".join(f"{p} ({r.detail[:200]})" for p, r in items if r.unsafe)[:MAX_DETAIL]
    return FormatInfo(main.format, fit(structure), bool(unsafe_files), tuple(imports), detail)


def sniff_artifact(store: Any, info: Any) -> FormatInfo:
    """Sniff a stored artifact (``store``: a ``BlobStore``; ``info``: its ``ArtifactInfo``). Every byte is read
    through the store's ``open_blob`` (whatever backend holds it)."""
    results = []
    digests = {}
    for entry in info.files:
        digests[entry.path] = entry.digest
        results.append((entry.path, sniff_blob(store, entry.digest)))
    if info.kind == "file" and results:
        found = results[0][1]
        fitted = fit(found.structure)  # the same dict when it fits (or None): no copy of the result then
        return found if fitted is found.structure else replace(found, structure=fitted)

    def read_json(path: str) -> Any:
        try:
            with store.open_blob(digests[path]) as f:
                data = f.read(MAX_JSON + 1)
        except (ArtifactError, OSError, KeyError):
            return None
        return None if len(data) > MAX_JSON else load_json(data)

    return combine(results, read_json)


def sniff_blob(store: Any, digest: str) -> FormatInfo:
    """Every reading of one stored blob, opened through the store."""
    try:
        with store.open_blob(digest) as f:
            return sniff_file(f)
    except OSError as exc:
        raise ArtifactError(f"cannot read blob {digest}: {exc}") from exc
