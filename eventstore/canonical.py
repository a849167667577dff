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


# One encoder, built once: json.dumps(**options) would build a new one on every call (measurably slow on the
# append path, which encodes every event's data and meta).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode_string = json.encoder.encode_basestring  # the exact quoting the encoder above uses for str


def canonical_json(value: Any) -> str:
    return _ENCODER.encode(value)


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


def _j(value: str) -> str:
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
    return (
        f'{{"data":{data_json},"meta":{meta_json},"position":{position},"recorded_at":{_j(recorded_at)},'
        f'"schema_version":{schema_version},"stream":{_j(stream)},"type":{_j(type)},"version":{version}}}'
    )


def hash_envelope_json(previous_hash: str, envelope: str) -> str:
    return hashlib.sha256((previous_hash + envelope).encode("utf-8")).hexdigest()


def chain_hash(previous_hash: str, envelope: dict) -> str:
    h = hashlib.sha256()
    h.update(previous_hash.encode("ascii"))
    h.update(canonical_bytes(envelope))
    return h.hexdigest()
