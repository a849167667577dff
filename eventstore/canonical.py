"""Canonical bytes of an event, and the hash chain over them.

The hash of event P is SHA-256 over the previous event's hash followed by the canonical JSON of P's
envelope. Canonical JSON: UTF-8, sorted keys, no insignificant white space, no NaN/Infinity. Anyone
holding the log (an export, say) can recompute the chain with nothing but this module.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS_HASH = "0" * 64


_encode_string = json.encoder.encode_basestring  # the exact quoting json uses for str with ensure_ascii=False


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _python_canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# The append path encodes every event's data: use json's C encoder, built once (json.dumps builds a new one
# on every call), with exactly json.dumps' canonical options. Output is byte-identical (a test pins it).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _C_ENCODE = _c_make_encoder(None, _not_json, _encode_string, None, ":", ",", True, False, False)

    def canonical_json(value: Any) -> str:
        if isinstance(value, str):
            return _encode_string(value)
        return "".join(_C_ENCODE(value, 0))
else:  # pragma: no cover - interpreters without the C accelerator
    canonical_json = _python_canonical


def canonical_bytes(value: Any) -> bytes:
    return canonical_json(value).encode("utf-8")


def envelope_for_hash(
    position: int,
    stream: str,
    version: int,
    type: str,
    schema_version: int,
    data: dict,
    meta: dict,
    recorded_at: str,
) -> dict:
    return {
        "position": position,
        "stream": stream,
        "version": version,
        "type": type,
        "schema_version": schema_version,
        "data": data,
        "meta": meta,
        "recorded_at": recorded_at,
    }


def quote_string(value: str) -> str:
    """A str as canonical JSON."""
    return _encode_string(value)


def envelope_json(
    position: int,
    stream: str,
    version: int,
    type: str,
    schema_version: int,
    data_json: str,
    meta_json: str,
    recorded_at: str,
) -> str:
    """``canonical_json(envelope_for_hash(...))`` built from already-canonical data/meta text.

    The append path has serialised data and meta once for storage; composing the envelope from those
    strings (keys in sorted order) avoids serialising them a second time. A test pins the equality.
    """
    return envelope_from_quoted(position, quote_string(stream), version, quote_string(type), schema_version,
                                data_json, meta_json, quote_string(recorded_at))


def envelope_from_quoted(position: int, stream_q: str, version: int, type_q: str, schema_version: int,
                         data_json: str, meta_json: str, recorded_at_q: str) -> str:
    """The envelope from pieces already in canonical JSON (a bulk append quotes a batch's few streams,
    types and its one timestamp once)."""
    return (
        f'{{"data":{data_json},"meta":{meta_json},"position":{position},"recorded_at":{recorded_at_q},'
        f'"schema_version":{schema_version},"stream":{stream_q},"type":{type_q},"version":{version}}}'
    )


def hash_envelope_json(previous_hash: str, envelope: str) -> str:
    return hashlib.sha256((previous_hash + envelope).encode("utf-8")).hexdigest()


def chain_hash(previous_hash: str, envelope: dict) -> str:
    h = hashlib.sha256()
    h.update(previous_hash.encode("ascii"))
    h.update(canonical_bytes(envelope))
    return h.hexdigest()
