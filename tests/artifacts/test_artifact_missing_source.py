"""Acceptance: a missing artifact source is refused before anything is appended (CLI and SDK, embedded and
Redis mode); a source that disappears after the command committed ends as ``failed`` with one
ArtifactFailed, never a half-stored version."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dramatiq
import pytest
from artifact_support import DEAD_REDIS_URL, events, store_snapshot
from services import wait_for

from eventstore.errors import ArtifactError
from workers import broker as broker_mod


@pytest.mark.parametrize("extra", [[], ["--no-wait", "--broker", DEAD_REDIS_URL]], ids=["embedded", "redis-no-wait"])
def test_cli_missing_source_refused_nothing_appended(extra: list[str], cli, home: Path, tmp_path: Path) -> None:
    src = tmp_path / "present.bin"
    src.write_bytes(b"here")
    code, _, err = cli("register", "known", "--artifact", str(src))
    assert code == 0, err
    n = len(events(home))
    blobs = store_snapshot(home / "artifacts")

    for name, missing in (("known", tmp_path / "nope.bin"), ("brandnew", tmp_path / "no-such-dir" / "x"),
                          ("brandnew", tmp_path / "gone-dir")):
        code, out, err = cli("register", name, "--artifact", str(missing), *extra)
        assert code != 0
        assert out == ""
        assert len(err.strip().splitlines()) == 1 and "not found" in err, err
        assert len(events(home)) == n, f"register {name} from a missing source appended events"
    code, _, err = cli("update", "known@1", "--artifact", str(tmp_path / "nope.bin"), *extra)
    assert code != 0 and "not found" in err
    assert len(events(home)) == n
    code, _, _ = cli("show", "brandnew")
    assert code != 0  # the model was not created either
    assert store_snapshot(home / "artifacts") == blobs


def test_console_script_missing_source(home: Path, tmp_path: Path, mledger_argv, child_env) -> None:
    done = subprocess.run([*mledger_argv, "register", "m", "--artifact", str(tmp_path / "missing.pt")],
                          env=child_env(home), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "not found" in done.stderr
    assert not (home / "registry.db").exists() or events(home) == []


def test_sdk_missing_source_raises_before_append(reg, home: Path, tmp_path: Path) -> None:
    head = reg.head()
    with pytest.raises(ArtifactError, match="not found"):
        reg.register("sdkmissing", artifact=str(tmp_path / "missing.pt"))
    assert reg.head() == head


def test_source_removed_after_commit_fails_once(worker_sources, home: Path, tmp_path: Path) -> None:
    """The source vanished between the command and the worker: the version ends ``failed`` with one
    ArtifactFailed (no retries of a permanent error), and waiting reports the reason."""
    fakeredis = pytest.importorskip("fakeredis")
    pytest.importorskip("lupa")
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import CurrentMessage

    from modelledger import Registry

    src = tmp_path / "soon-gone.bin"
    src.write_bytes(b"short-lived")
    with Registry.open(home, broker=DEAD_REDIS_URL, actor="tester@test") as reg:
        fake = RedisBroker(client=fakeredis.FakeRedis(), namespace=broker_mod.NAMESPACE)
        fake.add_middleware(CurrentMessage())
        broker_mod.use(fake)
        v = reg.register("vanish", artifact=str(src), wait=False)
        assert v.status == "pending"
        src.unlink()
        fake.emit_after("process_boot")
        worker = dramatiq.Worker(fake, worker_threads=1, worker_timeout=100)
        worker.start()
        try:
            wait_for(lambda: reg.get("vanish@1").status != "pending", 60, "the ingest outcome")
            with pytest.raises(ArtifactError, match="not found"):
                reg.wait("vanish@1", timeout=5)
        finally:
            worker.stop(timeout=10_000)
        assert reg.get("vanish@1").status == "failed"
    failed = [e for e in events(home, "ArtifactFailed") if e.data["name"] == "vanish"]
    assert len(failed) == 1 and "not found" in failed[0].data["reason"]
    assert events(home, "ArtifactStored") == []
