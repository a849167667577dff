"""Sealing a batch of new events into the log's rows, and a stored row back into an event.

Backend-neutral: every recorder stores exactly these rows (positions after the head, per-stream versions,
canonical JSON text, one ``recorded_at`` per batch, the hash chain), so the same log has the same hashes on
any backend and a copy from one to another keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .canonical import canonical_json, envelope_from_quoted, hash_envelope_json
from .canonical import quote_string as quote
from .errors import ValidationError
from .events import NewEvent, StoredEvent
from .upcast import upcast

# The columns of a stored row, in the order every backend selects them.
COLUMNS = ("position", "stream", "version", "type", "schema_version", "data", "meta", "recorded_at", "hash")


def seal(
    events: Sequence[NewEvent],
    *,
    head: int,
    head_hash: str,
    recorded_at: str,
    versions: dict[str, int],
) -> tuple[list[tuple], list[StoredEvent]]:
    """The rows to insert (in ``COLUMNS`` order) and the events as they will read back.

    ``versions`` holds the current version of every stream in ``events`` and is advanced in place to the
    new ones. A value that is not JSON raises ``ValidationError`` before anything is written.
    """
    position, previous_hash = head, head_hash
    rows: list[tuple] = []
    stored: list[StoredEvent] = []
    # The hot path of bulk imports: a batch usually shares one meta dict (one command, one import) and a
    # few streams and types, so their JSON is encoded once and the envelope is composed from the pieces.
    # The functions are bound to locals: this loop runs once per event of every append.
    meta_cache: dict[int, str] = {}
    quoted: dict[str, str] = {}
    schema_of: dict[str, int] = {}
    at_q = quote(recorded_at)
    encode, compose, chain = canonical_json, envelope_from_quoted, hash_envelope_json
    add_row, add_stored = rows.append, stored.append
    for event in events:
        stream = event.stream
        version = versions[stream] = versions[stream] + 1
        position += 1
        type_ = event.type
        schema_version = event.schema_version
        if schema_version is None:
            schema_version = schema_of.get(type_)
            if schema_version is None:
                schema_version = schema_of[type_] = event.resolved_schema_version()
        try:
            data_json = encode(event.data)
            meta_json = meta_cache.get(id(event.meta))
            if meta_json is None:
                meta_json = meta_cache[id(event.meta)] = encode(event.meta)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValidationError(f"event {type_} is not valid JSON: {exc}") from None
        stream_q = quoted.get(stream) or quoted.setdefault(stream, quote(stream))
        type_q = quoted.get(type_) or quoted.setdefault(type_, quote(type_))
        previous_hash = chain(previous_hash, compose(position, stream_q, version, type_q, schema_version, data_json,
                                                     meta_json, at_q))
        add_row((position, stream, version, type_, schema_version, data_json, meta_json, recorded_at,
                 previous_hash))
        add_stored(StoredEvent(position, stream, version, type_, schema_version, event.data, event.meta,
                               recorded_at, previous_hash))
    return rows, stored


def event_from_row(row: Sequence) -> StoredEvent:
    """A stored row (``COLUMNS`` order) as an event, upcast to the schema this code reads."""
    position, stream, version, type_, schema_version, data, meta, recorded_at, hash_ = row
    schema_version, data_obj = upcast(type_, schema_version, json.loads(data))
    return StoredEvent(position, stream, version, type_, schema_version, data_obj, json.loads(meta), recorded_at, hash_)
