"""modelledger benchmark (first version).

    .venv/bin/python scripts/bench.py [--quick] [--json FILE] [--tmpdir DIR] [--only SECTION]...

Sections: append, register, latency (here), ingest (``bench_ingest.py``), redis (``bench_redis.py``),
history (``bench_history.py``). The full run took 7.5 minutes on 2 cores (2026-11-27), 6.3 of them in
``history`` (a 1,000,000-event log replayed three times: catch-up, rebuild, audit); ``--quick`` under a minute.

Every figure is printed beside a baseline measured in the same run, and compared as a ratio: this machine
is noisy, so absolute times move between runs while ratios of interleaved measurements hold. Each figure is
the median over repeated runs; the ratio is the median of the per-repeat ratios (each repeat measures the
subject and its baseline back to back, in alternating order).

1. Append through the event store (``SQLiteRecorder.append``): one event per transaction, and 1,000 per
   transaction — against raw ``sqlite3`` ``executemany`` into the same table (same columns and constraints,
   WAL, same ``synchronous``), rows prepared beforehand (the baseline is SQLite's own cost only).
2. ``Registry.register`` of a tiny artifact (embedded broker), versions/s, with the number of dedup hits —
   against raw SQLite one-transaction-per-event (an embedded register stores the blob first, then commits
   ``VersionRegistered`` + ``ArtifactStored`` in one transaction).
3. Latency of one ``register`` / ``tag`` / ``alias`` on a model with 10 versions vs 10,000 versions.
4. ``ingest``: a 1 GiB file and 8 × 256 MiB shards vs the physical floor (sha256 pass, cp + fsync); a second
   register of the unchanged file (stat cache); peak RSS of a 2 GiB ingest.
5. ``redis``: register → ready latency through Redis (database 15) and ``mledger worker`` vs embedded.
6. ``history``: time travel on a 1,000,000-event log vs a 10,000-event one; catch-up, rebuild and audit rates.
7. ``postgres`` (``bench_pg.py``): commands on PostgreSQL beside SQLite; a 1,000,000-event log on PostgreSQL:
   fold rate vs raw read + decode, search and as-of @1M vs @10k (``MLEDGER_BENCH_POSTGRES``).

No timing assertion lives in the tests; this script reports OK/MISS against the targets and exits 0.
Temp dirs are removed at exit. ``MLEDGER_SYNCHRONOUS`` selects the durability setting (FULL by default).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import Row, machine, median, render, small_files, temp_dir  # noqa: E402
from bench_history import bench_history  # noqa: E402
from bench_ingest import bench_ingest  # noqa: E402
from bench_pg import bench_postgres  # noqa: E402
from bench_redis import bench_redis  # noqa: E402

from eventstore.event_data import artifact_stored, version_created  # noqa: E402
from eventstore.events import NewEvent, stream_for  # noqa: E402
from eventstore.sqlite import GUARDS, TABLES, SQLiteRecorder  # noqa: E402

BATCH = 1_000
STREAMS = 8
ACTOR = "bench@modelledger"

SIZES = {
    #                      full     quick
    "single_events": (2_000, 300),
    "batch_events": (50_000, 10_000),
    "append_repeats": (7, 3),
    "registers": (1_000, 150),
    "register_repeats": (3, 2),
    "big_versions": (10_000, 10_000),
    "latency_rounds": (5, 2),
    "latency_ops": (10, 10),  # per round, per operation kind, per model size -> 50 (full) / 20 (quick)
}


SECTIONS = ["append", "register", "latency", "ingest", "redis", "history", "postgres"]


def size(key: str, quick: bool) -> int:
    full, small = SIZES[key]
    return small if quick else full


def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


# -- realistic events ------------------------------------------------------------------------------

def event_data(rng: random.Random, stream_index: int, i: int) -> dict:
    """About 300 bytes of canonical JSON: what a version event of a training pipeline looks like."""
    return {
        "name": f"team/model-{stream_index}",
        "version": i + 1,
        "parent": i or None,
        "description": "nightly fine-tune on the cleaned click-through data",
        "params": {"lr": round(rng.uniform(1e-5, 1e-1), 6), "batch_size": rng.choice([32, 64, 128, 256]),
                   "epochs": rng.randint(1, 50), "dropout": round(rng.random() / 2, 3)},
        "tags": {"task": "ctr", "dataset": f"clicks-2026-{rng.randint(1, 12):02d}"},
        "artifact": {"source": f"s3://ml-artifacts/runs/{uuid.UUID(int=rng.getrandbits(128)).hex}/model.pt"},
        "status": "pending",
    }


def event_meta(rng: random.Random) -> dict:
    return {"actor": ACTOR, "client": "modelledger/bench",
            "correlation_id": str(uuid.UUID(int=rng.getrandbits(128)))}


def make_events(n: int, seed: int) -> list[NewEvent]:
    rng = random.Random(seed)
    counters = [0] * STREAMS
    events = []
    for k in range(n):
        s = k % STREAMS
        events.append(NewEvent(f"model-team-model-{s}", "VersionRegistered", event_data(rng, s, counters[s]),
                               event_meta(rng)))
        counters[s] += 1
    return events


def raw_rows(events: list[NewEvent]) -> list[tuple]:
    """The rows a minimal writer would insert for the same events (prepared outside the timing)."""
    versions: dict[str, int] = {}
    rows = []
    previous = "0" * 64
    at = "2026-01-01T00:00:00.000000Z"
    for position, e in enumerate(events, start=1):
        versions[e.stream] = versions.get(e.stream, 0) + 1
        data = json.dumps(e.data, sort_keys=True, separators=(",", ":"))
        meta = json.dumps(e.meta, sort_keys=True, separators=(",", ":"))
        previous = hashlib.sha256((previous + data).encode()).hexdigest()
        rows.append((position, e.stream, versions[e.stream], e.type, 1, data, meta, at, previous))
    return rows


# -- 1. append --------------------------------------------------------------------------------------

INSERT = ("INSERT INTO events (position, stream, version, type, schema_version, data, meta, recorded_at, hash)"
          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


def raw_connection(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.executescript(TABLES + ";\n".join(GUARDS.values()) + ";")  # the same tables, constraints and guards
    return conn


def time_raw(tmp: str, rows: list[tuple], per_txn: int, synchronous: str) -> float:
    """Events/s for raw executemany, ``per_txn`` rows per BEGIN IMMEDIATE … COMMIT."""
    with temp_dir(tmp, "raw-") as d:
        conn = raw_connection(os.path.join(d, "raw.db"), synchronous)
        chunks = [rows[i:i + per_txn] for i in range(0, len(rows), per_txn)]
        start = time.perf_counter()
        for chunk in chunks:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, chunk)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(rows)
        conn.close()
    return len(rows) / elapsed


def time_raw_json(tmp: str, events: list[NewEvent], rows: list[tuple], per_txn: int, synchronous: str) -> float:
    """Like ``time_raw``, but data and meta are serialised (sorted keys, compact) inside the timing: what
    any writer of JSON columns pays. Informational: it shows how much of modelledger's overhead is JSON."""
    with temp_dir(tmp, "rawjson-") as d:
        conn = raw_connection(os.path.join(d, "raw.db"), synchronous)
        dumps = json.dumps
        start = time.perf_counter()
        for i in range(0, len(events), per_txn):
            chunk = [(r[0], r[1], r[2], r[3], r[4],
                      dumps(e.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                      dumps(e.meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False), r[7], r[8])
                     for e, r in zip(events[i:i + per_txn], rows[i:i + per_txn], strict=True)]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, chunk)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    return len(events) / elapsed


def time_recorder(tmp: str, events: list[NewEvent], per_txn: int) -> float:
    """Events/s for ``SQLiteRecorder.append``, ``per_txn`` events per call (one transaction each)."""
    with temp_dir(tmp, "rec-") as d:
        recorder = SQLiteRecorder(os.path.join(d, "events.db"))
        chunks = [events[i:i + per_txn] for i in range(0, len(events), per_txn)]
        start = time.perf_counter()
        for chunk in chunks:
            recorder.append(chunk)
        elapsed = time.perf_counter() - start
        assert recorder.head() == len(events)
        recorder.close()
    return len(events) / elapsed


def paired(repeats: int, subject, baseline) -> tuple[list[float], list[float], list[float]]:
    """Run subject and baseline back to back ``repeats`` times, alternating which goes first."""
    subj, base, ratios = [], [], []
    for r in range(repeats):
        if r % 2 == 0:
            s = subject()
            b = baseline()
        else:
            b = baseline()
            s = subject()
        subj.append(s)
        base.append(b)
        ratios.append(s / b)
    return subj, base, ratios


def bench_append(tmp: str, quick: bool, synchronous: str) -> list[Row]:
    rows: list[Row] = []
    repeats = size("append_repeats", quick)

    n = size("single_events", quick)
    events = make_events(n, seed=1)
    prepared = raw_rows(events)
    log(f"append: {n} single-event transactions x {repeats} repeats (each side)")
    s, b, r = paired(repeats, lambda: time_recorder(tmp, events, 1), lambda: time_raw(tmp, prepared, 1, synchronous))
    rows.append(Row("single append (1/txn)", "modelledger", median(s), "ev/s", "raw sqlite", median(b),
                    median(r), note=f"fsync-bound at synchronous={synchronous}; {n} events per repeat",
                    samples={"modelledger": s, "raw": b, "ratio": r}))

    n = size("batch_events", quick)
    events = make_events(n, seed=2)
    prepared = raw_rows(events)
    log(f"append: {n} events in batches of {BATCH} x {repeats} repeats (each side)")
    s, b, r = paired(repeats, lambda: time_recorder(tmp, events, BATCH),
                     lambda: time_raw(tmp, prepared, BATCH, synchronous))
    ratio = median(r)
    rows.append(Row(f"batch append ({BATCH}/txn)", "modelledger", median(s), "ev/s", "raw sqlite", median(b), ratio,
                    target="≥ 0.5", ok=ratio >= 0.5, note=f"{n} events per repeat, {STREAMS} streams",
                    samples={"modelledger": s, "raw": b, "ratio": r}))
    log("append: same batches against raw sqlite that also serialises the JSON (informational)")
    s, b, r = paired(repeats, lambda: time_recorder(tmp, events, BATCH),
                     lambda: time_raw_json(tmp, events, prepared, BATCH, synchronous))
    rows.append(Row(f"batch append ({BATCH}/txn)", "modelledger", median(s), "ev/s", "raw sqlite+json.dumps",
                    median(b), median(r), note="informational: the baseline also pays json.dumps of data and meta",
                    samples={"modelledger": s, "raw_json": b, "ratio": r}))
    return rows


# -- 2. register throughput -------------------------------------------------------------------------

def open_registry(home: str):
    from modelledger import Registry

    return Registry.open(home=home, broker="embedded", actor=ACTOR, client="bench")


def count_blobs(artifacts: str) -> int:
    total = 0
    root = os.path.join(artifacts, "sha256")
    for _dirpath, _dirs, files in os.walk(root):
        total += sum(1 for f in files if not f.endswith(".part"))
    return total


def time_registers(tmp: str, n: int) -> tuple[float, int, float]:
    """(versions/s, dedup hits, events per register): ``n`` registers over 4 models, cycling through n/2
    distinct files, so the first pass writes each blob and the second pass finds it stored."""
    with temp_dir(tmp, "reg-") as d:
        files = small_files(os.path.join(d, "src"), max(1, n // 2), seed=n)
        home = os.path.join(d, "home")
        reg = open_registry(home)
        try:
            warm = os.path.join(d, "src", "warmup.bin")
            Path(warm).write_bytes(b"warm-up" * 40)
            reg.register("warmup", artifact=warm)  # starts the embedded worker, creates the files
            artifacts = str(reg.config.artifacts)
            blobs_before = count_blobs(artifacts)
            head_before = reg.head()
            start = time.perf_counter()
            for i in range(n):
                v = reg.register(f"bench/m{i % 4}", artifact=files[i % len(files)], params={"i": i})
                if v.status != "ready":
                    raise SystemExit(f"register returned {v.ref} with status {v.status}")
            elapsed = time.perf_counter() - start
            written = count_blobs(artifacts) - blobs_before
            events = (reg.head() - head_before) / n
        finally:
            reg.close()
    return n / elapsed, n - written, events


def bench_register(tmp: str, quick: bool, synchronous: str) -> list[Row]:
    n = size("registers", quick)
    repeats = size("register_repeats", quick)
    base_rows = raw_rows(make_events(n, seed=3))
    log(f"register: {n} registers x {repeats} repeats, baseline raw sqlite {n} single-event transactions")
    dedups, per = [], []

    def subject() -> float:
        rate, dedup, events = time_registers(tmp, n)
        dedups.append(dedup)
        per.append(events)
        return rate

    s, b, r = paired(repeats, subject, lambda: time_raw(tmp, base_rows, 1, synchronous))
    return [Row("Registry.register (tiny file)", "modelledger", median(s), "ver/s", "raw sqlite 1 txn/ev",
                median(b), median(r),
                note=(f"{n} registers per repeat; dedup hits {int(median(dedups))}/{n} "
                      f"(blob already stored, nothing copied); {median(per):.1f} events in 1 commit per register"),
                samples={"modelledger": s, "raw": b, "ratio": r, "dedup_hits": dedups})]


# -- 3. latency with 10 vs 10,000 versions ----------------------------------------------------------

NAME = "bench/deep"


def build_model(home: str, src: str, versions: int) -> dict[str, float]:
    """A model with ``versions`` versions: version 1 through ``register`` (a real ingest), the rest as the
    events the decider would produce for it (VersionRegistered + ArtifactStored), through ``append_batch``
    in batches of 500 versions; then one read lets the catalog catch up."""
    reg = open_registry(home)
    try:
        v1 = reg.register(NAME, artifact=src, params={"lr": 0.1}, tags={"task": "bench"})
        stream = stream_for(NAME)
        start = time.perf_counter()
        batch: list[NewEvent] = []
        for number in range(2, versions + 1):
            meta = {"actor": ACTOR, "client": "modelledger/bench", "correlation_id": str(uuid.uuid4())}
            data = version_created(NAME, number, None, description="", params={"lr": 0.1, "seed": number},
                                  structure={}, optimizer={}, tags={"task": "bench"},
                                  artifact={"source": v1.artifact["source"]}, status="pending")
            batch.append(NewEvent(stream, "VersionRegistered", data, meta))
            batch.append(NewEvent(stream, "ArtifactStored", artifact_stored(NAME, number, v1.artifact), meta))
            if len(batch) >= 1_000:
                reg.append_batch(batch)
                batch = []
        if batch:
            reg.append_batch(batch)
        appended = time.perf_counter() - start
        start = time.perf_counter()
        last = reg.get(f"{NAME}@{versions}")
        caught_up = time.perf_counter() - start
        if last.status != "ready" or reg.catalog().model(NAME, versions=False).latest != versions:
            raise SystemExit(f"building {versions} versions went wrong: {last.ref} {last.status}")
    finally:
        reg.close()
    return {"append_s": appended, "catch_up_s": caught_up}


def measure_ops(home: str, src: str, ops: int, offset: int) -> dict[str, list[float]]:
    """``ops`` single registers, tags and aliases (each a real change) on the model; ms each."""
    reg = open_registry(home)
    out: dict[str, list[float]] = {"register": [], "tag": [], "alias": []}
    try:
        for i in range(ops):
            k = offset + i
            t = time.perf_counter()
            reg.register(NAME, artifact=src, params={"lr": 0.1, "run": k})
            out["register"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            reg.tag(f"{NAME}@5", {"run": str(k)})
            out["tag"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            reg.alias(f"{NAME}@{1 + k % 9}", "production")  # 1..9: always a move, valid at both sizes
            out["alias"].append((time.perf_counter() - t) * 1000)
    finally:
        reg.close()
    return out


def bench_latency(tmp: str, quick: bool) -> list[Row]:
    big = size("big_versions", quick)
    rounds, ops = size("latency_rounds", quick), size("latency_ops", quick)
    rows: list[Row] = []
    with temp_dir(tmp, "lat-") as d:
        src = small_files(os.path.join(d, "src"), 1, seed=7)[0]
        homes = {10: os.path.join(d, "small"), big: os.path.join(d, "big")}
        builds = {}
        for versions, home in homes.items():
            log(f"latency: building a model with {versions:,} versions")
            builds[versions] = build_model(home, src, versions)
        samples: dict[int, dict[str, list[float]]] = {v: {"register": [], "tag": [], "alias": []} for v in homes}
        log(f"latency: {rounds} rounds x {ops} register/tag/alias on each model, alternating")
        for r in range(rounds):
            order = list(homes.items()) if r % 2 == 0 else list(reversed(homes.items()))
            for versions, home in order:
                got = measure_ops(home, src, ops, offset=r * ops)
                for kind, values in got.items():
                    samples[versions][kind].extend(values)
        for kind in ("register", "tag", "alias"):
            small_ms, big_ms = median(samples[10][kind]), median(samples[big][kind])
            ratio = big_ms / small_ms
            note = f"median of {len(samples[big][kind])} on each"
            if kind == "register":
                note += " (same tiny file: a dedup hit, 1 commit)"
            if kind == "register":
                b = builds[big]
                note += (f"; {big:,} versions built in {b['append_s']:.1f} s (append_batch) "
                         f"+ {b['catch_up_s']:.1f} s catalog catch-up")
            rows.append(Row(f"{kind} latency @{big:,} vs @10", f"@{big:,}", big_ms, "ms", "@10", small_ms, ratio,
                            target="≤ 2", ok=ratio <= 2, note=note,
                            samples={"big_ms": samples[big][kind], "small_ms": samples[10][kind]}))
    return rows


# -- main --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (< 1 minute), for smoke checks")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--tmpdir", help="where the temp databases go (default: the system temp dir); "
                                         "the file system decides what an fsync costs")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only these sections (repeatable)")
    args = parser.parse_args(argv)
    sections = args.only or SECTIONS

    synchronous = (os.environ.get("MLEDGER_SYNCHRONOUS") or "FULL").upper()  # as SQLiteRecorder resolves it
    info = machine()
    tmp_parent = args.tmpdir or os.environ.get("TMPDIR") or "/tmp"
    header = [
        "modelledger bench" + (" (--quick)" if args.quick else ""),
        f"machine: nproc {info['nproc']} (cpu_count {info['cpu_count']}), {info['implementation']} {info['python']}, "
        f"SQLite {info['sqlite']}, {info['platform']}, loadavg {info['loadavg']}",
        f"durability: journal_mode=WAL, synchronous={synchronous} (MLEDGER_SYNCHRONOUS), temp dir {tmp_parent}",
        "figures: medians over repeats; ratio = median of per-repeat ratios (subject / baseline measured back to "
        "back), latency ratio = @big / @10",
    ]
    print("\n".join(header), flush=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    rows: list[Row] = []
    with temp_dir(args.tmpdir, "mledger-bench-") as tmp:
        if "append" in sections:
            rows += bench_append(tmp, args.quick, synchronous)
        if "register" in sections:
            rows += bench_register(tmp, args.quick, synchronous)
        if "latency" in sections:
            rows += bench_latency(tmp, args.quick)
        for name, run in (("ingest", bench_ingest), ("redis", bench_redis), ("history", bench_history),
                          ("postgres", bench_postgres)):
            if name in sections:
                section_start = time.perf_counter()
                rows += run(tmp, args.quick)
                timings[name] = time.perf_counter() - section_start
    elapsed = time.perf_counter() - started
    print()
    print(render(rows))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; "
          f"{sum(1 for r in rows if r.ok is False)} target(s) missed")
    if timings:
        print("section times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "synchronous": synchronous, "quick": args.quick, "elapsed_s": round(elapsed, 1),
            "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
            "section_s": {k: round(v, 1) for k, v in timings.items()},
            "rows": [r.to_json() for r in rows],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
