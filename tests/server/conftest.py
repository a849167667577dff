"""Fixtures of the HTTP server's tests: a registry with one token of each kind, the app in-process
(FastAPI's TestClient, for the many small cases) and real ``mledger serve`` processes on free ports."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from services import mledger_command, reap, subprocess_env, wait_for

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


@pytest.fixture
def tokens(home: Path) -> dict[str, str]:
    """Secrets of: admin, writer (every model), team (writer under team-a/), reader. Granted by the local
    operator (``MLEDGER_ACTOR``), as `mledger token create` would."""
    from modelledger import Registry

    with Registry.open(home, actor="operator@host") as reg:
        out = {}
        for name, role, prefix in (("admin", "admin", ""), ("writer", "writer", ""),
                                   ("team", "writer", "team-a/"), ("reader", "reader", "")):
            _state, secret = reg.create_token(name, role, prefix=prefix)
            assert secret is not None
            out[name] = secret
        return out


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def make_client(home: Path) -> Iterator[Callable[..., object]]:
    from fastapi.testclient import TestClient

    from modelledger.config import Config
    from modelledger.server.app import create_app

    made: list[TestClient] = []

    def make(secret: str | None = None, *, allow_anonymous_read: bool = False) -> TestClient:
        client = TestClient(create_app(Config.load(home), allow_anonymous_read=allow_anonymous_read))
        if secret is not None:
            client.headers.update(bearer(secret))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def admin(make_client, tokens):
    return make_client(tokens["admin"])


@pytest.fixture
def writer(make_client, tokens):
    return make_client(tokens["writer"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, *extra: str) -> None:
        self.port = free_port()
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        reap(self.proc)


@pytest.fixture
def start_server(home: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*extra: str) -> Server:
        server = Server(home, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
