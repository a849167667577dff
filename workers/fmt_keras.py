"""A Keras 3 ``.keras`` archive: what its ``config.json`` and ``metadata.json`` say (model class, name, layers
by class, Keras version) and the variables of its ``model.weights.h5`` (paths, dtypes, shapes, parameter
count), read by the HDF5 reader through a window onto the zip member — Keras stores its members
uncompressed; a compressed weights member is named in ``partial``, not inflated. The JSON is parsed as data
(its ``module`` / ``registered_name`` entries name classes Keras would import: nothing here imports them)."""

from __future__ import annotations

import io
import struct
import zipfile
from collections import Counter
from typing import IO, Any

from .byte_source import Budget
from .fmt_hdf5 import read_hdf5
from .fmt_hf import MAX_JSON, load_json

MAX_LAYER_CLASSES = 100


class Window(io.RawIOBase):
    """``length`` bytes of ``f`` from ``start``, as a seekable file of their own."""

    def __init__(self, f: IO[bytes], start: int, length: int) -> None:
        self.f, self.start, self.length, self.pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        left = self.length - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data


def _member_json(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    if info.file_size > MAX_JSON:
        return None
    with zf.open(info) as m:
        data = m.read(MAX_JSON + 1)
    return None if len(data) > MAX_JSON else load_json(data)


def _config_summary(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(config.get("class_name"), str):
        out["class_name"] = config["class_name"][:200]
    inner = config.get("config")
    if isinstance(inner, dict):
        if isinstance(inner.get("name"), str):
            out["name"] = inner["name"][:200]
        layers = inner.get("layers")
        if isinstance(layers, list):
            kinds = Counter(str(x.get("class_name"))[:100] for x in layers if isinstance(x, dict))
            out["layers"] = len(layers)
            out["layer_classes"] = dict(kinds.most_common(MAX_LAYER_CLASSES))
    return out


def read_keras_zip(f: IO[bytes], budget: Budget) -> tuple[dict[str, Any], str]:
    """(structure fields, problem) of a ``.keras`` archive; ``problem`` is empty when everything was read."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)  # type: ignore[arg-type]
        infos = {i.filename: i for i in zf.infolist()}
        if "metadata.json" in infos:
            meta = _member_json(zf, infos["metadata.json"])
            if isinstance(meta, dict):
                out.update({k: str(meta[k])[:200] for k in ("keras_version", "date_saved") if k in meta})
        if "config.json" in infos:
            summary = _config_summary(_member_json(zf, infos["config.json"]))
            if summary:
                out["config"] = summary
            else:
                problems.append("config.json: not readable JSON")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, KeyError, IndexError,
            UnicodeDecodeError, RuntimeError, struct.error) as exc:
        return out, f"the archive could not be read ({type(exc).__name__})"
    weights = [i for n, i in infos.items() if n.endswith(".weights.h5")]
    if not weights:
        problems.append("no weights member")
    else:
        info = weights[0]
        if info.compress_type != zipfile.ZIP_STORED:
            problems.append(f"{info.filename}: compressed (not read)")
        else:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                problems.append(f"{info.filename}: no local header")
            else:
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                h5, _ = read_hdf5(Window(f, start, info.compress_size), info.compress_size, budget)
                out["weights"] = info.filename
                out.update({k: v for k, v in h5.items() if k not in ("format", "superblock_version")})
                if "partial" in h5:
                    problems.append(f"{info.filename}: {out.pop('partial')}")
    return out, "; ".join(problems)
