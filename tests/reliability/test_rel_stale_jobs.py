"""A late duplicate of an ingest job (Redis broker, private redis-server, ``mledger worker``).

Duplicates of a version's job are normal: the sweep re-sends every version pending for longer than its
interval (so during an S3 outage several retry chains run for one version), and dramatiq redelivers the
message of a killed worker. ``mledger retry`` makes a new request (``ArtifactRequested``, a new position)
for the same version, so a duplicate of the *old* request can arrive after the retry. It must append
nothing: not a second ``ArtifactStored`` for a version already ready, not an ``ArtifactFailed`` that would
flip a ready version (its blob in the store) to ``failed`` once the source is gone; and the duplicate jobs
of one failing request record one failure, not one per message.

These were found failing by this suite (a second ArtifactStored; a ready version flipped to failed; two
ArtifactFailed for one request) and fixed meanwhile in b233ede ("Actors record an outcome only while the
version is still pending, and one failure per request"); they stay as regression tests.

Each case is set up deterministically: the version is registered by the CLI (``--no-wait``: its job queued)
and first fails for real through the worker (its source is removed before the worker starts; the worker's
start-up sweep sends the job a second time), is retried to ``ready``, and then the original job is
delivered once more — the actor body (``ingest_version``) run in this process, as a worker would run it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from reliability_support import Worker, child_env, events, run_cli, sha256_file
from services import wait_for


def _failed_then_retried(reg, private_redis, tmp_path: Path, name: str) -> tuple[int, Path, Worker, Counter[str]]:
    """``name@1`` failed through the worker (source missing), then retried to ready; returns (position of
    the original request, source, running worker, the artifact outcomes recorded before the retry).

    Between the failure and the retry the first worker is stopped and the private broker emptied, so the
    only late duplicate the test sees is the one it sends itself."""
    import redis

    src = tmp_path / f"{name}.bin"
    src.write_bytes(f"bytes of {name}\n".encode() * 1000)
    env = child_env(reg.config.home, MLEDGER_BROKER=private_redis.url)
    # Registered by the CLI (its job is queued by that process), before any worker runs.
    done = run_cli(env, "register", name, "--artifact", str(src), "--no-wait", "--json")
    assert done.returncode == 0, done.stderr
    v = reg.get(f"{name}@1")
    position = reg.catalog().pending_positions()[-1]
    assert reg.recorder.event_at(position).data["name"] == name
    hidden = src.with_suffix(".away")
    src.rename(hidden)
    first = Worker(env, tmp_path / f"worker-{name}.log", "--threads", "1", "--sweep-interval", "60")
    try:
        wait_for(lambda: reg.get(v.ref).status != "pending", 60, f"{v.ref} to fail ({first.tail()})",
                 interval=0.05)
        assert reg.get(v.ref).status == "failed"
        # The queued job and the start-up sweep's re-send of it: let both run before going on.
        try:
            wait_for(lambda: _outcomes(reg.config.home, name)["ArtifactFailed"] > 1, 3, "a second failure")
        except AssertionError:
            pass
    finally:
        first.stop()
    redis.Redis.from_url(private_redis.url).flushdb()
    before_retry = _outcomes(reg.config.home, name)
    hidden.rename(src)
    worker = Worker(env, tmp_path / f"worker-{name}.log", "--threads", "1", "--sweep-interval", "60")
    done = run_cli(env, "retry", v.ref, "--json", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert reg.get(v.ref).status == "ready"
    return position, src, worker, before_retry


def _outcomes(home: Path, name: str) -> Counter[str]:
    return Counter(e["type"] for e in events(home / "registry.db")
                   if e["type"].startswith("Artifact") and e["data"]["name"] == name)


@pytest.mark.redis
def test_late_duplicate_job_after_retry_appends_nothing(worker_sources, private_redis, tmp_path: Path, figures) -> None:
    from modelledger import Registry
    from workers import actors

    home = tmp_path / "home"
    with Registry.open(home, broker=private_redis.url, actor="reliability@test") as reg:
        position, src, worker, _ = _failed_then_retried(reg, private_redis, tmp_path, "dup")
        try:
            figures.add("stale jobs: late duplicates delivered", 1)
            # The late duplicate is delivered: the actor's body runs here, in-process, on the same registry
            # (what a worker does with a sweep re-send or a redelivered message of the original request).
            outcome = actors.ingest_version(position, reg.registry_id)
            figures.add(f"stale jobs: late duplicate outcome '{outcome}'", 1)
        finally:
            worker.stop()
        assert reg.get("dup@1").artifact["digest"] == sha256_file(src)
        assert _outcomes(home, "dup")["ArtifactStored"] == 1, _outcomes(home, "dup")


@pytest.mark.redis
def test_late_duplicate_job_cannot_fail_a_ready_version(worker_sources, private_redis, tmp_path: Path, figures) -> None:
    from modelledger import Registry
    from workers import actors

    home = tmp_path / "home"
    with Registry.open(home, broker=private_redis.url, actor="reliability@test") as reg:
        position, src, worker, _ = _failed_then_retried(reg, private_redis, tmp_path, "flip")
        try:
            digest = reg.get("flip@1").artifact["digest"]
            src.unlink()  # the pipeline cleaned up after a successful registration
            figures.add("stale jobs: late duplicates delivered", 1)
            # The late duplicate is delivered: the actor's body runs here, in-process, on the same registry
            # (what a worker does with a sweep re-send or a redelivered message of the original request).
            outcome = actors.ingest_version(position, reg.registry_id)
            figures.add(f"stale jobs: late duplicate outcome '{outcome}'", 1)
        finally:
            worker.stop()
        assert reg.store().exists(digest)
        version = reg.get("flip@1")
        assert version.status == "ready", f"a ready version became {version.status}: {version.artifact.get('error')}"


def test_one_failure_outcome_per_request(tmp_path: Path) -> None:
    """A late duplicate of a failed request, delivered while a retry of the same version is pending (the source
    still missing), records nothing: the version stays pending for the retry's own outcome, and each request
    ends with exactly one ArtifactFailed. Run in-process and in order, so the duplicate surely runs (with a
    worker it could be skipped by timing and prove nothing: test-quality §0.8)."""
    from eventstore import commands as c
    from eventstore.errors import ArtifactError
    from modelledger import Registry
    from workers import actors

    home = tmp_path / "home"
    src = tmp_path / "twice.bin"
    src.write_bytes(b"bytes of twice\n" * 100)
    with Registry.open(home, broker="embedded", actor="reliability@test") as reg:
        reg.register("twice", str(src))
        reg.delete("twice@1")
        reg.gc(grace_seconds=0)
        # The source is still readable (so undelete and retry ask for the bytes again: a source that cannot be
        # read is not asked for, docs/operations.md), but its bytes changed: every fetch fails verification.
        src.write_bytes(b"other bytes now\n" * 100)
        with pytest.raises(ArtifactError):
            reg.undelete("twice@1")  # request A: its bytes are fetched again and fail
        first = [e.position for e in reg.log() if e.type == "ArtifactRequested"]
        assert reg.get("twice@1").status == "failed" and len(first) == 1
        reg.execute(c.RetryArtifact("twice@1"))  # request B, its job not yet run: pending again
        second = [e.position for e in reg.log() if e.type == "ArtifactRequested"][1]
        assert reg.get("twice@1").status == "pending"

        assert actors.ingest_version(first[0], reg.registry_id) == "failed"  # the late duplicate of A
        failures = [e for e in reg.log() if e.type == "ArtifactFailed"]
        assert [e.meta["causation_id"] for e in failures] == [first[0]], "a duplicate recorded a second failure"
        assert reg.get("twice@1").status == "pending", "a duplicate of the old request failed the retry"

        assert actors.ingest_version(second, reg.registry_id) == "failed"
        failures = [e for e in reg.log() if e.type == "ArtifactFailed"]
        assert Counter(e.meta["causation_id"] for e in failures) == {first[0]: 1, second: 1}
