"""A read command starts fast: it imports none of what only writes, the worker or the audit need.

``mledger show`` took ~0.4-1 s from a cold process, most of it imports a read never uses: sqlite-utils
(with numpy, click, dateutil, pluggy), dramatiq (with asyncio), fsspec and s3fs, the format sniffers.
These tests run each read through ``modelledger.cli.main`` in a fresh interpreter and list what it
imported, so an eager import added anywhere on the read path fails here (the time itself is measured by
``scripts/bench_coldstart.py``, not asserted).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import REDIS_DB, REDIS_HOST, REDIS_PORT, mledger_command, stop_process, subprocess_env, wait_for

# Third-party packages a read must not import (each was imported by every command before).
HEAVY = ("sqlite_utils", "numpy", "click", "pluggy", "dateutil", "dramatiq", "redis", "fsspec", "s3fs",
         "botocore", "aiobotocore", "torch", "psycopg", "psycopg_pool")
# Our own modules that load on first use (modelledger/registry.py, "loaded on first use").
LAZY = ("workers.actors", "workers.broker", "workers.ingest", "workers.store", "workers.blobs", "workers.formats",
        "workers.pickle_scan", "projections.audit")

READS = [
    ["show", "m@1"],
    ["show", "m@production"],
    ["show", "m"],
    ["show", "m@1", "--json", "--as-of", "#3"],
    ["list"],
    ["list", "--search", "weights", "--tag", "team=a"],
    ["log", "--json"],
    ["history", "m@1"],
    ["history", "m"],
    ["diff", "m@1", "m@2"],
    ["best", "m", "--metric", "acc"],
    ["--help"],
    ["show", "--help"],
]

# Runs one command in this fresh interpreter and reports the exit code and the modules it imported.
PROBE = """
import contextlib, io, json, sys
from modelledger.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _probe(home: Path, argv: list[str], **env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env=subprocess_env(home, **env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions of ``m`` (tags, metrics, an alias), made through the SDK as a user would."""
    from modelledger import Registry

    root = tmp_path_factory.mktemp("coldstart")
    (root / "w1.bin").write_bytes(b"weights v1\n")
    (root / "w2.bin").write_bytes(b"weights v2\n")
    with Registry.open(root / "home", broker="embedded", actor="tester@test") as reg:
        reg.register("m", str(root / "w1.bin"), tags={"team": "a"}, description="weights", params={"lr": 0.1})
        reg.register("m", str(root / "w2.bin"), params={"lr": 0.01})
        reg.metrics("m@1", acc=0.91)
        reg.metrics("m@2", acc=0.93)
        reg.alias("m@2", "production")
    return root / "home"


@pytest.mark.parametrize("argv", READS, ids=" ".join)
def test_a_read_imports_no_broker_store_sniffer_or_sqlite_utils(small_home: Path, argv: list[str]) -> None:
    result = _probe(small_home, argv)
    assert result["code"] == 0
    assert result["out"].strip()  # it did read something (help text, a table, JSON)
    assert _loaded(result["modules"], HEAVY) == []
    assert _loaded(result["modules"], LAZY) == []


def test_a_read_with_a_redis_broker_configured_does_not_load_dramatiq(small_home: Path) -> None:
    """A team that runs a Redis worker reads as fast: the broker is bound only by what sends a job."""
    result = _probe(small_home, ["show", "m@1", "--json"], MLEDGER_BROKER="redis://127.0.0.1:1/0")
    assert result["code"] == 0 and json.loads(result["out"])["version"] == 1
    assert _loaded(result["modules"], HEAVY + LAZY) == []


def test_a_bad_broker_is_still_refused_at_open_without_dramatiq(small_home: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, "show", "m@1"],
                          env=subprocess_env(small_home, MLEDGER_BROKER="amqp://elsewhere"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["code"] == 2
    assert done.stderr.strip().splitlines() == [
        "mledger: error: MLEDGER_BROKER must be 'embedded' or a redis:// URL, not 'amqp://elsewhere'"]
    assert _loaded(result["modules"], ("dramatiq",)) == []


def test_a_write_still_loads_what_it_needs_and_works(small_home: Path, tmp_path: Path) -> None:
    """The lazy parts are built on first use: a register in a fresh process ingests, sniffs and records."""
    weights = tmp_path / "w3.bin"
    weights.write_bytes(b"weights v3\n")
    result = _probe(small_home, ["register", "written", "--artifact", str(weights), "--json"])
    assert result["code"] == 0
    version = json.loads(result["out"])
    assert version["status"] == "ready" and version["artifact"]["size"] == len(b"weights v3\n")
    # Embedded, the caller's thread copies the source and commits the version already stored: no job is sent.
    assert {"workers.ingest", "workers.blobs", "workers.formats", "fsspec"} <= set(result["modules"])


def test_the_broker_is_bound_on_first_use_with_the_actors_on_it(small_home: Path) -> None:
    """Opened in a process that has not loaded dramatiq, a Redis registry binds its broker (namespace of its
    own, the ingest actor declared on it) when first asked — what ``mledger worker`` and a send rely on."""
    script = """
import sys
from modelledger import Registry
with Registry.open(sys.argv[1], broker="redis://127.0.0.1:1/0") as reg:
    assert "dramatiq" not in sys.modules and not reg.embedded
    broker = reg.broker
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    assert isinstance(broker, RedisBroker) and dramatiq.get_broker() is broker
    assert broker.namespace == "mledger-" + reg.registry_id[:12]
    assert "ingest" in broker.actors and broker.get_actor("ingest").broker is broker
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script, str(small_home)], env=subprocess_env(small_home),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.redis
def test_a_fresh_process_sends_its_job_to_its_own_registrys_redis_queue(redis_url: str, tmp_path: Path) -> None:
    """The first send binds the registry's broker: the job lands under the registry's namespace (not the
    default one ``workers.broker`` sets up at import from ``MLEDGER_BROKER``), where its worker listens."""
    import redis

    src = tmp_path / "w.bin"
    src.write_bytes(b"queued weights\n")
    script = """
import json, sys
from modelledger import Registry
with Registry.open(sys.argv[1], broker=sys.argv[2]) as reg:
    assert "dramatiq" not in sys.modules
    v = reg.register("queued", sys.argv[3], wait=False)
    print(json.dumps({"id": reg.registry_id, "position": v.position, "status": v.status}))
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "home"), redis_url, str(src)],
                          env=subprocess_env(tmp_path / "home", MLEDGER_SOURCES=str(tmp_path)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    assert sent["status"] == "pending"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        bodies = [json.loads(b) for b in client.hvals(f"mledger-{sent['id'][:12]}:mledger-ingest.msgs")]
    finally:
        client.close()
    assert [(b["actor_name"], b["args"]) for b in bodies] == [("ingest", [sent["position"], sent["id"]])]


# -- over HTTP (MLEDGER_URL) ---------------------------------------------------------------------------------

# What a read over HTTP must not import besides the above: httpx and its stack (uploads and downloads only),
# the server's, and the local registry with its SQLite recorder, decider and catalog (a remote read holds
# no database).
REMOTE_HEAVY = ("httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi", "rich", "fastapi", "starlette",
                "pydantic", "uvicorn", "sqlite3", "modelledger.registry", "modelledger.config", "eventstore.sqlite",
                "eventstore.decider", "eventstore.commands", "projections.catalog", "projections.access",
                "workers.context")
REMOTE_READS = [r for r in READS if r not in (["--help"], ["show", "--help"])]


@pytest.fixture(scope="module")
def served(small_home: Path) -> Iterator[dict[str, str]]:
    """``mledger serve`` on ``small_home`` (a reader token): the environment of a remote CLI."""
    from modelledger import Registry

    with Registry.open(small_home, actor="tester@test") as reg:
        _state, secret = reg.create_token("coldstart", "reader")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*mledger_command(), "serve", "--port", str(port)], env=subprocess_env(small_home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        assert proc.poll() is None, "mledger serve exited"
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, "mledger serve to answer")
        yield {"MLEDGER_URL": url, "MLEDGER_TOKEN": secret}
    finally:
        stop_process(proc)


@pytest.mark.parametrize("argv", REMOTE_READS, ids=" ".join)
def test_a_read_over_http_imports_neither_httpx_nor_the_local_registry(small_home: Path, served: dict[str, str],
                                                                      tmp_path: Path, argv: list[str]) -> None:
    """The same read against the server prints what it prints locally, having imported only the standard
    library's http.client and the records (``modelledger/jsonhttp.py``)."""
    local = _probe(small_home, argv)
    remote = _probe(tmp_path / "nowhere", argv, **served)
    assert remote["code"] == local["code"] == 0
    assert remote["out"] == local["out"] and remote["out"].strip()
    assert _loaded(remote["modules"], HEAVY + LAZY + REMOTE_HEAVY) == []
    assert "modelledger.jsonhttp" in remote["modules"]
    assert not (tmp_path / "nowhere").exists()


def test_a_remote_pull_still_loads_httpx_and_works(small_home: Path, served: dict[str, str], tmp_path: Path) -> None:
    """Moving bytes keeps httpx (streamed uploads, resumable downloads), loaded on first use."""
    done = subprocess.run([sys.executable, "-c", PROBE, "pull", "m@1", str(tmp_path / "out.bin")],
                          env=subprocess_env(tmp_path / "nowhere", **served), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["code"] == 0 and (tmp_path / "out.bin").read_bytes() == b"weights v1\n"
    assert "httpx" in result["modules"]
