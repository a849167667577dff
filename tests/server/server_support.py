"""Helpers of the HTTP server's tests (a module of its own, not conftest.py: a test module importing from
``conftest`` got whichever conftest was imported first when pytest ran tests/server with tests/workers)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from pathlib import Path

import httpx
from services import PortTaken, mledger_command, reap, stop_process, subprocess_env, wait_for

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
        with Registry.open(home) as reg:  # whose server must answer on the port (see below)
            registry_id = reg.registry_id
        # A port free_port() named can be taken by another test's server first (a worker per core): ours then
        # exits while theirs answers the probe. The probe checks whose registry answers; a taken port that we
        # chose means another one (a restart on a given port keeps it).
        for attempt in range(5):
            self.port = port or free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen([*mledger_command(), "serve", "--port", str(self.port), *extra],
                                         env=subprocess_env(home), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            try:
                wait_for(lambda: self._up(registry_id), 60, "mledger serve to answer")
                return
            except PortTaken:
                stop_process(self.proc)
                if port is not None or attempt == 4:
                    raise

    def _up(self, registry_id: str) -> bool:
        if self.proc.poll() is not None:
            error = self.proc.stderr.read().decode()
            if "address already in use" in error.lower():
                raise PortTaken(self.port)
            raise AssertionError(f"mledger serve exited: {error[-2000:]}")
        try:
            answer = httpx.get(f"{self.url}/api/v1/health", timeout=2)
        except httpx.TransportError:
            return False
        if answer.status_code != 200:
            return False
        if answer.json().get("registry_id") != registry_id:
            raise PortTaken(self.port)  # another registry's server holds the port
        return True

    def client(self, secret: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(secret) if secret else {}, timeout=60)

    def kill(self) -> None:
        """A crash: SIGKILL, every open connection cut without a goodbye."""
        reap(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
