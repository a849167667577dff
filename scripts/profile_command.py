"""Where one command's time goes: per-phase medians and the b-tree pages its commit writes.

    .venv/bin/python scripts/profile_command.py [--ops N] [tag|alias|register ...]

For each command kind, on a fresh embedded registry (a model with 10 versions):

- phases, median µs over ``--ops`` commands: ``catch_up`` (the catalog following the log), ``decide`` (read the
  model and version, run the decider), ``append`` (canonical JSON, hash chain, insert), ``apply`` (the
  projection), ``commit`` (the COMMIT statement: WAL write + fsync, and now and then a WAL checkpoint), and
  ``total`` per command (the rest is the SDK around them and, for register, the blob's ingest), and ``cpu``: the
  process's CPU time per command (``time.process_time``: what a command costs whatever the disk's fsync);
- pages: the WAL frames one commit writes, attributed to the table or index that owns each page (SQLite's
  ``dbstat``), averaged over 50 commands with automatic checkpoints off.

It is a profile, not a benchmark: no baseline, and absolute times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import collections
import os
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eventstore import handler  # noqa: E402
from eventstore import sqlite as store_sqlite  # noqa: E402
from modelledger import Registry  # noqa: E402


def _registry(home: str, source: str) -> Registry:
    reg = Registry.open(home, broker="embedded", actor="profile")
    for _ in range(10):
        reg.register("m", source)
    return reg


def _op(kind: str, reg: Registry, folder: str, ops: int) -> Callable[[int], object]:
    if kind == "tag":
        return lambda i: reg.tag("m@1", stage=f"s{i}")
    if kind == "alias":
        return lambda i: reg.alias(f"m@{1 + i % 2}", "production")
    files = []  # distinct new files, written before the timing
    for i in range(ops):
        files.append(os.path.join(folder, f"new-{i}.bin"))
        Path(files[-1]).write_bytes(b"PROFILE " + os.urandom(400))
    return lambda i: reg.register("m", files[i])


def phases(kind: str, ops: int) -> dict[str, float]:
    acc: dict[str, list[float]] = collections.defaultdict(list)

    def timed(label: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[label].append(time.perf_counter() - start)
        return wrapper

    with tempfile.TemporaryDirectory() as d:
        source = os.path.join(d, "m.bin")
        Path(source).write_bytes(b"PROFILE " * 50)
        reg = _registry(os.path.join(d, "home"), source)
        originals = (handler.decide, reg.projection.catch_up, reg.projection.apply,
                     store_sqlite.SQLiteTransaction.append)
        handler.decide = timed("decide", handler.decide)
        reg.projection.catch_up = timed("catch_up", reg.projection.catch_up)
        reg.projection.apply = timed("apply", reg.projection.apply)
        store_sqlite.SQLiteTransaction.append = timed("append", store_sqlite.SQLiteTransaction.append)
        commit_started = [0.0]

        def trace(statement: str) -> None:
            if statement == "COMMIT":
                commit_started[0] = time.perf_counter()

        conn = reg.recorder.connection()
        conn.set_trace_callback(trace)
        op = _op(kind, reg, d, ops)
        try:
            for i in range(ops):
                cpu, start = time.process_time(), time.perf_counter()
                op(i)
                end = time.perf_counter()
                acc["cpu"].append(time.process_time() - cpu)
                acc["commit"].append(end - commit_started[0])
                acc["total"].append(end - start)
        finally:
            conn.set_trace_callback(None)
            (handler.decide, reg.projection.catch_up, reg.projection.apply,
             store_sqlite.SQLiteTransaction.append) = originals
            reg.close()
    return {k: statistics.median(v) * 1e6 for k, v in acc.items()}


def pages(kind: str, ops: int = 50) -> tuple[float, list[tuple[str, float]]]:
    with tempfile.TemporaryDirectory() as d:
        source = os.path.join(d, "m.bin")
        Path(source).write_bytes(b"PROFILE " * 50)
        home = os.path.join(d, "home")
        reg = _registry(home, source)
        conn = reg.recorder.connection()
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        op = _op(kind, reg, d, ops)
        for i in range(ops):
            op(i)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        wal = Path(home, "registry.db-wal").read_bytes()
        frames: collections.Counter[int] = collections.Counter()
        offset = 32  # WAL header; each frame is a 24-byte header (page number first) and one page
        while offset + 24 + page_size <= len(wal):
            frames[struct.unpack(">I", wal[offset:offset + 4])[0]] += 1
            offset += 24 + page_size
        reg.close()
        with sqlite3.connect(os.path.join(home, "registry.db")) as db:
            owner = dict((p, n) for n, p in db.execute("SELECT name, pageno FROM dbstat"))
    by: collections.Counter[str] = collections.Counter()
    for page, n in frames.items():
        by[owner.get(page, "(freelist or header)")] += n
    return sum(frames.values()) / ops, [(name, n / ops) for name, n in by.most_common()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", help="tag, alias and/or register (default: all three)")
    parser.add_argument("--ops", type=int, default=1000, help="commands timed per kind (default 1000)")
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in ("tag", "alias", "register")]
    if unknown:
        parser.error(f"unknown command kind {unknown[0]!r}: choose tag, alias or register")
    for kind in args.kinds or ["tag", "alias", "register"]:
        p = phases(kind, args.ops)
        order = ["catch_up", "decide", "append", "apply", "commit", "total", "cpu"]
        print(f"{kind}: " + ", ".join(f"{k} {p[k]:.0f} µs" for k in order if k in p) + f"  (medians of {args.ops})")
        total, owners = pages(kind)
        print(f"  pages per commit {total:.1f}: " + ", ".join(f"{name} {n:.1f}" for name, n in owners if n >= 0.05))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
