"""Every member of a zip, whatever its name or the archive's layout (PyTorch, TorchScript, ``.npz``, Keras, a
plain zip), read from its local header and inflated as a bounded stream, then read as the loaders could:
an ``.npy`` member by its header, any other member as a pickle."""

from __future__ import annotations

import struct
import zipfile
from typing import IO, Any

from .byte_source import Budget, NotInspected
from .inflate import zip_member
from .pickle_scan import NPY_MAGIC, scan_npy, scan_pickles
from .pickle_walk import Findings

MAX_MEMBERS = 100_000
MAX_CENTRAL_DIRECTORY = 16 * 1024 * 1024
# Bits of a member's flags that standard readers refuse and others ignore (encryption, patched data).
_OPAQUE_FLAGS = {0x1: "encrypted", 0x20: "compressed patched data", 0x40: "strongly encrypted"}


def has_end_record(f: IO[bytes], size: int) -> bool:
    """A zip's end-of-central-directory record near the end: zipfile opens such a file whatever its start."""
    tail = min(size, 64 * 1024 + 22)
    f.seek(size - tail)
    return b"PK\x05\x06" in f.read(tail)


def scan_zip(f: IO[bytes], size: int, budget: Budget, findings: Findings) -> tuple[str, dict[str, Any]] | None:
    """(format, structure) of a zip; what its members import goes into ``findings``. None when a file that
    does not start like a zip is not one after all (its end record was a coincidence)."""
    try:
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]
        if end is None:
            raise zipfile.BadZipFile("no end record")
        if end[zipfile._ECD_SIZE] > MAX_CENTRAL_DIRECTORY:  # type: ignore[attr-defined]
            raise NotInspected("a zip central directory too large to read")
        f.seek(0)
        zf = zipfile.ZipFile(f)  # type: ignore[arg-type]
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error,
            NotImplementedError, KeyError, IndexError, UnicodeDecodeError) as exc:
        f.seek(0)
        if f.read(4) != b"PK\x03\x04":
            return None
        findings.not_inspected.append(f"zip archive that could not be read ({type(exc).__name__})")
        return "zip", {"format": "zip"}
    if len(infos) > MAX_MEMBERS:
        findings.not_inspected.append(f"zip archive with more than {MAX_MEMBERS} members")
        infos = infos[:MAX_MEMBERS]
    names = [i.filename for i in infos]
    for info in infos:
        where = info.filename[:200]
        odd = [label for bit, label in _OPAQUE_FLAGS.items() if info.flag_bits & bit]
        if odd:
            findings.not_inspected.append(f"{where}: {', '.join(odd)} zip member")
            continue
        try:
            open_at = zip_member(f, info.header_offset, info.compress_type, info.compress_size, budget)
            if open_at(0).peek(6) == NPY_MAGIC:
                scan_npy(open_at, budget, findings, where=where)
            else:
                # A member a loader unpickles by name must be a whole pickle; others only must not import.
                named = info.filename.endswith((".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin"))
                scan_pickles(open_at, budget, findings, where=where, strict=named)
        except NotInspected as exc:
            findings.not_inspected.append(f"{where}: {exc}")
        if budget.ops_left <= 0:
            break
    return _layout(names)


def _layout(names: list[str]) -> tuple[str, dict[str, Any]]:
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        script = any("/code/" in n or n.endswith("constants.pkl") for n in names)
        fmt = "torchscript" if script else "pytorch"
        return fmt, {"format": fmt, "tensors_stored": sum(1 for n in names if "/data/" in n)}
    if names and all(n.endswith(".npy") for n in names):
        return "npz", {"format": "npz", "arrays": [n[:-4] for n in names[:200]]}
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras", {"format": "keras", "files": sorted(names)[:100]}
    return "zip", {"format": "zip", "members": len(names)}
