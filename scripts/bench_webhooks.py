"""Listing webhook subscriptions on a long log: the index (``eventstore.webhooks.subscriptions``) next to
folding them from the whole log, as listings did before it.

    python scripts/bench_webhooks.py [--events N]

A SQLite registry with 3 subscriptions and N other events (default 200,000 tags). In the same run:

- scan: every event of the log read and the webhook streams folded (what each listing cost before);
- cold: the first listing of a freshly opened registry (the index is built: one pass over the log);
- warm: a listing after one more event (what the worker's sweep and each webhook API call pay from then on).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from _benchlib import add_repo_to_path, temp_dir

add_repo_to_path()

from eventstore.events import NewEvent  # noqa: E402
from eventstore.webhooks import STREAM_PREFIX, fold  # noqa: E402
from modelledger import Registry  # noqa: E402


def scan(reg: Registry) -> int:
    streams: dict[str, list] = {}
    for e in reg.recorder.read(since=0):
        if e.stream.startswith(STREAM_PREFIX):
            streams.setdefault(e.stream, []).append(e)
    return len([fold(v) for v in streams.values()])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    os.environ.setdefault("MLEDGER_WEBHOOK_KEY", "bench-key-0123456789")
    os.environ["MLEDGER_WEBHOOK_URLS"] = "http://127.0.0.1:9/"
    with temp_dir(None, "bench-webhooks") as tmp:
        home = Path(tmp) / "home"
        weights = Path(tmp) / "w.bin"
        weights.write_bytes(b"weights")
        with Registry.open(home) as reg:
            reg.register("m", str(weights))
            for i in range(3):
                reg.create_webhook(f"h{i}", "http://127.0.0.1:9/x", ["model_version.created"])
            for start in range(0, args.events, 5_000):
                reg.append_batch([NewEvent("model-m", "Tagged", {"name": "m", "version": 1,
                                                                 "tags": {"k": str(start + j)}})
                                  for j in range(min(5_000, args.events - start))])
        times: dict[str, list[float]] = {"scan": [], "cold": [], "warm": []}
        for round_ in range(3):
            with Registry.open(home) as reg:
                t = time.perf_counter()
                assert scan(reg) == 3
                times["scan"].append(time.perf_counter() - t)
                t = time.perf_counter()
                assert len(reg.webhooks()) == 3
                times["cold"].append(time.perf_counter() - t)
                reg.tag("m@1", {"round": str(round_)})
                t = time.perf_counter()
                assert len(reg.webhooks()) == 3
                times["warm"].append(time.perf_counter() - t)
            head = reg.head()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"events in the log: {head}; median of 3, ms: scan {med['scan']:.1f}, cold {med['cold']:.1f}, "
          f"warm {med['warm']:.2f}; warm / scan = {med['warm'] / med['scan']:.5f}; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
