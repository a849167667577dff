"""What one operation before the timing is worth to MLflow's client on PostgreSQL (the warm-up both sides of
``bench_pg.bench_clients`` now make).

    .venv/bin/python scripts/bench_mlflow_warmup.py [--rounds N] [--calls N]

``bench_pg.mlflow_clients`` with 1 client process, with and without its warm-up, alternating which goes first,
for a version tag and a create (``log_artifact`` + ``create_model_version``); MLflow in its own venv
(``bench_peers.Peer``, made on first use). Printed: each round's rate and the medians with their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import alternate, median  # noqa: E402
from bench_peers import Peer  # noqa: E402
from bench_pg import mlflow_clients  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=40, help="per round (bench_pg's 1-client rows: 40)")
    parser.add_argument("--peers-dir", default=os.path.expanduser("~/.cache/modelledger-bench/peers"))
    args = parser.parse_args(argv)
    peer = Peer("mlflow-pg", Path(args.peers_dir))
    if not peer.ensure():
        print(f"MLflow is not available: {peer.error}")
        return 1
    tmp = tempfile.gettempdir()
    for op in ("tag", "create"):
        warm, cold = alternate(args.rounds, partial(mlflow_clients, peer, tmp, op, 1, args.calls),
                               partial(mlflow_clients, peer, tmp, op, 1, args.calls, warm=False))
        print(f"{op}: warm {', '.join(f'{x:.1f}' for x in warm)} /s; cold {', '.join(f'{x:.1f}' for x in cold)} /s; "
              f"median warm / cold {median(warm) / median(cold):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
