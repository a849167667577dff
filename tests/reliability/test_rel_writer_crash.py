"""A writer SIGKILLed in the middle of batch appends (``Registry.append_batch`` of 500–2,000 events), 20 times
at random points: the log holds whole batches only (a batch whose append returned is all there; the one in
flight is all there or absent), the hash chain verifies, and the catalog catches up to equal a rebuild.

The child prints ``B <batch>`` right before an append and ``E <batch>`` right after; the parent kills it a
random few milliseconds after a chosen ``B`` line, so most kills land inside the append's transaction. Every
fourth crash instead hits the catalog catch-up that follows a batch (``P``), so a projection killed half way
is covered too. Crashes are spread over four homes to keep the replays (which grow with the log) short.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from reliability_support import child_env, digest_equals_rebuild, raw_rows, verify_log
from services import reap

CRASHES = 20
HOMES = 4

CHILD = r"""
import random, sys
from modelledger import Registry
from eventstore.events import NewEvent

home, prefix, seed, project = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
rnd = random.Random(seed)

def batch(bid):
    size = rnd.randint(500, 2000)
    names = [f"{bid}-{j}" for j in range(rnd.randint(1, 3))]
    out = []
    for name in names:
        s = "model-" + name
        out.append(NewEvent(s, "ModelRegistered", {"name": name, "description": "crash " + bid, "tags": {}}))
        out.append(NewEvent(s, "VersionRegistered", {
            "name": name, "version": 1, "parent": None, "description": "", "params": {"b": bid}, "structure": {},
            "optimizer": {}, "tags": {}, "artifact": {"source": "/nowhere/" + name}, "status": "pending"}))
    i = 0
    while len(out) < size:
        name = rnd.choice(names)
        if i % 3 == 0:
            out.append(NewEvent("model-" + name, "MetricsRecorded", {"name": name, "version": 1, "metrics": {"i": i}}))
        else:
            out.append(NewEvent("model-" + name, "Tagged", {"name": name, "version": rnd.choice([None, 1]),
                                                           "tags": {f"k{i % 7}": f"{bid}:{i}"}}))
        i += 1
    meta = {"batch": bid, "size": len(out)}
    return [NewEvent(e.stream, e.type, e.data, meta) for e in out]

with Registry.open(home, actor="crasher") as reg:
    k = 0
    while True:
        bid = f"{prefix}b{k}"
        events = batch(bid)
        print("B", bid, flush=True)
        reg.append_batch(events)
        print("E", bid, flush=True)
        if project:
            print("P", bid, flush=True)
            reg.models()  # the catalog catches up with what was just appended
            print("Q", bid, flush=True)
        k += 1
"""


def _raw_checkpoint(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT position FROM projection_checkpoint WHERE name = 'catalog'").fetchone()
        return row[0] if row else 0
    finally:
        conn.close()


def _crash_once(home: Path, prefix: str, rnd: random.Random, in_projection: bool) -> tuple[list[str], list[str]]:
    """Run the child until its chosen moment, SIGKILL it; returns (batches finished, batch in flight or [])."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home), prefix, str(rnd.randrange(1 << 30)),
                             "1" if in_projection else "0"], env=child_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    marker = "P" if in_projection else "B"
    target = rnd.randint(0, 1)  # let this many batches pass untouched first
    lines: list[str] = []
    try:
        seen = 0
        while True:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the child ended before its kill point: {proc.stderr.read()[-3000:]}")
            lines.append(line.split())
            if lines[-1][0] == marker:
                if seen == target:
                    break
                seen += 1
        time.sleep(rnd.uniform(0.0, 0.15 if in_projection else 0.02))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        lines += [line.split() for line in proc.stdout.read().splitlines()]
    finally:
        reap(proc)
    begun = [b for kind, b in lines if kind == "B"]
    ended = [b for kind, b in lines if kind == "E"]
    return ended, [b for b in begun if b not in ended]


@pytest.mark.slow
def test_sigkill_mid_append_batch_leaves_whole_batches_and_a_catalog_that_catches_up(tmp_path: Path,
                                                                                      figures) -> None:
    from modelledger import Registry

    rnd = random.Random(20261)
    homes = [tmp_path / f"home{h}" for h in range(HOMES)]
    for home in homes:
        Registry.open(home, actor="setup").close()
    finished: dict[Path, set[str]] = defaultdict(set)
    mid_batch = committed_in_flight = mid_projection = lag_left = events_checked = 0
    for n in range(CRASHES):
        home = homes[n % HOMES]
        db = home / "registry.db"
        in_projection = n % 4 == 3
        ended, in_flight = _crash_once(home, f"c{n}", rnd, in_projection)
        finished[home].update(ended)
        if in_projection:
            mid_projection += 1
        elif in_flight:
            mid_batch += 1

        # Straight from the file, before anything opens it: whole batches only, the chain verifies.
        events_checked += verify_log(db)
        rows = raw_rows(db)
        positions: dict[str, list[int]] = defaultdict(list)
        sizes: dict[str, int] = {}
        for r in rows:
            meta = json.loads(r[6])
            positions[meta["batch"]].append(r[0])
            sizes[meta["batch"]] = meta["size"]
        for bid, pos in positions.items():
            assert len(pos) == sizes[bid], f"batch {bid} is torn: {len(pos)} of {sizes[bid]} events"
            assert pos == list(range(pos[0], pos[0] + len(pos))), f"batch {bid} is not contiguous"
        missing = finished[home] - set(positions)
        assert not missing, f"batches whose append returned are gone: {sorted(missing)}"
        for bid in in_flight:
            committed_in_flight += bid in positions
        lag_left += len(rows) - _raw_checkpoint(db)

        # The next opener catches the catalog up; it equals a replay of the whole log.
        with Registry.open(home, actor="checker") as reg:
            head = reg.head()
            assert head == len(rows)
            assert reg.projection.lag() == 0
            for bid in ended:
                assert reg.model(f"{bid}-0").description == "crash " + bid
            digest_equals_rebuild(reg)

    for home in homes:
        with Registry.open(home, actor="checker") as reg:
            report = reg.audit()
            assert report.ok, report.to_json()
    assert mid_batch >= 5, f"only {mid_batch} kills landed inside an append: the test proved little"

    figures.add("writer crash: SIGKILLs injected", CRASHES)
    figures.add("writer crash: kills inside an append (batch in flight)", mid_batch)
    figures.add("writer crash: in-flight batches found committed whole", committed_in_flight)
    figures.add("writer crash: kills during a catalog catch-up", mid_projection)
    figures.add("writer crash: unprojected events left by crashes, caught up", lag_left)
    figures.add("writer crash: events verified (chain, after each crash)", events_checked)
