"""One client process of ``scripts/bench_http.py``: the same workload against ``mlflow server``'s REST API or
``mledger serve``'s ``/api/v1``, over one keep-alive HTTP/1.1 connection (``http.client``, standard library
only, so both servers are driven by the same client code and none of either side's SDK is timed).

    python scripts/peers/http_client.py '<json task>'

Task: ``server`` ("mlflow" | "modelledger"), ``port``, ``token`` (ours), ``op`` ("create" | "tag" |
"search"), ``n``, ``client`` (its number), ``start_at`` (a ``time.time()`` all clients wait for), and for MLflow
``run`` ({"run_id", "artifact_path"}) for creates, and ``salt`` (each run of creates uploads bytes no run before
it did: a blob the server already holds would not be sent again); for searches ``models`` and ``expect``.

Per operation, what a user's client sends:

- create, MLflow: ``PUT /api/2.0/mlflow-artifacts/artifacts/<run's artifact path>/cC-vK/model.bin`` (what
  ``log_artifact`` does against a server that serves artifacts) + ``POST /api/2.0/mlflow/model-versions/create``
  with that source and the run id;
- create, modelledger: ``POST /api/v1/register`` with ``{digest, size, filename, content_base64}`` (what
  ``mledger register`` of a file of at most 64 KiB does over HTTP: one request); with ``"inline": false`` (a
  server from before that form, ``bench_http.py --compare``) ``HEAD /api/v1/blobs/<digest>?size=`` (404),
  ``PUT`` of the bytes, ``POST /api/v1/register`` with ``{digest, size, filename}``;
- tag: ``POST .../model-versions/set-tag`` vs ``POST /api/v1/tag`` (version 5 of a model with 10 versions);
- search by name + tag: ``GET .../model-versions/search?filter=name='M' AND tags.stage='S'`` vs
  ``GET /api/v1/search?name=M&tag=stage=S``; every answer is checked to hold ``expect`` versions.

Prints ``RESULT {json}``: start/end wall times, the latency of each operation (ms), and failures (counted, not
fatal: MLflow on SQLite answers some concurrent writes with "database is locked").
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import random
import sys
import time
from typing import Any
from urllib.parse import quote, urlencode


class Conn:
    """One keep-alive connection; reconnects once if the server closed it."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        h = {**self.headers, **(headers or {})}
        for attempt in (0, 1):
            try:
                self.http.request(method, path, body=body, headers=h)
                r = self.http.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if attempt:
                    raise
                self.http.close()
                self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        raise AssertionError("unreachable")


def _json(conn: Conn, method: str, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    return conn.call(method, path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def _ok(status: int, body: bytes, what: str) -> None:
    if status >= 300:
        raise RuntimeError(f"{what}: {status} {body[:200]!r}")


def _blob(salt: int, client: int, k: int) -> bytes:
    rng = random.Random((salt * 1_000 + client) * 1_000_003 + k)
    # A text header: random bytes could look like a pickle to the server's format sniffer.
    return b"MLBENCH " + rng.randbytes(rng.randint(200, 600))


def op_create(server: str, conn: Conn, task: dict[str, Any], k: int) -> None:
    c = task["client"]
    name = f"bench-w{(c + k) % 4}"
    salt = task.get("salt", 0)
    data = _blob(salt, c, k)
    if server == "mlflow":
        path = f"{task['run']['artifact_path']}/s{salt}-c{c}-v{k}/model.bin"
        s, b = conn.call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{quote(path)}", data,
                         {"Content-Type": "application/octet-stream"})
        _ok(s, b, "mlflow artifact PUT")
        s, b = _json(conn, "POST", "/api/2.0/mlflow/model-versions/create",
                     {"name": name, "source": f"mlflow-artifacts:/{path}", "run_id": task["run"]["run_id"]})
        _ok(s, b, "mlflow create")
        return
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    artifact = {"digest": digest, "size": len(data), "filename": "model.bin"}
    if task.get("inline", True):
        s, b = _json(conn, "POST", "/api/v1/register",
                     {"name": name, "artifact": {**artifact, "content_base64": base64.b64encode(data).decode()},
                      "params": {"client": c, "k": k}})
        _ok(s, b, "register")
        if json.loads(b)["status"] != "ready":
            raise RuntimeError(f"register answered {b[:200]!r}")
        return
    s, b = conn.call("HEAD", f"/api/v1/blobs/{digest}?size={len(data)}")
    if s == 404:
        s, b = conn.call("PUT", f"/api/v1/blobs/{digest}?size={len(data)}", data,
                         {"Content-Type": "application/octet-stream"})
        _ok(s, b, "blob PUT")
    elif s != 200:
        _ok(s, b, "blob HEAD")
    s, b = _json(conn, "POST", "/api/v1/register",
                 {"name": name, "artifact": artifact, "params": {"client": c, "k": k}})
    _ok(s, b, "register")
    if json.loads(b)["status"] != "ready":
        raise RuntimeError(f"register answered {b[:200]!r}")


def op_tag(server: str, conn: Conn, task: dict[str, Any], k: int) -> None:
    c = task["client"]
    if server == "mlflow":
        s, b = _json(conn, "POST", "/api/2.0/mlflow/model-versions/set-tag",
                     {"name": "bench-deep", "version": "5", "key": f"c{c}", "value": str(k)})
    else:
        s, b = _json(conn, "POST", "/api/v1/tag", {"ref": "bench-deep@5", "tags": {f"c{c}": str(k)}})
    _ok(s, b, "tag")


def op_search(server: str, conn: Conn, task: dict[str, Any], k: int) -> None:
    rng = random.Random(task["client"] * 7919 + k)
    m, stage = rng.randrange(task["models"]), rng.randrange(10)
    if server == "mlflow":
        query = urlencode({"filter": f"name='bench-m{m}' AND tags.stage='s{stage}'", "max_results": 1000})
        s, b = conn.call("GET", f"/api/2.0/mlflow/model-versions/search?{query}")
        _ok(s, b, "search")
        found = json.loads(b).get("model_versions", [])
    else:
        query = urlencode({"name": f"bench-m{m}", "tag": f"stage=s{stage}"})
        s, b = conn.call("GET", f"/api/v1/search?{query}")
        _ok(s, b, "search")
        found = json.loads(b)["versions"]
    if len(found) != task["expect"]:
        raise RuntimeError(f"search found {len(found)} versions, expected {task['expect']}")


def op_mlflow_create(server: str, conn: Conn, task: dict[str, Any], k: int) -> None:
    """``model-versions/create`` of MLflow's REST API against ``mledger serve`` (``scripts/profile_http.py``):
    the source is ``task["sources"][k]`` (or ``task["sources_per_client"][client][k]``), a URL under the server's ``MLEDGER_SOURCES`` it fetches and ingests."""
    name = f"bench-w{(task['client'] + k) % 4}"
    sources = task["sources_per_client"][task["client"]] if "sources_per_client" in task else task["sources"]
    s, b = _json(conn, "POST", "/api/2.0/mlflow/model-versions/create", {"name": name, "source": sources[k]})
    _ok(s, b, "mlflow create")
    if json.loads(b)["model_version"]["status"] != "READY":
        raise RuntimeError(f"create answered {b[:200]!r}")


def op_mlflow_tag(server: str, conn: Conn, task: dict[str, Any], k: int) -> None:
    """What ``MlflowClient.set_model_version_tag`` sends: ``registered-models/get`` (its prompt check), then
    ``model-versions/set-tag``, against either server."""
    s, b = conn.call("GET", "/api/2.0/mlflow/registered-models/get?name=bench-deep")
    _ok(s, b, "mlflow get")
    op_tag("mlflow", conn, task, k)


def op_mlflow_search(server: str, conn: Conn, task: dict[str, Any], k: int) -> None:
    """``model-versions/search`` of MLflow's REST API, against either server."""
    op_search("mlflow", conn, task, k)


OPS = {"create": op_create, "tag": op_tag, "search": op_search, "mlflow-create": op_mlflow_create,
       "mlflow-tag": op_mlflow_tag, "mlflow-search": op_mlflow_search}


def main() -> int:
    task = json.loads(sys.argv[1])
    server, op = task["server"], OPS[task["op"]]
    headers = {"Authorization": f"Bearer {task['token']}"} if task.get("token") else {}
    conn = Conn(task["port"], headers)
    # Connect (and warm the server's path for this client) outside the timing.
    warm = "/health" if server == "mlflow" else "/api/v1/health"
    s, b = conn.call("GET", warm)
    _ok(s, b, "health")
    time.sleep(max(0.0, task["start_at"] - time.time()))
    began = time.time()
    cpu = time.process_time()
    ms: list[float] = []
    errors: list[str] = []
    for k in range(task["n"]):
        t = time.perf_counter()
        try:
            op(server, conn, task, k)
            ms.append((time.perf_counter() - t) * 1000)
        except RuntimeError as exc:
            errors.append(str(exc)[:200])
    cpu_ms = (time.process_time() - cpu) * 1000 / max(1, task["n"])
    print("RESULT " + json.dumps({"start": began, "end": time.time(), "ms": ms, "cpu_ms": cpu_ms, "errors": len(errors),
                                  "first_error": errors[0] if errors else ""}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
