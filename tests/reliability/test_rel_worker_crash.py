"""``mledger worker`` (Redis broker, the real Redis, db 15) SIGKILLed during the ingest of a 256 MiB file,
10 times, at varied points: as soon as the copy to a ``.part`` temp file has started, plus a random extra
delay (so some kills land mid-copy, some after the blob was published but before its outcome was recorded).
At least half the kills must land before the outcome was recorded; on a machine fast enough to finish most
ingests within the delays, extra rounds (killed as soon as the copy starts, at most 10) are run until they
have, so the proof of exercise never depends on how fast the machine is.

After each kill: no partial blob under a final name (every file under ``sha256/`` rehashes to its name); a
new worker (``--sweep-interval 1``) completes the version: ``ready``, the digest of the bytes (hashlib),
exactly one ``ArtifactStored``. Temp files the kills left behind are removed by the worker's sweep once they
are older than ``modelledger.worker.TMP_MAX_AGE`` (their mtime is set back with os.utime: the threshold of
a child process cannot be patched) — and a fresh one is left alone, so the threshold is honoured both ways.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from reliability_support import (
    Worker,
    assert_store_sound,
    child_env,
    events,
    sha256_file,
    store_blobs,
    temp_files,
)
from services import wait_for

SIZE = 256 * 1024 * 1024
KILLS = 10
MAX_ROUNDS = 2 * KILLS


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 MiB, made once: sparse zeros with 1 MiB of noise every 32 MiB. Each round rewrites its first bytes,
    so every round's content is new (no dedup) without writing the whole file again."""
    path = tmp_path_factory.mktemp("big") / "big.dat"
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for offset in range(0, SIZE, 32 * 1024 * 1024):
            f.seek(offset)
            f.write(b"NOISE\n" + os.urandom(1024 * 1024))
    return path


def _stored(db: Path, name: str, number: int) -> list[dict]:
    return [e for e in events(db, "ArtifactStored") if e["data"]["name"] == name and e["data"]["version"] == number]


@pytest.mark.redis
@pytest.mark.slow
# Its own waits (120 s for a copy to start, 180 s for a version to leave pending, per round) say what went
# wrong; the run-wide 300 s per test would cut in first with a bare traceback, so this test gets room for them.
@pytest.mark.timeout(3600)
def test_worker_sigkilled_mid_ingest_ten_times(redis_url: str, tmp_path: Path, big_file: Path, figures,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from modelledger import Registry
    from modelledger.worker import TMP_MAX_AGE

    monkeypatch.setenv("MLEDGER_SOURCES", str(big_file.parent))  # the worker reads it (the path under test)
    rnd = random.Random(4242)
    home = tmp_path / "home"
    db = home / "registry.db"
    artifacts = home / "artifacts"
    env = child_env(home, MLEDGER_BROKER=redis_url)
    log = tmp_path / "worker.log"
    argv = ("--threads", "1", "--sweep-interval", "1")
    expected: dict[int, str] = {}
    phases: Counter[str] = Counter()
    checked_blobs: set[str] = set()
    swept = 0
    with Registry.open(home, broker=redis_url, actor="reliability@test") as reg:
        worker = Worker(env, log, *argv)
        try:
            i = -1
            last = False
            while not last:
                i += 1
                with open(big_file, "r+b") as f:
                    f.write(f"ROUND {i:04d} {rnd.random()}\n".encode())
                expected[i + 1] = sha256_file(big_file)
                leftovers = set(temp_files(artifacts))
                v = reg.register("big", artifact=str(big_file), wait=False)
                assert (v.version, v.status) == (i + 1, "pending")

                wait_for(lambda left=leftovers: set(temp_files(artifacts)) - left, 120,
                         f"the worker to start copying to a .part file (log: {worker.tail()})", interval=0.002)
                # Extra rounds (see above) kill at once: a 256 MiB copy, fsync and hash take far longer than
                # the poll that saw the .part file appear.
                time.sleep(rnd.uniform(0.0, 0.7) if i < KILLS else 0.0)
                worker.kill()

                # What the kill interrupted, and that no partial blob sits under a final name.
                published = (artifacts / "sha256" / expected[i + 1][7:9] / expected[i + 1][9:11]
                             / expected[i + 1][7:]).exists()
                recorded = bool(_stored(db, "big", i + 1))
                phases["recorded" if recorded else "published, not recorded" if published else "mid-copy"] += 1
                before_record = phases["mid-copy"] + phases["published, not recorded"]
                last = (i + 1 >= KILLS and before_record >= KILLS // 2) or i + 1 >= MAX_ROUNDS
                for blob in store_blobs(artifacts):
                    if blob.name not in checked_blobs:
                        assert sha256_file(blob) == "sha256:" + blob.name, f"partial blob under final name {blob}"
                        checked_blobs.add(blob.name)

                # Stale temps (set back past TMP_MAX_AGE) go with the next worker's sweep, except in the last
                # round, where the fresh one is kept to show the sweep honours the threshold.
                left = temp_files(artifacts)
                if not last:
                    old = time.time() - 2 * TMP_MAX_AGE
                    for p in left:
                        os.utime(p, (old, old))
                worker = Worker(env, log, *argv)
                done = wait_for(lambda n=i + 1: reg.get(f"big@{n}").status != "pending", 180,
                                f"big@{i + 1} to leave pending (log: {worker.tail()})", interval=0.05)
                assert done
                version = reg.get(f"big@{i + 1}")
                assert version.status == "ready", (version.artifact, worker.tail())
                assert version.artifact["digest"] == expected[i + 1]
                assert len(_stored(db, "big", i + 1)) == 1
                if not last:
                    wait_for(lambda left=left: not any(p.exists() for p in left), 30,
                             f"the sweep to remove stale temps {left} (log: {worker.tail()})")
                    swept += len(left)

            # The last round's leftovers are fresh: two more sweeps later they are still there ...
            fresh = [p for p in left if p.exists()]
            time.sleep(2.5)
            assert all(p.exists() for p in fresh), "the sweep removed a temp file younger than TMP_MAX_AGE"
            # ... until they are as old as the threshold.
            old = time.time() - 2 * TMP_MAX_AGE
            for p in fresh:
                os.utime(p, (old, old))
            wait_for(lambda: not temp_files(artifacts), 30, f"the sweep to remove {fresh} (log: {worker.tail()})")
            swept += len(fresh)
            # Duplicate jobs (the sweep re-sends what has been pending > 1 s, during the copy) appended nothing.
            time.sleep(2)
        finally:
            worker.stop()

        for number, digest in expected.items():
            version = reg.get(f"big@{number}")
            assert (version.status, version.artifact["digest"]) == ("ready", digest)
            assert len(_stored(db, "big", number)) == 1, f"big@{number} has several ArtifactStored"
            dest = tmp_path / f"pulled-{number}"
            if number in (1, KILLS):
                reg.pull(f"big@{number}", str(dest))
                assert sha256_file(dest) == digest
                dest.unlink()
        blobs = assert_store_sound(artifacts)
        assert blobs == len(expected), f"{blobs} blobs for {len(expected)} distinct contents"
        assert not temp_files(artifacts)
        assert phases["mid-copy"] + phases["published, not recorded"] >= KILLS // 2, \
            f"most kills came after the ingest was recorded, even in {i + 1} rounds: {phases}"
        report = reg.audit()
        assert report.ok, report.to_json()

    figures.add("worker crash: SIGKILLs injected (mid-ingest)", len(expected))
    for phase, n in sorted(phases.items()):
        figures.add(f"worker crash: kills that left the ingest {phase}", n)
    figures.add("worker crash: stale .part files removed by the sweep", swept)
    figures.add("worker crash: blobs rehashed (MiB)", blobs * SIZE // (1024 * 1024))
