"""Acceptance: a worker killed with SIGKILL in the middle of an ingest (real Redis). A new worker completes
the version (its start-up sweep re-sends what is pending), the digest is right, no partial blob ever sits
under a final name, and the version has exactly one ArtifactStored."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from artifact_support import assert_store_sound, noise, outcomes, sha256_file
from services import wait_for

SIZE = 512 * 1024 * 1024


def _make_large(path: Path) -> None:
    """A 512 MiB file: sparse zeros with random 1 MiB chunks sprinkled in (cheap to make, not all zeros)."""
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for i in range(0, SIZE, 64 * 1024 * 1024):
            f.seek(i)
            f.write(noise(1024 * 1024))


def _start_worker(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # A short sweep interval: db 15 is shared (a concurrent FLUSHDB can drop a queued job); the periodic
    # sweep re-sends it. Its duplicates are harmless, and the test checks they append nothing.
    with open(log, "ab") as out:
        return subprocess.Popen([*argv, "worker", "--threads", "1", "--sweep-interval", "5"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.redis
@pytest.mark.slow
def test_sigkill_mid_ingest_then_new_worker_completes(worker_sources, redis_url: str, home: Path, tmp_path: Path,
                                                      mledger_argv, child_env) -> None:
    src = tmp_path / "big.dat"
    _make_large(src)
    env = child_env(home, MLEDGER_BROKER=redis_url)
    log = tmp_path / "worker.log"
    artifacts = home / "artifacts"
    tmpdir = artifacts / "tmp"

    first = _start_worker(mledger_argv, env, log)
    second = None
    try:
        reg_out = subprocess.run([*mledger_argv, "register", "big", "--artifact", str(src), "--no-wait", "--json"],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert reg_out.returncode == 0, reg_out.stderr
        assert json.loads(reg_out.stdout)["status"] == "pending"

        # The ingest is in progress once the copy to a temporary name has started.
        wait_for(lambda: tmpdir.is_dir() and any(p.name.endswith(".part") for p in tmpdir.iterdir()), 120,
                 f"a .part file under {tmpdir} (worker log: {log})", interval=0.005)
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL

        # Killed mid-copy: no outcome yet, the partial copy is only under its temporary name.
        assert outcomes(home, "big", 1) == [], "the ingest finished before the kill: the test proved nothing"
        assert any(p.name.endswith(".part") for p in tmpdir.iterdir())
        if (artifacts / "sha256").exists():
            assert_store_sound(artifacts)

        second = _start_worker(mledger_argv, env, log)
        waited = subprocess.run([*mledger_argv, "wait", "big@1", "--timeout", "150", "--json"], env=env,
                                capture_output=True, text=True, timeout=180)
        assert waited.returncode == 0, f"{waited.stderr}\n--- worker log ---\n{log.read_text()[-3000:]}"
        version = json.loads(waited.stdout)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        if second is not None:
            _stop(second)

    assert version["status"] == "ready"
    assert version["artifact"]["digest"] == sha256_file(src)
    assert version["artifact"]["size"] == SIZE
    assert assert_store_sound(artifacts) == 1  # the one blob, complete, under its final name
    assert len(outcomes(home, "big", 1)) == 1
    assert outcomes(home, "big", 1, "ArtifactFailed") == []
