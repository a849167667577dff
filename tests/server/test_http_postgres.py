"""The server on a PostgreSQL registry: tokens work there too (granted, used, revoked and refused at once)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")


def test_tokens_on_postgresql(home: Path, new_postgres_database) -> None:
    pg_url = new_postgres_database()
    from fastapi.testclient import TestClient

    from modelledger.config import Config
    from modelledger.registry import Registry
    from modelledger.server.app import create_app

    config = Config.load(home, database=pg_url)
    with Registry(config) as reg:
        _, secret = reg.create_token("ci", "writer")
    client = TestClient(create_app(config))
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/list", headers=headers).status_code == 200
    assert client.get("/api/v1/list").status_code == 401
    with Registry(config) as reg:
        reg.revoke_token("ci", "rotated")
    assert client.get("/api/v1/list", headers=headers).status_code == 401  # seen at the next request
    client.close()
