"""CPU time of ``SQLiteRecorder.append`` (50,000 events in batches of 1,000) for the source tree given.

    .venv/bin/python scripts/bench_append_cpu.py [TREE]     # TREE: a checkout (default: this one)

The database sits on /dev/shm with ``synchronous=NORMAL`` and only the process's CPU time is counted, so the
figure is the append's own work (sealing, inserts) and moves little with the machine's load. To compare two
versions of the code, unpack the other one (``git archive REV | tar -x -C DIR``) and run this script for each
tree in turn, alternating, several times; the events are the same (``bench.make_events``, seed 2).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

TREE = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
sys.path[:0] = [str(TREE), str(TREE / "scripts")]

from bench import make_events  # noqa: E402

from eventstore.sqlite import SQLiteRecorder  # noqa: E402

EVENTS, BATCH = 50_000, 1_000


def main() -> None:
    events = make_events(EVENTS, seed=2)
    chunks = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as d:
        recorder = SQLiteRecorder(os.path.join(d, "events.db"), synchronous="NORMAL")
        start = time.process_time()
        for chunk in chunks:
            recorder.append(chunk)
        cpu = time.process_time() - start
        assert recorder.head() == EVENTS
        recorder.close()
    print(f"{TREE}: {EVENTS / cpu:,.0f} events/s of CPU time (SQLiteRecorder.append, batches of {BATCH})")


if __name__ == "__main__":
    main()
