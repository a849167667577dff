"""Where one command's time goes: per-phase medians and the b-tree pages its commit writes.

    .venv/bin/python scripts/profile_command.py [--ops N] [tag|alias|register ...]
    .venv/bin/python scripts/profile_command.py --compare main=/work/main [--rounds 5] [--ops N] [kinds ...]

For each command kind, on a fresh embedded registry (a model with 10 versions):

- phases, median µs over ``--ops`` commands: ``catch_up`` (the catalog following the log), ``decide`` (read the
  model and version, run the decider), ``append`` (canonical JSON, hash chain, insert), ``apply`` (the
  projection), ``commit`` (the COMMIT statement: WAL write + fsync, and now and then a WAL checkpoint), and
  ``total`` per command (the rest is the SDK around them and, for register, the blob's ingest), and ``cpu``: the
  process's CPU time per command (``time.process_time``: what a command costs whatever the disk's fsync), and
  ``statements``: the SQL statements one command runs (the connection's trace callback; a trigger's or FTS5's
  own statements not counted);
- pages: the WAL frames one commit writes, attributed to the table or index that owns each page (SQLite's
  ``dbstat``), averaged over 50 commands with automatic checkpoints off.

It is a profile, not a benchmark: absolute times on a shared machine drift. ``--compare NAME=TREE`` makes it
an A/B: each round runs this script on TREE (its modules, with TREE's ``.venv``) and on this tree, one after
the other in alternating order, and prints per kind the median over rounds of each side's CPU per command and
statements per command, with the ratio this/NAME.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("PROFILE_COMMAND_TREE") or Path(__file__).resolve().parent.parent)
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
        statements: list[Any] = [0, None]  # the count, the last statement seen

        def trace(statement: str) -> None:
            if statement == "COMMIT":
                commit_started[0] = time.perf_counter()
            # "-- ...": a virtual table's own statement; the same text again: a trigger of the statement starting
            if not statement.startswith("--") and statement != statements[1]:
                statements[0] += 1
            statements[1] = statement

        conn = reg.recorder.connection()
        conn.set_trace_callback(trace)
        op = _op(kind, reg, d, ops)
        try:
            for i in range(ops):
                statements[0], statements[1] = 0, None
                cpu, start = time.process_time(), time.perf_counter()
                op(i)
                end = time.perf_counter()
                acc["cpu"].append(time.process_time() - cpu)
                acc["statements"].append(statements[0] / 1e6)  # (scaled back below with the times)
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


def _side(tree: Path, kinds: list[str], ops: int) -> dict[str, dict[str, float]]:
    """One round of ``phases`` for ``kinds`` on ``tree``, in a process of its own (its modules, its venv)."""
    python = tree / ".venv" / "bin" / "python"
    out = subprocess.run([str(python if python.exists() else sys.executable), __file__, "--json", "--ops", str(ops),
                          *kinds], env={**os.environ, "PROFILE_COMMAND_TREE": str(tree)},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def compare(name: str, tree: Path, kinds: list[str], ops: int, rounds: int) -> None:
    got: dict[str, dict[str, list[dict[str, float]]]] = {name: collections.defaultdict(list),
                                                         "this": collections.defaultdict(list)}
    for r in range(rounds):
        order = [(name, tree), ("this", ROOT)]
        for label, where in order if r % 2 == 0 else order[::-1]:
            for kind, p in _side(where, kinds, ops).items():
                got[label][kind].append(p)
    for kind in kinds:
        line = []
        for key in ("cpu", "total", "statements"):
            a = statistics.median(p[key] for p in got[name][kind])
            b = statistics.median(p[key] for p in got["this"][kind])
            unit = "" if key == "statements" else " µs"
            line.append(f"{key} {name} {a:.0f}{unit} / this {b:.0f}{unit} = {b / a:.3f}")
        print(f"{kind}: " + ", ".join(line) + f"  (medians of {rounds} rounds x {ops} commands)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", help="tag, alias and/or register (default: all three)")
    parser.add_argument("--ops", type=int, default=1000, help="commands timed per kind (default 1000)")
    parser.add_argument("--compare", metavar="NAME=TREE", help="A/B against the tree TREE (e.g. main=/work/main)")
    parser.add_argument("--rounds", type=int, default=5, help="with --compare: rounds per side (default 5)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # --compare's side: phases only
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in ("tag", "alias", "register")]
    if unknown:
        parser.error(f"unknown command kind {unknown[0]!r}: choose tag, alias or register")
    kinds = args.kinds or ["tag", "alias", "register"]
    if args.json:
        print(json.dumps({kind: phases(kind, args.ops) for kind in kinds}))
        return 0
    if args.compare:
        name, _, tree = args.compare.partition("=")
        if not tree:
            parser.error("--compare takes NAME=TREE")
        compare(name, Path(tree).resolve(), kinds, args.ops, args.rounds)
        return 0
    for kind in kinds:
        p = phases(kind, args.ops)
        order = ["catch_up", "decide", "append", "apply", "commit", "total", "cpu"]
        print(f"{kind}: " + ", ".join(f"{k} {p[k]:.0f} µs" for k in order if k in p)
              + f", statements {p['statements']:.0f}  (medians of {args.ops})")
        total, owners = pages(kind)
        print(f"  pages per commit {total:.1f}: " + ", ".join(f"{name} {n:.1f}" for name, n in owners if n >= 0.05))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
