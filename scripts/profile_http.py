"""Where one HTTP request of ``mledger serve`` spends its CPU, and what a change to the server saves.

    .venv/bin/python scripts/profile_http.py --op tag --n 600 --profile [--top 40]
    .venv/bin/python scripts/profile_http.py --op tag,mlflow-tag --n 600 --compare /tmp/base --rounds 4

A real server (``mledger serve --workers 1``, this checkout's or ``--tree``'s) on a store filled as
``bench_http.py`` fills it, driven by ``scripts/peers/http_client.py`` (``--clients`` processes, one keep-alive
connection each) for ``--n`` operations of each kind in ``--op``:

- without ``--profile``: the server's CPU per operation (user + system of its process, ``/proc``) and the
  clients' p50; with ``--compare TREE``, that checkout's server and this one alternate ``--rounds`` times on
  fresh stores and the per-round ratios are printed (the machine is shared: read the ratios);
- with ``--profile``: cProfile in every thread of the server (the event loop and the worker threads that run
  routes; a profiler per thread, merged at exit), the top functions by own and by cumulative time, per request.
  cProfile charges every Python call a fixed cost, so call-heavy code looks larger than it is: use it to find
  where, and the runs without it to say how much. (py-spy and yappi are not installed here.)

Operations: ``create``, ``tag``, ``search`` (``/api/v1``), ``mlflow-create`` (MLflow's ``model-versions/create``
naming a distinct ~400 B file under the server's ``MLEDGER_SOURCES``, served by this process over HTTP),
``mlflow-tag`` (what ``MlflowClient.set_model_version_tag`` sends: ``registered-models/get`` then
``model-versions/set-tag``), ``mlflow-search``.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _benchlib import add_repo_to_path, median, small_files, temp_dir  # noqa: E402

add_repo_to_path()

from bench_http import (  # noqa: E402
    CLIENT,
    free_port,
    ours_env,
    ours_fill,
    session_cpu,
    stop_group,
    takes_inline,
    wait_http,
)
from bench_peers import _FolderServer  # noqa: E402

OPS = ("create", "tag", "search", "mlflow-create", "mlflow-tag", "mlflow-search")

# Run in the server's process before the CLI: a cProfile per thread, timed by that thread's CPU clock
# (threading.setprofile hands each new thread a hook that replaces itself with that thread's profiler on its
# first call), cleared on SIGUSR1 once the server is warm, all merged and dumped at exit.
LAUNCHER = r"""
import atexit, cProfile, os, sys, threading
sys.path.insert(0, {tree!r})
out = os.environ.get("PROFILE_HTTP_OUT")
if out:
    profiles = []
    guard = threading.Lock()
    import signal, time
    def _own_profiler(*_args):
        sys.setprofile(None)
        p = cProfile.Profile(time.thread_time)
        with guard:
            profiles.append(p)
        p.enable()
    threading.setprofile(_own_profiler)
    main_profile = cProfile.Profile(time.thread_time)
    profiles.append(main_profile)
    def _dump():
        import pstats
        merged = None
        for p in profiles:
            p.disable()
            try:
                merged = pstats.Stats(p) if merged is None else merged.add(p) or merged
            except TypeError:  # a profiler that never ran
                pass
        if merged is not None:
            merged.dump_stats(out)
    atexit.register(_dump)
    # uvicorn re-raises the SIGTERM it handled once it has shut down: exit through Python, so atexit runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    def _clear(*_):  # SIGUSR1, sent once warmed up: forget start-up and the warm-up's first requests
        for p in profiles:
            p.clear()
    signal.signal(signal.SIGUSR1, _clear)
    main_profile.enable()
from modelledger.cli import main
sys.exit(main())
"""


def start_server(d: str, tree: str, versions: int, sources: str, profile_out: str | None) -> tuple[subprocess.Popen,
                                                                                                   dict[str, Any]]:
    home = os.path.join(d, "home")
    secret = ours_fill(home, 10, versions)
    port = free_port()
    env = ours_env(home)
    env["MLEDGER_SOURCES"] = sources
    if profile_out:
        env["PROFILE_HTTP_OUT"] = profile_out
    argv = [sys.executable, "-c", LAUNCHER.format(tree=tree), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    with open(os.path.join(d, "server.log"), "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc)
    return proc, {"server": "modelledger", "port": port, "token": secret, "inline": takes_inline(tree)}


def stop_server(proc: subprocess.Popen) -> None:
    stop_group(proc, 60)


def drive(proc: subprocess.Popen, target: dict[str, Any], op: str, clients: int, n: int, versions: int,
          files: _FolderServer, src: str, tag: str) -> dict[str, Any]:
    """``clients`` processes of ``op``, ``n`` each; the server's CPU per operation over them."""
    task = {**target, "op": op, "n": n, "models": 10, "expect": versions // 10, "salt": hash(tag) % 10_000,
            "start_at": time.time() + 0.5 + 0.1 * clients}

    def sources(c: int) -> list[str]:
        if op != "mlflow-create":
            return []
        made = small_files(os.path.join(src, f"{tag}-c{c}"), n, seed=hash((tag, c)) % 100_000)
        return [files.url + os.path.relpath(p, src) for p in made]

    before = session_cpu(proc.pid)
    procs = [subprocess.Popen([sys.executable, str(CLIENT), json.dumps({**task, "client": c, "sources": sources(c)})],
                              stdout=subprocess.PIPE, text=True) for c in range(clients)]
    outs = [p.communicate()[0] for p in procs]
    cpu = session_cpu(proc.pid) - before
    results = [json.loads(o.split("RESULT ", 1)[1]) for o in outs]
    done = sum(len(r["ms"]) for r in results)
    errors = sum(r["errors"] for r in results)
    if errors:
        print(f"  {op}: {errors} errors, first: {next(r['first_error'] for r in results if r['errors'])}",
              file=sys.stderr)
    return {"cpu_ms": 1000 * cpu / max(1, done), "p50": median([x for r in results for x in r["ms"]]),
            "done": done, "errors": errors}


def one_server(tree: str, ops: list[str], args: argparse.Namespace, tag: str,
               profile_out: str | None = None) -> dict[str, dict[str, Any]]:
    got: dict[str, dict[str, Any]] = {}
    with temp_dir(None, "profile-http-") as d:
        src = os.path.join(d, "sources")
        os.makedirs(src)
        with _FolderServer(src) as files:
            proc, target = start_server(d, tree, args.versions, files.url, profile_out)
            try:
                for op in ops:  # warm: first use of each path in this process (imports, caches)
                    drive(proc, target, op, 1, 20, args.versions, files, src, f"{tag}w")
                if profile_out:
                    os.kill(proc.pid, signal.SIGUSR1)
                    time.sleep(0.2)
                for op in ops:
                    got[op] = drive(proc, target, op, args.clients, args.n, args.versions, files, src, tag)
            finally:
                stop_server(proc)
    return got


def print_profile(path: str, done: int, top: int) -> None:
    stats = pstats.Stats(path)
    per = 1000 / max(1, done)
    rows = stats.stats  # type: ignore[attr-defined]
    for index, title in ((2, "own time"), (3, "cumulative time")):
        print(f"\n-- top by {title}, ms per request (cProfile inflates call-heavy code)")
        print(f"{'own':>8} {'cum':>8} {'calls':>8}  function")
        ordered = sorted(rows.items(), key=lambda kv: kv[1][index], reverse=True)
        for (file, line, name), (_cc, nc, tt, ct, _callers) in ordered[:top]:
            short = file.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
            print(f"{tt * per:8.3f} {ct * per:8.3f} {nc:8d}  {short}:{line} {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", default="tag", help=f"comma-separated, of {', '.join(OPS)}")
    parser.add_argument("--n", type=int, default=500, help="operations per client per run")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--versions", type=int, default=200, help="versions of each of the 10 searched models")
    parser.add_argument("--profile", action="store_true", help="cProfile in every server thread (one op kind)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose server runs (default: this one)")
    parser.add_argument("--compare", metavar="TREE", help="alternate with TREE's server, --rounds times")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ops = args.op.split(",")
    for op in ops:
        if op not in OPS:
            raise SystemExit(f"unknown op {op!r}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if args.profile:
        if len(ops) != 1:
            raise SystemExit("--profile: one --op at a time")
        with temp_dir(None, "profile-out-") as out:
            path = os.path.join(out, "server.prof")
            got = one_server(args.tree, ops, args, "p", path)
            r = got[ops[0]]
            print(f"{r['done']} {ops[0]} x {args.clients} under cProfile: server CPU {r['cpu_ms']:.3f} ms/op, "
                  f"p50 {r['p50']:.2f} ms (load {load})")
            print_profile(path, r["done"], args.top)
        return 0
    sides = [("this", args.tree)] + ([("base", args.compare)] if args.compare else [])
    got: dict[str, dict[str, list[dict[str, Any]]]] = {name: {op: [] for op in ops} for name, _ in sides}
    for r in range(args.rounds):
        for name, tree in (sides if r % 2 else sides[::-1]):
            res = one_server(tree, ops, args, f"{r}{name[0]}")
            for op in ops:
                got[name][op].append(res[op])
            print(f"round {r + 1} {name}: " + ", ".join(f"{op} {res[op]['cpu_ms']:.3f} ms CPU p50 {res[op]['p50']:.2f}"
                                                      for op in ops) + f" (load {os.getloadavg()[0]:.1f})",
                  flush=True)
    print(f"\nserver CPU per op, {args.clients} client(s), {args.n} ops each, medians of {args.rounds} "
          f"(load at start {load}, end {os.getloadavg()[0]:.1f})")
    for op in ops:
        mine = [x["cpu_ms"] for x in got["this"][op]]
        line = f"  {op:14} this {median(mine):.3f} ms (p50 {median([x['p50'] for x in got['this'][op]]):.2f} ms)"
        if args.compare:
            base = [x["cpu_ms"] for x in got["base"][op]]
            ratios = [a / b for a, b in zip(mine, base, strict=True)]
            line += (f"  base {median(base):.3f} ms (p50 {median([x['p50'] for x in got['base'][op]]):.2f} ms)"
                     f"  ratio {median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})")
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
