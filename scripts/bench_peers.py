"""modelledger against its peers (issue "Proof under load": the peer comparisons).

    .venv/bin/python scripts/bench_peers.py [--quick] [--json FILE] [--tmpdir DIR] [--peers-dir DIR]
                                            [--only ROW]...

Each peer lives in its own virtual environment, created (and its packages installed with pip) on first use under
``~/.cache/modelledger-bench/peers/<name>`` (``--peers-dir``), so none enters the project's dependencies; that
one-time setup is never inside a timing. Peer measurements run as subprocesses — the peer venv's python executing
``scripts/peers/<peer>_worker.py`` with a JSON task, printing ``RESULT {json}`` — and modelledger's in this process
(the project's venv), in the same run, alternating which goes first between repeats. A peer that cannot be
installed or used is skipped with a line that says why; its rows are then printed without a baseline.

Peers: MLflow (``mlflow-skinny`` + sqlalchemy/alembic/sqlparse; backend store ``sqlite:///…``, SQLAlchemy's
defaults: journal_mode=DELETE, synchronous=FULL; local artifact root), the ``eventsourcing`` library (its SQLite
recorder, ``PERSISTENCE_MODULE=eventsourcing.sqlite``, WAL, synchronous=FULL, one event per ``save``), and Block's
``model-ledger`` (``Ledger.from_sqlite``, WAL, synchronous=FULL). modelledger: embedded broker, WAL,
``MLEDGER_SYNCHRONOUS`` (FULL by default).

Rows (targets from the issue):

1. create a version: ``Registry.register`` of a distinct tiny file (embedded: returns once stored) vs MLflow
   ``log_artifact`` (tiny file, into one run made beforehand) + ``create_model_version(source=<that URI>,
   run_id=…)``; ``create_model_version`` alone is in the note. Target ≥ 5×.
2. set a tag / move an alias on a model with 10 versions: ``Registry.tag`` / ``Registry.alias`` vs MLflow
   ``set_model_version_tag`` / ``set_registered_model_alias`` (≥ 20×) and vs an eventsourcing aggregate whose
   command is one event per ``save`` (aggregate cache on: the library's best case) (≥ 1×).
3. search by name + tag over 10 models × 1,000 versions (each query matches 100 versions): p50 ms of
   ``catalog().search(name=…, tags={…})`` vs MLflow ``search_model_versions("name = … AND tags.… = …")``; both
   stores are filled in bulk (ours ``append_batch`` of the decider's events, MLflow its own SQLAlchemy models).
   Target ≤ MLflow.
4. the same 500 MB artifact stored twice (``--quick``: 50 MB): bytes added under ``<home>/artifacts`` by two
   ``register`` vs bytes added under MLflow's artifact root by two ``log_artifact``. Target 1× vs 2× the file.
5. as-of query at 100,000 events (``--quick``: 30,000) over 1,000 models: p50 ms of
   ``catalog(as_of=#P).list()`` (every model live at P) vs model-ledger ``inventory_at(date)``, at the same
   fractions (10 %…100 %) of each history. Target ≥ 40×.
6. one command on a model with 10,000 versions vs 10: ``Registry.tag`` (and ``register``) latency @10,000 / @10
   (target ≤ 2), beside model-ledger's ``record()`` @10,000 / @10 snapshots (informational).
7. ``mlflowclient`` (issue 13): MLflow's own ``MlflowClient`` against ``mlflow server`` (full ``mlflow`` + gunicorn,
   one worker per core) and against ``mledger serve``'s ``/api/2.0/mlflow/`` routes (``MLFLOW_TRACKING_TOKEN``),
   1 and 8 client processes: ``create_model_version``, ``set_model_version_tag`` (target ≥ 5x) and
   ``search_model_versions`` by name + tag (p50 target ≤ 0.5x). Servers and stores as in ``scripts/bench_http.py``.

Temp dirs are removed at exit; the peer venvs stay (``--peers-dir``) for the next run.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _benchlib import (  # noqa: E402
    Row,
    add_repo_to_path,
    alternate,
    log,
    machine,
    median,
    percentile,
    render,
    small_files,
    temp_dir,
    tree_bytes,
)

add_repo_to_path()

from bench_pg import bench_clients  # noqa: E402

from eventstore.event_data import artifact_stored, version_created  # noqa: E402
from eventstore.events import NewEvent, stream_for  # noqa: E402

ACTOR = "bench@modelledger"
WORKERS = HERE / "peers"

PEERS: dict[str, dict[str, Any]] = {
    "mlflow": {"packages": ["mlflow-skinny", "sqlalchemy", "alembic", "sqlparse"], "import": "mlflow",
               "worker": "mlflow_worker.py"},
    "eventsourcing": {"packages": ["eventsourcing"], "import": "eventsourcing.sqlite",
                      "worker": "eventsourcing_worker.py"},
    "model-ledger": {"packages": ["model-ledger"], "import": "model_ledger.backends.sqlite_ledger",
                     "worker": "model_ledger_worker.py"},
    # MLflow with a postgresql:// backend store (SQLAlchemy over psycopg2), for the "postgres" rows.
    "mlflow-pg": {"packages": ["mlflow-skinny", "sqlalchemy", "alembic", "sqlparse", "psycopg2-binary"],
                  "import": "mlflow, psycopg2", "worker": "mlflow_worker.py"},
    # Full MLflow (its server needs more than mlflow-skinny) + gunicorn: `mlflow server` for the "mlflowclient"
    # rows here and for scripts/bench_http.py.
    "mlflow-server": {"packages": ["mlflow", "gunicorn"], "import": "mlflow.server, gunicorn",
                      "worker": "mlflow_server_worker.py"},
}

SIZES = {
    #                         full        quick
    "create_n": (200, 50),
    "create_repeats": (5, 2),       # this machine's speed drifts within a run: medians of 5 paired rounds
    "tag_n": (300, 100),            # modelledger and eventsourcing, per repeat, per kind
    "tag_n_mlflow": (100, 30),      # MLflow is ~40 ops/s: fewer ops, same rate
    "tag_repeats": (5, 2),
    "search_models": (10, 10),
    "search_versions": (1_000, 1_000),
    "search_queries": (60, 20),
    "store_bytes": (500 * 1000 * 1000, 50 * 1000 * 1000),
    "asof_events": (100_000, 30_000),
    "asof_positions": (10, 5),
    "asof_rounds": (3, 2),          # modelledger passes over the positions (model-ledger: 1, it is slow)
    "cmd_big": (10_000, 10_000),
    "cmd_rounds": (4, 2),
    "cmd_ops": (10, 10),
}
ROWS = ["create", "tags", "search", "store", "asof", "command", "postgres", "tier", "mlflowclient"]


def size(key: str, quick: bool) -> int:
    full, small = SIZES[key]
    return small if quick else full


# -- peers: venvs and workers ----------------------------------------------------------------------

class Peer:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.spec = PEERS[name]
        self.dir = root / name
        self.python = self.dir / "bin" / "python"
        self.error: str | None = None
        self.version = ""

    def ensure(self) -> bool:
        """Create the venv and install the packages once (a stamp file remembers it); then check the import."""
        stamp = self.dir / ".bench-ready"
        wanted = " ".join(self.spec["packages"])
        try:
            if not self.python.exists():
                log(f"peers: creating venv {self.dir} (one-time)")
                subprocess.run([sys.executable, "-m", "venv", str(self.dir)], check=True, capture_output=True,
                               text=True)
            if not stamp.exists() or stamp.read_text().strip() != wanted:
                log(f"peers: pip install {wanted} into {self.dir} (one-time)")
                done = subprocess.run([str(self.python), "-m", "pip", "install", "-q", *self.spec["packages"]],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    tail = [x for x in done.stderr.splitlines() if "WARNING" not in x][-3:]
                    raise RuntimeError(f"pip install {wanted} failed: {' | '.join(tail)}")
                stamp.write_text(wanted + "\n")
            check = subprocess.run([str(self.python), "-c", f"import {self.spec['import']}"], capture_output=True,
                                   text=True, env=_clean_env())
            if check.returncode != 0:
                raise RuntimeError(f"import {self.spec['import']} failed: {check.stderr.strip().splitlines()[-1:]}")
        except (OSError, subprocess.SubprocessError, RuntimeError) as e:
            self.error = str(e)
            return False
        return True

    def run(self, task: dict[str, Any], cwd: str) -> dict[str, Any]:
        """Run one task in the peer's venv; its own timings come back as JSON."""
        worker = WORKERS / self.spec["worker"]
        done = subprocess.run([str(self.python), str(worker), json.dumps(task)], capture_output=True, text=True,
                              cwd=cwd, env=_clean_env())
        for line in done.stderr.splitlines():
            if line.startswith("  .. "):
                print(line, file=sys.stderr, flush=True)
        results = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode != 0 or not results:
            raise RuntimeError(f"{self.name} worker {task['task']} failed (exit {done.returncode}): "
                               + " | ".join(done.stderr.strip().splitlines()[-4:]))
        out = json.loads(results[-1][len("RESULT "):])
        self.version = out.get("peer_version", self.version)
        return out


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONWARNINGS"] = "ignore"
    return env


# -- modelledger side ------------------------------------------------------------------------------

def open_registry(home: str):
    from modelledger import Registry

    return Registry.open(home=home, broker="embedded", actor=ACTOR, client="bench peers")


def _meta() -> dict[str, Any]:
    return {"actor": ACTOR, "client": "modelledger/bench peers", "correlation_id": str(uuid.uuid4())}


def add_versions(reg: Any, name: str, first: int, last: int, artifact: dict[str, Any],
                 tags: Any = None) -> None:
    """Versions ``first..last`` of ``name`` as the events the decider makes for a register of an already stored
    artifact ([ModelRegistered] + VersionRegistered + ArtifactStored), appended with ``append_batch`` 1,000 events at a time."""
    stream = stream_for(name)
    batch: list[NewEvent] = []
    if first == 1:  # a new model: the decider's first event for it
        batch.append(NewEvent(stream, "ModelRegistered", {"name": name, "description": "", "tags": {}}, _meta()))
    for number in range(first, last + 1):
        meta = _meta()
        data = version_created(name, number, None, description="nightly fine-tune",
                              params={"lr": 0.1, "seed": number}, structure={}, optimizer={},
                              tags=tags(number) if tags else {"task": "bench"},
                              artifact={"source": artifact["source"]}, status="pending")
        batch.append(NewEvent(stream, "VersionRegistered", data, meta))
        batch.append(NewEvent(stream, "ArtifactStored", artifact_stored(name, number, artifact), meta))
        if len(batch) >= 1_000:
            reg.append_batch(batch)
            batch = []
    if batch:
        reg.append_batch(batch)


def ours_create(tmp: str, n: int) -> float:
    """Versions/s of ``register`` of ``n`` distinct tiny files over 4 models (each stored: no dedup)."""
    with temp_dir(tmp, "create-") as d:
        files = small_files(os.path.join(d, "src"), n, seed=n)
        reg = open_registry(os.path.join(d, "home"))
        try:
            warm = os.path.join(d, "warm.bin")
            Path(warm).write_bytes(b"MLBENCH warm-up" * 20)
            reg.register("warmup", artifact=warm)
            start = time.perf_counter()
            for i, path in enumerate(files):
                v = reg.register(f"bench/m{i % 4}", artifact=path, params={"i": i})
                if v.status != "ready":
                    raise SystemExit(f"register returned {v.ref} with status {v.status}")
            elapsed = time.perf_counter() - start
        finally:
            reg.close()
    return n / elapsed


def ours_tags(tmp: str, n: int) -> dict[str, float]:
    """Tags/s and alias moves/s on a model with 10 versions (each op a real change)."""
    with temp_dir(tmp, "tags-") as d:
        src = small_files(os.path.join(d, "src"), 1, seed=3)[0]
        reg = open_registry(os.path.join(d, "home"))
        try:
            v1 = reg.register("bench/deep", artifact=src)
            add_versions(reg, "bench/deep", 2, 10, v1.artifact)
            reg.get("bench/deep@10")  # catalog catch-up outside the timing
            reg.tag("bench/deep@5", {"warm": "up"})  # one of each before the timing, both sides
            reg.alias("bench/deep@1", "warm")
            start = time.perf_counter()
            for k in range(n):
                reg.tag("bench/deep@5", {"run": str(k)})
            tag_s = time.perf_counter() - start
            start = time.perf_counter()
            for k in range(n):
                reg.alias(f"bench/deep@{1 + k % 9}", "production")
            alias_s = time.perf_counter() - start
            if reg.get("bench/deep@5").tags.get("run") != str(n - 1):
                raise SystemExit("the last tag is not in the catalog")
        finally:
            reg.close()
    return {"tag_per_s": n / tag_s, "alias_per_s": n / alias_s}


def ours_search(tmp: str, models: int, versions: int, queries: int) -> list[float]:
    """ms per ``catalog().search(name=…, tags={"stage": …})`` over ``models`` x ``versions`` versions tagged
    ``stage`` = s<version % 10> and ``task`` = ctr (as the MLflow worker does)."""
    with temp_dir(tmp, "search-") as d:
        src = small_files(os.path.join(d, "src"), 1, seed=4)[0]
        reg = open_registry(os.path.join(d, "home"))
        try:
            art = reg.register("seed", artifact=src).artifact
            for m in range(models):
                name = f"bench-m{m}"
                add_versions(reg, name, 1, versions, art, tags=lambda v: {"stage": f"s{v % 10}", "task": "ctr"})
            expect = versions // 10
            cat = reg.catalog()
            got = cat.search(name="bench-m0", tags={"stage": "s1"})  # catch-up + warm-up, and a check
            if len(got) != expect:
                raise SystemExit(f"search found {len(got)} versions, expected {expect}")
            rng = random.Random(5)
            samples = []
            for _ in range(queries):
                m, s = rng.randrange(models), rng.randrange(10)
                t = time.perf_counter()
                got = reg.catalog().search(name=f"bench-m{m}", tags={"stage": f"s{s}"})
                samples.append((time.perf_counter() - t) * 1000)
                assert len(got) == expect, len(got)
        finally:
            reg.close()
    return samples


def make_big_file(path: str, total: int) -> None:
    block = b"MLBENCH " + os.urandom(16 * 1024 * 1024 - 8)  # not sparse, does not compress
    with open(path, "wb") as f:
        written = 0
        while written < total:
            k = min(len(block), total - written)
            f.write(block[:k])
            written += k


def ours_store_twice(tmp: str, src: str) -> dict[str, Any]:
    with temp_dir(tmp, "store-") as d:
        reg = open_registry(os.path.join(d, "home"))
        try:
            warm = os.path.join(d, "warm.bin")
            Path(warm).write_bytes(b"MLBENCH warm-up" * 20)
            reg.register("warmup", artifact=warm)
            root = str(reg.config.artifacts)
            before = tree_bytes(root)
            seconds = []
            for _ in range(2):
                t = time.perf_counter()
                v = reg.register("bench/big", artifact=src)
                seconds.append(time.perf_counter() - t)
                if v.status != "ready":
                    raise SystemExit(f"register returned {v.ref} with status {v.status}")
            after = tree_bytes(root)
        finally:
            reg.close()
    return {"apparent": after[0] - before[0], "allocated": after[1] - before[1], "seconds": seconds}


def ours_asof_build(home: str, events: int, positions: int) -> dict[str, Any]:
    from bench_history import build

    return build(home, events, positions, seed=events)


def ours_asof_probe(home: str, probes: list[dict[str, Any]], rounds: int) -> list[float]:
    reg = open_registry(home)
    samples = []
    try:
        reg.catalog(as_of=probes[-1]["position"]).list()  # warm-up
        for _ in range(rounds):
            for p in probes:
                t = time.perf_counter()
                got = reg.catalog(as_of=p["position"]).list()
                samples.append((time.perf_counter() - t) * 1000)
                if not got:
                    raise SystemExit(f"no model as of #{p['position']}")
    finally:
        reg.close()
    return samples


def ours_command_build(home: str, src: str, versions: int) -> None:
    reg = open_registry(home)
    try:
        v1 = reg.register("bench/deep", artifact=src, params={"lr": 0.1}, tags={"task": "bench"})
        add_versions(reg, "bench/deep", 2, versions, v1.artifact)
        if reg.get(f"bench/deep@{versions}").status != "ready":
            raise SystemExit(f"building {versions} versions went wrong")
    finally:
        reg.close()


def ours_command_ops(home: str, src: str, ops: int, offset: int) -> dict[str, list[float]]:
    reg = open_registry(home)
    out: dict[str, list[float]] = {"tag": [], "register": []}
    try:
        for i in range(ops):
            k = offset + i
            t = time.perf_counter()
            reg.tag("bench/deep@5", {"run": str(k)})
            out["tag"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            reg.register("bench/deep", artifact=src, params={"lr": 0.1, "run": k})
            out["register"].append((time.perf_counter() - t) * 1000)
    finally:
        reg.close()
    return out


# -- the rows --------------------------------------------------------------------------------------

def skipped(peer: Peer) -> str:
    return f"{peer.name} skipped: {peer.error}"


def row_create(tmp: str, quick: bool, mlflow: Peer) -> list[Row]:
    n, repeats = size("create_n", quick), size("create_repeats", quick)
    log(f"create: {n} versions x {repeats} repeats, modelledger register vs MLflow log_artifact+create_model_version")
    if mlflow.error:
        ours = [ours_create(tmp, n) for _ in range(repeats)]
        return [Row("create a version (tiny, embedded)", "modelledger", median(ours), "ver/s", "MLflow", float("nan"),
                    float("nan"), target="≥ 5", ok=None, note=skipped(mlflow), samples={"modelledger": ours})]
    counter = iter(range(1000))

    def peer() -> dict[str, Any]:
        with temp_dir(tmp, "mlflow-create-") as d:
            return mlflow.run({"task": "create_versions", "dir": os.path.join(d, f"s{next(counter)}"), "n": n}, d)

    ours, theirs = alternate(repeats, lambda: ours_create(tmp, n), peer)
    ratios = [o / t["per_s"] for o, t in zip(ours, theirs, strict=True)]
    create_only = [t["create_per_s"] for t in theirs]
    ratio = median(ratios)
    return [Row("create a version (tiny, embedded)", "modelledger", median(ours), "ver/s",
                "MLflow log_artifact+create_model_version", median([t["per_s"] for t in theirs]), ratio,
                target="≥ 5", ok=ratio >= 5,
                note=(f"{n} versions per repeat, {repeats} repeats; ours: register of a distinct ~400 B file "
                      f"(hashed, fsynced, stored; returns ready); MLflow create_model_version alone "
                      f"{median(create_only):,.0f} ver/s (ratio vs that {median(ours) / median(create_only):.2f})"),
                samples={"modelledger": ours, "mlflow": [t["per_s"] for t in theirs], "ratio": ratios,
                         "mlflow_create_only": create_only})]


def _ours_create_with(tmp: str, n: int, small_blobs: str) -> float:
    """``ours_create`` with MLEDGER_SMALL_BLOBS set (``"0"``: every blob a file, as registries made before the
    small-blob tier; ``""``: the default of a new registry, blobs up to 64 KiB in its database)."""
    before = os.environ.pop("MLEDGER_SMALL_BLOBS", None)
    try:
        if small_blobs:
            os.environ["MLEDGER_SMALL_BLOBS"] = small_blobs
        return ours_create(tmp, n)
    finally:
        os.environ.pop("MLEDGER_SMALL_BLOBS", None)
        if before is not None:
            os.environ["MLEDGER_SMALL_BLOBS"] = before


def row_tier(tmp: str, quick: bool) -> list[Row]:
    """Section of issue 12 point 7 (blobs): the create row's register with small blobs in the registry's
    database (one commit for bytes and events) vs in files (blob fsync + folder fsyncs, then the commit),
    paired rounds in the same run."""
    n, repeats = size("create_n", quick), size("create_repeats", quick)
    log(f"tier: {n} registers x {repeats} repeats, small blobs in the database vs in files")
    files, tiered = alternate(repeats, lambda: _ours_create_with(tmp, n, "0"), lambda: _ours_create_with(tmp, n, ""))
    ratios = [t / f for f, t in zip(files, tiered, strict=True)]
    return [Row("create: small blobs in the database vs files", "db tier", median(tiered), "ver/s",
                "files (MLEDGER_SMALL_BLOBS=0)", median(files), median(ratios), target="", ok=None,
                note=f"{n} registers of distinct ~400 B files per repeat, {repeats} paired repeats",
                samples={"db_tier": tiered, "files": files, "ratio": ratios})]


def row_tags(tmp: str, quick: bool, mlflow: Peer, es: Peer) -> list[Row]:
    n, n_ml, repeats = size("tag_n", quick), size("tag_n_mlflow", quick), size("tag_repeats", quick)
    log(f"tags: {n} tags + {n} alias moves x {repeats} repeats (MLflow {n_ml} each), model with 10 versions")
    peers = [p for p in (mlflow, es) if not p.error]
    ours: list[dict[str, float]] = []
    theirs: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
    for r in range(repeats):
        order: list[Any] = ["ours", *peers]
        if r % 2:
            order.reverse()
        for who in order:
            if who == "ours":
                ours.append(ours_tags(tmp, n))
                continue
            with temp_dir(tmp, f"{who.name}-tags-") as d:
                theirs[who.name].append(who.run({"task": "tags_aliases", "dir": os.path.join(d, "s"),
                                                 "n": n_ml if who is mlflow else n}, d))
    rows = []
    for kind, what in (("tag", "set a tag"), ("alias", "move an alias")):
        key = f"{kind}_per_s"
        mine = [o[key] for o in ours]
        for peer, target, floor in ((mlflow, "≥ 20", 20.0), (es, "≥ 1", 1.0)):
            api = {("mlflow", "tag"): "set_model_version_tag", ("mlflow", "alias"): "set_registered_model_alias",
                   }.get((peer.name, kind), "one event per save")
            if peer.error:
                rows.append(Row(f"{what} vs {peer.name}", "modelledger", median(mine), "ops/s", peer.name,
                                float("nan"), float("nan"), target=target, note=skipped(peer),
                                samples={"modelledger": mine}))
                continue
            other = [t[key] for t in theirs[peer.name]]
            ratios = [a / b for a, b in zip(mine, other, strict=True)]
            ratio = median(ratios)
            extra = ""
            if peer is es:
                t0 = theirs[peer.name][0]
                extra = (f"; eventsourcing: get (aggregate cache on) + 1 event + save, journal_mode={t0['journal_mode']}, "
                         f"synchronous={t0['synchronous']}")
            rows.append(Row(f"{what} vs {peer.name}", "modelledger", median(mine), "ops/s", f"{peer.name} {api}",
                            median(other), ratio, target=target, ok=ratio >= floor,
                            note=(f"{n} ops per repeat ({n_ml if peer is mlflow else n} for {peer.name}), "
                                  f"{repeats} repeats" + extra),
                            samples={"modelledger": mine, peer.name: other, "ratio": ratios}))
    return rows


def row_search(tmp: str, quick: bool, mlflow: Peer) -> list[Row]:
    models, versions, queries = size("search_models", quick), size("search_versions", quick), size("search_queries", quick)
    log(f"search: {models} models x {versions:,} versions, {queries} name+tag queries each side")
    half = queries // 2
    ours = ours_search(tmp, models, versions, half)
    theirs: list[float] = []
    if not mlflow.error:
        with temp_dir(tmp, "mlflow-search-") as d:
            theirs = mlflow.run({"task": "search", "dir": os.path.join(d, "s"), "models": models,
                                 "versions": versions, "queries": queries}, d)["ms"]
    ours += ours_search(tmp, models, versions, queries - half)
    p50, base = median(ours), median(theirs)
    ratio = p50 / base if theirs else float("nan")
    return [Row(f"search name+tag ({models}x{versions:,})", "modelledger p50", p50, "ms", "MLflow search_model_versions p50",
                base, ratio, target="≤ 1 (ms ratio)", ok=(ratio <= 1) if theirs else None,
                note=(f"{len(ours)} queries (ours, two builds) / {len(theirs)} (MLflow); each returns {versions // 10} "
                      f"versions; p90 {percentile(ours, 90):.2f} ms vs {percentile(theirs, 90):.2f} ms"
                      + ("" if theirs else "; " + skipped(mlflow))),
                samples={"modelledger_ms": ours, "mlflow_ms": theirs})]


def row_store(tmp: str, quick: bool, mlflow: Peer) -> list[Row]:
    total = size("store_bytes", quick)
    rows = []
    with temp_dir(tmp, "big-") as d:
        src = os.path.join(d, "model.bin")
        log(f"store twice: making a {total / 1e6:,.0f} MB file")
        make_big_file(src, total)
        log("store twice: modelledger register x2, MLflow log_artifact x2")
        ours = ours_store_twice(tmp, src)
        theirs = None
        if not mlflow.error:
            with temp_dir(tmp, "mlflow-store-") as m:
                theirs = mlflow.run({"task": "store_twice", "dir": os.path.join(m, "s"), "file": src}, m)
    mine = ours["apparent"] / total
    other = theirs["apparent"] / total if theirs else float("nan")
    ok = (mine <= 1.001 and other >= 1.999) if theirs else None
    note = (f"file {total:,} B; bytes added to <home>/artifacts: {ours['apparent']:,} (allocated "
            f"{ours['allocated']:,}), register {ours['seconds'][0]:.1f} s + {ours['seconds'][1]:.1f} s (dedup)")
    if theirs:
        note += (f"; MLflow artifact root: {theirs['apparent']:,} (allocated {theirs['allocated']:,}), log_artifact "
                 f"{theirs['seconds'][0]:.1f} s + {theirs['seconds'][1]:.1f} s")
    else:
        note += "; " + skipped(mlflow)
    rows.append(Row("same artifact stored twice", "modelledger", mine, "x file", "MLflow log_artifact x2", other,
                    mine / other if theirs else float("nan"), target="1x vs 2x", ok=ok, note=note,
                    samples={"modelledger": [ours["apparent"]], "mlflow": [theirs["apparent"]] if theirs else []}))
    return rows


def row_asof(tmp: str, quick: bool, ml: Peer) -> list[Row]:
    events, positions, rounds = size("asof_events", quick), size("asof_positions", quick), size("asof_rounds", quick)
    models = 1_000
    with temp_dir(tmp, "asof-") as d:
        home = os.path.join(d, "home")
        log(f"as-of: building a {events:,}-event log over {models:,} models (bench_history's generator)")
        built = ours_asof_build(home, events, positions)
        probes = built["probes"]
        fractions = [p["position"] / built["events"] for p in probes]
        ours = ours_asof_probe(home, probes, max(1, rounds // 2))
        theirs: dict[str, Any] | None = None
        if not ml.error:
            log(f"as-of: model-ledger inventory_at on {events:,} snapshots, {len(fractions)} dates")
            with temp_dir(tmp, "ml-asof-") as m:
                theirs = ml.run({"task": "as_of", "dir": os.path.join(m, "s"), "events": events, "models": models,
                                 "rounds": 1, "fractions": fractions}, m)
        ours += ours_asof_probe(home, probes, max(1, rounds - rounds // 2))
    p50 = median(ours)
    base = median(theirs["ms"]) if theirs else float("nan")
    ratio = base / p50
    note = (f"{built['events']:,} events, {built['versions']:,} versions; {len(probes)} positions at "
            f"{fractions[0]:.0%}..{fractions[-1]:.0%} of the history; ours catalog(as_of=#P).list() "
            f"(p90 {percentile(ours, 90):.2f} ms, {len(ours)} calls)")
    if theirs:
        note += (f", model-ledger inventory_at(date) (p90 {percentile(theirs['ms'], 90):.0f} ms, "
                 f"{len(theirs['ms'])} calls, {median(theirs['found']):.0f} models returned)")
    else:
        note += "; " + skipped(ml)
    return [Row(f"as-of query @{events // 1000:,}k events", "modelledger p50", p50, "ms", "model-ledger inventory_at p50",
                base, ratio, target="≥ 40 (speed-up)", ok=(ratio >= 40) if theirs else None, note=note,
                samples={"modelledger_ms": ours, "model_ledger_ms": theirs["ms"] if theirs else []})]


def row_command(tmp: str, quick: bool, ml: Peer) -> list[Row]:
    big, rounds, ops = size("cmd_big", quick), size("cmd_rounds", quick), size("cmd_ops", quick)
    rows = []
    with temp_dir(tmp, "cmd-") as d:
        src = small_files(os.path.join(d, "src"), 1, seed=7)[0]
        homes = {10: os.path.join(d, "small"), big: os.path.join(d, "big")}
        for versions, home in homes.items():
            log(f"command: building a model with {versions:,} versions")
            ours_command_build(home, src, versions)
        theirs = None
        samples: dict[int, dict[str, list[float]]] = {v: {"tag": [], "register": []} for v in homes}
        log(f"command: {rounds} rounds x {ops} tag+register on each model, alternating")
        for r in range(rounds):
            order = list(homes.items()) if r % 2 == 0 else list(reversed(homes.items()))
            for versions, home in order:
                for kind, values in ours_command_ops(home, src, ops, r * ops).items():
                    samples[versions][kind].extend(values)
            if r == rounds // 2 - 1 and not ml.error:
                log(f"command: model-ledger record() @10 vs @{big:,}")
                with temp_dir(tmp, "ml-cmd-") as m:
                    theirs = ml.run({"task": "record", "dir": os.path.join(m, "s"), "big": big, "rounds": rounds,
                                     "ops": ops}, m)
    ml_ratio = median(theirs["big_ms"]) / median(theirs["small_ms"]) if theirs else float("nan")
    for kind in ("tag", "register"):
        b_ms, s_ms = median(samples[big][kind]), median(samples[10][kind])
        ratio = b_ms / s_ms
        note = f"median of {len(samples[big][kind])} on each"
        if kind == "tag":
            note += "; one event, like model-ledger's record()"
        else:
            note += "; same tiny file (dedup hit)"
        rows.append(Row(f"{kind} @{big:,} vs @10 versions", f"@{big:,}", b_ms, "ms", "@10", s_ms, ratio,
                        target="≤ 2", ok=ratio <= 2, note=note,
                        samples={"big_ms": samples[big][kind], "small_ms": samples[10][kind]}))
    if theirs:
        rows.append(Row(f"model-ledger record() @{big:,} vs @10", f"@{big:,}", median(theirs["big_ms"]), "ms", "@10",
                        median(theirs["small_ms"]), ml_ratio, target="", ok=None,
                        note=(f"informational (the peer's ratio beside ours); median of {len(theirs['big_ms'])} "
                              "on each; record() lists the model's whole history to find parent groups"),
                        samples=theirs))
    else:
        rows.append(Row(f"model-ledger record() @{big:,} vs @10", f"@{big:,}", float("nan"), "ms", "@10",
                        float("nan"), float("nan"), note=skipped(ml)))
    return rows


class _FolderServer:
    """A folder served read-only over HTTP/1.1 on 127.0.0.1 (a thread per connection, in this process), as a
    context manager."""

    def __init__(self, folder: str) -> None:
        handler = functools.partial(_QuietHandler, directory=folder)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> _FolderServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """HTTP/1.1, so a client may keep its connection for the next file, as an object store or a web server
    lets it (the standard library's default, HTTP/1.0, closes after every answer). Nagle's algorithm off: the
    handler writes the headers and the file in two sends, and on a kept connection the second waited for the
    client's delayed ACK (~40 ms a file) where a real server sends both at once."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:  # no access log on stderr
        pass


def _mlflowclient_stub(tmp: str, quick: bool, peer: Peer, models: int, versions: int,
                       counts: dict[str, tuple[int, int]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The same MlflowClient calls against ``peers/mlflow_stub_server.py`` (canned answers, no work): what the
    client costs on its own, the ceiling of the rows' ratios."""
    from bench_http import mlflowclient_clients

    got: dict[tuple[str, int], dict[str, Any]] = {}
    with temp_dir(tmp, "mlflowclient-stub-") as d:
        errlog = os.path.join(d, "stub.err")
        with open(errlog, "wb") as err:
            proc = subprocess.Popen([sys.executable, str(HERE / "peers" / "mlflow_stub_server.py"),
                                     json.dumps({"versions": versions // 10})], stdout=subprocess.PIPE, stderr=err,
                                    text=True)
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("PORT "):
                raise RuntimeError(f"the stub server did not start: {line!r}")
            target = {"server": "stub", "port": int(line.split()[1])}
            extra: dict[str, Any] = {"models": models, "expect": versions // 10,
                                     "source_prefix": "http://127.0.0.1/stub"}
            for op in ("create", "tag", "search"):
                mlflowclient_clients(peer, target, op, 8, 1, extra)
            for clients in (1, 8):
                for op in ("create", "tag", "search"):
                    full, small = counts[op]
                    n = (small if quick else full) // (1 if clients == 1 else 4)
                    got[(op, clients)] = r = mlflowclient_clients(peer, target, op, clients, n, extra)
                    log(f"mlflowclient: stub {op} x {clients}: {r['per_s']:,.1f}/s, p50 {median(r['ms']):.1f} ms")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        unmodelled = Path(errlog).read_text().strip()
        if unmodelled:
            log(f"mlflowclient: stub: {unmodelled.splitlines()[:3]}")
    return got


def row_mlflowclient(tmp: str, quick: bool, peer: Peer) -> list[Row]:
    """Issue 13: MLflow's own ``MlflowClient`` (in the full-``mlflow`` venv) against ``mlflow server`` (gunicorn,
    one worker per core: its fastest here) and against ``mledger serve``'s ``/api/2.0/mlflow/`` routes (token
    from ``MLFLOW_TRACKING_TOKEN``), both on SQLite stores filled alike (``scripts/bench_http.py``), with 1 and 8
    client processes: ``create_model_version`` (ours ingests the named source, a distinct ~400 B file under the
    server's ``MLEDGER_SOURCES``, and answers READY; MLflow records the source string), ``set_model_version_tag``,
    ``search_model_versions("name = … AND tags.stage = …")`` (100 of 10 x 1,000 versions). Targets: writes ≥ 5x,
    search p50 ≤ 0.5x. Ours fetches each created version's source, a URL under its MLEDGER_SOURCES (it reads no
    path a client names), from a folder this process serves over HTTP; MLflow's source is under the run's
    artifacts (MLflow checks that), which it records without reading."""
    from bench_http import CORES, mlflow_server, mlflowclient_clients, ours_server

    models, versions = 10, (200 if quick else 1_000)
    counts = {"create": (60, 20), "tag": (100, 20), "search": (60, 20)}
    if peer.error:
        return [Row("MlflowClient: all rows", "modelledger", float("nan"), "ops/s", "MLflow server", float("nan"),
                    float("nan"), note=skipped(peer))]
    measured: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for side in ("mlflow", "modelledger", "stub"):
        if side == "stub":
            measured[side] = _mlflowclient_stub(tmp, quick, peer, models, versions, counts)
            continue
        with temp_dir(tmp, f"mlflowclient-{side}-") as d:
            log(f"mlflowclient: {side} server, {models} x {versions:,} versions")
            src = os.path.join(d, "sources")
            os.makedirs(src)
            # Our server never reads a path a client names: the versions' sources are URLs under its
            # MLEDGER_SOURCES, served here over HTTP (as an object store would), and fetched by the server.
            files = _FolderServer(src)
            cm = (ours_server(d, CORES, models, versions, sources=files.url) if side == "modelledger"
                  else mlflow_server(peer, d, CORES, models, versions))
            got: dict[tuple[str, int], dict[str, Any]] = {}
            with files, cm as target:
                # Every worker process loads what it loads on first use before any timing (bench_http.warm_up).
                for op in ("create", "tag", "search"):
                    warm: dict[str, Any] = {"models": models, "expect": versions // 10}
                    warm_sources = None
                    if side == "mlflow":
                        warm.update(source_prefix=f"mlflow-artifacts:/{target['run']['artifact_path']}/warm",
                                    run_id=target["run"]["run_id"])
                    elif op == "create":
                        warm_sources = [[files.url + os.path.relpath(p, src) for p in
                                         small_files(os.path.join(src, f"warm-c{c}"), 1, seed=9000 + c)]
                                        for c in range(8)]
                    mlflowclient_clients(peer, target, op, 8, 1, warm, warm_sources)
                for clients in (1, 8):
                    for op in ("create", "tag", "search"):
                        full, small = counts[op]
                        n = (small if quick else full) // (1 if clients == 1 else 4)
                        extra: dict[str, Any] = {"models": models, "expect": versions // 10}
                        sources = None
                        if side == "mlflow":  # MLflow checks that such a source lies in the run's artifacts
                            extra["source_prefix"] = f"mlflow-artifacts:/{target['run']['artifact_path']}/{op}{clients}"
                            extra["run_id"] = target["run"]["run_id"]
                        elif op == "create":
                            sources = [[files.url + os.path.relpath(p, src) for p in
                                        small_files(os.path.join(src, f"x{clients}-c{c}"), n, seed=100 * clients + c)]
                                       for c in range(clients)]
                        got[(op, clients)] = r = mlflowclient_clients(peer, target, op, clients, n, extra, sources)
                        log(f"mlflowclient: {side} {op} x {clients}: {r['per_s']:,.1f}/s, p50 {median(r['ms']):.1f} ms")
            measured[side] = got
    rows = []
    mine, theirs, stub = measured["modelledger"], measured["mlflow"], measured["stub"]
    for clients in (1, 8):
        plural = "s" if clients > 1 else ""
        for op, api in (("create", "create_model_version"), ("tag", "set_model_version_tag")):
            o, t, z = mine[(op, clients)], theirs[(op, clients)], stub[(op, clients)]
            # Per call (p50), not per second: the stub's calls of a client last well under a second in all, so
            # its rate over first start to last end measures how far apart the client processes started.
            ceiling = median(t["ms"]) / median(z["ms"])
            rows.append(Row(f"MlflowClient {op} ceiling, {clients} client{plural}", "stub p50", median(z["ms"]),
                            "ms", f"mlflow server gunicorn -w {CORES} p50", median(t["ms"]), ceiling, target="≥ 5",
                            ok=ceiling >= 5,
                            note=(f"MlflowClient.{api} against a stub answering each call at once with a canned "
                                  f"answer (peers/mlflow_stub_server.py): MLflow's time per call / the client's "
                                  f"own, the highest ratio any server can reach through this client here; stub "
                                  f"{z['per_s']:,.1f}/s; ours p50 {median(o['ms']):.1f} ms = "
                                  f"{median(t['ms']) / median(o['ms']):.2f}x MLflow per call"),
                            samples={"stub_ms": z["ms"]}))
            ratio = o["per_s"] / t["per_s"] if t["per_s"] else float("nan")
            note = (f"MlflowClient.{api}, {clients} process{'es' if clients > 1 else ''}, {o['done']} calls ours / "
                    f"{t['done']} MLflow; p50 {median(o['ms']):.1f} vs {median(t['ms']):.1f} ms"
                    + (f"; {t['errors']} MLflow calls failed ({t['first_error']})" if t["errors"] else "")
                    + (f"; {o['errors']} of ours failed ({o['first_error']})" if o["errors"] else ""))
            rows.append(Row(f"MlflowClient {op}, {clients} client{plural}", "mledger serve", o["per_s"], "ops/s",
                            f"mlflow server gunicorn -w {CORES}", t["per_s"], ratio, target="≥ 5", ok=ratio >= 5,
                            note=note, samples={"modelledger_ms": o["ms"], "mlflow_ms": t["ms"]}))
        o, t, z = mine[("search", clients)], theirs[("search", clients)], stub[("search", clients)]
        floor = median(z["ms"]) / median(t["ms"])
        rows.append(Row(f"MlflowClient search p50 floor, {clients} client{plural}", "stub server", median(z["ms"]),
                        "ms", f"mlflow server gunicorn -w {CORES}", median(t["ms"]), floor, target="≤ 0.5 (ms ratio)",
                        ok=floor <= 0.5,
                        note=(f"the stub answers {versions // 10} canned versions at once: the lowest p50 ratio any "
                              f"server can reach through this client here; p90 {percentile(z['ms'], 90):.1f} ms"),
                        samples={"stub_ms": z["ms"]}))
        ratio = median(o["ms"]) / median(t["ms"])
        rows.append(Row(f"MlflowClient search p50, {clients} client{plural}", "mledger serve", median(o["ms"]), "ms",
                        f"mlflow server gunicorn -w {CORES}", median(t["ms"]), ratio, target="≤ 0.5 (ms ratio)",
                        ok=ratio <= 0.5,
                        note=(f"search_model_versions name + tag, {versions // 10} of {models} x {versions:,}; p90 "
                              f"{percentile(o['ms'], 90):.1f} vs {percentile(t['ms'], 90):.1f} ms"),
                        samples={"modelledger_ms": o["ms"], "mlflow_ms": t["ms"]}))
    return rows


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (< 3 minutes), for smoke checks")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--tmpdir", help="where the temp stores go (default: the system temp dir)")
    parser.add_argument("--peers-dir", default=os.path.expanduser("~/.cache/modelledger-bench/peers"),
                        help="where the peers' venvs live (created on first use; default %(default)s)")
    parser.add_argument("--only", choices=ROWS, action="append", help="run only these rows (repeatable)")
    args = parser.parse_args(argv)
    chosen = args.only or ROWS

    synchronous = (os.environ.get("MLEDGER_SYNCHRONOUS") or "FULL").upper()
    info = machine()
    peers_dir = Path(args.peers_dir)
    peers_dir.mkdir(parents=True, exist_ok=True)
    needed = {"create": ["mlflow"], "tags": ["mlflow", "eventsourcing"], "search": ["mlflow"], "store": ["mlflow"],
              "asof": ["model-ledger"], "command": ["model-ledger"], "postgres": ["mlflow-pg"], "tier": [],
              "mlflowclient": ["mlflow-server"]}
    peers = {name: Peer(name, peers_dir) for name in PEERS}
    setup = time.perf_counter()
    for name in sorted({p for r in chosen for p in needed[r]}):
        if not peers[name].ensure():
            print(f"peer {name}: SKIPPED — {peers[name].error}", flush=True)
    setup_s = time.perf_counter() - setup

    tmp_parent = args.tmpdir or os.environ.get("TMPDIR") or "/tmp"
    print("\n".join([
        "modelledger vs peers" + (" (--quick)" if args.quick else ""),
        f"machine: nproc {info['nproc']} (cpu_count {info['cpu_count']}), {info['implementation']} {info['python']}, "
        f"SQLite {info['sqlite']}, {info['platform']}, loadavg {info['loadavg']}",
        f"modelledger: embedded broker, journal_mode=WAL, synchronous={synchronous}; peers' venvs in {peers_dir} "
        f"(setup {setup_s:.0f} s, not timed); temp dir {tmp_parent}",
        "figures: medians; ratio = modelledger / peer for rates, peer / modelledger for the as-of latency, "
        "modelledger / peer ms for search, @big / @10 for latency growth",
    ]), flush=True)
    started = time.perf_counter()
    rows: list[Row] = []
    timings: dict[str, float] = {}
    with temp_dir(args.tmpdir, "mledger-peers-") as tmp:
        for name, run in (("create", lambda: row_create(tmp, args.quick, peers["mlflow"])),
                          ("tags", lambda: row_tags(tmp, args.quick, peers["mlflow"], peers["eventsourcing"])),
                          ("search", lambda: row_search(tmp, args.quick, peers["mlflow"])),
                          ("store", lambda: row_store(tmp, args.quick, peers["mlflow"])),
                          ("asof", lambda: row_asof(tmp, args.quick, peers["model-ledger"])),
                          ("command", lambda: row_command(tmp, args.quick, peers["model-ledger"])),
                          ("postgres", lambda: bench_clients(tmp, args.quick, peers["mlflow-pg"])),
                          ("tier", lambda: row_tier(tmp, args.quick)),
                          ("mlflowclient", lambda: row_mlflowclient(tmp, args.quick, peers["mlflow-server"]))):
            if name not in chosen:
                continue
            t = time.perf_counter()
            try:
                rows += run()
            except RuntimeError as e:  # a peer worker failed: say so, keep going
                print(f"row {name}: FAILED — {e}", flush=True)
            timings[name] = time.perf_counter() - t
    elapsed = time.perf_counter() - started
    versions = ", ".join(p.version for p in peers.values() if p.version)
    print()
    print(render(rows))
    print(f"\npeers: {versions or 'none ran'}")
    print(f"{len(rows)} rows in {elapsed:.0f} s; {sum(1 for r in rows if r.ok is False)} target(s) missed")
    print("row times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "synchronous": synchronous, "quick": args.quick, "elapsed_s": round(elapsed, 1),
            "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
            "peers": {n: {"version": p.version, "venv": str(p.dir), "error": p.error} for n, p in peers.items()},
            "row_s": {k: round(v, 1) for k, v in timings.items()},
            "rows": [r.to_json() for r in rows],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
