"""Peer measurements for ``scripts/bench_peers.py``, run by the ``model-ledger`` venv's python (Block's
model-ledger, its SQLite backend ``Ledger.from_sqlite``: WAL, SQLite's default synchronous=FULL).

    <model-ledger venv>/bin/python scripts/peers/model_ledger_worker.py '<json task>'

Prints ``RESULT {json}`` on stdout. What each task times is said in its docstring.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from model_ledger import Ledger
from model_ledger.core.ledger_models import Snapshot

BASE = datetime(2026, 1, 1, tzinfo=UTC)
INSERT = "INSERT OR IGNORE INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def log(msg: str) -> None:
    print(f"  .. [model-ledger] {msg}", file=sys.stderr, flush=True)


def row(s: Snapshot) -> tuple:
    """The row ``SQLiteLedgerBackend.append_snapshot`` writes for ``s`` (same encoding), for a bulk insert."""
    return (s.snapshot_hash, s.model_hash, s.parent_hash, s.timestamp.isoformat(), s.actor, s.event_type, s.source,
            json.dumps(s.payload, default=str) if s.payload else None,
            json.dumps(s.tags, default=str) if s.tags else None)


def payload(rng: random.Random, kind: str, name: str, number: int) -> dict:
    if kind == "version_registered":
        return {"name": name, "version": number, "description": "nightly fine-tune on the cleaned click data",
                "params": {"lr": round(rng.uniform(1e-5, 1e-1), 6), "batch_size": rng.choice([32, 64, 128, 256]),
                           "epochs": rng.randint(1, 50)},
                "artifact": {"source": f"s3://ml-artifacts/runs/{uuid.UUID(int=rng.getrandbits(128)).hex}/m.pt"}}
    if kind == "metrics_recorded":
        return {"version": number, "metrics": {"auc": round(rng.uniform(0.6, 0.95), 5),
                                               "loss": round(rng.uniform(0.05, 1.5), 5)}}
    if kind == "tagged":
        return {"version": number, "tags": {f"run-{rng.randint(0, 9)}": uuid.UUID(int=rng.getrandbits(128)).hex[:12]}}
    return {"alias": "staging", "version": number}


def build(ledger: Ledger, models: int, events: int, seed: int) -> list[str]:
    """``models`` models registered through ``Ledger.register`` (one ``registered`` snapshot each, timestamps
    ``BASE + i s``), then ``events - models`` snapshots spread over random models (a version block: one
    ``version_registered``, 3 ``metrics_recorded``, 2 ``tagged``, one ``alias_assigned``), one second apart,
    inserted in batches of 10,000 rows exactly as ``append_snapshot`` encodes them. Returns the model names."""
    rng = random.Random(seed)
    names = [f"team-{i % 10}/model-{i:04d}" for i in range(models)]
    refs = []
    for name in names:
        ref = ledger.register(name=name, owner="team", model_type="ml_model", tier="high", purpose="ctr",
                              actor="bench")
        refs.append(ref)
    # registered snapshots got wall-clock timestamps; move them (and created_at) to the start of the history
    conn = ledger.backend._conn
    conn.execute("UPDATE models SET created_at = ?", (BASE.isoformat(),))
    conn.execute("UPDATE snapshots SET timestamp = ?", (BASE.isoformat(),))
    conn.commit()
    versions = [0] * models
    position = models
    batch: list[tuple] = []
    kinds = ["version_registered"] + ["metrics_recorded"] * 3 + ["tagged"] * 2 + ["alias_assigned"]
    while position < events:
        m = rng.randrange(models)
        versions[m] += 1
        for kind in kinds:
            if position >= events:
                break
            position += 1
            s = Snapshot(model_hash=refs[m].model_hash, actor="bench", event_type=kind, source="bench",
                         timestamp=BASE + timedelta(seconds=position),
                         payload=payload(rng, kind, names[m], versions[m]))
            batch.append(row(s))
        if len(batch) >= 10_000:
            conn.executemany(INSERT, batch)
            conn.commit()
            batch = []
    if batch:
        conn.executemany(INSERT, batch)
        conn.commit()
    count = conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]
    if count != events:
        raise SystemExit(f"built {count} snapshots, expected {events}")
    return names


def as_of(task: dict) -> dict:
    """``inventory_at(date)`` on a ledger of ``events`` snapshots over ``models`` models, at dates that are
    the given fractions of the history; ms per call, and how many models each returned."""
    os.makedirs(task["dir"], exist_ok=True)
    ledger = Ledger.from_sqlite(os.path.join(task["dir"], "ledger.db"))
    events, models = task["events"], task["models"]
    t = time.perf_counter()
    build(ledger, models, events, seed=events)
    log(f"as_of: {events:,} snapshots over {models:,} models built in {time.perf_counter() - t:.1f} s")
    ledger.inventory_at(BASE + timedelta(seconds=events + 1))  # warm the page cache
    samples, found = [], []
    for _ in range(task["rounds"]):
        for frac in task["fractions"]:
            date = BASE + timedelta(seconds=int(events * frac) + 0.5)
            t = time.perf_counter()
            got = ledger.inventory_at(date)
            samples.append((time.perf_counter() - t) * 1000)
            found.append(len(got))
    return {"ms": samples, "found": found}


def record(task: dict) -> dict:
    """``record()`` of one event on a model whose history holds 10 vs ``big`` snapshots (two ledgers, built
    as above with one model), ``ops`` calls per round, rounds alternating which ledger goes first; ms each."""
    ledgers = {}
    for n in (10, task["big"]):
        folder = os.path.join(task["dir"], f"h{n}")
        os.makedirs(folder, exist_ok=True)
        ledger = Ledger.from_sqlite(os.path.join(folder, "ledger.db"))
        name = build(ledger, 1, n, seed=n)[0]
        ledgers[n] = (ledger, name)
    samples: dict[int, list[float]] = {n: [] for n in ledgers}
    for r in range(task["rounds"]):
        order = list(ledgers.items()) if r % 2 == 0 else list(reversed(ledgers.items()))
        for n, (ledger, name) in order:
            for k in range(task["ops"]):
                t = time.perf_counter()
                ledger.record(name, event="tagged", payload={"version": 5, "tags": {"run": f"{r}-{k}"}},
                              actor="bench", source="bench")
                samples[n].append((time.perf_counter() - t) * 1000)
    return {"small_ms": samples[10], "big_ms": samples[task["big"]]}


TASKS = {"as_of": as_of, "record": record}

if __name__ == "__main__":
    from importlib.metadata import version

    spec = json.loads(sys.argv[1])
    result = TASKS[spec["task"]](spec)
    result["peer_version"] = f"model-ledger {version('model-ledger')}"
    print("RESULT " + json.dumps(result), flush=True)
