"""Where one command on PostgreSQL spends its time: round trips, statements and Python per command.

    .venv/bin/python scripts/profile_pg.py [--ops N] [--cprofile] [tag|alias|register|keyed ...]
    .venv/bin/python scripts/profile_pg.py --compare main=/work/main [--rounds 3] [--ops N] [kinds ...]

For each command kind (``keyed``: a register with an idempotency key of its own, as a pipeline that retries sends
it: its key looked up first, then the command), on a fresh registry in a database with a random name on ``MLEDGER_BENCH_POSTGRES``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards, with a model of 10 versions
(``--versions N``: of N):

- ``round trips``: the times the client waited for the server's answer (a ``Connection.wait`` whose exchange
  had to wait for the socket to become readable: a plain ``execute``, a pipeline's fetch or sync, a COMMIT);
- ``statements``: the queries sent (``executemany`` counts each row's);
- ``total`` (median µs per command, wall clock) and ``waiting`` (median µs per command spent in those
  waits: the server's work plus the network; the rest is Python on this side); ``mean`` and ``p90`` of the
  total; ``CPU`` (this process's CPU per command, mean) and ``server CPU`` (the registry's server processes'
  CPU per command, from /proc/PID/schedstat, in nanoseconds: a server on this host only);
- with ``--compare NAME=TREE``, A/B: each round runs this profile on this script's tree and on TREE (another
  checkout of the project, e.g. ``main``'s worktree) one after the other, in child processes, alternating
  which goes first; then the median of the rounds per tree and the ratio TREE / this tree;
- with ``--tree TREE``, the profile of the product in TREE rather than this script's tree;
- with ``--trace``, one command's statements and where it waited (each cut at ``TRACE_LEN`` characters, 100);
- with ``--cprofile``, the 25 functions with the most cumulative time over all the commands.

A profile, not a benchmark: no baseline, and absolute times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _benchlib import add_repo_to_path  # noqa: E402

add_repo_to_path()
if "--tree" in sys.argv[:-1]:  # the product of another tree (``--compare``'s children), ahead of this one's
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--tree") + 1]))

import psycopg  # noqa: E402
from bench_pg import database  # noqa: E402

from modelledger import Registry  # noqa: E402


class Counter:
    """Counts the client's round trips to the server and the statements sent, by wrapping
    ``Connection.wait`` (every exchange with the server goes through it) and the cursor's send step."""

    def __init__(self) -> None:
        self.on = False
        self.trips = 0
        self.statements = 0
        self.waiting = 0.0
        self.trace: list[str] | None = None  # the statements and round trips of the commands, when asked
        self._wait = psycopg.Connection.wait
        self._send = psycopg.Cursor._maybe_prepare_gen

    def install(self) -> None:
        counter, wait, send = self, self._wait, self._send

        def counting_wait(conn: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
            if not counter.on:
                return wait(conn, gen, *args, **kwargs)
            trip = _is_round_trip(conn, gen)
            start = time.perf_counter()
            try:
                return wait(conn, gen, *args, **kwargs)
            finally:
                if trip:
                    counter.trips += 1
                    counter.waiting += time.perf_counter() - start
                    if counter.trace is not None:
                        counter.trace.append("  -- round trip")

        def counting_send(cursor: Any, pgq: Any, *args: Any, **kwargs: Any) -> Any:
            if counter.on:
                counter.statements += 1
                if counter.trace is not None:
                    counter.trace.append(bytes(pgq.query).decode()[:int(os.environ.get("TRACE_LEN", "100"))])
            return send(cursor, pgq, *args, **kwargs)

        psycopg.Connection.wait = counting_wait  # type: ignore[method-assign]
        psycopg.Cursor._maybe_prepare_gen = counting_send  # type: ignore[method-assign]

    def uninstall(self) -> None:
        psycopg.Connection.wait = self._wait  # type: ignore[method-assign]
        psycopg.Cursor._maybe_prepare_gen = self._send  # type: ignore[method-assign]


KINDS = ("tag", "alias", "register", "keyed")
DEFAULT_KINDS = KINDS[:3]  # what runs when no kind is named


def _is_round_trip(conn: Any, gen: Any) -> bool:
    """Whether this exchange waits for the server's answer: outside pipeline mode every one does; in it,
    sending does not, and a fetch of pending results, a sync and leaving the pipeline do."""
    name = getattr(getattr(gen, "gi_code", None), "co_name", "")
    pipeline = conn._pipeline
    if name == "_fetch_gen":
        return bool(pipeline and pipeline.result_queue)
    if name in ("_sync_gen", "_exit_gen"):
        return True
    if name in ("_enter_gen",):
        return False
    return pipeline is None


def _op(kind: str, reg: Registry, folder: str, ops: int) -> Callable[[int], object]:
    if kind == "tag":
        return lambda i: reg.tag("m@5", {"run": str(i)})
    if kind == "alias":
        return lambda i: reg.alias(f"m@{1 + i % 9}", "production")
    files = []
    for i in range(ops):
        files.append(os.path.join(folder, f"new-{i}.bin"))
        Path(files[-1]).write_bytes(b"PROFILE " + os.urandom(400))
    if kind == "keyed":
        return lambda i: reg.register("m", artifact=files[i], idempotency_key=uuid.uuid4().hex)
    return lambda i: reg.register("m", artifact=files[i])


def profile(kind: str, ops: int, counter: Counter, cprof: cProfile.Profile | None,
            trace: bool = False, versions: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d, database("mledger_profile") as url:
        home = os.path.join(d, "home")
        reg = Registry.open(home=home, broker="embedded", actor="profile", database=url,
                            artifacts=os.path.join(d, "store"))
        try:
            for i in range(versions):
                src = os.path.join(d, f"v{i}.bin")
                Path(src).write_bytes(b"PROFILE " + os.urandom(400))
                reg.register("m", artifact=src)
            op = _op(kind, reg, d, ops)
            for i in range(min(20, ops)):  # warm up (prepared statements, caches)
                op(i)
            op = _op(kind, reg, d, ops) if kind in ("register", "keyed") else op
            if trace:
                counter.trace, counter.on = [], True
                op(ops - 1)
                counter.on = False
                print(f"{kind}, one command:\n  " + "\n  ".join(counter.trace))
                counter.trace = None
            backends = _backends(url)
            server_before = server_cpu_of(backends)
            totals, trips, statements, waits, cpus = [], [], [], [], []
            for i in range(ops):
                counter.trips = counter.statements = 0
                counter.waiting = 0.0
                counter.on = True
                if cprof is not None:
                    cprof.enable()
                start, cpu = time.perf_counter(), time.process_time()
                op(i)
                end, cpu_end = time.perf_counter(), time.process_time()
                if cprof is not None:
                    cprof.disable()
                counter.on = False
                totals.append(end - start)
                cpus.append(cpu_end - cpu)
                trips.append(counter.trips)
                statements.append(counter.statements)
                waits.append(counter.waiting)
            server = (server_cpu_of(backends) - server_before) / ops if server_before is not None else float("nan")
        finally:
            reg.close()
    return {"round trips": statistics.mean(trips), "statements": statistics.mean(statements),
            "total µs": statistics.median(totals) * 1e6, "waiting µs": statistics.median(waits) * 1e6,
            "mean µs": statistics.mean(totals) * 1e6,
            "p90 µs": sorted(totals)[int(len(totals) * 0.9)] * 1e6,
            "CPU µs": statistics.mean(cpus) * 1e6, "server CPU µs": server * 1e6}


def _backends(url: str) -> list[int]:
    """The server processes of the registry's connections to ``url``'s database (pg_stat_activity)."""
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s"
                                           " AND pid <> pg_backend_pid()", (dbname,))]


def server_cpu_of(pids: list[int]) -> float | None:
    """CPU seconds the server processes ``pids`` ran so far, from /proc/PID/schedstat (nanoseconds; the 10 ms
    ticks of /proc/PID/stat were 33 µs per command over 300 commands: too coarse to compare two trees); a
    server on this host only, None elsewhere."""
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        return None
    return total / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", help="tag, alias, register and/or keyed (default: the first three)")
    parser.add_argument("--ops", type=int, default=300, help="commands per kind (default 300)")
    parser.add_argument("--cprofile", action="store_true", help="also print the top functions (cProfile)")
    parser.add_argument("--trace", action="store_true", help="also print one command's statements and round trips")
    parser.add_argument("--versions", type=int, default=10, help="versions of the model commanded (default 10)")
    parser.add_argument("--compare", metavar="NAME=TREE", help="A/B against another tree, alternating rounds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --compare (default 3)")
    parser.add_argument("--tree", help="profile the product in this tree (used by --compare)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object (used by --compare)")
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown command kind {unknown[0]!r}: choose tag, alias, register or keyed")
    if args.compare:
        return compare(args)
    counter = Counter()
    counter.install()
    if args.json:
        got = {kind: profile(kind, args.ops, counter, None, versions=args.versions)
               for kind in args.kinds or list(DEFAULT_KINDS)}
        print(json.dumps(got))
        return 0
    print(f"loadavg {os.getloadavg()}")
    try:
        for kind in args.kinds or list(DEFAULT_KINDS):
            cprof = cProfile.Profile(time.process_time) if args.cprofile else None
            got = profile(kind, args.ops, counter, cprof, args.trace, args.versions)
            print(f"{kind}: " + ", ".join(f"{k} {v:,.1f}" for k, v in got.items()) + f"  (over {args.ops})")
            if cprof is not None:
                stats = pstats.Stats(cprof)
                stats.sort_stats("cumulative").print_stats(25)
                stats.sort_stats("tottime").print_stats(25)
    finally:
        counter.uninstall()
    print(f"loadavg {os.getloadavg()}")
    return 0


_COMPARED = ("total µs", "CPU µs", "server CPU µs")


def compare(args: argparse.Namespace) -> int:
    """``--compare NAME=TREE``: rounds of this tree and TREE, each a child process of this script, alternating
    which runs first; the medians per tree and TREE's / this tree's ratio of the total, client CPU and server
    CPU per command."""
    name, _, tree = args.compare.partition("=")
    trees = {"this": str(HERE.parent), name: tree}
    kinds = args.kinds or list(DEFAULT_KINDS)
    got: dict[str, dict[str, list[dict[str, float]]]] = {t: {k: [] for k in kinds} for t in trees}
    print(f"loadavg {os.getloadavg()}")
    for r in range(args.rounds):
        for label in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            out = subprocess.run([sys.executable, __file__, "--tree", trees[label], "--json", "--ops", str(args.ops),
                                  "--versions", str(args.versions), *kinds],
                                 check=True, capture_output=True, text=True).stdout
            for kind, figures in json.loads(out.splitlines()[-1]).items():
                got[label][kind].append(figures)
                print(f"round {r + 1} {label:>6} {kind:>8}: " + ", ".join(f"{k} {figures[k]:,.0f}" for k in _COMPARED))
    print(f"loadavg {os.getloadavg()}")
    for kind in kinds:
        for key in _COMPARED:
            a = statistics.median(f[key] for f in got["this"][kind])
            b = statistics.median(f[key] for f in got[name][kind])
            print(f"{kind:>8} {key:>14}: this {a:,.0f}  {name} {b:,.0f}  {name}/this {b / a:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
