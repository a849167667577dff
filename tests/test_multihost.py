"""Several hosts on one PostgreSQL database and one artifact store: each host a process with its own, empty
MLEDGER_HOME (no shared local state). Registering and tagging one model concurrently gives versions 1..N
with no gap or duplicate, the chain verifies, and every host lists the same catalog. A writer killed with
SIGKILL mid-command leaves nothing half-written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from services import reap

pytestmark = pytest.mark.postgres

HOSTS = 4
ROUNDS = 6  # registers per host (each followed by two tags and an alias move)

HOST = r"""
import json, sys, time
from modelledger import Registry

host, rounds, start_at, artifact = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
time.sleep(max(0.0, start_at - time.time()))
made = []
with Registry.open(actor=f"ci@{host}") as reg:
    for i in range(rounds):
        # an idempotency key per request: a host retrying after a lost connection would append once
        v = reg.register("shared/model", artifact, params={"host": host, "i": i}, tags={"host": host},
                         idempotency_key=f"{host}-{i}")
        made.append(v.version)
        reg.tag(v, {"round": str(i)})
        reg.tag("shared/model", {f"last-{host}": str(v.version)})
        reg.alias(v, "candidate")
    print(json.dumps({"host": host, "made": made}), flush=True)
"""

LISTER = r"""
import json
from modelledger import Registry

with Registry.open(actor="lister") as reg:
    catalog = reg.catalog()
    model = catalog.model("shared/model")
    print(json.dumps({"digest": catalog.digest(), "model": model.to_json(),
                      "list": [m.to_json() for m in catalog.list()],
                      "audit": reg.audit().ok, "head": reg.head()}))
"""


def _env(child_env, home: Path, database: str, store: Path, host: str) -> dict[str, str]:
    return child_env(home, MLEDGER_DATABASE=database, MLEDGER_ARTIFACTS=str(store), MLEDGER_ACTOR=f"ci@{host}")


def test_hosts_register_and_tag_one_model_concurrently(tmp_path, new_postgres_database, child_env, make_artifact):
    database = new_postgres_database()
    store = tmp_path / "shared-store"  # the one artifact store every host writes to
    homes = {f"host{i}": tmp_path / f"host{i}" for i in range(HOSTS)}
    start_at = time.time() + 4.0  # all hosts begin together, after their imports
    procs = {}
    for host, home in homes.items():
        art = make_artifact(f"{host}.bin", f"weights of {host}\n".encode())
        procs[host] = subprocess.Popen(
            [sys.executable, "-c", HOST, host, str(ROUNDS), str(start_at), str(art)],
            env=_env(child_env, home, database, store, host), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=str(tmp_path))
    made: dict[str, list[int]] = {}
    try:
        for host, proc in procs.items():
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"{host}: {err[-2000:]}"
            made[host] = json.loads(out.strip().splitlines()[-1])["made"]
    finally:
        for proc in procs.values():
            reap(proc)
    numbers = sorted(n for versions in made.values() for n in versions)
    assert numbers == list(range(1, HOSTS * ROUNDS + 1)), "versions with a gap or a duplicate"
    # every host, from its own empty home, sees the same catalog; the log audits clean
    views = []
    for host, home in homes.items():
        proc = subprocess.run([sys.executable, "-c", LISTER], env=_env(child_env, home, database, store, host),
                              capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr[-2000:]
        views.append(json.loads(proc.stdout))
        assert not (home / "registry.db").exists(), "a host kept registry state locally"
    first = views[0]
    assert all(v == first for v in views[1:])
    assert first["audit"] is True
    model = first["model"]
    assert [v["version"] for v in model["versions"]] == list(range(1, HOSTS * ROUNDS + 1))
    assert all(v["status"] == "ready" for v in model["versions"])
    assert {model["tags"][f"last-{h}"] for h in homes} == {str(max(made[h])) for h in homes}
    assert model["aliases"]["candidate"] in numbers
    # each version's own tags came from the host that made it
    by_number = {v["version"]: v for v in model["versions"]}
    for host, versions in made.items():
        for i, n in enumerate(versions):
            assert by_number[n]["tags"] == {"host": host, "round": str(i)}


WRITER = r"""
import sys, uuid
from modelledger import Registry
from eventstore.events import NewEvent, stream_for

artifact, tag_ = sys.argv[1], sys.argv[2]
with Registry.open(actor="writer") as reg:
    i = 0
    while True:
        name = f"k/{tag_}-{i}"
        size = 3 + i % 5
        meta = {"batch": f"{tag_}-{i}", "size": size, "correlation_id": str(uuid.uuid4())}
        s = stream_for("k/base")
        reg.append_batch([NewEvent(s, "Tagged", {"name": "k/base", "version": None, "tags": {f"b{j}": tag_}}, meta)
                          for j in range(size)])
        v = reg.register("k/base", artifact, params={"i": i, "run": tag_})
        reg.tag(v, {"i": str(i)})
        reg.alias(v, "live")
        if i == 0:
            print("started", flush=True)
        i += 1
"""


def test_a_writer_killed_mid_command_leaves_nothing_half_written(tmp_path, new_postgres_database, child_env,
                                                                  make_artifact):
    from modelledger import Registry

    database = new_postgres_database()
    store, home = tmp_path / "store", tmp_path / "writer-home"
    art = make_artifact("base.bin", b"base weights\n")
    env = _env(child_env, home, database, store, "writer")
    rnd = random.Random(7)
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(art), f"r{round_}"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
        try:
            line = proc.stdout.readline()
            assert line.strip() == "started", proc.stderr.read()[-2000:]
            time.sleep(rnd.uniform(0.05, 0.6))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            reap(proc)
    with Registry.open(tmp_path / "checker-home", database=database, artifacts=str(store), actor="checker") as reg:
        events = list(reg.log())
        batches: dict[str, int] = defaultdict(int)
        sizes: dict[str, int] = {}
        for e in events:
            if "batch" in e.meta:
                batches[e.meta["batch"]] += 1
                sizes[e.meta["batch"]] = e.meta["size"]
        assert batches and all(batches[b] == sizes[b] for b in batches), "a batch was half-written"
        created = [e for e in events if e.type == "VersionRegistered"]
        assert [e.data["version"] for e in created] == list(range(1, len(created) + 1))
        # a kill between a register and its ingest leaves a pending version (retry brings it), never a torn one
        statuses = {v["status"] for v in reg.catalog().model("k/base").to_json()["versions"]}
        assert statuses <= {"ready", "pending"}
        report = reg.audit()
        assert report.ok, report.first_failure
        assert reg.head() == len(events) == events[-1].position
