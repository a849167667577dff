"""MLflow's side of ``scripts/bench_http.py`` and of ``bench_peers.py --only mlflowclient``, run by the python of
the full-``mlflow`` venv (the server needs more than ``mlflow-skinny``).

    <mlflow-server venv>/bin/python scripts/peers/mlflow_server_worker.py '<json task>'

Tasks (each prints ``RESULT {json}``):

- ``setup``: an MLflow backend store ``sqlite:///<dir>/mlflow.db`` made by MLflow's own client (schema and
  migrations), before ``mlflow server`` opens it: experiment ``bench`` whose artifacts the server serves
  (``mlflow-artifacts:/bench``), one run, models ``bench-w0..3`` (created into by the clients), ``bench-deep``
  with 10 versions (tagged by the clients), and ``models`` x ``versions`` versions of ``bench-mK`` tagged
  ``stage`` = s<version % 10> and ``task`` = ctr, inserted in bulk through MLflow's own SQLAlchemy models (as
  ``mlflow_worker.search`` does) for the searches;
- ``client``: one process of ``MlflowClient`` calls against a tracking server (``mlflow server`` or
  ``mledger serve``'s ``/api/2.0/mlflow/``), token from ``MLFLOW_TRACKING_TOKEN``: ``create``
  (``create_model_version``), ``tag`` (``set_model_version_tag``) or ``search`` (``search_model_versions``),
  ``n`` times from ``start_at`` on; latencies in ms.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def setup(task: dict) -> dict:
    from mlflow import MlflowClient
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag

    os.makedirs(task["dir"], exist_ok=True)
    uri = f"sqlite:///{os.path.join(task['dir'], 'mlflow.db')}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("bench", artifact_location="mlflow-artifacts:/bench")
    run = client.create_run(exp)
    for w in range(4):
        client.create_registered_model(f"bench-w{w}")
    client.create_registered_model("bench-deep")
    for _ in range(10):
        client.create_model_version("bench-deep", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    store = client._get_registry_client().store
    for m in range(task["models"]):
        name = f"bench-m{m}"
        client.create_registered_model(name)
        with store.ManagedSessionMaker() as session:
            rows = []
            for v in range(1, task["versions"] + 1):
                rows.append(SqlModelVersion(name=name, version=v, source=f"{run.info.artifact_uri}/v{v}/model.bin",
                                            run_id=run.info.run_id, description="nightly fine-tune"))
                rows.append(SqlModelVersionTag(name=name, version=v, key="stage", value=f"s{v % 10}"))
                rows.append(SqlModelVersionTag(name=name, version=v, key="task", value="ctr"))
            session.add_all(rows)
    prefix = "mlflow-artifacts:/"
    assert run.info.artifact_uri.startswith(prefix), run.info.artifact_uri
    return {"uri": uri, "run_id": run.info.run_id, "artifact_path": run.info.artifact_uri[len(prefix):]}


def client(task: dict) -> dict:
    """``n`` MlflowClient calls of one kind, from ``start_at`` on (the caller starts all clients together)."""
    from mlflow import MlflowClient

    c, n, op = task["client"], task["n"], task["op"]
    ml = MlflowClient(tracking_uri=task["url"], registry_uri=task["url"])
    ml.get_registered_model("bench-deep")  # connect and warm up outside the timing
    time.sleep(max(0.0, task["start_at"] - time.time()))
    began = time.time()
    ms, errors = [], []
    for k in range(n):
        t = time.perf_counter()
        try:
            if op == "create":
                source = task["sources"][k] if task.get("sources") else f"{task['source_prefix']}/c{c}-v{k}/model.bin"
                mv = ml.create_model_version(f"bench-w{(c + k) % 4}", source, run_id=task.get("run_id"))
                if mv.status not in ("READY", "PENDING_REGISTRATION"):
                    raise RuntimeError(f"status {mv.status}")
            elif op == "tag":
                ml.set_model_version_tag("bench-deep", "5", f"c{c}", str(k))
            else:
                rng = random.Random(c * 7919 + k)
                m, s = rng.randrange(task["models"]), rng.randrange(10)
                got = ml.search_model_versions(f"name = 'bench-m{m}' AND tags.stage = 's{s}'")
                if len(got) != task["expect"]:
                    raise RuntimeError(f"search found {len(got)}, expected {task['expect']}")
            ms.append((time.perf_counter() - t) * 1000)
        except Exception as exc:  # noqa: BLE001 - counted, not fatal (MLflow on SQLite under concurrency)
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    return {"start": began, "end": time.time(), "ms": ms, "errors": len(errors),
            "first_error": errors[0] if errors else ""}


TASKS = {"setup": setup, "client": client}

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    import mlflow

    result = TASKS[spec["task"]](spec)
    result["peer_version"] = f"mlflow {mlflow.__version__}"
    print("RESULT " + json.dumps(result), flush=True)
