"""Helpers of the HTTP server's tests (a module of its own, not conftest.py: a test module importing from
``conftest`` got whichever conftest was imported first when pytest ran tests/server with tests/workers)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from pathlib import Path

import httpx
from services import mledger_command, reap, stop_process, subprocess_env, wait_for

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real ``mledger serve`` process on ``port`` (a free one unless given: a restart takes the old one)."""

    def __init__(self, home: Path, *extra: str, port: int | None = None) -> None:
        self.home = home
        self.extra = extra
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*mledger_command(), "serve", "--port", str(self.port), *extra],
                                     env=subprocess_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mledger serve exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "mledger serve to answer")

    def client(self, secret: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(secret) if secret else {}, timeout=60)

    def kill(self) -> None:
        """A crash: SIGKILL, every open connection cut without a goodbye."""
        reap(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
