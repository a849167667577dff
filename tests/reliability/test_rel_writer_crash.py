"""A writer SIGKILLed in the middle of batch appends (``Registry.append_batch`` of 500–2,000 events), 20 times
at random points: the log holds whole batches only (a batch whose append returned is all there; the one in
flight is all there or absent), the hash chain verifies, and the catalog catches up to equal a rebuild.

The child prints ``B <batch>`` right before an append and ``E <batch>`` right after. The moment of death is
deterministic, not a race with the parent's clock: in its chosen batch the child arms SQLite's progress handler,
which SIGKILLs the process after a random number of VM instructions (counted only while a transaction is
open), so every kill lands inside the append's transaction whatever the speed of the machine. Every fourth
crash instead hits the catalog catch-up that follows a batch (``P``), so a projection killed half way is
covered too. Crashes are spread over four homes to keep the replays (which grow with the log) short.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from reliability_support import child_env, digest_equals_rebuild, raw_rows, verify_log
from services import reap

CRASHES = 20
HOMES = 4

CHILD = r"""
import os, random, signal, sys
from modelledger import Registry
from eventstore.events import NewEvent

home, prefix, seed, project = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
target, budget = int(sys.argv[5]), int(sys.argv[6])
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
        # Failed at once: a version left pending would be ingested by the sweep of a later open once it is
        # 30 s old (appending outcome events), which made the test depend on how fast the machine is.
        out.append(NewEvent(s, "ArtifactFailed", {"name": name, "version": 1, "reason": "imported without bytes"}))
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
    conn = reg.recorder.connection()  # the thread's connection: appends and catch-ups run on it
    left = [budget]

    def die():
        # Called every 100 SQLite VM instructions; counts only inside a transaction (the append's, or the
        # catch-up's), then dies there.
        if conn.in_transaction:
            left[0] -= 1
            if left[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)
        return 0

    k = 0
    while True:
        bid = f"{prefix}b{k}"
        events = batch(bid)
        if k == target and not project:
            conn.set_progress_handler(die, 100)
        print("B", bid, flush=True)
        reg.append_batch(events)
        print("E", bid, flush=True)
        if project:
            print("P", bid, flush=True)
            if k == target:
                conn.set_progress_handler(die, 100)
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
    """Run the child until it kills itself at its chosen moment; returns (batches finished, batch in flight
    or [])."""
    target = rnd.randint(0, 1)  # let this many batches pass untouched first
    # Hundreds of VM instructions: a 500-event append runs tens of thousands, so the kill lands inside it
    # (should it not, the handler stays armed and the next transaction dies instead).
    budget = rnd.randint(1, 300)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home), prefix, str(rnd.randrange(1 << 30)),
                             "1" if in_projection else "0", str(target), str(budget)], env=child_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == -signal.SIGKILL, f"the child did not die at its kill point: {err[-3000:]}"
    finally:
        reap(proc)
    lines = [line.split() for line in out.splitlines()]
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
        else:
            assert in_flight, f"crash {n}: the kill did not land inside an append"
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
        lag = len(rows) - _raw_checkpoint(db)
        if in_projection:
            # Killed inside the catch-up of a batch that was committed (or, if the handler outlived it,
            # inside the next append): the checkpoint was left behind, or a batch was in flight.
            assert lag or in_flight, f"crash {n}: the kill did not land inside a catch-up or an append"
        lag_left += lag

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
    assert lag_left, "no crash left the catalog behind the log: the catch-up after a crash was not exercised"

    figures.add("writer crash: SIGKILLs injected", CRASHES)
    figures.add("writer crash: kills inside an append (batch in flight)", mid_batch)
    figures.add("writer crash: in-flight batches found committed whole", committed_in_flight)
    figures.add("writer crash: kills during a catalog catch-up", mid_projection)
    figures.add("writer crash: unprojected events left by crashes, caught up", lag_left)
    figures.add("writer crash: events verified (chain, after each crash)", events_checked)
