"""Acceptance, Redis broker (the real server — db 15 shared, each registry under its own namespace — and
fakeredis with Lua): ``register(wait=False)``
returns ``pending`` with a job that carries the log position only; a worker makes the version ``ready``;
redelivered / duplicated messages append exactly one ArtifactStored."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from artifact_support import DEAD_REDIS_URL, events, outcomes, sha256_file
from services import wait_for

from workers import actors
from workers import broker as broker_mod


def _queue_key(broker: dramatiq.Broker) -> str:
    return f"{broker.namespace}:{actors.INGEST_QUEUE}"


class Seen(dramatiq.Middleware):
    """Records every message a worker finished (id, exception)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: list[tuple[str, BaseException | None]] = []

    def after_process_message(self, broker, message, *, result=None, exception=None):
        with self.lock:
            self.done.append((message.message_id, exception))

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message, exception=RuntimeError("skipped"))

    def ids(self) -> set[str]:
        with self.lock:
            return {mid for mid, _ in self.done}


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.redis), "fakeredis"])
def redis_registry(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[object, dramatiq.Broker]]:
    """A Registry whose ingest jobs go to a RedisBroker (the real Redis, or fakeredis[lua]); no worker runs."""
    from modelledger import Registry

    if request.param == "real":
        url = request.getfixturevalue("redis_url")
        reg = Registry.open(home, broker=url, actor="tester@test")
        broker = reg.broker
    else:
        import fakeredis  # with lupa (Lua), both in the test extra
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.middleware import CurrentMessage

        # Open on a (never contacted) Redis URL so the registry runs in Redis mode, then move the actors.
        reg = Registry.open(home, broker=DEAD_REDIS_URL, actor="tester@test")
        broker = RedisBroker(client=fakeredis.FakeRedis(), namespace=reg.broker.namespace,
                             heartbeat_timeout=broker_mod.HEARTBEAT_TIMEOUT_MS)
        broker.add_middleware(CurrentMessage())
        broker_mod.use(broker)
    assert not reg.embedded
    try:
        yield reg, broker
    finally:
        reg.close()


def _start_worker(broker: dramatiq.Broker, seen: Seen) -> dramatiq.Worker:
    broker.add_middleware(seen)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    return worker


def test_no_wait_pending_then_worker_ready_and_duplicates_append_once(worker_sources, redis_registry, home: Path,
                                                                      tmp_path: Path) -> None:
    reg, broker = redis_registry
    src = tmp_path / "model.bin"
    src.write_bytes(b"redis weights " * 10_000)

    v = reg.register("rmodel", artifact=str(src), wait=False)
    assert v.status == "pending"
    # The job is in Redis and carries ids only: the position of the VersionRegistered event and the
    # registry's id (no path, no bytes).
    bodies = [json.loads(b) for b in broker.client.hvals(_queue_key(broker) + ".msgs")]
    assert [(b["actor_name"], b["args"], b["kwargs"]) for b in bodies] == [
        ("ingest", [v.position, reg.registry_id], {})]
    assert outcomes(home, "rmodel", 1) == []
    assert reg.get("rmodel@1").status == "pending"

    seen = Seen()
    worker = _start_worker(broker, seen)
    try:
        ready = reg.wait(v, timeout=60)
        assert ready.status == "ready"
        assert ready.artifact["digest"] == sha256_file(src)

        # A duplicate message (what a redelivery or a sweep re-send looks like) ...
        dup = actors.ingest.send(v.position, reg.registry_id)
        wait_for(lambda: dup.message_id in seen.ids(), 60, "the duplicate ingest message to be processed")
        # ... and the actor body called again directly: both harmless.
        assert actors.ingest_version(v.position, reg.registry_id) == "already"
    finally:
        worker.stop(timeout=10_000)
    assert all(exc is None for _, exc in seen.done), seen.done
    assert len(outcomes(home, "rmodel", 1)) == 1
    assert events(home, "ArtifactFailed") == []
    assert reg.get("rmodel@1").status == "ready"


@pytest.mark.redis
def test_mledger_worker_run_in_thread_serves_pending_versions(worker_sources, redis_url: str, home: Path, tmp_path: Path,
                                                              mledger_argv, child_env) -> None:
    """The product's worker entry point (``modelledger.worker.run``): its start-up sweep re-sends what is
    pending while the original jobs are still queued — every version is stored exactly once."""
    from modelledger import Registry
    from modelledger.config import Config
    from modelledger.worker import run

    srcs = []
    for i in range(3):
        p = tmp_path / f"m{i}.bin"
        p.write_bytes(f"weights {i} ".encode() * 5_000)
        srcs.append(p)
    with Registry.open(home, broker=redis_url, actor="tester@test") as reg:
        versions = [reg.register(f"w{i}", artifact=str(p), wait=False) for i, p in enumerate(srcs)]
        assert {v.status for v in versions} == {"pending"}
        queue = _queue_key(reg.broker)

    stop = threading.Event()
    config = Config.load(home, broker=redis_url, actor="tester@test")
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            run(config, threads=2, sweep_interval=5, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for i, p in enumerate(srcs):
            # `mledger wait` through the console script, as a pipeline would.
            done = subprocess.run([*mledger_argv, "wait", f"w{i}@1", "--timeout", "60", "--json"],
                                  env=child_env(home, MLEDGER_BROKER=redis_url), capture_output=True,
                                  text=True, timeout=90)
            assert done.returncode == 0, done.stderr
            got = json.loads(done.stdout)
            assert got["status"] == "ready"
            assert got["artifact"]["digest"] == sha256_file(p)
        # Let the queue drain (the sweep's duplicates), then stop: in-flight messages finish first.
        import redis

        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: client.llen(queue) == 0, 60,
                 "the ingest queue to drain")
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), "the worker did not stop"
    assert errors == []
    for i in range(3):
        assert len(outcomes(home, f"w{i}", 1)) == 1
    assert events(home, "ArtifactFailed") == []


def test_concurrent_duplicate_ingests_store_once(worker_sources, redis_registry, home: Path, tmp_path: Path) -> None:
    """Four deliveries of the same job running at the same moment (what redelivery plus a sweep can
    produce): one records ArtifactStored, the others find it and append nothing."""
    reg, _broker = redis_registry
    src = tmp_path / "race.bin"
    src.write_bytes(b"raced weights " * 200_000)
    v = reg.register("race", artifact=str(src), wait=False)
    assert v.status == "pending"

    start = threading.Barrier(4)
    results: list[str] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            start.wait(10)
            results.append(actors.ingest_version(v.position, reg.registry_id))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results) == ["already", "already", "already", "stored"]
    assert len(outcomes(home, "race", 1)) == 1
    assert reg.get("race@1").status == "ready"
    assert reg.get("race@1").artifact["digest"] == sha256_file(src)
    assert not list((home / "artifacts" / "tmp").glob("*")), "a losing delivery left its temp file"
