"""Acceptance: Redis unreachable while registering. The event is committed either way; ``--no-wait``
succeeds with ``pending``; waiting fails with a clear ArtifactError; a worker started later against the
real Redis completes every pending version through its start-up sweep."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from artifact_support import DEAD_REDIS_URL, events, outcomes, sha256_file

from eventstore.errors import ArtifactError


def _versions_registered(home: Path, name: str) -> list:
    return [e for e in events(home, "VersionRegistered") if e.data.get("name") == name]


def test_cli_no_wait_with_broker_down_commits_pending(worker_sources, home: Path, tmp_path: Path, mledger_argv,
                                                      child_env) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"outage weights")
    env = child_env(home, MLEDGER_BROKER=DEAD_REDIS_URL)
    done = subprocess.run([*mledger_argv, "register", "down", "--artifact", str(src), "--no-wait", "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "pending"
    assert len(_versions_registered(home, "down")) == 1
    assert outcomes(home, "down", 1) == []

    # Without --no-wait the command cannot keep its promise: one clear line, non-zero, still committed.
    waited = subprocess.run([*mledger_argv, "register", "down", "--artifact", str(src)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert waited.returncode != 0
    lines = waited.stderr.strip().splitlines()
    assert len(lines) == 1 and "pending" in lines[0] and "down@2" in lines[0], waited.stderr
    assert len(_versions_registered(home, "down")) == 2


def test_sdk_wait_with_broker_down_raises_artifact_error_event_committed(worker_sources, home: Path, tmp_path: Path) -> None:
    from modelledger import Registry

    src = tmp_path / "a.bin"
    src.write_bytes(b"sdk outage")
    with Registry.open(home, broker=DEAD_REDIS_URL, actor="tester@test") as reg:
        head = reg.head()
        with pytest.raises(ArtifactError, match=r"sdkdown@1 .*\(pending\).*could not be queued"):
            reg.register("sdkdown", artifact=str(src), wait=True, timeout=30)
        assert reg.head() > head
        assert reg.get("sdkdown@1").status == "pending"
    assert len(_versions_registered(home, "sdkdown")) == 1


@pytest.mark.redis
def test_worker_start_up_sweep_heals_what_the_outage_left_pending(worker_sources, redis_url: str, home: Path, tmp_path: Path,
                                                                  mledger_argv, child_env) -> None:
    from modelledger import Registry
    from modelledger.config import Config
    from modelledger.worker import run

    src = tmp_path / "a.bin"
    src.write_bytes(b"healed by the sweep")
    done = subprocess.run([*mledger_argv, "register", "healme", "--artifact", str(src), "--no-wait"],
                          env=child_env(home, MLEDGER_BROKER=DEAD_REDIS_URL), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    with Registry.open(home, broker=DEAD_REDIS_URL, actor="tester@test") as reg, pytest.raises(ArtifactError):
        reg.register("healme", artifact=str(src), wait=True, timeout=30)

    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            run(Config.load(home, broker=redis_url, actor="tester@test"), threads=2, sweep_interval=5,
                stop=stop)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with Registry.open(home, broker=redis_url, actor="tester@test") as reg:
            for ref in ("healme@1", "healme@2"):
                v = reg.wait(ref, timeout=60)
                assert v.status == "ready"
                assert v.artifact["digest"] == sha256_file(src)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive() and errors == []
    assert len(outcomes(home, "healme", 1)) == 1
    assert len(outcomes(home, "healme", 2)) == 1
