"""A Hugging Face model folder: its weight shards summed into one structure (tensor count, parameters, dtypes,
the tensors listed up to the bound), what ``model.safetensors.index.json`` says (total size, which shard
holds which tensor, shards it names that the folder lacks) and the essentials of ``config.json``
(architectures, model type, sizes). The JSON files are read bounded and parsed as data only; the shards'
own structures come from their format readers."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from typing import Any

from .tensor_tally import TensorTally

MAX_JSON = 32 * 1024 * 1024  # an index of a 1T-parameter model is a few MB
MAX_SHARDS_LISTED = 1000
INDEX_SUFFIX = ".index.json"
# config.json keys worth showing (top level and in text/vision sub-configs); scalars only.
CONFIG_KEYS = (
    "architectures", "model_type", "torch_dtype", "dtype", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings",
    "hidden_act", "tie_word_embeddings", "rope_theta", "n_layer", "n_embd", "n_head", "n_positions", "d_model",
    "num_layers", "num_experts", "num_local_experts", "num_experts_per_tok", "transformers_version",
)
SUB_CONFIGS = ("text_config", "vision_config", "audio_config")
WEIGHT_FORMATS = ("safetensors", "pytorch", "gguf")

ReadJson = Callable[[str], Any]


def load_json(data: bytes) -> Any:
    """JSON as data, or None (bad bytes, bad JSON, nesting too deep)."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _essentials(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        value = config.get(key)
        if isinstance(value, (str, int, float, bool)) and not (isinstance(value, str) and len(value) > 200):
            out[key] = value
        elif key == "architectures" and isinstance(value, list):
            out[key] = [str(a)[:200] for a in value[:10]]
    for sub in SUB_CONFIGS:
        if isinstance(config.get(sub), dict):
            inner = _essentials({k: v for k, v in config[sub].items() if not isinstance(v, dict)})
            if inner:
                out[sub] = inner
    return out


def folder_structure(formats: dict[str, tuple[str, dict[str, Any] | None]], read_json: ReadJson
                     ) -> dict[str, Any] | None:
    """What a folder's weights and JSON files declare together, or None when it has no weight files with
    tensors. ``formats``: path -> (format, structure) of every file; ``read_json(path)``: that file's JSON
    (None when it cannot be read)."""
    by_format: dict[str, list[str]] = {}
    for path, (fmt, structure) in formats.items():
        if fmt in WEIGHT_FORMATS and structure and "tensor_count" in structure:
            by_format.setdefault(fmt, []).append(path)
    if not by_format:
        return None
    fmt = next(f for f in WEIGHT_FORMATS if f in by_format)
    shards = sorted(by_format[fmt])
    tally = TensorTally()
    shard_rows: dict[str, dict[str, int]] = {}
    partial: list[str] = []
    for path in shards:
        s = formats[path][1] or {}
        tally.merge(s)
        if len(shard_rows) < MAX_SHARDS_LISTED:
            shard_rows[path] = {"tensors": s.get("tensor_count", 0), "parameters": s.get("parameters", 0)}
        if s.get("partial"):
            partial.append(f"{path}: {str(s['partial'])[:200]}")
    out: dict[str, Any] = {"format": fmt, "shard_count": len(shards), "shards": shard_rows}
    tally.into(out)
    indexes = sorted(p for p in formats if p.endswith(INDEX_SUFFIX))
    if indexes:
        out["index"] = _index(indexes[0], read_json(indexes[0]), set(formats), partial)
    configs = sorted((p for p in formats if posixpath.basename(p) == "config.json"), key=lambda p: (p.count("/"), p))
    if configs:
        config = read_json(configs[0])
        if isinstance(config, dict):
            out["config"] = _essentials(config)
        else:
            partial.append(f"{configs[0]}: not readable JSON")
    if partial:
        out["partial"] = "; ".join(partial)[:1500]
    return out


def _index(path: str, index: Any, present: set[str], partial: list[str]) -> dict[str, Any]:
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        partial.append(f"{path}: not a readable shard index")
        return {"file": path}
    weight_map = index["weight_map"]
    folder = posixpath.dirname(path)
    named = sorted({str(v) for v in weight_map.values()})
    missing = [s for s in named if posixpath.join(folder, s) not in present]
    out: dict[str, Any] = {"file": path, "tensors": len(weight_map), "shards": len(named)}
    meta = index.get("metadata")
    if isinstance(meta, dict):
        for key in ("total_size", "total_parameters"):
            if isinstance(meta.get(key), int):
                out[key] = meta[key]
    if missing:
        out["missing_shards"] = missing[:100]
        partial.append(f"{len(missing)} shard(s) named in {path} are not in the folder")
    return out
