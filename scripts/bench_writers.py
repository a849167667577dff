"""Many writers on ONE SQLite registry: processes (and threads) tagging and registering at once.

    .venv/bin/python scripts/bench_writers.py [--procs 1,2,4,8] [--threads 1] [--n 60] [--ops tag,register]
        [--compare OTHER_CHECKOUT [--this CHECKOUT] [--rounds 3]] [--json FILE] [--tmpdir DIR]

Each configuration opens a fresh home (embedded broker, so a ``register`` of a small file commits its bytes
and its events in one transaction), registers ``m`` version 1, then starts ``P`` worker processes of ``T``
threads each; every thread does ``--n`` operations once all processes have started (a ``time.time()`` they
all wait for): ``Registry.tag("m@1", ...)`` with a tag of its own, or ``Registry.register`` of a distinct
~300-byte file into a model of its own (so no two commands decide against the same stream: what is measured
is the queue for the database's write lock, not re-decided commands). Per configuration: the total rate (all
operations over first start to last end), p50 / p99 latency per operation, and the writers' CPU per operation
(``time.process_time`` in each worker: sleeping in SQLite's busy handler costs wall time, not CPU).

``--compare TREE``: the same configurations run by another checkout's code (its ``eventstore`` and
``modelledger`` first on the workers' ``sys.path``), alternating with this tree's (or ``--this TREE``'s),
``--rounds`` times, each on fresh homes; the table gives this / base per configuration (rates: higher is
better; latencies and CPU: lower is better), with the per-round ratios. The machine is shared and noisy: read
the ratios of one run, and the load average printed with each round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _benchlib import Row, log, machine, median, percentile, render, temp_dir  # noqa: E402

ACTOR = "bench@writers"


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


# -- the worker process ----------------------------------------------------------------------------------

def worker(task: dict[str, Any]) -> None:
    """One writer process: imports the product from ``task["tree"]``, opens the home, waits for
    ``start_at``, runs ``threads`` threads of ``n`` operations; prints ``RESULT {json}``."""
    sys.path.insert(0, task["tree"])
    import eventstore
    from modelledger import Registry

    if not os.path.abspath(eventstore.__file__).startswith(os.path.abspath(task["tree"]) + os.sep):
        raise SystemExit(f"imported {eventstore.__file__}, not the code of {task['tree']}")
    reg = Registry.open(home=task["home"], broker="embedded", actor=ACTOR, client="bench writers")
    if task["op"] == "setup":
        seed = os.path.join(task["files"], "seed.bin")
        Path(seed).write_bytes(b"MLBENCH seed\n")
        reg.register("m", artifact=seed)
        reg.close()
        print("RESULT {}", flush=True)
        return
    p, n, op = task["proc"], task["n"], task["op"]
    files: dict[int, list[str]] = {}
    if op == "register":
        for t in range(task["threads"]):
            files[t] = []
            for i in range(n):
                path = os.path.join(task["files"], f"p{p}-t{t}-{i}.bin")
                Path(path).write_bytes(b"MLBENCH " + os.urandom(300))  # distinct bytes: every blob is new
                files[t].append(path)
    # First-use costs before the clock starts: connections, the catalog, and for registers the ingest's
    # imports (a process's first register took ~270-330 ms of CPU, outside the write lock: P processes doing
    # theirs at once on 2 cores made the registers' p99 grow ~270 ms per process, in both trees).
    reg.tag("m@1", {f"warm-{p}": "1"})
    if op == "register":
        warm = os.path.join(task["files"], f"warm-p{p}.bin")
        Path(warm).write_bytes(b"MLBENCH " + os.urandom(300))
        reg.register(f"warm-p{p}", artifact=warm)
    lat: list[float] = []
    errors: list[str] = []
    guard = threading.Lock()

    def run(t: int) -> None:
        mine: list[float] = []
        try:
            for i in range(n):
                t0 = time.perf_counter()
                if op == "tag":
                    reg.tag("m@1", {f"p{p}-t{t}": str(i)})
                else:
                    reg.register(f"w-p{p}-t{t}", artifact=files[t][i])
                mine.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run with it
            errors.append(f"{type(exc).__name__}: {exc}")
        with guard:
            lat.extend(mine)

    try:  # a tree with combining (eventstore/combining.py): how many commands its transactions held
        from eventstore.combining import combiner_of

        combiner = combiner_of(reg.recorder)
    except ImportError:
        combiner = None
    counted = (combiner.batches, combiner.commands) if combiner is not None else (0, 0)
    delay = task["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    cpu0, start = time.process_time(), time.time()
    threads = [threading.Thread(target=run, args=(t,)) for t in range(task["threads"])]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    end, cpu = time.time(), time.process_time() - cpu0
    batches = (combiner.batches - counted[0], combiner.commands - counted[1]) if combiner is not None else None
    reg.close()
    print("RESULT " + json.dumps({"start": start, "end": end, "ms": lat, "cpu_s": cpu, "errors": errors,
                                  "batches": batches}), flush=True)


# -- the lock's hand-over alone -------------------------------------------------------------------------

def handoff_worker(task: dict[str, Any]) -> None:
    """One process of ``--handoff``: ``n`` transactions on a bare SQLite file (``synchronous=OFF``; inside,
    one row and a ``hold_ms`` sleep standing in for the fsync), the write lock taken as ``how`` says."""
    import fcntl
    import sqlite3

    sys.path.insert(0, task["tree"])
    from eventstore.writelock import WriteLock

    conn = sqlite3.connect(task["db"], isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = OFF")
    lock = WriteLock(task["db"])
    fd = os.open(task["db"] + "-lock", os.O_RDWR | os.O_CREAT, 0o600)
    hold, how, lat = task["hold_ms"] / 1000, task["how"], []
    delay = task["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    cpu0, start = time.process_time(), time.time()
    for i in range(task["n"]):
        t0 = time.perf_counter()
        if how == "writelock":
            lock.acquire(30.0)
        elif how == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX)
        conn.execute("BEGIN IMMEDIATE")
        lat.append((time.perf_counter() - t0) * 1000)
        conn.execute("INSERT INTO t (p, i) VALUES (?, ?)", (task["proc"], i))
        time.sleep(hold)
        conn.execute("COMMIT")
        if how == "writelock":
            lock.release()
        elif how == "flock":
            fcntl.flock(fd, fcntl.LOCK_UN)
    end, cpu = time.time(), time.process_time() - cpu0
    print("RESULT " + json.dumps({"start": start, "end": end, "ms": lat, "cpu_s": cpu, "errors": []}), flush=True)


def handoff(tmp: str, tree: str, how: str, procs: int, n: int, hold_ms: float) -> dict[str, Any]:
    import sqlite3

    with temp_dir(tmp, "handoff-") as d:
        db = os.path.join(d, "h.db")
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode = wal")
        conn.execute("CREATE TABLE t (p INTEGER, i INTEGER)")
        conn.close()
        start_at = time.time() + 0.5 + 0.1 * procs
        running = [spawn({"handoff": True, "tree": tree, "db": db, "how": how, "proc": p, "n": n,
                          "hold_ms": hold_ms, "start_at": start_at}) for p in range(procs)]
        results = [collect(p) for p in running]
    ms = [x for r in results for x in r["ms"]]
    first, last = min(r["start"] for r in results), max(r["end"] for r in results)
    return {"per_s": len(ms) / (last - first), "p50": median(ms), "p99": percentile(ms, 99), "max": max(ms),
            "cpu_ms": 1000 * sum(r["cpu_s"] for r in results) / len(ms), "ops": len(ms)}


# -- the parent ------------------------------------------------------------------------------------------

def spawn(task: dict[str, Any]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate(timeout=900)
    found = [x for x in out.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"writer failed ({proc.returncode}): {' | '.join(err.strip().splitlines()[-4:])}")
    return json.loads(found[-1][len("RESULT "):])


def one_run(tmp: str, tree: str, op: str, procs: int, threads: int, n: int) -> dict[str, Any]:
    """``procs`` x ``threads`` writers doing ``n`` ``op`` each on a fresh home, with ``tree``'s code."""
    with temp_dir(tmp, "writers-") as d:
        home, files = os.path.join(d, "home"), os.path.join(d, "files")
        os.makedirs(files)
        collect(spawn({"tree": tree, "home": home, "files": files, "op": "setup"}))
        start_at = time.time() + 1.5 + 0.3 * procs  # every process imported and opened before it
        running = [spawn({"tree": tree, "home": home, "files": files, "op": op, "proc": p, "threads": threads,
                          "n": n, "start_at": start_at}) for p in range(procs)]
        results = [collect(p) for p in running]
    errors = [e for r in results for e in r["errors"]]
    if errors:
        raise RuntimeError(f"{len(errors)} writer thread(s) failed, first: {errors[0]}")
    ms = [x for r in results for x in r["ms"]]
    first, last = min(r["start"] for r in results), max(r["end"] for r in results)
    late = max(r["start"] for r in results) - first
    combined = [r["batches"] for r in results if r.get("batches")]
    per_batch = sum(c for _, c in combined) / max(1, sum(b for b, _ in combined)) if combined else None
    return {"per_s": len(ms) / (last - first), "p50": median(ms), "p99": percentile(ms, 99),
            "max": max(ms), "cpu_ms": 1000 * sum(r["cpu_s"] for r in results) / len(ms), "late_s": late,
            "ops": len(ms), "per_batch": per_batch}


def _medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over rounds (None where a tree does not report it)."""
    return {k: median(vs) if (vs := [x[k] for x in results if x.get(k) is not None]) else None
            for k in results[0]}


def describe(r: dict[str, Any]) -> str:
    return (f"{r['per_s']:,.0f}/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.0f} ms, "
            f"CPU {r['cpu_ms']:.2f} ms/op"
            + (f", {r['per_batch']:.2f} commands per transaction" if r.get("per_batch") else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--procs", default="1,2,4,8", help="writer process counts (comma-separated)")
    parser.add_argument("--threads", type=int, default=1, help="threads per writer process")
    parser.add_argument("--n", type=int, default=60, help="operations per thread")
    parser.add_argument("--ops", default="tag,register", help="tag, register or both")
    parser.add_argument("--compare", metavar="TREE", help="another checkout, run alternately with this one")
    parser.add_argument("--this", metavar="TREE", help="with --compare: the checkout measured (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--handoff", type=float, metavar="HOLD_MS",
                        help="instead: the lock's hand-over alone, each transaction holding it HOLD_MS")
    parser.add_argument("--tmpdir", help="where the homes go (default: the system temp dir)")
    args = parser.parse_args(argv)
    if args.worker:
        task = json.loads(args.worker)
        (handoff_worker if task.get("handoff") else worker)(task)
        return 0
    if args.handoff is not None:
        # The lock's hand-over alone: SQLite's busy handler, WriteLock (bounded wait in a helper thread) and
        # a plain blocking flock (unbounded), alternating, on bare transactions (no command, no fsync).
        with temp_dir(args.tmpdir, "mledger-handoff-") as tmp:
            got: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for r in range(args.rounds):
                for p in [int(x) for x in args.procs.split(",")]:
                    for how in ("sqlite", "writelock", "flock")[:: 1 if r % 2 == 0 else -1]:
                        res = handoff(tmp, str(ROOT), how, p, args.n, args.handoff)
                        got.setdefault((how, p), []).append(res)
                        log(f"handoff round {r + 1}: {how} {p} procs, hold {args.handoff} ms: "
                            f"{res['per_s']:,.0f}/s, wait p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, "
                            f"CPU {res['cpu_ms']:.3f} ms/op ({load()})")
        for (how, p), rs in got.items():
            print(f"{how:9} {p} procs: " + describe(_medians(rs))
                  .replace("p50", "wait p50").replace("p99", "wait p99"))
        return 0
    procs = [int(x) for x in args.procs.split(",")]
    ops = [x.strip() for x in args.ops.split(",")]
    this = os.path.abspath(args.this or str(ROOT))
    sides = {"this": this} if not args.compare else {"this": this, "base": os.path.abspath(args.compare)}
    info = machine()
    print(f"writers on one SQLite home: {info['implementation']} {info['python']}, SQLite {info['sqlite']}, "
          f"nproc {info['nproc']}, loadavg {info['loadavg']}, synchronous="
          f"{(os.environ.get('MLEDGER_SYNCHRONOUS') or 'FULL').upper()}; sides: "
          + ", ".join(f"{k} = {v}" for k, v in sides.items()), flush=True)
    rounds = args.rounds if args.compare else 1
    got: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    with temp_dir(args.tmpdir, "mledger-writers-") as tmp:
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for op in ops:
                for p in procs:
                    for side in order:
                        res = one_run(tmp, sides[side], op, p, args.threads, args.n)
                        got.setdefault((side, op, p), []).append(res)
                        log(f"round {r + 1}: {side} {op} {p}x{args.threads}: {describe(res)} ({load()})")
    rows: list[Row] = []
    for op in ops:
        for p in procs:
            name = f"{op}, {p} proc x {args.threads} thread"
            these = got[("this", op, p)]
            if "base" not in sides:
                rows.append(Row(name, "rate", median([x["per_s"] for x in these]), "ops/s", "p99 ms",
                                median([x["p99"] for x in these]), float("nan"),
                                note=describe(_medians(these))))
                continue
            bases = got[("base", op, p)]
            for key, unit, better in (("per_s", "ops/s", "higher"), ("p50", "ms", "lower"), ("p99", "ms", "lower"),
                                      ("cpu_ms", "ms", "lower")):
                ratios = [a[key] / b[key] for a, b in zip(these, bases, strict=True)]
                rows.append(Row(f"{name}: {key}", "this", median([x[key] for x in these]), unit, "base",
                                median([x[key] for x in bases]), median(ratios),
                                note=f"{better} is better; per-round ratios {', '.join(f'{x:.2f}' for x in ratios)}"
                                + ("; this: {:.2f} commands per transaction".format(_medians(these)["per_batch"])
                                   if key == "per_s" and _medians(these).get("per_batch") else ""),
                                samples={"this": [x[key] for x in these], "base": [x[key] for x in bases]}))
    print()
    print(render(rows))
    print(f"\nloadavg at the end {[round(x, 2) for x in os.getloadavg()]}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "sides": sides, "threads": args.threads, "n": args.n,
            "rows": [r.to_json() for r in rows],
            "raw": {f"{s}/{o}/{p}": v for (s, o, p), v in got.items()}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
