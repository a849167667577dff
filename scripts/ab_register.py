"""Paired A/B of the create row's register between two source trees, in one run.

    .venv/bin/python scripts/ab_register.py [--rounds 40] [--batch 50] TREE_A TREE_B

One long-lived process per tree (``PYTHONPATH=<tree>``), each with its own fresh embedded registry, registers
distinct ~400 B files over 4 models with ``params`` (``bench_peers.ours_create``'s loop). The processes take
turns, a batch at a time (A B, then B A, ...), so both see the same moments of a shared machine; per batch each
reports its CPU per register (``time.process_time``: the commit's fsync wait is not in it) and its wall time.
Printed: the medians, and the medians of the per-round ratios B / A. A profile, not a target: no timing here
is asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_SIDE = r"""
import os, shutil, sys, tempfile, time
sys.path.insert(0, os.path.join(sys.argv[1], "scripts"))
from _benchlib import small_files
from modelledger import Registry
d = tempfile.mkdtemp(prefix="ab-register-")
try:
    files = small_files(os.path.join(d, "src"), int(sys.argv[2]), seed=7)
    reg = Registry.open(home=os.path.join(d, "home"), broker="embedded", actor="bench", client="ab")
    warm = os.path.join(d, "warm.bin")
    with open(warm, "wb") as f:
        f.write(b"MLBENCH warm-up" * 20)
    reg.register("warmup", artifact=warm)
    i = 0
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            v = reg.register(f"bench/m{i % 4}", artifact=files[i], params={"i": i})
            assert v.status == "ready", v
            i += 1
        c1, t1 = time.process_time(), time.perf_counter()
        print(f"{1e6 * (c1 - c0) / n:.1f} {1e6 * (t1 - t0) / n:.1f}", flush=True)
    reg.close()
finally:
    shutil.rmtree(d, ignore_errors=True)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, help="the two source trees (A is the baseline)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args(argv)
    sides = []
    for tree in args.trees:
        tree = os.path.abspath(tree)
        proc = subprocess.Popen([sys.executable, "-c", _SIDE, tree, str(args.rounds * args.batch)], cwd=tree,
                                env=dict(os.environ, PYTHONPATH=tree), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{tree}: the side did not start")
        sides.append((tree, proc, [], []))
    for r in range(args.rounds):
        for _tree, proc, cpu, wall in (sides if r % 2 == 0 else sides[::-1]):
            proc.stdin.write(f"{args.batch}\n")
            proc.stdin.flush()
            c, w = map(float, proc.stdout.readline().split())
            cpu.append(c)
            wall.append(w)
    for tree, proc, cpu, wall in sides:
        proc.stdin.close()
        proc.wait()
        print(f"{tree}: CPU per register median {statistics.median(cpu):.0f} µs, "
              f"wall {statistics.median(wall):.0f} µs")
    (_, _, cpu_a, wall_a), (_, _, cpu_b, wall_b) = sides
    cpu = statistics.median(b / a for a, b in zip(cpu_a, cpu_b, strict=True))
    wall = statistics.median(b / a for a, b in zip(wall_a, wall_b, strict=True))
    print(f"B / A over {args.rounds} rounds of {args.batch}: CPU {cpu:.3f}, wall {wall:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
