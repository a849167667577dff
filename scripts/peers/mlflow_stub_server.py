"""A stub of MLflow's REST API that answers every call at once with a canned, valid answer: what
``MlflowClient`` itself costs per call, with no server work behind it (``bench_peers.py --only mlflowclient``,
its "ceiling" rows: a server can make a ``MlflowClient`` call no faster than this).

    python scripts/peers/mlflow_stub_server.py '{"versions": 100}'     # prints "PORT <n>", serves until killed

Standard library only (HTTP/1.1 keep-alive, a thread per connection). A search answers ``versions`` versions
shaped like MLflow's (the same fields, two tags each), as the real servers answer the bench's searches; a
create answers READY (the client then does not poll); a tag answers ``{}``. A path it does not know is
answered ``{}`` and counted on stderr, so a call the client makes that the stub does not model is seen.
"""

from __future__ import annotations

import http.server
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def version(name: str, number: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"name": name, "version": str(number), "creation_timestamp": now, "last_updated_timestamp": now,
            "current_stage": "None", "description": "", "source": f"http://127.0.0.1/sources/{name}/{number}/model.bin",
            "run_id": "", "status": "READY", "run_link": "",
            "tags": [{"key": "stage", "value": f"s{number % 10}"}, {"key": "task", "value": "ctr"}]}


def answers(versions: int) -> dict[str, bytes]:
    model = {"name": "bench-deep", "creation_timestamp": 0, "last_updated_timestamp": 0, "description": "",
             "latest_versions": [version("bench-deep", 10)], "tags": [], "aliases": []}
    found = [version("bench-m0", 10 * i + 1) for i in range(versions)]
    return {
        "registered-models/get": json.dumps({"registered_model": model}).encode(),
        "model-versions/create": json.dumps({"model_version": version("bench-w0", 1)}).encode(),
        "model-versions/set-tag": b"{}",
        "model-versions/search": json.dumps({"model_versions": found}).encode(),
    }


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer (headers and body buffered together, flushed after the call) and no Nagle: headers
    # and body in two segments met the client's delayed ACK, ~40 ms a call (a tag took 111 ms p50).
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    canned: dict[str, bytes] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = urlsplit(self.path).path
        key = path.split("/api/2.0/mlflow/", 1)[-1]
        body = self.canned.get(key)
        if body is None:
            print(f"stub: unmodelled call {self.command} {path}", file=sys.stderr, flush=True)
            body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer


def main() -> int:
    task = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    Handler.canned = answers(int(task.get("versions", 100)))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    print(f"PORT {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
