"""``mledger serve`` beside ``mlflow server`` (issue 11's acceptance), in one run, on the same database kind.

    .venv/bin/python scripts/bench_http.py [--quick] [--json FILE] [--tmpdir DIR]
        [--peers-dir DIR] [--workers N] [--only SECTION]...

Sections:

1. ``servers``: three servers, each on a fresh SQLite store and started by this script on a free port:
   ``mlflow server`` with its default (uvicorn, one process), ``mlflow server`` under gunicorn with one worker per
   core (its fastest configuration on this machine), and ``mledger serve --workers N`` (``--workers``; default:
   one per core). Full ``mlflow`` (+ gunicorn) lives in a peer venv built once under
   ``~/.cache/modelledger-bench/peers/mlflow-server`` (``bench_peers.Peer``), never a project dependency. Each
   server is filled before it starts (ours: ``append_batch``; MLflow: its own client and SQLAlchemy models,
   ``peers/mlflow_server_worker.py``): 10 models x 1,000 versions tagged stage = s<v % 10> (each search answers
   100 versions), a model with 10 versions to tag, 4 models to create into. Then, with 1 and with 8 client
   processes (``peers/http_client.py``: one keep-alive connection each, the same standard-library client for
   both servers, all starting at one instant): create a version (a distinct ~400 B artifact uploaded and a
   version made of it, ready), set a version tag, search by name + tag. Rates are all operations over the
   time from the first client's start to the last one's end; searches give p50 / p90 latency.
   Targets (issue 11): writes ≥ 10x MLflow's fastest server; search p50 ≤ 0.5x its.
2. ``upload``: a 1 GiB file registered over HTTP (``RemoteRegistry``: hash, ask, stream the bytes, register)
   against ``mledger serve`` vs registered locally (``Registry.register`` into a fresh home), alternating,
   in the same run (target ≥ 0.5x). The file's first bytes change each round, so nothing is deduplicated.
3. ``coldstart``: ``mledger show m@1`` from a fresh process, locally (``MLEDGER_HOME``) and remotely
   (``MLEDGER_URL`` + ``MLEDGER_TOKEN`` to the server of section 2), beside ``python -c pass``; interleaved
   rounds, medians (target ≤ 150 ms).

The machine is shared and noisy: read the ratios, which pair figures taken minutes apart in one run; the load
average is printed with every section.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _benchlib import Row, add_repo_to_path, log, machine, median, percentile, render, temp_dir  # noqa: E402

add_repo_to_path()

from bench_peers import Peer, _clean_env, add_versions  # noqa: E402

ACTOR = "bench@http"
CLIENT = HERE / "peers" / "http_client.py"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

SIZES = {
    #                   full     quick
    "models": (10, 10),
    "versions": (1_000, 200),
    "create_n": (120, 30),       # per run of 1 client; 8 clients do n // 4 each
    "tag_n": (200, 40),
    "search_n": (100, 30),
    "upload_mib": (1024, 128),
    "upload_rounds": (2, 1),
    "cold_rounds": (15, 5),
}


def size(key: str, quick: bool) -> int:
    full, small = SIZES[key]
    return small if quick else full


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """End a server started in a session of its own (its workers too): SIGTERM, then SIGKILL after ``timeout``."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of session ``sid``: a server started
    with ``start_new_session`` and all its workers. CPU per request moves far less with the machine's load
    than wall time does, so it is what tells two versions of the server apart (``--compare``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the command: state, ppid, pgrp, session, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


@contextmanager
def running(argv: list[str], env: dict[str, str], health: str, log_path: str) -> Iterator[subprocess.Popen]:
    """A server process (its own process group, so its workers stop with it); stopped with SIGTERM."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(health, proc)
        yield proc
    finally:
        if proc.poll() is None:
            stop_group(proc, 30)


# -- the servers -------------------------------------------------------------------------------------

def mledger_script() -> str:
    script = Path(sys.executable).with_name("mledger")
    if not script.exists():
        raise SystemExit(f"no {script}: install the project in this venv (pip install -e .)")
    return str(script)


def ours_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEDGER_")}
    env.update(MLEDGER_HOME=home, MLEDGER_BROKER="embedded", MLEDGER_ACTOR=ACTOR)
    return env


def ours_fill(home: str, models: int, versions: int) -> str:
    """The store ``mledger serve`` will open: the same models as MLflow's; returns a writer token's secret."""
    from modelledger import Registry

    with temp_dir(None, "http-fill-") as d:
        reg = Registry.open(home=home, broker="embedded", actor=ACTOR, client="bench http")
        try:
            seed = os.path.join(d, "seed.bin")
            Path(seed).write_bytes(b"MLBENCH seed " + os.urandom(256))
            art = reg.register("bench-deep", artifact=seed).artifact
            add_versions(reg, "bench-deep", 2, 10, art)
            for m in range(models):
                add_versions(reg, f"bench-m{m}", 1, versions, art,
                             tags=lambda v: {"stage": f"s{v % 10}", "task": "ctr"})
            for w in range(4):
                add_versions(reg, f"bench-w{w}", 1, 1, art)
            got = reg.catalog().search(name="bench-m0", tags={"stage": "s1"})  # the catalog folds it all in
            if len(got) != versions // 10:
                raise SystemExit(f"search found {len(got)} versions, expected {versions // 10}")
            _state, secret = reg.create_token("bench", "writer")
        finally:
            reg.close()
    return secret


@contextmanager
def ours_server(d: str, workers: int, models: int, versions: int, *, sources: str | None = None,
                tree: str | None = None) -> Iterator[dict[str, Any]]:
    """``mledger serve`` on a filled store; ``sources``: its MLEDGER_SOURCES (MLflow's create names a source);
    ``tree``: run the server of another checkout of the project (``--compare``)."""
    home = os.path.join(d, "home")
    secret = ours_fill(home, models, versions)
    port = free_port()
    launcher = [mledger_script()]
    if tree:  # that checkout first on sys.path, ahead of this venv's editable install
        code = f"import sys; sys.path.insert(0, {tree!r}); from modelledger.cli import main; sys.exit(main())"
        launcher = [sys.executable, "-c", code]
    argv = [*launcher, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    env = ours_env(home)
    if sources:
        env["MLEDGER_SOURCES"] = sources
    with running(argv, env, f"http://127.0.0.1:{port}/api/v1/health", os.path.join(d, "server.log")) as proc:
        yield {"server": "modelledger", "port": port, "token": secret, "home": home, "sid": proc.pid,
               "inline": takes_inline(tree)}


def takes_inline(tree: str | None) -> bool:
    """Does that checkout's server take a small file inside the register (``content_base64``)? A server from
    before it is driven as ``mledger register`` then drove it: HEAD + PUT /blobs + register."""
    routes = Path(tree or ROOT) / "modelledger" / "server" / "uploads.py"
    return "content_base64" in routes.read_text()


@contextmanager
def mlflow_server(peer: Peer, d: str, gunicorn_workers: int | None, models: int,
                  versions: int) -> Iterator[dict[str, Any]]:
    """``mlflow server`` on a store made by ``setup``: as shipped (uvicorn, its default of 4 workers) when
    ``gunicorn_workers`` is None, else under gunicorn with that many workers."""
    store = os.path.join(d, "mlflow")
    made = peer.run({"task": "setup", "dir": store, "models": models, "versions": versions}, d)
    port = free_port()
    argv = [str(peer.dir / "bin" / "mlflow"), "server", "--backend-store-uri", made["uri"],
            "--artifacts-destination", os.path.join(store, "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    if gunicorn_workers:
        argv += ["--workers", str(gunicorn_workers), "--gunicorn-opts", "--log-level warning"]
    with running(argv, _clean_env(), f"http://127.0.0.1:{port}/health", os.path.join(d, "server.log")) as proc:
        yield {"server": "mlflow", "port": port, "sid": proc.pid,
               "run": {"run_id": made["run_id"], "artifact_path": made["artifact_path"]}}


# -- the clients -------------------------------------------------------------------------------------

def run_clients(target: dict[str, Any], op: str, clients: int, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    start_at = time.time() + 1.0 + 0.25 * clients
    procs = []
    cpu_before = session_cpu(target["sid"])
    for c in range(clients):
        task = {**{k: v for k, v in target.items() if k not in ("home", "sid")}, **extra, "op": op, "n": n,
                "client": c, "start_at": start_at}
        procs.append(subprocess.Popen([sys.executable, str(CLIENT), json.dumps(task)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        found = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if p.returncode != 0 or not found:
            raise RuntimeError(f"client failed ({p.returncode}): {' | '.join(err.strip().splitlines()[-3:])}")
        results.append(json.loads(found[-1][len("RESULT "):]))
    cpu = session_cpu(target["sid"]) - cpu_before
    first, last = min(r["start"] for r in results), max(r["end"] for r in results)
    late = max(r["start"] for r in results) - first
    done = sum(len(r["ms"]) for r in results)
    ms = [x for r in results for x in r["ms"]]
    errors = sum(r["errors"] for r in results)
    first_error = next((r["first_error"] for r in results if r["errors"]), "")
    if errors:
        log(f"  {target['server']} {op} x {clients}: {errors} of {clients * n} failed ({first_error})")
    # The client's own CPU per operation (the same standard-library client for every server): what of a
    # 1-client round trip is neither server's.
    client_cpu = sum(r.get("cpu_ms", 0.0) for r in results) / max(1, len(results))
    return {"per_s": done / (last - first), "ms": ms, "errors": errors, "late_s": late, "done": done,
            "first_error": first_error, "server_cpu_ms": 1000 * cpu / max(1, done), "client_cpu_ms": client_cpu}


def warm_up(target: dict[str, Any], models: int, versions: int) -> None:
    """A few operations of each kind from 8 clients before any timing: every worker process of the server
    loads what it loads on first use (MLflow's first artifact upload in a worker costs ~100 ms of imports)."""
    for op in ("create", "tag", "search"):
        run_clients(target, op, 8, 2, {"models": models, "expect": versions // 10, "salt": 99})


def section_servers(tmp: str, quick: bool, peer: Peer, workers: int,
                    skip_mlflow: bool = False) -> tuple[list[Row], dict[str, Any]]:
    models, versions = size("models", quick), size("versions", quick)
    plan: list[tuple[str, str, int | None]] = [
        ("mlflow server (default: uvicorn)", "mlflow", None), (f"mlflow gunicorn -w {CORES}", "mlflow", CORES),
        (f"mledger serve -w {workers}", "modelledger", workers)]
    measured: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for label, kind, w in plan:
        if kind == "mlflow" and skip_mlflow:
            continue
        if kind == "mlflow" and peer.error:
            log(f"servers: {label} skipped: {peer.error}")
            continue
        with temp_dir(tmp, "http-server-") as d:
            log(f"servers: {label}: filling {models} x {versions:,} versions, starting ({load()})")
            cm = (ours_server(d, w or 1, models, versions) if kind == "modelledger"
                  else mlflow_server(peer, d, w, models, versions))
            with cm as target:
                got: dict[tuple[str, int], dict[str, Any]] = {}
                warm_up(target, models, versions)
                for clients in (1, 8):
                    for op in ("create", "tag", "search"):
                        n = size(f"{op}_n", quick) // (1 if clients == 1 else 4)
                        extra = {"models": models, "expect": versions // 10, "salt": clients}
                        got[(op, clients)] = r = run_clients(target, op, clients, n, extra)
                        log(f"servers: {label} {op} x {clients}: {r['per_s']:,.1f}/s, p50 {median(r['ms']):.1f} ms,"
                            f" server CPU {r['server_cpu_ms']:.2f} ms/op, client CPU {r['client_cpu_ms']:.2f}"
                            f" ms/op ({load()})")
                measured[label] = got
    rows: list[Row] = []
    ours_label = plan[2][0]
    mine = measured.get(ours_label, {})
    peers = {k: v for k, v in measured.items() if k != ours_label}
    for clients in (1, 8):
        for op, what, target, floor in (("create", "create a version", "≥ 10", 10.0),
                                        ("tag", "set a version tag", "≥ 10", 10.0)):
            o = mine.get((op, clients))
            theirs = {k: v[(op, clients)]["per_s"] for k, v in peers.items() if (op, clients) in v}
            best_label = max(theirs, key=lambda k: theirs[k]) if theirs else ""
            base = theirs.get(best_label, float("nan"))
            value = o["per_s"] if o else float("nan")
            ratio = value / base if theirs and o else float("nan")
            others = ", ".join(f"{k} {v:,.1f}/s ({peers[k][(op, clients)]['server_cpu_ms']:.1f} ms server CPU/op)"
                               for k, v in theirs.items())
            note = (f"{clients} client process(es); MLflow: {others or 'skipped'}; ours p50 "
                    f"{median(o['ms']) if o else float('nan'):.1f} ms, server CPU "
                    f"{o['server_cpu_ms'] if o else float('nan'):.2f} ms/op"
                    + (f"; {o['errors']} of ours failed" if o and o["errors"] else "")
                    + "".join(f"; {v[(op, clients)]['errors']} {k} calls failed ({v[(op, clients)]['first_error']})"
                              for k, v in peers.items() if (op, clients) in v and v[(op, clients)]["errors"]))
            rows.append(Row(f"{what}, {clients} client{'s' if clients > 1 else ''}", "modelledger", value, "ops/s",
                            f"fastest MLflow ({best_label})", base, ratio, target=target,
                            ok=None if ratio != ratio else ratio >= floor, note=note))
        o = mine.get(("search", clients))
        theirs_ms = {k: median(v[("search", clients)]["ms"]) for k, v in peers.items() if ("search", clients) in v}
        best_label = min(theirs_ms, key=lambda k: theirs_ms[k]) if theirs_ms else ""
        base = theirs_ms.get(best_label, float("nan"))
        value = median(o["ms"]) if o else float("nan")
        ratio = value / base if theirs_ms and o else float("nan")
        note = (f"{clients} client process(es), each answer {versions // 10} versions of {models} x {versions:,}; "
                f"ours p90 {percentile(o['ms'], 90) if o else float('nan'):.1f} ms, {o['per_s'] if o else 0:,.0f} q/s; "
                + ", ".join(f"{k} p50 {median(v[('search', clients)]['ms']):.1f} / p90 "
                            f"{percentile(v[('search', clients)]['ms'], 90):.1f} ms"
                            for k, v in peers.items() if ("search", clients) in v))
        rows.append(Row(f"search name+tag p50, {clients} client{'s' if clients > 1 else ''}", "modelledger", value,
                        "ms", f"fastest MLflow ({best_label})", base, ratio, target="≤ 0.5 (ms ratio)",
                        ok=None if ratio != ratio else ratio <= 0.5, note=note))
    raw = {label: {f"{op}x{c}": {k: v for k, v in r.items()} for (op, c), r in got.items()}
           for label, got in measured.items()}
    return rows, raw


def mlflowclient_clients(peer: Peer, target: dict[str, Any], op: str, clients: int, n: int,
                         extra: dict[str, Any], sources: list[list[str]] | None = None) -> dict[str, Any]:
    """``clients`` processes of MLflow's own ``MlflowClient`` (``peers/mlflow_server_worker.py client``) against
    ``target`` (either server; ours through ``/api/2.0/mlflow/`` with ``MLFLOW_TRACKING_TOKEN``); ``sources``:
    each client's list of files to create versions from (else a source under ``extra["source_prefix"]``)."""
    start_at = time.time() + 8.0 + 1.0 * clients  # MLflow's import takes seconds on a busy machine
    env = _clean_env()
    if target.get("token"):
        env["MLFLOW_TRACKING_TOKEN"] = target["token"]
    worker = HERE / "peers" / "mlflow_server_worker.py"
    procs = []
    for c in range(clients):
        task = {"task": "client", "url": f"http://127.0.0.1:{target['port']}", "op": op, "n": n, "client": c,
                "start_at": start_at, **extra}
        if sources:
            task["sources"] = sources[c]
        procs.append(subprocess.Popen([str(peer.python), str(worker), json.dumps(task)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        found = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if p.returncode != 0 or not found:
            raise RuntimeError(f"MlflowClient failed ({p.returncode}): {' | '.join(err.strip().splitlines()[-3:])}")
        results.append(json.loads(found[-1][len("RESULT "):]))
    first, last = min(r["start"] for r in results), max(r["end"] for r in results)
    done = sum(len(r["ms"]) for r in results)
    errors = sum(r["errors"] for r in results)
    first_error = next((r["first_error"] for r in results if r["errors"]), "")
    if errors:
        log(f"  MlflowClient -> {target['server']} {op} x {clients}: {errors} of {clients * n} failed ({first_error})")
    return {"per_s": done / (last - first), "ms": [x for r in results for x in r["ms"]], "errors": errors,
            "first_error": first_error, "done": done}


def section_compare(tmp: str, quick: bool, workers: int, tree: str, rounds: int,
                    this: str | None = None, ops: tuple[str, ...] = ("create", "tag", "search")) -> list[Row]:
    """This tree's ``mledger serve`` (or ``--this TREE``'s, a frozen copy: a server started in a later round
    would otherwise run whatever the work tree holds by then) against another checkout's (``--compare TREE``),
    alternating, ``rounds`` times, same stores and clients: the ratio per operation, for measuring one change
    at a time. ``mlflow-create`` / ``mlflow-search``: through the server's MLflow REST API (a create names a
    distinct ~400 B file under its ``MLEDGER_SOURCES``, served by this process over HTTP)."""
    from bench_peers import _FolderServer

    models, versions = size("models", quick), size("versions", quick)
    got: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = {"this": {}, "base": {}}
    for r in range(rounds):
        for side in (("base", "this") if r % 2 == 0 else ("this", "base")):
            with temp_dir(tmp, f"http-compare-{side}-") as d:
                src = os.path.join(d, "sources")
                os.makedirs(src)
                with _FolderServer(src) as files, ours_server(d, workers, models, versions, sources=files.url,
                                                              tree=tree if side == "base" else this) as target:
                    warm_up(target, models, versions)
                    if "mlflow-create" in ops:  # each worker's first fetch loads fsspec's HTTP side
                        _mlflow_creates(target, 8, 2, {"models": models}, files.url, src, f"9{r}")
                    for clients in (1, 8):
                        for op in ops:
                            n = size(f"{op.removeprefix('mlflow-')}_n", quick) // (1 if clients == 1 else 4)
                            extra: dict[str, Any] = {"models": models, "expect": versions // 10, "salt": clients}
                            if op == "mlflow-create":
                                res = _mlflow_creates(target, clients, n, extra, files.url, src, f"{r}{clients}")
                            else:
                                res = run_clients(target, op, clients, n, extra)
                            got[side].setdefault((op, clients), []).append(res)
            log(f"compare: round {r + 1}/{rounds} {side} done ({load()})")
    rows = []
    for (op, clients), these in got["this"].items():
        bases = got["base"][(op, clients)]
        if op == "search":
            mine, theirs = [median(x["ms"]) for x in these], [median(x["ms"]) for x in bases]
            unit, label = "ms", "p50"
        else:
            mine, theirs = [x["per_s"] for x in these], [x["per_s"] for x in bases]
            unit, label = "ops/s", "rate"
        ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
        cpu_mine = [x["server_cpu_ms"] for x in these]
        cpu_theirs = [x["server_cpu_ms"] for x in bases]
        cpu_ratios = [a / b for a, b in zip(cpu_mine, cpu_theirs, strict=True)]
        name = os.path.basename((this or "this tree").rstrip("/"))
        rows.append(Row(f"{op} x {clients}: server CPU per op, {name} vs {os.path.basename(tree.rstrip('/'))}",
                        "this", median(cpu_mine), "ms", "base", median(cpu_theirs), median(cpu_ratios),
                        note=f"server processes' user+system CPU / ops; per-round ratios "
                             f"{', '.join(f'{x:.2f}' for x in cpu_ratios)}",
                        samples={"this": cpu_mine, "base": cpu_theirs}))
        rows.append(Row(f"{op} x {clients}: {name} vs {os.path.basename(tree.rstrip('/'))}", f"this {label}",
                        median(mine), unit, "base", median(theirs), median(ratios),
                        note=f"per-round ratios {', '.join(f'{x:.2f}' for x in ratios)}",
                        samples={"this": mine, "base": theirs}))
    return rows


def _mlflow_creates(target: dict[str, Any], clients: int, n: int, extra: dict[str, Any], url: str, src: str,
                   tag: str) -> dict[str, Any]:
    """``run_clients`` of ``mlflow-create``: each client gets its own ``n`` new files under the served folder."""
    from _benchlib import small_files

    results = []
    for c in range(clients):
        made = small_files(os.path.join(src, f"r{tag}-c{c}"), n, seed=1000 * int(tag) + c)
        results.append([url + os.path.relpath(p, src) for p in made])
    return run_clients(target, "mlflow-create", clients, n, {**extra, "sources_per_client": results})


# -- upload and cold start ----------------------------------------------------------------------------

def make_file(path: str, mib: int) -> None:
    block = b"MLBENCH " + os.urandom(16 * 1024 * 1024 - 8)
    with open(path, "wb") as f:
        for i in range(0, mib, 16):
            f.write(block[: min(16, mib - i) * 1024 * 1024])


def restamp(path: str, k: int) -> None:
    """New first bytes: a new digest, so neither side finds the blob (or a stat cache entry) from before."""
    with open(path, "r+b") as f:
        f.write(f"MLBENCH {k:08d} {time.time():.6f}".encode())
        f.flush()
        os.fsync(f.fileno())


def section_upload_cold(tmp: str, quick: bool, workers: int) -> tuple[list[Row], dict[str, Any]]:
    from modelledger import Registry
    from modelledger.remote import RemoteRegistry

    mib, rounds, cold = size("upload_mib", quick), size("upload_rounds", quick), size("cold_rounds", quick)
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    with temp_dir(tmp, "http-upload-") as d:
        big = os.path.join(d, "big.bin")
        log(f"upload: making a {mib} MiB file ({load()})")
        make_file(big, mib)
        home = os.path.join(d, "server-home")
        with Registry.open(home=home, broker="embedded", actor=ACTOR) as reg:
            small = os.path.join(d, "w.bin")
            Path(small).write_bytes(b"weights v1\n")
            reg.register("m", artifact=small, tags={"team": "a"}, params={"lr": 0.1})
            _state, secret = reg.create_token("bench", "writer")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [mledger_script(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        with running(argv, ours_env(home), f"{url}/api/v1/health", os.path.join(d, "server.log")):
            local_s, http_s = [], []
            for r in range(rounds):
                order = ("local", "http") if r % 2 == 0 else ("http", "local")
                for which in order:
                    restamp(big, 2 * r + (which == "http"))
                    if which == "local":
                        with Registry.open(home=os.path.join(d, f"local-{r}"), broker="embedded", actor=ACTOR) as lr:
                            t = time.perf_counter()
                            v = lr.register("big", artifact=big)
                            local_s.append(time.perf_counter() - t)
                    else:
                        remote = RemoteRegistry(url, secret)
                        t = time.perf_counter()
                        v = remote.register("big", artifact=big)
                        http_s.append(time.perf_counter() - t)
                        remote.close()
                    if v.status != "ready":
                        raise SystemExit(f"{which} register of the big file: status {v.status}")
                    log(f"upload: {which} {mib} MiB in {(local_s if which == 'local' else http_s)[-1]:.1f} s "
                        f"({load()})")
            mb = mib * 1024 * 1024 / 1e6
            local_rate, http_rate = mb / median(local_s), mb / median(http_s)
            ratio = http_rate / local_rate
            rows.append(Row(f"register a {mib} MiB file over HTTP vs locally", "HTTP", http_rate, "MB/s", "local",
                            local_rate, ratio, target="≥ 0.5", ok=ratio >= 0.5,
                            note=(f"medians of {rounds}; HTTP = RemoteRegistry.register (client hashes, HEAD, "
                                  f"streamed PUT, register) against mledger serve -w {workers}; local = "
                                  f"Registry.register into a fresh home; seconds local {local_s}, http {http_s}"),
                            samples={"local_s": local_s, "http_s": http_s}))
            raw["upload"] = {"local_s": local_s, "http_s": http_s}

            log(f"coldstart: {cold} rounds of python -c pass, mledger show m@1 local and remote ({load()})")
            base = {k: v for k, v in os.environ.items() if not k.startswith("MLEDGER_")}
            local_env = {**base, "MLEDGER_HOME": home}
            remote_env = {**base, "MLEDGER_URL": url, "MLEDGER_TOKEN": secret}
            cmds = {"floor": ([sys.executable, "-c", "pass"], base),
                    "local": ([mledger_script(), "show", "m@1"], local_env),
                    "remote": ([mledger_script(), "show", "m@1"], remote_env)}
            for argv_, env in cmds.values():  # warm-up (and .pyc files)
                subprocess.run(argv_, env=env, check=True, stdout=subprocess.DEVNULL)
            times: dict[str, list[float]] = {k: [] for k in cmds}
            for _ in range(cold):
                for k, (argv_, env) in cmds.items():
                    t = time.perf_counter()
                    subprocess.run(argv_, env=env, check=True, stdout=subprocess.DEVNULL)
                    times[k].append((time.perf_counter() - t) * 1000)
            for k in ("local", "remote"):
                value = median(times[k])
                rows.append(Row(f"mledger show m@1 cold start, {k}", k, value, "ms", "python -c pass",
                                median(times["floor"]), value / median(times["floor"]), target="≤ 150 ms",
                                ok=value <= 150, note=f"median of {cold}; p90 {percentile(times[k], 90):.0f} ms",
                                samples={"ms": times[k], "floor_ms": times["floor"]}))
            raw["coldstart"] = times
    return rows, raw


# -- main --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for smoke checks")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--tmpdir", help="where the stores go (default: the system temp dir)")
    parser.add_argument("--peers-dir", default=os.path.expanduser("~/.cache/modelledger-bench/peers"))
    parser.add_argument("--workers", type=int, default=CORES, help="mledger serve --workers (default: one per core)")
    parser.add_argument("--only", choices=["servers", "upload"], action="append")
    parser.add_argument("--compare", metavar="TREE", help="only: this tree's server vs TREE's (another checkout), "
                        "alternating --rounds times")
    parser.add_argument("--this", metavar="TREE", help="with --compare: the checkout to measure against it "
                        "(default: this work tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", default="create,tag,search",
                        help="with --compare: operations to measure, of create, tag, search, mlflow-create, "
                             "mlflow-search (the last two through the server's MLflow REST API)")
    parser.add_argument("--skip-mlflow", action="store_true",
                        help="servers: only mledger serve (to compare two trees of ours between runs)")
    args = parser.parse_args(argv)
    chosen = args.only or ["servers", "upload"]
    info = machine()
    peer = Peer("mlflow-server", Path(args.peers_dir))
    t = time.perf_counter()
    if "servers" in chosen and not args.skip_mlflow and not peer.ensure():
        print(f"peer mlflow-server: SKIPPED — {peer.error}", flush=True)
    setup_s = time.perf_counter() - t
    print("\n".join([
        "mledger serve vs mlflow server" + (" (--quick)" if args.quick else ""),
        f"machine: nproc {info['nproc']}, {info['implementation']} {info['python']}, SQLite {info['sqlite']}, "
        f"loadavg {info['loadavg']}",
        f"both on SQLite; ours: mledger serve --workers {args.workers}, synchronous="
        f"{(os.environ.get('MLEDGER_SYNCHRONOUS') or 'FULL').upper()}; MLflow venv {peer.dir} (setup {setup_s:.0f} s)",
    ]), flush=True)
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    started = time.perf_counter()
    with temp_dir(args.tmpdir, "mledger-http-") as tmp:
        if args.compare:
            chosen = []
            rows += section_compare(tmp, args.quick, args.workers, args.compare, args.rounds, args.this,
                                    tuple(args.ops.split(",")))
        if "servers" in chosen:
            got, raw["servers"] = section_servers(tmp, args.quick, peer, args.workers, args.skip_mlflow)
            rows += got
        if "upload" in chosen:
            got, more = section_upload_cold(tmp, args.quick, args.workers)
            rows += got
            raw.update(more)
    print()
    print(render(rows))
    print(f"\npeer: {peer.version or 'none ran'}; loadavg at the end {[round(x, 2) for x in os.getloadavg()]}")
    print(f"{len(rows)} rows in {time.perf_counter() - started:.0f} s; "
          f"{sum(1 for r in rows if r.ok is False)} target(s) missed")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "workers": args.workers, "quick": args.quick,
                                               "peer": peer.version, "rows": [r.to_json() for r in rows],
                                               "raw": raw, "loadavg_end": os.getloadavg()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
