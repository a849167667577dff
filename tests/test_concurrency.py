"""Several processes writing to one registry at once (on a fresh home, so they also race to create it):
no duplicate or missing version numbers, gapless streams, an intact chain, a catalog equal to a rebuild."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from eventstore.verify import verify_rows

PROCESSES = 4

WORKER = r"""
import json, sys, time
from pathlib import Path
home, art, idx, k, sync, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), sys.argv[6]
(sync / f"ready-{idx}").touch()
deadline = time.monotonic() + 60
while not (sync / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.002)
from modelledger import Registry
out = []
with Registry.open(home, actor=f"worker-{idx}") as reg:
    for j in range(k):
        if mode == "register":
            out.append(reg.register("shared", art, params={"worker": idx, "j": j}).version)
        elif mode == "idempotent":
            out.append(reg.register("shared", art, params={"same": True}, idempotency_key="one-key").version)
        else:
            model = "mix-a" if (idx + j) % 2 else "mix-b"
            op = (idx + j) % 4
            if op == 0:
                out.append(["update", model, reg.update(f"{model}@1", params={"worker": idx, "j": j}).version])
            elif op == 1:
                reg.tag(f"{model}@1", {f"w{idx}-{j}": "x"})
                out.append(["tag", model, f"w{idx}-{j}"])
            elif op == 2:
                reg.metrics(f"{model}@1", {f"m{idx}-{j}": j})
                out.append(["metrics", model, f"m{idx}-{j}"])
            else:
                reg.alias(f"{model}@1", f"a{idx}-{j}")
                out.append(["alias", model, f"a{idx}-{j}"])
print(json.dumps(out))
"""


def run_workers(tmp_path: Path, home: Path, art: Path, k: int, mode: str, env: dict) -> list[list]:
    sync = tmp_path / f"sync-{mode}"
    sync.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(home), str(art), str(i), str(k), str(sync), mode],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(sync.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
            time.sleep(0.01)
        (sync / "go").touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, f"worker failed ({p.returncode}):\n{err[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def check_log_and_catalog(reg) -> list[tuple]:
    rows = reg.recorder.raw_rows()
    report = verify_rows(rows)
    assert report.ok, report
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    per_stream: dict[str, list[int]] = {}
    for r in rows:
        per_stream.setdefault(r[1], []).append(r[2])
    for stream, versions in per_stream.items():
        assert versions == list(range(1, len(versions) + 1)), f"{stream}: {versions}"
    digest = reg.catalog().digest()
    reg.rebuild_projections()
    assert reg.catalog().digest() == digest, "the live catalog differs from a replay of the log"
    return rows


def test_concurrent_registers_of_one_model_get_distinct_gapless_versions(tmp_path, home, artifact, child_env):
    k = 25
    results = run_workers(tmp_path, home, artifact, k, "register", child_env(home))
    numbers = [n for r in results for n in r]
    assert sorted(numbers) == list(range(1, PROCESSES * k + 1)), "duplicate or missing version numbers"
    for r in results:
        assert r == sorted(r), "a process saw its own versions out of order"
    from modelledger import Registry

    with Registry.open(home) as reg:
        model = reg.model("shared")
        assert [v.version for v in model.versions] == list(range(1, PROCESSES * k + 1))
        assert model.latest == PROCESSES * k
        # Each register call is exactly one version, with the params it sent.
        sent = {(v.params["worker"], v.params["j"]) for v in model.versions}
        assert sent == {(i, j) for i in range(PROCESSES) for j in range(k)}
        # The version a process was told is the version holding its params.
        for i, r in enumerate(results):
            for j, n in enumerate(r):
                assert reg.get(f"shared@{n}").params == {"worker": i, "j": j}
        rows = check_log_and_catalog(reg)
        types = Counter(r[3] for r in rows)
        assert types["ModelRegistered"] == 1
        assert types["VersionRegistered"] == PROCESSES * k
        assert types["ArtifactStored"] == PROCESSES * k


def test_concurrent_mixed_commands_on_two_models(tmp_path, home, artifact, child_env):
    from modelledger import Registry

    with Registry.open(home) as reg:
        reg.register("mix-a", artifact)
        reg.register("mix-b", artifact)
    k = 20
    results = run_workers(tmp_path, home, artifact, k, "mixed", child_env(home))
    with Registry.open(home) as reg:
        updates: dict[str, list[int]] = {"mix-a": [], "mix-b": []}
        for r in results:
            for op, model, what in r:
                if op == "update":
                    updates[model].append(what)
                elif op == "tag":
                    assert reg.get(f"{model}@1").tags.get(what) == "x"
                elif op == "metrics":
                    assert what in reg.get(f"{model}@1").metrics
                else:
                    assert reg.model(model).aliases.get(what) == 1
        for model, numbers in updates.items():
            assert sorted(numbers) == list(range(2, len(numbers) + 2)), f"{model}: {numbers}"
            assert [v.version for v in reg.model(model).versions] == list(range(1, len(numbers) + 2))
        check_log_and_catalog(reg)


def test_concurrent_retries_with_one_idempotency_key_register_once(tmp_path, home, artifact, child_env):
    results = run_workers(tmp_path, home, artifact, 3, "idempotent", child_env(home))
    assert {n for r in results for n in r} == {1}
    from modelledger import Registry

    with Registry.open(home) as reg:
        assert reg.model("shared").version_count == 1
        rows = check_log_and_catalog(reg)
        assert len(rows) == 3  # ModelRegistered, VersionRegistered, ArtifactStored


@pytest.mark.slow
def test_concurrent_cli_registers(home, artifact, child_env, mledger_argv):
    n = 8
    procs = [subprocess.Popen([*mledger_argv, "register", "cli", "--artifact", str(artifact), "--json",
                               "--params", json.dumps({"i": i})],
                              env=child_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    refs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        refs.append(json.loads(out)["version"])
    assert sorted(refs) == list(range(1, n + 1))
    from modelledger import Registry

    with Registry.open(home) as reg:
        assert sorted(v.params["i"] for v in reg.model("cli").versions) == list(range(n))
        check_log_and_catalog(reg)


def test_a_preview_and_a_workers_check_answer_while_another_writer_holds_the_lock(home, artifact):
    """What only reads — an import's ``--dry-run`` preview, a worker's "still waiting for bytes?" before it copies
    anything — reads a snapshot, not under the writer lock (on PostgreSQL, every host's writers'): it answers
    while another writer holds the lock, and appends nothing."""
    import threading

    from eventstore import commands as c
    from modelledger import Registry
    from workers.actors import ingest_version

    with Registry.open(home, actor="tester@test") as reg:
        reg.register("m", artifact)
        request = next(e for e in reg.log() if e.type == "VersionRegistered")
        head = reg.head()
        held, released, release = threading.Event(), threading.Event(), threading.Event()

        def hold() -> None:
            with reg.recorder.write():
                held.set()
                release.wait(10)
            released.set()

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(10)
            decision = reg.preview(c.Tag("m@1", {"k": "v"}))
            outcome = ingest_version(request.position, reg.registry_id)
            answered_while_held = not released.is_set()
        finally:
            release.set()
            holder.join()
        assert answered_while_held
        assert [kind for kind, _ in decision.events] == ["Tagged"]
        assert outcome == "already"  # its bytes were stored by the register itself
        assert reg.head() == head and "k" not in reg.get("m@1").tags
