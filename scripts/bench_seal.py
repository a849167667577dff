"""``eventstore.sealing.seal`` against the loop the SQLite append had before it used ``seal`` (main at
``119b080``, kept below verbatim as the baseline): CPU time only, no database, both in this process,
alternated 12 times; the rows they make are asserted identical first.

    .venv/bin/python scripts/bench_seal.py
"""

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from bench import make_events  # noqa: E402

from eventstore.canonical import GENESIS_HASH, canonical_json, envelope_from_quoted, hash_envelope_json  # noqa: E402
from eventstore.canonical import quote_string as quote  # noqa: E402
from eventstore.errors import ValidationError  # noqa: E402
from eventstore.events import StoredEvent  # noqa: E402
from eventstore.sealing import seal  # noqa: E402


def old(events, position, previous_hash, recorded_at):  # main@119b080 SQLiteTransaction.append's loop, verbatim
    versions = {}
    rows = []
    stored = []
    meta_cache = {}
    quoted = {}
    at_q = quote(recorded_at)
    for event in events:
        stream = event.stream
        if stream not in versions:
            versions[stream] = 0
        version = versions[stream] = versions[stream] + 1
        position += 1
        type_ = event.type
        schema_version = event.resolved_schema_version()
        try:
            data_json = canonical_json(event.data)
            meta_json = meta_cache.get(id(event.meta))
            if meta_json is None:
                meta_json = meta_cache[id(event.meta)] = canonical_json(event.meta)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValidationError(f"event {type_} is not valid JSON: {exc}") from None
        stream_q = quoted.get(stream) or quoted.setdefault(stream, quote(stream))
        type_q = quoted.get(type_) or quoted.setdefault(type_, quote(type_))
        envelope = envelope_from_quoted(position, stream_q, version, type_q, schema_version, data_json, meta_json, at_q)
        previous_hash = hash_envelope_json(previous_hash, envelope)
        rows.append((position, stream, version, type_, schema_version, data_json, meta_json, recorded_at, previous_hash))
        stored.append(StoredEvent(position, stream, version, type_, schema_version, event.data, event.meta, recorded_at, previous_hash))
    return rows, stored

def new(events, position, previous_hash, recorded_at):
    versions = {}
    for s in {e.stream for e in events}.difference(versions):
        versions[s] = 0
    return seal(events, head=position, head_hash=previous_hash, recorded_at=recorded_at, versions=versions)

events = make_events(50_000, seed=2)
chunks = [events[i:i + 1000] for i in range(0, len(events), 1000)]
at = "2026-11-30T00:00:00.000000Z"
assert [r for c in chunks for r in old(c, 0, GENESIS_HASH, at)[0]] == [r for c in chunks for r in new(c, 0, GENESIS_HASH, at)[0]]
res = {"old": [], "new": []}
for rep in range(12):
    for name, fn in ((("old", old), ("new", new)) if rep % 2 == 0 else (("new", new), ("old", old))):
        t = time.process_time()
        for c in chunks:
            fn(c, 0, GENESIS_HASH, at)
        res[name].append(len(events) / (time.process_time() - t))
ratios = [n / o for n, o in zip(res["new"], res["old"], strict=True)]
print("old", round(statistics.median(res["old"])), "new", round(statistics.median(res["new"])), "ratio median", round(statistics.median(ratios), 3), [round(r, 2) for r in ratios])
