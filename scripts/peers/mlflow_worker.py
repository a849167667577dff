"""Peer measurements for ``scripts/bench_peers.py``, run by the MLflow venv's python (not the project's).

    <mlflow venv>/bin/python scripts/peers/mlflow_worker.py '<json task>'

Prints progress on stderr and one line ``RESULT {json}`` on stdout. Backend store: SQLite
(``sqlite:///<dir>/mlflow.db``, SQLAlchemy's defaults: journal_mode=DELETE, synchronous=FULL); artifact root: a
local folder. Every task makes its own store in the folder it is given and leaves it there (the caller cleans up).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import warnings
from pathlib import Path

# The bench's own helpers (standard library only) live one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _benchlib import small_files, tree_bytes  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def log(msg: str) -> None:
    print(f"  .. [mlflow] {msg}", file=sys.stderr, flush=True)


def client_for(folder: str):
    from mlflow import MlflowClient

    os.makedirs(folder, exist_ok=True)
    uri = f"sqlite:///{os.path.join(folder, 'mlflow.db')}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    root = os.path.join(folder, "artifacts")
    os.makedirs(root, exist_ok=True)
    exp = client.create_experiment("bench", artifact_location="file://" + root)
    return client, exp, root


def create_versions(task: dict) -> dict:
    """``n`` new versions of 4 models: per version, ``log_artifact`` of a tiny file into one run (created before
    the timing), then ``create_model_version(name, source=<that artifact's URI>, run_id=...)``. Timed: both
    calls (``total``), and ``create_model_version`` alone (``create``)."""
    client, exp, _root = client_for(task["dir"])
    files = small_files(os.path.join(task["dir"], "src"), task["n"], seed=task["n"])
    for m in range(4):
        client.create_registered_model(f"bench-m{m}")
    run = client.create_run(exp)
    run_id, base = run.info.run_id, run.info.artifact_uri
    # One version made before the timing, as modelledger's side registers one (bench_peers.ours_create): the
    # first log_artifact and create_model_version of a process import and set up what later ones reuse.
    warm = os.path.join(task["dir"], "warm.bin")
    with open(warm, "wb") as f:
        f.write(b"MLBENCH warm-up" * 20)
    client.create_registered_model("warmup")
    client.log_artifact(run_id, warm, artifact_path="warm")
    client.create_model_version("warmup", f"{base}/warm/warm.bin", run_id=run_id)
    create = 0.0
    start = time.perf_counter()
    for i, path in enumerate(files):
        client.log_artifact(run_id, path, artifact_path=f"v{i}")
        t = time.perf_counter()
        client.create_model_version(f"bench-m{i % 4}", f"{base}/v{i}/{os.path.basename(path)}", run_id=run_id)
        create += time.perf_counter() - t
    total = time.perf_counter() - start
    n = task["n"]
    return {"per_s": n / total, "create_per_s": n / create, "n": n}


def tags_aliases(task: dict) -> dict:
    """A model with 10 versions (made before the timing); ``n`` ``set_model_version_tag`` and ``n``
    ``set_registered_model_alias`` (each a move: versions 1..9 in turn)."""
    client, exp, _root = client_for(task["dir"])
    client.create_registered_model("bench-deep")
    run = client.create_run(exp)
    for _ in range(10):
        client.create_model_version("bench-deep", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    n = task["n"]
    client.set_model_version_tag("bench-deep", "5", "warm", "up")  # one of each before the timing, both sides
    client.set_registered_model_alias("bench-deep", "warm", "1")
    start = time.perf_counter()
    for k in range(n):
        client.set_model_version_tag("bench-deep", "5", "run", str(k))
    tag_s = time.perf_counter() - start
    start = time.perf_counter()
    for k in range(n):
        client.set_registered_model_alias("bench-deep", "production", str(1 + k % 9))
    alias_s = time.perf_counter() - start
    return {"tag_per_s": n / tag_s, "alias_per_s": n / alias_s, "n": n}


def search(task: dict) -> dict:
    """``models`` x ``versions`` versions, each with tags ``stage`` = s<version % 10> and ``task`` = ctr,
    inserted in bulk through MLflow's own SQLAlchemy models (untimed), then ``search_model_versions`` with
    ``name = 'mK' AND tags.stage = 'sJ'`` (each matches versions/10 versions), ms per query."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag

    client, exp, _root = client_for(task["dir"])
    models, versions = task["models"], task["versions"]
    run = client.create_run(exp)
    store = client._get_registry_client().store
    for m in range(models):
        name = f"bench-m{m}"
        client.create_registered_model(name)
        with store.ManagedSessionMaker() as session:
            rows = []
            for v in range(1, versions + 1):
                rows.append(SqlModelVersion(name=name, version=v, source=f"{run.info.artifact_uri}/v{v}/model.bin",
                                            run_id=run.info.run_id, description="nightly fine-tune"))
                rows.append(SqlModelVersionTag(name=name, version=v, key="stage", value=f"s{v % 10}"))
                rows.append(SqlModelVersionTag(name=name, version=v, key="task", value="ctr"))
            session.add_all(rows)
    log(f"search: {models} x {versions} versions inserted")
    expect = versions // 10
    got = client.search_model_versions("name = 'bench-m0' AND tags.stage = 's1'")  # warm-up, and a check
    if len(got) != expect:
        raise SystemExit(f"search found {len(got)} versions, expected {expect}")
    samples = []
    rng = random.Random(5)
    for _ in range(task["queries"]):
        m, s = rng.randrange(models), rng.randrange(10)
        t = time.perf_counter()
        got = client.search_model_versions(f"name = 'bench-m{m}' AND tags.stage = 's{s}'")
        samples.append((time.perf_counter() - t) * 1000)
        assert len(got) == expect, len(got)
    return {"ms": samples, "results_per_query": expect}


def store_twice(task: dict) -> dict:
    """``log_artifact`` of the same file twice (two runs, as two training jobs would): growth of the artifact root."""
    client, exp, root = client_for(task["dir"])
    before = tree_bytes(root)
    seconds = []
    for _ in range(2):
        run = client.create_run(exp)
        t = time.perf_counter()
        client.log_artifact(run.info.run_id, task["file"], artifact_path="model")
        seconds.append(time.perf_counter() - t)
    after = tree_bytes(root)
    return {"apparent": after[0] - before[0], "allocated": after[1] - before[1], "seconds": seconds}


# -- on PostgreSQL (scripts/bench_pg.py): one backend store shared by several client processes -------------

def pg_setup(task: dict) -> dict:
    """Create MLflow's schema in the (empty) database ``uri``, the experiment, one run, and a model with 10
    versions; the clients (``pg_client``) then work on it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=task["uri"], registry_uri=task["uri"])
    root = os.path.join(task["dir"], "artifacts")
    os.makedirs(root, exist_ok=True)
    exp = client.create_experiment("bench", artifact_location="file://" + root)
    run = client.create_run(exp)
    client.create_registered_model("bench-deep")
    for _ in range(10):
        client.create_model_version("bench-deep", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    with open(os.path.join(task["dir"], "run.json"), "w") as f:
        json.dump({"run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri}, f)
    return {"ok": True}


def pg_client(task: dict) -> dict:
    """One client process: ``n`` tags, alias moves or new versions (``log_artifact`` of a tiny file +
    ``create_model_version``, as the single-client row) on the shared model, from ``start_at`` on."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=task["uri"], registry_uri=task["uri"])
    with open(os.path.join(task["dir"], "run.json")) as f:
        run = json.load(f)
    c, n = task["client"], task["n"]
    files = small_files(os.path.join(task["dir"], f"src-{c}"), n + 1, seed=1000 + c) if task["op"] == "create" else []

    def op(k: int) -> None:
        if task["op"] == "tag":
            client.set_model_version_tag("bench-deep", "5", f"c{c}", str(k))
        elif task["op"] == "alias":
            client.set_registered_model_alias("bench-deep", "production", str(1 + (k + c) % 9))
        else:
            path = f"c{c}-v{k}"
            client.log_artifact(run["run_id"], files[k], artifact_path=path)
            client.create_model_version("bench-deep", f"{run['artifact_uri']}/{path}/{os.path.basename(files[k])}",
                                        run_id=run["run_id"])

    client.get_registered_model("bench-deep")  # connect (and check the schema) outside the timing
    # One operation of the kind measured, outside the timing, as modelledger's client does (bench_pg.CLIENT);
    # ``"warm": false`` leaves it out (scripts/bench_mlflow_warmup.py: what it is worth).
    if task.get("warm", True):
        try:
            op(n)
        except Exception:  # noqa: BLE001, S110 - its upsert races under concurrent clients (counted when timed)
            pass
    time.sleep(max(0.0, task["start_at"] - time.time()))
    began, t = time.time(), time.perf_counter()
    done, errors = 0, []
    for k in range(n):
        try:
            op(k)
            done += 1
        except Exception as exc:  # noqa: BLE001 - MLflow under concurrent clients: counted, not fatal
            errors.append(type(exc).__name__ + ": " + str(exc).splitlines()[0][:160])
    return {"seconds": time.perf_counter() - t, "start": began, "end": time.time(), "done": done,
            "errors": len(errors), "first_error": errors[0] if errors else ""}


TASKS = {"create_versions": create_versions, "tags_aliases": tags_aliases, "search": search,
         "store_twice": store_twice, "pg_setup": pg_setup, "pg_client": pg_client}

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    import mlflow

    result = TASKS[spec["task"]](spec)
    result["peer_version"] = f"mlflow-skinny {mlflow.__version__}"
    print("RESULT " + json.dumps(result), flush=True)
