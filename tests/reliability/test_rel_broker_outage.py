"""Broker outage (a private redis-server, not the machine's): 100 registrations made with ``--no-wait`` while
the broker is down — 90 through the SDK (``wait=False``), 10 through the CLI. Before the outage, 20 more
were queued and then lost with the broker (it keeps nothing: ``--save '' --appendonly no``). The broker comes
back empty; a worker starts; every version becomes ``ready`` with its own digest, and no command was run
twice: each registration is in the log once, with exactly one ``ArtifactStored``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from reliability_support import Worker, child_env, events, run_cli, sha256_file, verify_log
from services import wait_for

BEFORE = 20  # queued, then lost when the broker dies
SDK_DOWN = 90
CLI_DOWN = 10


@pytest.mark.redis
@pytest.mark.slow
def test_registrations_during_a_broker_outage_all_become_ready(worker_sources, private_redis, tmp_path: Path, figures) -> None:
    from modelledger import Registry

    home = tmp_path / "home"
    db = home / "registry.db"
    src = tmp_path / "src"
    src.mkdir()
    sources = {}
    for i in range(BEFORE + SDK_DOWN + CLI_DOWN):
        p = src / f"model-{i}.bin"
        p.write_bytes(f"weights of registration {i}\n".encode() * 50)
        sources[i] = p
    env = child_env(home, MLEDGER_BROKER=private_redis.url)
    keys: dict[str, int] = {}
    with Registry.open(home, broker=private_redis.url, actor="reliability@test") as reg:
        for i in range(BEFORE):
            v = reg.register(f"o{i % 4}", artifact=str(sources[i]), idempotency_key=f"reg-{i}", wait=False)
            assert v.status == "pending"
            keys[f"reg-{i}"] = i
        private_redis.stop()  # the 20 queued jobs are gone with it

        for i in range(BEFORE, BEFORE + SDK_DOWN):
            v = reg.register(f"o{i % 4}", artifact=str(sources[i]), idempotency_key=f"reg-{i}", wait=False)
            assert v.status == "pending"
            keys[f"reg-{i}"] = i
        for i in range(BEFORE + SDK_DOWN, BEFORE + SDK_DOWN + CLI_DOWN):
            done = run_cli(env, "register", f"o{i % 4}", "--artifact", str(sources[i]), "--no-wait",
                           "--idempotency-key", f"reg-{i}", "--json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["status"] == "pending"
            keys[f"reg-{i}"] = i
        assert all(v.status == "pending" for m in range(4) for v in reg.model(f"o{m}").versions)

        private_redis.start()  # back, and empty
        worker = Worker(env, tmp_path / "worker.log", "--threads", "2", "--sweep-interval", "1")
        try:
            def all_done() -> bool:
                return all(v.status != "pending" for m in range(4) for v in reg.model(f"o{m}").versions)

            wait_for(all_done, 120, f"every version to leave pending (log: {worker.tail()})", interval=0.2)
            time.sleep(1.5)  # let a sweep or two pass: a re-sent job must append nothing
        finally:
            worker.stop()

        registered = events(db, "VersionRegistered")
        stored = Counter((e["data"]["name"], e["data"]["version"]) for e in events(db, "ArtifactStored"))
        by_key = Counter(e["meta"]["idempotency_key"] for e in registered)
        assert by_key == Counter(set(keys)), "a registration is missing or was appended twice"
        for e in registered:
            name, number = e["data"]["name"], e["data"]["version"]
            version = reg.get(f"{name}@{number}")
            assert version.status == "ready", version.artifact
            assert version.artifact["digest"] == sha256_file(sources[keys[e["meta"]["idempotency_key"]]])
            assert stored[(name, number)] == 1, f"{name}@{number}: {stored[(name, number)]} ArtifactStored"
        assert len(stored) == len(keys)
        assert not events(db, "ArtifactFailed")
        checked = verify_log(db)
        report = reg.audit()
        assert report.ok, report.to_json()

    figures.add("broker outage: broker stops/starts", 1)
    figures.add("broker outage: jobs lost with the broker", BEFORE)
    figures.add("broker outage: registrations while down (sdk + cli)", SDK_DOWN + CLI_DOWN)
    figures.add("broker outage: versions healed to ready", len(keys))
    figures.add("broker outage: events checked", checked)

