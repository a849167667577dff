"""Many writers, one home (embedded): 8 processes × 250 commands mixed over 5 models — register, update,
tag, alias, delete, and retries of registers with the same idempotency key.

Every command carries a unique marker (idempotency key in params, tag value, alias name, delete reason), so
the log can be searched for it: a command that returned success is in the log exactly once, a refused
command left nothing, retries appended nothing, version numbers are gapless per model, and the audit passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from reliability_support import child_env, events, verify_log

PROCESSES = 8
COMMANDS = 250
MODELS = [f"m{i}" for i in range(5)]

WRITER = r"""
import json, random, sys
from modelledger import Registry
from eventstore.errors import ModelLedgerError

home, arts, proc, n, seed, out = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
models = [f"m{i}" for i in range(5)]
rnd = random.Random(seed)
ops = ["register"] * 30 + ["update"] * 20 + ["tag"] * 25 + ["alias"] * 15 + ["delete"] * 10
with Registry.open(home, actor=f"writer-{proc}") as reg, open(out, "w") as log:
    for i in range(n):
        op, model, key = rnd.choice(ops), rnd.choice(models), f"p{proc}-c{i}"
        rec = {"op": op, "model": model, "key": key}
        try:
            if op == "register":
                v = reg.register(model, artifact=rnd.choice(arts), params={"cmd": key}, idempotency_key=key)
                rec["version"] = v.version
                if rnd.random() < 0.2:  # a pipeline retrying: same key, same request -> same result
                    again = reg.register(model, artifact=v.artifact["source"], params={"cmd": key},
                                         idempotency_key=key)
                    rec["retried"] = again.version
            elif op == "update":
                v = reg.update(model, params={"cmd": key}, idempotency_key=key)
                rec["version"] = v.version
            elif op == "tag":
                target = model if rnd.random() < 0.5 else model + "@latest"
                rec["positions"] = [e.position for e in reg.tag(target, {"cmd": key})]
            elif op == "alias":
                rec["alias"] = "a" + key.replace("-", "x")
                rec["positions"] = [e.position for e in reg.alias(model, rec["alias"])]
            else:
                latest = reg.get(model).version
                rec["positions"] = [e.position for e in reg.delete(f"{model}@{latest}", reason=key)]
            rec["ok"] = True
        except ModelLedgerError as exc:
            rec["ok"] = False
            rec["error"] = type(exc).__name__
        log.write(json.dumps(rec) + "\n")
        log.flush()
"""


@pytest.mark.slow
def test_concurrent_writers_every_success_exactly_once(tmp_path: Path, figures) -> None:
    from modelledger import Registry

    home = tmp_path / "home"
    arts = []
    for i in range(3):
        p = tmp_path / f"art{i}.bin"
        p.write_bytes(f"weights {i}\n".encode() * 100)
        arts.append(str(p))
    env = child_env(home)
    # Create the registry once, so eight first openers do not race on creating the schema.
    Registry.open(home, actor="setup").close()
    procs = []
    for p in range(PROCESSES):
        out = tmp_path / f"writer-{p}.jsonl"
        procs.append((subprocess.Popen([sys.executable, "-c", WRITER, str(home), ",".join(arts), str(p),
                                        str(COMMANDS), str(1000 + p), str(out)], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out))
    results = []
    for proc, out in procs:
        stdout, stderr = proc.communicate(timeout=200)
        assert proc.returncode == 0, f"a writer died (not with a ModelLedgerError):\n{stderr[-3000:]}"
        results += [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == PROCESSES * COMMANDS

    db = home / "registry.db"
    checked = verify_log(db)
    log = events(db)
    ok = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert {r["error"] for r in refused} <= {"NotFoundError", "ConflictError"}, Counter(r["error"] for r in refused)

    # Index the log by each command's marker.
    found: dict[str, list[dict]] = defaultdict(list)
    for e in log:
        d = e["data"]
        if e["type"] in ("VersionRegistered", "ParamsUpdated"):
            found[d["params"]["cmd"]].append(e)
        elif e["type"] == "Tagged":
            found[d["tags"]["cmd"]].append(e)
        elif e["type"] == "AliasAssigned":
            found["alias:" + d["alias"]].append(e)
        elif e["type"] == "VersionDeleted":
            found[d["reason"]].append(e)
    for r in results:
        marker = "alias:" + r["alias"] if r["op"] == "alias" else r["key"]
        hits = found.get(marker, [])
        if not r["ok"]:
            assert hits == [], f"a refused command left events: {r} -> {hits}"
            continue
        assert len(hits) == 1, f"a successful command is in the log {len(hits)} times: {r}"
        e = hits[0]
        assert e["stream"] == f"model-{r['model']}"
        if r["op"] in ("register", "update"):
            assert e["data"]["version"] == r["version"]
            assert r.get("retried", r["version"]) == r["version"], f"a retry returned another version: {r}"
            assert e["meta"]["idempotency_key"] == r["key"]
        else:
            assert e["position"] in r["positions"], r

    # Nothing in the log that no successful command explains.
    types = Counter(e["type"] for e in log)
    by_op = Counter(r["op"] for r in ok)
    assert types["VersionRegistered"] == by_op["register"]
    assert types["ArtifactStored"] == by_op["register"]
    assert types["ParamsUpdated"] == by_op["update"]
    assert types["Tagged"] == by_op["tag"]
    assert types["AliasAssigned"] == by_op["alias"]
    assert types["VersionDeleted"] == by_op["delete"]
    assert types["ModelRegistered"] == len({r["model"] for r in ok if r["op"] == "register"})
    assert set(types) <= {"ModelRegistered", "VersionRegistered", "ArtifactStored", "ParamsUpdated", "Tagged",
                          "AliasAssigned", "AliasRemoved", "VersionDeleted"}, types

    # Version numbers per model: 1..N in log order, no gap, no duplicate; one ArtifactStored each.
    created: dict[str, list[int]] = defaultdict(list)
    stored: Counter[tuple[str, int]] = Counter()
    for e in log:
        if e["type"] in ("VersionRegistered", "ParamsUpdated"):
            created[e["data"]["name"]].append(e["data"]["version"])
        elif e["type"] == "ArtifactStored":
            stored[(e["data"]["name"], e["data"]["version"])] += 1
    for name, numbers in created.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{name}: versions {numbers}"
    assert all(n == 1 for n in stored.values()), stored.most_common(3)

    with Registry.open(home, actor="checker") as reg:
        report = reg.audit()
        assert report.ok, report.to_json()
        for name, numbers in created.items():
            model = reg.model(name)
            assert len(model.versions) == len(numbers)
            assert all(v.status == "ready" for v in model.versions)

    figures.add("writers: commands run", len(results))
    figures.add("writers: commands succeeded", len(ok))
    figures.add("writers: commands refused (conflict/not found)", len(refused))
    figures.add("writers: idempotent retries", sum(1 for r in ok if "retried" in r))
    figures.add("writers: events checked", checked)
