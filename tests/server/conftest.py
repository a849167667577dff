"""Fixtures of the HTTP server's tests: a registry with one token of each kind, the app in-process
(FastAPI's TestClient, for the many small cases) and real ``mledger serve`` processes on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from server_support import Server, bearer  # noqa: E402 - after the skips: it imports httpx


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
        # A TestClient used outside ``with`` never runs the app's lifespan, whose exit closes the registry:
        # close it here, or every app leaves its PostgreSQL pool open ("too many clients" later in the run).
        client.app.state.registry.close()
        client.app.state.origins.close()


@pytest.fixture
def admin(make_client, tokens):
    return make_client(tokens["admin"])


@pytest.fixture
def writer(make_client, tokens):
    return make_client(tokens["writer"])


@pytest.fixture
def start_server(home: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*extra: str, port: int | None = None, **options: int) -> Server:
        server = Server(home, *extra, port=port, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
