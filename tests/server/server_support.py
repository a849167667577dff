"""Helpers of the HTTP server's tests (a module of its own, not conftest.py: a test module importing from
``conftest`` got whichever conftest was imported first when pytest ran tests/server with tests/workers)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import httpx
from services import health_of, mledger_command, reap, serve_on_a_free_port, stop_process, subprocess_env

from modelledger import Registry


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def head(home: Path) -> int:
    with Registry.open(home) as reg:
        return reg.head()


def upload(client, data: bytes, filename: str = "model.bin") -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = client.put(f"/api/v1/blobs/{digest}", params={"size": len(data)}, content=data)
    assert r.status_code == 201, r.text
    return {"digest": digest, "size": len(data), "filename": filename}


def register(client, name: str, data: bytes = b"weights v1", **extra) -> dict:
    r = client.post("/api/v1/register", json={"name": name, "artifact": upload(client, data), **extra})
    assert r.status_code == 200, r.text
    return r.json()


class Server:
    """A real ``mledger serve`` process on ``port`` (a free one unless given: a restart takes the old one)."""

    def __init__(self, home: Path, *extra: str, port: int | None = None, stdout: int = subprocess.DEVNULL) -> None:
        self.home = home
        self.extra = extra
        with Registry.open(home) as reg:  # whose server must answer on the port (``serve_on_a_free_port``)
            registry_id = reg.registry_id
        self.port, self.proc = serve_on_a_free_port(
            lambda port: subprocess.Popen([*mledger_command(), "serve", "--port", str(port), *extra],
                                          env=subprocess_env(home), stdout=stdout,
                                          stderr=subprocess.PIPE),
            lambda port: health_of(port, registry_id), "mledger serve", port=port)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, secret: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(secret) if secret else {}, timeout=60)

    def kill(self) -> None:
        """A crash: SIGKILL, every open connection cut without a goodbye."""
        reap(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
