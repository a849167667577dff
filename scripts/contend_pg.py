"""Writers contending on one model: N client processes each tagging ``m@5`` OPS times at once (each its own
``PostgresRecorder``, the handler's commands), on a fresh database; prints tags/s over all of them and the first
four processes' one-trip counts (hits, misses, commands that skipped optimism while backing off).

    .venv/bin/python scripts/contend_pg.py TREE [N [OPS]]     # e.g. this tree, then a worktree of the base

A probe of the optimistic one-trip commands under contention (docs/performance.md, "One round trip per
command"), not a benchmark: run it under the bench lock, alternating trees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_pg import database  # noqa: E402

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from eventstore import commands as c
from eventstore.handler import execute
from eventstore.postgres import PostgresRecorder
from projections.catalog import CatalogProjection
r = PostgresRecorder(sys.argv[2])
p = CatalogProjection(r)
time.sleep(max(0, float(sys.argv[4]) - time.time()))
t = time.perf_counter()
for k in range(int(sys.argv[5])):
    execute(r, p, c.Tag("m@5", {"c" + sys.argv[3]: str(k)}), {"actor": "t"})
print(json.dumps({"s": time.perf_counter() - t, "counts": getattr(r, "one_trip_counts", None)}))
r.close()
"""

SETUP = r"""
import sys
sys.path.insert(0, sys.argv[1])
from eventstore import commands as c
from eventstore.handler import execute
from eventstore.postgres import PostgresRecorder
from projections.catalog import CatalogProjection
r = PostgresRecorder(sys.argv[2])
p = CatalogProjection(r)
for i in range(10):
    execute(r, p, c.Register("m", {"source": f"s{i}", "digest": "sha256:" + f"{i}" * 64, "size": 1}), {"actor": "t"})
r.close()
"""


def main() -> None:
    tree = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    ops = int(sys.argv[3]) if len(sys.argv) > 3 else 75
    with database("mledger_contend") as url:
        subprocess.run([sys.executable, "-c", SETUP, tree, url], check=True)
        start = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, tree, url, str(i), str(start), str(ops)],
                                  stdout=subprocess.PIPE, text=True) for i in range(n)]
        outs = [json.loads(proc.communicate()[0]) for proc in procs]
    wall = max(o["s"] for o in outs)
    print(tree, f"{n * ops / wall:.0f} tags/s", [o["counts"] for o in outs][:4])


if __name__ == "__main__":
    main()
