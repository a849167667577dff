"""Section ``postgres`` of ``scripts/bench.py``, and the PostgreSQL rows of ``scripts/bench_peers.py``.

Every registry here lives in a database with a random name on ``MLEDGER_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end; the artifact store is a temp folder.

``bench_postgres`` (bench.py):
  1. commands on PostgreSQL: ``tag``, ``alias`` (a move) and ``register`` (a distinct tiny file) per second on a
     model with 10 versions, beside the same commands on SQLite in the same run (ratio PG / SQLite);
  2. a log of 1,000,000 events (``--quick``: 100,000) over 1,000 models (``bench_history.LogBuilder``), sealed
     as the recorder seals and COPYed in (``bulk_append``), and one of 10,000: the catalog catch-up (fold) rate against a raw read +
     JSON decode of the same log (target ≥ 0.25); then search (name + tag, keyword) and as-of reads
     (``get NAME@N``, ``list limit=100``) on both, alternating: cost @1M / @10k (target ≤ 2).

``ab_clients`` (``bench_pg.py --ab OTHER_TREE [OPS [ROUNDS]]``): one client process's time per tag, alias move and
register on this checkout and on another, alternating in one run.

``bench_clients`` (bench_peers.py): modelledger and MLflow (3.x, ``postgresql://`` backend store, in its own
venv) on the same server: set a version tag, move an alias, create a version — with 1 client process and
with 8 at once (each its own process, own connection; total operations / wall time from a common start); each
process does one operation of the kind before the timing, on both sides. Each row: ``ROUNDS`` rounds, the sides
alternating which goes first, and the median of the rounds' ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from _benchlib import Row, add_repo_to_path, alternate, log, median, percentile, small_files, temp_dir

add_repo_to_path()

ADMIN_URL = os.environ.get("MLEDGER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
HERE = Path(__file__).resolve().parent
ACTOR = "bench@modelledger"


# -- databases ---------------------------------------------------------------------------------------

@contextmanager
def database(prefix: str = "mledger_bench") -> Iterator[str]:
    """A fresh database; its URL. Dropped afterwards (with any connection a client left)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(ADMIN_URL)._replace(path="/" + name))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def server_version() -> str:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        return admin.execute("SHOW server_version").fetchone()[0]


def open_registry(home: str, url: str | None):
    from modelledger import Registry

    return Registry.open(home=home, broker="embedded", actor=ACTOR, client="bench pg", database=url or None,
                         artifacts=os.path.join(home, "artifacts"))


@contextmanager
def database_env(url: str) -> Iterator[None]:
    """``MLEDGER_DATABASE`` for code that opens registries by home only (``bench_history``)."""
    before = os.environ.get("MLEDGER_DATABASE")
    os.environ["MLEDGER_DATABASE"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLEDGER_DATABASE", None)
        else:
            os.environ["MLEDGER_DATABASE"] = before


# -- 1. commands: PostgreSQL beside SQLite ------------------------------------------------------------

def command_rates(d: str, url: str | None, n: int) -> dict[str, float]:
    """tag/s, alias moves/s and registers/s on a model with 10 versions."""
    home = os.path.join(d, "home")
    files = small_files(os.path.join(d, "src"), n + 10, seed=n)
    reg = open_registry(home, url)
    try:
        for path in files[:10]:
            reg.register("bench/deep", artifact=path)
        t = time.perf_counter()
        for k in range(n):
            reg.tag("bench/deep@5", {"run": str(k)})
        tag_s = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(n):
            reg.alias(f"bench/deep@{1 + k % 9}", "production")
        alias_s = time.perf_counter() - t
        t = time.perf_counter()
        for path in files[10:]:
            reg.register("bench/deep", artifact=path)
        register_s = time.perf_counter() - t
        if reg.get("bench/deep@5").tags.get("run") != str(n - 1):
            raise SystemExit("the last tag is not in the catalog")
    finally:
        reg.close()
    return {"tag": n / tag_s, "alias": n / alias_s, "register": n / register_s}


def bench_commands(tmp: str, quick: bool) -> list[Row]:
    n, repeats = (50, 2) if quick else (200, 3)
    pg: dict[str, list[float]] = {"tag": [], "alias": [], "register": []}
    lite: dict[str, list[float]] = {"tag": [], "alias": [], "register": []}
    log(f"postgres: {repeats} repeats of {n} tags, alias moves and registers, PostgreSQL and SQLite alternating")
    for r in range(repeats):
        order = ("pg", "sqlite") if r % 2 == 0 else ("sqlite", "pg")
        for which in order:
            with temp_dir(tmp, f"pgcmd-{which}-") as d:
                if which == "pg":
                    with database() as url:
                        got = command_rates(d, url, n)
                    for k, v in got.items():
                        pg[k].append(v)
                else:
                    got = command_rates(d, None, n)
                    for k, v in got.items():
                        lite[k].append(v)
    rows = []
    for kind, unit in (("tag", "ops/s"), ("alias", "ops/s"), ("register", "ver/s")):
        a, b = median(pg[kind]), median(lite[kind])
        rows.append(Row(f"postgres: {kind} (1 client)", "PostgreSQL", a, unit, "SQLite", b, a / b,
                        note=f"{n} per repeat, median of {repeats}; same process, same model of 10 versions",
                        samples={"postgres": pg[kind], "sqlite": lite[kind]}))
    return rows


# -- 2. a long log on PostgreSQL: fold, search, as-of ---------------------------------------------------

def raw_read_rate(url: str) -> float:
    """Events/s of reading the whole log and decoding its JSON: the floor of any replay."""
    import psycopg

    loads = json.loads
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        n = since = 0
        while True:
            rows = conn.execute("SELECT position, stream, version, type, data, meta, recorded_at, hash FROM events"
                                " WHERE position > %s ORDER BY position LIMIT 10000", (since,)).fetchall()
            if not rows:
                break
            for r in rows:
                loads(r[4])
                loads(r[5])
            n += len(rows)
            since = rows[-1][0]
        return n / (time.perf_counter() - start)


def bulk_append(url: str, batches: Iterator[list[Any]]) -> int:
    """Append ``batches`` to the (empty or not) log at ``url`` as the recorder would — every batch sealed by
    ``eventstore.sealing.seal`` (gapless positions, stream versions, canonical text, the hash chain; recorded
    at this host's clock, never going backwards) — but COPY them in, one transaction per batch: a real,
    auditable log (``mledger audit`` verifies it) built at COPY's speed. ``append_batch`` (an ``executemany``
    of 10,000 rows, and every event's shape checked) took 276 s for 100,000 events at load 13–23 (session 2),
    which put a 1,000,000-event log out of reach of one benchmark run."""
    import psycopg

    from eventstore.canonical import GENESIS_HASH
    from eventstore.clock import utc_now
    from eventstore.sealing import seal

    appended = 0
    with psycopg.connect(url) as conn:
        last = conn.execute("SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1").fetchone()
        head, head_hash, head_at = last or (0, GENESIS_HASH, "")
        versions: dict[str, int] = dict(conn.execute("SELECT stream, max(version) FROM events GROUP BY stream")
                                        .fetchall())
        for batch in batches:
            for e in batch:
                versions.setdefault(e.stream, 0)
            now = utc_now()
            head_at = now if now > head_at else head_at
            rows, _ = seal(batch, head=head, head_hash=head_hash, recorded_at=head_at, versions=versions)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY events (position, stream, version, type, schema_version, data, meta,"
                              " recorded_at, hash) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            head, head_hash = rows[-1][0], rows[-1][8]
            appended += len(rows)
    return appended


def _reads(reg: Any, probe: dict[str, Any], keyword: str) -> dict[str, float]:
    """ms of each read at one probe."""
    out = {}
    past = reg.catalog(as_of=probe["position"])
    calls = {
        "as_of get NAME@N": lambda: past.get(probe["version_ref"]),
        "as_of list limit=100": lambda: past.list(limit=100),
        "search name+tag": lambda: reg.catalog().search(name=probe["model"], tags={"stage": "s1"}),
        "search keyword": lambda: reg.catalog().list(search=keyword, limit=50),
        # ``task=ctr`` is a tag of every version the builder writes, so the first 100 models answer on both logs
        # (the row used to ask for ``team=…``, which no model has: it timed the planner; ``owner=team-N`` would
        # answer ~2 models at 10,000 events and ~47 at 1,000,000 — the answer's size, not the search's cost).
        "list tag limit=100": lambda: reg.catalog().list(tags={"task": "ctr"}, limit=100),
    }
    for op, call in calls.items():
        t = time.perf_counter()
        call()
        out[op] = (time.perf_counter() - t) * 1000
    return out


def bench_long_log(tmp: str, quick: bool) -> list[Row]:
    from bench_history import LogBuilder, seed_blobs

    total = 100_000 if quick else 1_000_000
    small = 10_000
    positions, rounds = (10, 2) if quick else (20, 3)
    rows: list[Row] = []
    with temp_dir(tmp, "pghist-") as d, database() as big_url, database() as small_url:
        urls = {small: small_url, total: big_url}
        builds: dict[int, dict[str, Any]] = {}
        audit_note = ""
        for n, url in urls.items():
            log(f"postgres: building a log of {n:,} events over 1,000 models (sealed batches of 10,000, COPY)")
            reg = open_registry(os.path.join(d, f"h{n}"), url)
            try:
                builder = LogBuilder(n, seed_blobs(reg), n, positions)
                t = time.perf_counter()
                bulk_append(url, builder.batches())
                append_s = time.perf_counter() - t
                t = time.perf_counter()
                reg.catalog().model(builder.models[0].name, versions=False)  # the first read folds the log in
                fold_s = time.perf_counter() - t
                if n == small:  # the builder's log is a real one: the audit (chain, guards, replay) passes
                    report = reg.audit()
                    audit_note = "audit ok" if report.ok else f"AUDIT FAILED: {report.to_json()}"
                builds[n] = {"events": reg.head(), "probes": builder.probes, "append_s": append_s,
                             "fold_s": fold_s}
            finally:
                reg.close()
            log(f"postgres: {n:,} events appended in {append_s:.1f} s, folded in {fold_s:.1f} s")
        big = builds[total]
        raw = raw_read_rate(big_url)
        append_rate, fold_rate = big["events"] / big["append_s"], big["events"] / big["fold_s"]
        rows.append(Row("postgres: build the log (sealed, COPY, 10,000/batch)", "modelledger", append_rate, "ev/s",
                        "raw read+json", raw, append_rate / raw,
                        note=f"{big['events']:,} events; the 10,000-event log built the same way: {audit_note}"))
        rows.append(Row("postgres: catalog fold (first read)", "modelledger", fold_rate, "ev/s", "raw read+json",
                        raw, fold_rate / raw, target="≥ 0.25", ok=fold_rate / raw >= 0.25,
                        note=f"{big['fold_s']:.1f} s to fold {big['events']:,} events"))
        regs = {n: open_registry(os.path.join(d, f"h{n}"), url) for n, url in urls.items()}
        try:
            samples: dict[int, dict[str, list[float]]] = {n: {} for n in regs}
            for n, reg in regs.items():  # warm-up
                _reads(reg, builds[n]["probes"][-1], "model")
            log(f"postgres: search and as-of, {rounds} rounds x {positions} positions on each log, alternating")
            for r in range(rounds):
                order = list(regs.items()) if r % 2 == 0 else list(reversed(regs.items()))
                for k in range(positions):
                    for n, reg in order:
                        probes = builds[n]["probes"]
                        for op, ms in _reads(reg, probes[k % len(probes)], f"model-{k:02d}").items():
                            samples[n].setdefault(op, []).append(ms)
        finally:
            for reg in regs.values():
                reg.close()
        for op in samples[total]:
            b_ms, s_ms = median(samples[total][op]), median(samples[small][op])
            ratio = b_ms / s_ms
            rows.append(Row(f"postgres: {op} @{total // 1000:,}k vs @10k", f"@{total // 1000:,}k", b_ms, "ms",
                            "@10k", s_ms, ratio, target="≤ 2", ok=ratio <= 2,
                            note=(f"median of {len(samples[total][op])}; p90 "
                                  f"{percentile(samples[total][op], 90):.2f} vs "
                                  f"{percentile(samples[small][op], 90):.2f} ms"),
                            samples={"big_ms": samples[total][op], "small_ms": samples[small][op]}))
    return rows


def bench_postgres(tmp: str, quick: bool) -> list[Row]:
    log(f"postgres: server {server_version()} at {ADMIN_URL.rsplit('@', 1)[-1]}")
    return bench_commands(tmp, quick) + bench_long_log(tmp, quick)


# -- bench_peers: modelledger and MLflow on the same server, 1 and 8 client processes --------------------

CLIENT = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from modelledger import Registry
task = json.loads(sys.argv[2])
files = task.get("files") or []
reg = Registry.open(home=task["home"], broker="embedded", actor="bench@client", client="bench pg",
                    database=task["url"], artifacts=task["artifacts"])

def op(k):
    if task["op"] == "tag":
        reg.tag("bench/deep@5", {"c" + str(task["client"]): str(k)})
    elif task["op"] == "alias":
        reg.alias("bench/deep@" + str(1 + (k + task["client"]) % 9), "production")
    else:
        reg.register("bench/deep", artifact=files[k])
try:
    reg.get("bench/deep@10")  # connect outside the timing
    # one operation of the kind measured, outside the timing, as MLflow's client does (``pg_client``): what
    # its first use imports and compiles (a register: ~50 ms of imports, ~110 ms with no .pyc) is not a rate
    op(task["n"])
    time.sleep(max(0.0, task["start_at"] - time.time()))
    began, t = time.time(), time.perf_counter()
    for k in range(task["n"]):
        op(k)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t, "start": began, "end": time.time()}),
          flush=True)
finally:
    reg.close()
"""


# The least a durable write costs on this server, whatever the code: a loop of the statements alone, in
# processes like the clients above. "1 trip": one round trip that appends a row and commits, no lock. "1 trip,
# locked": one call of a server-side function that takes the writer lock, reads the head by its index and
# appends (the lock held through the commit): what a whole command decided and folded inside the database in
# one call would cost at best under the recorder contract. "2 trips, locked": the shape every command here
# has when it must read before it decides — the writer lock and a read of the head in the first trip, the row
# and COMMIT in the second — with the lock held through the commit, as gapless positions in commit order need.
# No Python work, no catalog, one tiny row. The head is read by the key's index, as the log's is (an unindexed
# max() would scan every row appended so far inside the lock and lower the floor as the run goes on).
FLOOR_CLIENT = r"""
import json, sys, time
import psycopg
task = json.loads(sys.argv[1])
conn = psycopg.connect(task["url"], autocommit=True)
conn.execute("SELECT 1")
time.sleep(max(0.0, task["start_at"] - time.time()))
began, t = time.time(), time.perf_counter()
for k in range(task["n"]):
    if task["mode"] == "1 trip":
        conn.execute("INSERT INTO floor_probe (client, k) VALUES (%s, %s)", (task["client"], k))
    elif task["mode"] == "1 trip, locked":
        conn.execute("SELECT floor_locked_append(%s, %s)", (task["client"], k))
    else:
        conn.execute("BEGIN; LOCK TABLE floor_probe IN EXCLUSIVE MODE;"
                     " SELECT id FROM floor_probe ORDER BY id DESC LIMIT 1")
        conn.execute("INSERT INTO floor_probe (client, k) VALUES (%s, %s)", (task["client"], k))
        conn.execute("COMMIT")
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t, "start": began, "end": time.time()}), flush=True)
conn.close()
"""

FLOOR_SCHEMA = """
CREATE TABLE floor_probe (id bigserial PRIMARY KEY, client int, k int, at timestamptz DEFAULT now());
CREATE FUNCTION floor_locked_append(c int, n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE floor_probe IN EXCLUSIVE MODE;
    PERFORM id FROM floor_probe ORDER BY id DESC LIMIT 1;
    INSERT INTO floor_probe (client, k) VALUES (c, n);
END
$$;
"""
FLOOR_MODES = ("1 trip", "1 trip, locked", "2 trips, locked")


def floor_clients(mode: str, clients: int, n: int) -> float:
    """Total durable writes/s of ``clients`` processes each doing ``n`` of ``mode`` (FLOOR_CLIENT) at once."""
    import psycopg

    with database("mledger_floor") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FLOOR_SCHEMA)
        start_at = time.time() + 1.0 + clients * 0.3
        argvs = [[sys.executable, "-c", FLOOR_CLIENT,
                  json.dumps({"url": url, "mode": mode, "n": n, "client": c, "start_at": start_at})]
                 for c in range(clients)]
        return _total_rate(_run_clients(argvs), clients * n)


def _run_clients(argvs: list[list[str]], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for a in argvs]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=1800)
        results = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode != 0 or not results:
            raise RuntimeError(f"client failed (exit {p.returncode}): {' | '.join(stderr.strip().splitlines()[-4:])}")
        out.append(json.loads(results[-1][len("RESULT "):]))
    return out


def ours_clients(tmp: str, op: str, clients: int, n: int, repo: str | None = None) -> float:
    """Total ops/s of ``clients`` processes doing ``n`` ``op`` each on one model of 10 versions; ``repo``: the
    checkout whose code the client processes run (default: this one; the setup runs this one's)."""
    with temp_dir(tmp, f"pgclients-{op}-") as d, database() as url:
        store = os.path.join(d, "store")
        per = n + 1  # n timed, one to warm up
        files = small_files(os.path.join(d, "src"), 10 + clients * per, seed=clients * n)
        from modelledger import Registry

        with Registry.open(home=os.path.join(d, "setup"), broker="embedded", actor=ACTOR, database=url,
                           artifacts=store) as reg:
            for path in files[:10]:
                reg.register("bench/deep", artifact=path)
        start_at = time.time() + 5.0 + clients * 1.0
        argvs = []
        for c in range(clients):
            task = {"home": os.path.join(d, f"c{c}"), "url": url, "artifacts": store, "op": op, "n": n,
                    "client": c, "start_at": start_at, "files": files[10 + c * per:10 + (c + 1) * per]}
            argvs.append([sys.executable, "-c", CLIENT, repo or str(HERE.parent), json.dumps(task)])
        results = _run_clients(argvs)
    return _total_rate(results, clients * n)


def mlflow_clients(peer: Any, tmp: str, op: str, clients: int, n: int, *, warm: bool = True) -> float:
    """The same with MLflow's client against a ``postgresql://`` backend store (peers/mlflow_worker.py);
    ``warm=False``: without its operation before the timing."""
    with temp_dir(tmp, f"mlflow-pg-{op}-") as d, database("mlflow_bench") as url:
        sqlalchemy_url = _sqlalchemy_url(url)
        peer.run({"task": "pg_setup", "uri": sqlalchemy_url, "dir": d}, d)
        start_at = time.time() + 10.0 + clients * 2.0  # MLflow's import takes seconds on a busy machine
        worker = HERE / "peers" / peer.spec["worker"]
        argvs = [[str(peer.python), str(worker), json.dumps({"task": "pg_client", "uri": sqlalchemy_url, "dir": d,
                                                              "op": op, "n": n, "client": c, "warm": warm,
                                                              "start_at": start_at})]
                 for c in range(clients)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PYTHONWARNINGS"] = "ignore"
        results = _run_clients(argvs, env)
    failed = sum(r.get("errors", 0) for r in results)
    if failed:
        first = next(r["first_error"] for r in results if r.get("errors"))
        log(f"postgres clients: MLflow {op} x {clients}: {failed} of {clients * n} calls failed ({first})")
    MLFLOW_FAILURES[(op, clients)] = MLFLOW_FAILURES.get((op, clients), 0) + failed  # over the rounds
    return _total_rate(results, sum(r.get("done", n) for r in results))


MLFLOW_FAILURES: dict[tuple[str, int], int] = {}


def _total_rate(results: list[dict[str, Any]], ops: int) -> float:
    """Operations per second of all clients together: from the first start to the last end. A client that
    missed the common start (still importing) is said so: the clients then overlapped less than they could."""
    first, last = min(r["start"] for r in results), max(r["end"] for r in results)
    late = max(r["start"] for r in results) - first
    if late > 0.5:
        log(f"postgres clients: one client started {late:.1f} s after the first (busy machine)")
    return ops / (last - first)


def _sqlalchemy_url(conninfo: str) -> str:
    """``postgresql+psycopg2://user@host:port/db`` from a libpq key=value string."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(conninfo)
    auth = info.get("user", "postgres") + (f":{info['password']}" if info.get("password") else "")
    return f"postgresql+psycopg2://{auth}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{info['dbname']}"


def bench_clients(tmp: str, quick: bool, peer: Any) -> list[Row]:
    """Rows: tag, alias, create with 1 and 8 client processes, modelledger vs MLflow on one PostgreSQL; then
    the floor rows: what a bare durable write costs on this server, and the best ratio to MLflow's rates of
    this run that any client could reach at that floor."""
    targets = {"tag": 10, "alias": 10, "create": 5}
    rows = []
    mlflow_rates: dict[tuple[str, int], float] = {}
    log(f"postgres clients: server {server_version()}; MLflow {'skipped: ' + peer.error if peer.error else 'ready'}")
    for clients in (1, 8):
        for op in ("tag", "alias", "create"):
            # ours runs ~10x MLflow's rate: 300 operations (8 x 75) keep its timed window near a second, so
            # that the processes' common start and their exits do not weigh in it
            n_ours = (40 if quick else 300) // (1 if clients == 1 else 4)
            n_ml = (20 if quick else 40) // (1 if clients == 1 else 4)
            log(f"postgres clients: {op} x {clients} process(es): modelledger {n_ours} each, MLflow {n_ml} each, "
                f"{ROUNDS} rounds")
            # Rounds alternate which side goes first; the row is the median of the rounds' ratios: one window
            # of ~0.5 s on this VM moved 2x between runs of the same code (352 and 688-713 tags/s).
            ours_rates, their_rates = alternate(
                ROUNDS, partial(ours_clients, tmp, "register" if op == "create" else op, clients, n_ours),
                partial(_theirs, peer, tmp, op, clients, n_ml))
            ratios = [o / t if t == t else float("nan") for o, t in zip(ours_rates, their_rates, strict=True)]
            for r, (o, t) in enumerate(zip(ours_rates, their_rates, strict=True)):
                log(f"postgres clients: {op} x {clients} round {r + 1}: modelledger {o:,.1f}/s, MLflow {t:,.1f}/s, "
                    f"ratio {ratios[r]:.2f}")
            ours, theirs = median(ours_rates), median(their_rates)
            ratio = median(ratios) if theirs == theirs else float("nan")
            mlflow_rates[(op, clients)] = theirs
            failures = MLFLOW_FAILURES.get((op, clients), 0)
            rows.append(Row(f"postgres: {op}, {clients} client process{'es' if clients > 1 else ''}",
                            "modelledger", ours, "ops/s", "MLflow", theirs, ratio, target=f"≥ {targets[op]}",
                            ok=None if ratio != ratio else ratio >= targets[op],
                            note=(f"total over {clients} process(es), {n_ours} (MLflow {n_ml}) each; medians of "
                                  f"{ROUNDS} rounds (ratio: of the rounds' ratios "
                                  f"{', '.join(f'{x:.2f}' for x in ratios)}); "
                                  + ("create: a distinct tiny file registered and stored (embedded)"
                                     if op == "create" else "on a model with 10 versions")
                                  + ("; MLflow: " + ("skipped: " + peer.error if peer.error else peer.version))
                                  + (f"; {failures} MLflow calls failed (a race in its alias/version upsert), "
                                     "counted out" if failures else "")),
                            samples={"modelledger": ours_rates, "mlflow": their_rates, "ratio": ratios}))
    rows += floor_rows(quick, mlflow_rates, targets)
    return rows


ROUNDS = 3  # per row: modelledger and MLflow alternating


def _theirs(peer: Any, tmp: str, op: str, clients: int, n: int) -> float:
    """MLflow's rate for one round (NaN when it is skipped or failed: the other rows are kept)."""
    if peer.error:
        return float("nan")
    try:
        return mlflow_clients(peer, tmp, op, clients, n)
    except RuntimeError as exc:
        log(f"postgres clients: MLflow {op} x {clients} failed: {exc}")
        return float("nan")


def floor_rows(quick: bool, mlflow_rates: dict[tuple[str, int], float], targets: dict[str, int]) -> list[Row]:
    """The floor of a durable write on this server, 1 and 8 processes, and the ceiling it puts on each ratio."""
    rows = []
    for clients in (1, 8):
        n = (200 if quick else 1000) // (1 if clients == 1 else 4)
        for mode in FLOOR_MODES:
            rate = floor_clients(mode, clients, n)
            theirs = {op: mlflow_rates.get((op, clients), float("nan")) for op in targets}
            ceilings = ", ".join(f"{op} {rate / t:.1f}x (target {targets[op]})" for op, t in theirs.items()
                                 if t == t)
            log(f"postgres floor: {mode} x {clients}: {rate:,.0f} durable writes/s; ceilings vs MLflow {ceilings}")
            rows.append(Row(f"postgres floor: {mode}, {clients} process{'es' if clients > 1 else ''}",
                            "bare statements", rate, "writes/s", "MLflow tag (same run)",
                            theirs["tag"], rate / theirs["tag"] if theirs["tag"] == theirs["tag"] else float("nan"),
                            note=(f"{n} per process, one row each, synchronous_commit as the server has it; "
                                  f"the best ratio any client could reach at this floor: {ceilings or 'no MLflow'}"),
                            samples={"floor": [rate]}))
    return rows


def ab_clients(other: str, ops: int, rounds: int) -> None:
    """Per-command time of one client process (``ours_clients``) on this checkout and on ``other`` (e.g. an
    ``git archive`` of main), alternating, for tag / alias move / register: the same-run comparison of two
    trees on a machine whose absolute rates drift. Prints each round and the medians."""
    this = str(HERE.parent)
    times: dict[tuple[str, str], list[float]] = {}
    log(f"postgres A/B: {rounds} rounds x {ops} commands per op, 1 client process; other tree {other}")
    with temp_dir(None, "mledger-bench-pg-ab-") as tmp:
        for r in range(rounds):
            trees = (("other", other), ("this", this)) if r % 2 == 0 else (("this", this), ("other", other))
            for op in ("tag", "alias", "register"):
                for label, repo in trees:
                    ms = 1000 / ours_clients(tmp, op, 1, ops, repo=repo)
                    times.setdefault((op, label), []).append(ms)
                    log(f"  round {r + 1} {op:8s} {label:5s} {ms:.2f} ms per command (load {os.getloadavg()[0]:.1f})")
    for op in ("tag", "alias", "register"):
        a, b = median(times[(op, "other")]), median(times[(op, "this")])
        print(f"{op:8s} other {a:.2f} ms, this {b:.2f} ms per command: this is {a / b:.2f}x as fast")


if __name__ == "__main__":
    if "--ab" in sys.argv:  # bench_pg.py --ab OTHER_TREE [OPS [ROUNDS]]
        at = sys.argv.index("--ab")
        rest = sys.argv[at + 1:]
        ab_clients(os.path.abspath(rest[0]), int(rest[1]) if len(rest) > 1 else 300,
                   int(rest[2]) if len(rest) > 2 else 3)
        raise SystemExit(0)
    from _benchlib import render

    with temp_dir(None, "mledger-bench-pg-") as tmp_dir:
        print(render(bench_postgres(tmp_dir, "--quick" in sys.argv)))
