"""Checking the log itself: the hash chain, gapless positions, time that never goes backwards, gapless
per-stream versions, and stored text that is exactly the canonical form the chain hashes.

Works on rows exactly as stored (no upcasting), so it needs nothing but the rows: the same function
verifies the live database and an exported copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from .canonical import GENESIS_HASH, canonical_json, envelope_json, hash_envelope_json


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    last_hash: str
    position: int | None = None  # the first position that fails
    problem: str = ""
    # Where the check stopped, so the next page can carry on from here.
    last_recorded_at: str = ""
    stream_versions: dict[str, int] = field(default_factory=dict, repr=False)


def verify_rows(rows: Iterable[tuple], *, start_position: int = 0, start_hash: str = GENESIS_HASH,
                start_recorded_at: str = "", start_versions: dict[str, int] | None = None) -> ChainReport:
    """``rows``: (position, stream, version, type, schema_version, data, meta, recorded_at, hash) in order.
    To check a log page by page, pass the previous page's report as ``**resume(report)``."""
    expected_position = start_position
    previous_hash = start_hash
    previous_at = start_recorded_at
    stream_versions: dict[str, int] = dict(start_versions or {})
    checked = 0
    for position, stream, version, type_, schema_version, data, meta, recorded_at, stored_hash in rows:
        expected_position += 1
        if position != expected_position:
            return ChainReport(False, checked, previous_hash, expected_position,
                               f"position {expected_position} is missing (next stored is {position})")
        if recorded_at < previous_at:
            return ChainReport(False, checked, previous_hash, position, "recorded_at goes backwards")
        want_version = stream_versions.get(stream, 0) + 1
        if version != want_version:
            return ChainReport(False, checked, previous_hash, position,
                               f"stream {stream} jumps to version {version} (expected {want_version})")
        try:
            data_json = canonical_json(json.loads(data)) if isinstance(data, str) else canonical_json(data)
            meta_json = canonical_json(json.loads(meta)) if isinstance(meta, str) else canonical_json(meta)
        except (TypeError, ValueError, RecursionError):
            return ChainReport(False, checked, previous_hash, position, "data or meta is not valid JSON")
        # The hash covers the canonical form, so stored text must BE that form: otherwise an edit that keeps
        # the meaning for Python (a duplicate key, whose first copy SQLite's json_extract reads; white space)
        # would pass the chain. The recorder only ever stores canonical text, so an honest log always passes.
        if isinstance(data, str) and data != data_json or isinstance(meta, str) and meta != meta_json:
            which = "data" if isinstance(data, str) and data != data_json else "meta"
            return ChainReport(False, checked, previous_hash, position,
                               f"{which} is not stored in canonical form (edited outside modelledger: a duplicate "
                               "key, white space or key order)")
        envelope = envelope_json(position, stream, version, type_, schema_version, data_json, meta_json, recorded_at)
        computed = hash_envelope_json(previous_hash, envelope)
        if computed != stored_hash:
            return ChainReport(False, checked, previous_hash, position, "hash does not match the event's content")
        previous_hash, previous_at = stored_hash, recorded_at
        stream_versions[stream] = version
        checked += 1
    return ChainReport(True, checked, previous_hash, last_recorded_at=previous_at, stream_versions=stream_versions)


def resume(report: ChainReport, position: int) -> dict:
    """Keyword arguments that continue a check after ``report`` ended at ``position``."""
    return {"start_position": position, "start_hash": report.last_hash,
            "start_recorded_at": report.last_recorded_at, "start_versions": report.stream_versions}
