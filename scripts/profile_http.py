"""Where one HTTP request of ``mledger serve`` spends its time: the server in this process (one uvicorn worker,
``yappi`` over every thread: the event loop and the thread pool that runs the routes), driven by
``scripts/peers/http_client.py`` for ``--n`` operations of one kind; the top functions by own and total time.

    .venv/bin/pip install yappi          # a profiling tool, not a dependency of the project
    .venv/bin/python scripts/profile_http.py --op tag --n 500 [--clock cpu|wall] [--top 40]

``--op mlflow-create`` and ``--op mlflow-search`` go through the server's MLflow REST API (``/api/2.0/mlflow``):
a create names a distinct ~400 B file under the server's ``MLEDGER_SOURCES``, served by this process over HTTP
(as ``bench_peers.py --only mlflowclient`` does), which the server fetches and ingests before answering.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _benchlib import add_repo_to_path, small_files, temp_dir  # noqa: E402

add_repo_to_path()

from bench_http import CLIENT, free_port, ours_fill, takes_inline, wait_http  # noqa: E402
from bench_peers import _FolderServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", choices=["create", "tag", "search", "mlflow-create", "mlflow-search"], default="tag")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--versions", type=int, default=200)
    args = parser.parse_args()

    import uvicorn
    import yappi

    with temp_dir(None, "profile-http-") as d:
        home = os.path.join(d, "home")
        secret = ours_fill(home, 10, args.versions)
        src = os.path.join(d, "sources")
        os.makedirs(src)
        files = _FolderServer(src)
        os.environ.update(MLEDGER_HOME=home, MLEDGER_BROKER="embedded", MLEDGER_ACTOR="bench@profile",
                          MLEDGER_SOURCES=files.url)
        from modelledger.server.app import from_environment

        port = free_port()
        config = uvicorn.Config(from_environment(), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        yappi.set_clock_type(args.clock)
        yappi.start()  # every thread, the route threads included
        runner = threading.Thread(target=server.run, daemon=True)
        runner.start()

        class _Proc:
            def poll(self) -> None:
                return None

        wait_http(f"http://127.0.0.1:{port}/api/v1/health", _Proc())  # type: ignore[arg-type]
        yappi.clear_stats()
        task = {"server": "modelledger", "port": port, "token": secret, "op": args.op, "n": args.n,
                "models": 10, "expect": args.versions // 10, "start_at": time.time() + 0.5,
                "inline": takes_inline(None)}

        def sources(c: int) -> list[str]:
            if args.op != "mlflow-create":
                return []
            made = small_files(os.path.join(src, f"c{c}"), args.n, seed=c)
            return [files.url + os.path.relpath(p, src) for p in made]

        procs = [subprocess.Popen([sys.executable, str(CLIENT), json.dumps({**task, "client": c,
                                                                            "sources": sources(c)})],
                                  stdout=subprocess.PIPE, text=True) for c in range(args.clients)]
        t = time.perf_counter()
        outs = [p.communicate()[0] for p in procs]
        elapsed = time.perf_counter() - t
        yappi.stop()
        results = [json.loads(o.split("RESULT ", 1)[1]) for o in outs]
        done = sum(len(r["ms"]) for r in results)
        print(f"{done} {args.op} in {elapsed:.2f} s ({done / elapsed:,.0f}/s under the profiler), "
              f"errors {sum(r['errors'] for r in results)}")
        stats = yappi.get_func_stats()
        per = 1000 / max(1, done)
        for key, title in (("tsub", "own time"), ("ttot", "total time")):
            stats.sort(key, "desc")
            print(f"\n-- top by {title} ({args.clock} clock), ms per request")
            for s in list(stats)[: args.top]:
                print(f"{s.tsub * per:8.3f} {s.ttot * per:8.3f} {s.ncall:8d}  {s.module.split('site-packages/')[-1]}:"
                      f"{s.lineno} {s.name}")
        server.should_exit = True
        runner.join(timeout=10)
        files.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
