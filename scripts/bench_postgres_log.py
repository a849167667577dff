"""The PostgreSQL log's append rate next to a raw psycopg ``executemany`` of the same rows, in the same run.

    python scripts/bench_postgres_log.py [--quick] [--json]

A database with a random name is created on ``MLEDGER_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped at the end. Two measurements, each as
alternating blocks of the recorder and of the baseline (so that a noisy neighbour hits both alike):

- single-event appends: ``PostgresRecorder.append([event])`` (writer lock, head, stream version, canonical
  JSON, hash, insert, NOTIFY, commit) vs a raw transaction that ``json.dumps`` the event's data and meta and
  INSERTs one row into a plain table with the same columns;
- 1,000-event batches: ``PostgresRecorder.append(batch)`` vs a raw transaction that serialises the same event
  dicts and ``executemany``-s them (the honest baseline decided in issue 10: any writer must serialise).

The table prints medians of the per-block rates and the ratio recorder / raw (1.0 = as fast as raw).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from _benchlib import Row, add_repo_to_path, log, machine, median, render

add_repo_to_path()

import psycopg  # noqa: E402
from psycopg import sql as pgsql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from eventstore.events import NewEvent  # noqa: E402
from eventstore.postgres import PostgresRecorder  # noqa: E402

ADMIN_URL = os.environ.get("MLEDGER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

RAW_TABLE = """
CREATE TABLE raw_events (
    position bigint PRIMARY KEY, stream text NOT NULL, version bigint NOT NULL, type text NOT NULL,
    schema_version integer NOT NULL, data text NOT NULL, meta text NOT NULL, recorded_at text NOT NULL,
    hash text NOT NULL, UNIQUE (stream, version))
"""
RAW_INSERT = ("INSERT INTO raw_events (position, stream, version, type, schema_version, data, meta, recorded_at,"
              " hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")


def event(n: int, stream: str) -> NewEvent:
    """A tag-sized event with the meta a command carries (actor, client, correlation id)."""
    return NewEvent(stream, "Tagged", {"name": stream[6:], "version": n % 7 + 1,
                                       "tags": {"owner": "ml-platform", "step": str(n), "stage": "candidate"}},
                    meta={"actor": "bench@modelledger", "client": "modelledger/0.1.0",
                          "correlation_id": uuid.uuid4().hex})


class Raw:
    """The baseline writer: positions and versions counted in Python, nothing else."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute(RAW_TABLE)
        self.conn.commit()
        self.position = 0
        self.versions: dict[str, int] = {}

    def rows(self, events: list[NewEvent]) -> list[tuple[Any, ...]]:
        out = []
        for e in events:
            self.position += 1
            version = self.versions[e.stream] = self.versions.get(e.stream, 0) + 1
            out.append((self.position, e.stream, version, e.type, 1, json.dumps(e.data), json.dumps(e.meta),
                        "2026-01-01T00:00:00.000000Z", "0" * 64))
        return out

    def append(self, events: list[NewEvent]) -> None:
        rows = self.rows(events)
        with self.conn.cursor() as cur:
            if len(rows) == 1:
                cur.execute(RAW_INSERT, rows[0])
            else:
                cur.executemany(RAW_INSERT, rows)
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def rate(append: Any, batches: list[list[NewEvent]]) -> float:
    """Appends per second over one block."""
    start = time.perf_counter()
    for batch in batches:
        append(batch)
    return len(batches) / (time.perf_counter() - start)


def measure(url: str, *, blocks: int, singles: int, batch_size: int, batches: int) -> list[Row]:
    recorder = PostgresRecorder(url)
    raw = Raw(url)
    try:
        counter = iter(range(10**9))
        recorder.append([event(0, "model-warm")])
        raw.append([event(0, "model-warm")])
        single_rec, single_raw, batch_rec, batch_raw = [], [], [], []
        for b in range(blocks):
            log(f"block {b + 1}/{blocks}")
            single = [[event(next(counter), f"model-s{i % 10}")] for i in range(singles)]
            single_rec.append(rate(recorder.append, single))
            single_raw.append(rate(raw.append, single))
            bulk = [[event(next(counter), f"model-b{i % 10}") for i in range(batch_size)] for _ in range(batches)]
            batch_rec.append(rate(recorder.append, bulk))
            batch_raw.append(rate(raw.append, bulk))
        assert recorder.head() == 1 + blocks * (singles + batches * batch_size)
    finally:
        recorder.close()
        raw.close()
    s_rec, s_raw, b_rec, b_raw = map(median, (single_rec, single_raw, batch_rec, batch_raw))
    return [
        Row("postgres", "single-event append", s_rec, "appends/s", "raw INSERT + COMMIT", s_raw, s_rec / s_raw,
            note=f"median of {blocks} blocks of {singles}",
            samples={"recorder": single_rec, "raw": single_raw}),
        Row("postgres", f"{batch_size:,}-event batch", b_rec, "batches/s", "raw executemany + COMMIT", b_raw,
            b_rec / b_raw,
            note=f"{b_rec * batch_size:,.0f} vs {b_raw * batch_size:,.0f} events/s; median of {blocks} blocks "
                 f"of {batches}", samples={"recorder": batch_rec, "raw": batch_raw}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller blocks")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    args = parser.parse_args()
    name = f"mledger_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        server = admin.execute("SHOW server_version").fetchone()[0]
    try:
        rows = measure(make_conninfo(ADMIN_URL, dbname=name), blocks=3 if args.quick else 7,
                       singles=100 if args.quick else 300, batch_size=1000, batches=3 if args.quick else 10)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
    if args.json:
        for row in rows:
            print(json.dumps(row.to_json()))
        return
    facts = machine()
    print(f"PostgreSQL {server}, psycopg {psycopg.__version__}, Python {facts['python']}, "
          f"{facts['nproc']} cores, load {facts['loadavg']}")
    print(render(rows))


if __name__ == "__main__":
    main()
