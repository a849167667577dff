"""The catalog's fold rate next to a raw read + JSON decode of the same events, on SQLite and PostgreSQL.

    python scripts/bench_fold.py [--events N] [--quick] [--json] [--no-postgres]
    python scripts/bench_fold.py --parts [--events N] [--rounds R]   # where an event's CPU goes (SQLite)

A log of N events (default 100,000) is appended once per backend, with no catalog: a mix like a registry's
(models registered, versions created with params and an artifact record, tags, metrics, alias moves, the
artifact stored). Then, alternating, in the same run:

- raw: the rows read from the ``events`` table through the driver, 5,000 at a time, and their ``data`` and
  ``meta`` decoded with ``json.loads`` — the least any fold must do;
- fold: ``CatalogProjection.rebuild()`` — drop the catalog, read the log's rows back straight from the
  ``events`` table (``projector.LogEvent``: upcast, no ``StoredEvent``), fold every page and write its rows
  (decision state, tags, metrics, files, temporal states, search words), build the query indexes and the
  full-text index, and commit.

The table gives the median events/s of each and the ratio fold / raw (issue 10's target: at least 0.25),
and under each row the CPU per event of both sides (the client's process time, plus on PostgreSQL the server
backends' CPU read from ``/proc`` when the server runs on this machine) with their ratio: on a shared machine
the wall clock of one tree moved by 1.5x between rounds, the CPU did not.
PostgreSQL runs in a database with a random name on ``MLEDGER_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

from _benchlib import Row, add_repo_to_path, log, machine, median, render, temp_dir

add_repo_to_path()

from eventstore.events import NewEvent  # noqa: E402
from projections.catalog import CatalogProjection  # noqa: E402

ADMIN_URL = os.environ.get("MLEDGER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
SELECT = ("SELECT position, stream, version, type, schema_version, data, meta, recorded_at, hash FROM events"
          " WHERE position > {p} ORDER BY position LIMIT {p}")
PAGE = 5_000
DIGEST = "sha256:" + "ab" * 32


def workload(n: int) -> list[NewEvent]:
    """``n`` events over 100 models: each model registered, then versions (with params and an artifact
    record), their artifact stored, tags, metrics and alias moves, round robin."""
    meta = {"actor": "bench@modelledger", "client": "modelledger/bench", "correlation_id": uuid.uuid4().hex}
    models = [f"team/model-{i:03d}" for i in range(100)]
    out = [NewEvent(f"model-{m}", "ModelRegistered", {"name": m, "description": f"bench model {m}",
                                                       "tags": {"team": "vision"}}, meta) for m in models]
    versions = dict.fromkeys(models, 0)
    i = 0
    while len(out) < n:
        m = models[i % len(models)]
        step = (i // len(models)) % 6
        v = versions[m]
        if step == 0 or v == 0:
            v = versions[m] = v + 1
            out.append(NewEvent(f"model-{m}", "VersionRegistered", {
                "name": m, "version": v, "parent": v - 1 or None, "description": f"run {i}",
                "params": {"lr": 0.001 * v, "layers": [64, 128, 256], "optimizer": "adam"}, "structure": {},
                "optimizer": {}, "tags": {"run": str(i)}, "status": "pending",
                "artifact": {"source": f"/data/runs/{i}/model.safetensors"}}, meta))
        elif step == 1:
            out.append(NewEvent(f"model-{m}", "ArtifactStored", {
                "name": m, "version": v, "digest": DIGEST, "size": 1234, "kind": "file", "format": "safetensors",
                "files": [{"path": "model.safetensors", "digest": DIGEST, "size": 1234}], "unsafe": False,
                "imports": [], "detail": ""}, meta))
        elif step == 2:
            out.append(NewEvent(f"model-{m}", "Tagged", {"name": m, "version": v,
                                                          "tags": {"stage": "candidate", "step": str(i)}}, meta))
        elif step == 3:
            out.append(NewEvent(f"model-{m}", "MetricsRecorded", {"name": m, "version": v,
                                                                   "metrics": {"acc": 0.5 + v / 1e4, "loss": 0.1}},
                                meta))
        elif step == 4:
            out.append(NewEvent(f"model-{m}", "AliasAssigned", {"name": m, "alias": "production", "version": v,
                                                                 "previous": None}, meta))
        else:
            out.append(NewEvent(f"model-{m}", "Tagged", {"name": m, "tags": {"owner": f"user{i % 7}"}}, meta))
        i += 1
    return out[:n]


def fill(recorder: Any, events: list[NewEvent]) -> None:
    for start in range(0, len(events), 2_000):
        recorder.append(events[start:start + 2_000])


def raw_sqlite(path: str) -> Callable[[], int]:
    def run() -> int:
        conn = sqlite3.connect(path)
        try:
            return _raw(lambda since: conn.execute(SELECT.format(p="?"), (since, PAGE)).fetchall())
        finally:
            conn.close()
    return run


def raw_postgres(url: str) -> Callable[[], int]:
    """One connection for every round (closed when the database is dropped): its backend's CPU is then among
    those ``server_cpu`` reads before and after a round."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)

    def run() -> int:
        return _raw(lambda since: conn.execute(SELECT.format(p="%s"), (since, PAGE)).fetchall())
    return run


def _raw(page: Callable[[int], list[tuple]]) -> int:
    since, count = 0, 0
    loads = json.loads
    while rows := page(since):
        for row in rows:
            loads(row[5])
            loads(row[6])
        count += len(rows)
        since = rows[-1][0]
    return count


def server_cpu(admin_url: str, dbname: str) -> Callable[[], float | None]:
    """The CPU seconds (user + system) the PostgreSQL backends of ``dbname`` have used so far, read from
    ``/proc`` (a server on this machine; None elsewhere). The wall clock of a rebuild on a shared machine moved
    by 1.5x between rounds of the same tree; the client's CPU plus the server's did not."""
    import psycopg

    def run() -> float | None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            pids = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))]
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")
    return run


def measure(label: str, recorder: Any, raw: Callable[[], int], rounds: int, n: int,
            server: Callable[[], float | None] = lambda: 0.0) -> Row:
    """Rates by the wall clock (the row), and the CPU per event of each side — the client's process time plus,
    on PostgreSQL, the server backends' (``server_cpu``) — with their ratio in the row's note."""
    log(f"{label}: first fold (creates the catalog)")
    projection = CatalogProjection(recorder)
    raw_rates, fold_rates, raw_cpu, fold_cpu = [], [], [], []

    def timed(fn: Callable[[], int]) -> tuple[int, float, float | None]:
        s0, c0, t0 = server(), time.process_time(), time.perf_counter()
        count = fn()
        wall, cpu, s1 = time.perf_counter() - t0, time.process_time() - c0, server()
        return count, wall, None if s0 is None or s1 is None else cpu + s1 - s0

    for r in range(rounds):
        count, wall, cpu = timed(raw)
        raw_rates.append(count / wall)
        raw_cpu.append(cpu)
        folded, wall, cpu = timed(projection.rebuild)
        fold_rates.append(folded / wall)
        fold_cpu.append(cpu)
        log(f"{label} round {r + 1}: raw {raw_rates[-1]:,.0f}/s, fold {fold_rates[-1]:,.0f}/s")
    fold_rate, raw_rate = median(fold_rates), median(raw_rates)
    ratio = fold_rate / raw_rate
    note = ""
    if None not in raw_cpu and None not in fold_cpu:
        raw_us, fold_us = median(raw_cpu) / n * 1e6, median(fold_cpu) / n * 1e6
        note = (f"CPU per event (client{' + server' if label != 'SQLite' else ''}): fold {fold_us:.1f} µs, "
                f"raw {raw_us:.1f} µs, CPU ratio {raw_us / fold_us:.3f}; load {os.getloadavg()[0]:.1f}")
    return Row(f"fold_{label.lower()}", f"{label}: fold ({n:,} events, rebuild)", fold_rate, "events/s",
               "raw read + JSON decode", raw_rate, ratio, ">= 0.25", ratio >= 0.25, note=note,
               samples={"fold": fold_rates, "raw": raw_rates, "fold_cpu_s": fold_cpu, "raw_cpu_s": raw_cpu})


def parts(n: int, rounds: int) -> list[str]:
    """Where an event's CPU goes in a SQLite rebuild (``--parts``): ``time.process_time`` around the fold's
    phases (wrapped for the measurement only), beside the raw read and the recorder's own read; the median
    round by total. Lines of text, µs per event."""
    import projections.catalog as catalog_module
    import projections.projector as projector
    import projections.sqlite.fold as sqlite_fold
    from eventstore.sqlite import SQLiteRecorder

    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - t
        return wrapper

    originals = (projector.Fold.__init__, projector.Fold.changes, sqlite_fold.FoldStore.write, catalog_module.fold,
                 catalog_module.log_events)
    projector.Fold.__init__ = timed("rows the pages touch, read", projector.Fold.__init__)  # type: ignore[method-assign]
    projector.Fold.changes = timed("Fold.changes", projector.Fold.changes)  # type: ignore[method-assign]
    sqlite_fold.FoldStore.write = timed("SQL writes", sqlite_fold.FoldStore.write)  # type: ignore[method-assign]
    catalog_module.fold = timed("fold", projector.fold)
    catalog_module.log_events = timed("log events", projector.log_events)
    results = []
    try:
        with temp_dir(None, "mledger-bench-fold-") as d:
            path = os.path.join(d, "registry.db")
            recorder = SQLiteRecorder(path, synchronous="NORMAL")
            fill(recorder, workload(n))
            projection = CatalogProjection(recorder)
            raw = raw_sqlite(path)
            for _ in range(rounds):
                spent.clear()
                t = time.process_time()
                raw()
                raw_s = time.process_time() - t
                t = time.process_time()
                position = 0
                while page := list(recorder.read(since=position, limit=PAGE)):
                    position = page[-1].position
                read_s = time.process_time() - t
                t = time.process_time()
                projection.rebuild()
                results.append((time.process_time() - t, raw_s, read_s, dict(spent)))
            recorder.close()
    finally:
        (projector.Fold.__init__, projector.Fold.changes, sqlite_fold.FoldStore.write,
         catalog_module.fold, catalog_module.log_events) = originals
    total, raw_s, read_s, phases = sorted(results, key=lambda r: r[0])[len(results) // 2]

    def us(seconds: float) -> str:
        return f"{seconds / n * 1e6:6.1f} µs"

    inside = phases["fold"] - phases["rows the pages touch, read"] - phases["Fold.changes"] - phases["SQL writes"]
    return [f"CPU per event, SQLite rebuild of {n:,} events (median of {rounds} rounds), load {os.getloadavg()[0]:.1f}:",
            f"  raw read + JSON decode (the baseline)        {us(raw_s)}",
            f"  the recorder's read alone (StoredEvent)      {us(read_s)}",
            f"  a rebuild's read of the rows (LogEvent)      {us(phases.get('log events', 0.0))}",
            f"  rows the pages touch, read                   {us(phases['rows the pages touch, read'])}",
            f"  handlers and temporal states                 {us(inside)}",
            f"  Fold.changes                                 {us(phases['Fold.changes'])}",
            f"  SQL writes                                   {us(phases['SQL writes'])}",
            f"  the rest: the rows' SELECT, drop, create, indexes, commit  "
            f"{us(total - phases['fold'] - phases.get('log events', 0.0))}",
            f"  the whole rebuild                            {us(total)}   (CPU ratio {raw_s / total:.3f})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 events, 2 rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--parts", action="store_true", help="where an event's CPU goes (SQLite), then exit")
    args = parser.parse_args()
    n, rounds = (10_000, 2) if args.quick else (args.events, args.rounds)
    if args.parts:
        print("\n".join(parts(n, rounds)))
        return
    events = workload(n)
    rows: list[Row] = []
    with temp_dir(None, "mledger-bench-fold-") as d:
        from eventstore.sqlite import SQLiteRecorder

        path = os.path.join(d, "registry.db")
        recorder = SQLiteRecorder(path, synchronous="NORMAL")
        log(f"SQLite: appending {n:,} events")
        fill(recorder, events)
        rows.append(measure("SQLite", recorder, raw_sqlite(path), rounds, n))
        recorder.close()
    if not args.no_postgres:
        import psycopg
        from psycopg import sql as pgsql
        from psycopg.conninfo import make_conninfo

        from eventstore.postgres import PostgresRecorder

        name = f"mledger_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        try:
            url = make_conninfo(ADMIN_URL, dbname=name)
            recorder = PostgresRecorder(url)
            log(f"PostgreSQL: appending {n:,} events")
            fill(recorder, events)
            rows.append(measure("PostgreSQL", recorder, raw_postgres(url), rounds, n, server_cpu(ADMIN_URL, name)))
            recorder.close()
        finally:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
    if args.json:
        print(json.dumps({"machine": machine(), "rows": [r.to_json() for r in rows]}, indent=2))
    else:
        print(render(rows))


if __name__ == "__main__":
    main()
