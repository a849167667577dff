"""Fixtures for the artifact side-effect acceptance tests: the real Redis (db 15 only), moto's S3 server,
and a guard that puts the process back on the embedded broker after every test.

Service policy: a service that does not answer makes its tests *fail* when ``MLEDGER_REQUIRE_SERVICES=1``
or ``CI=true`` is set, and skip otherwise.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from artifact_support import REDIS_DB, REDIS_HOST, REDIS_PORT, REDIS_URL


def services_required() -> bool:
    return os.environ.get("MLEDGER_REQUIRE_SERVICES") == "1" or os.environ.get("CI", "").lower() == "true"


def unavailable(what: str) -> None:
    if services_required():
        pytest.fail(f"{what} is required (MLEDGER_REQUIRE_SERVICES=1 or CI=true) but not available")
    pytest.skip(f"{what} not available")


def _redis_client():
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=2, socket_timeout=10)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis at 127.0.0.1:6379, database 15, emptied before and after the test (FLUSHDB of db 15
    only — never another database)."""
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2):
            pass
        client = _redis_client()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT} ({type(exc).__name__}: {exc})")
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(autouse=True)
def _back_to_embedded() -> Iterator[None]:
    """Tests move every actor to a Redis or fakeredis broker; leave the process on the embedded default."""
    yield
    from workers import broker

    broker.use("embedded")


# -- S3 (moto server), adapted from tests/workers/conftest.py --------------------------------------------

_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL",
             "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        unavailable(f"moto server ({exc})")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    try:
        server.start()
        host, port = server.get_host_and_port()
        with socket.create_connection((host, port), timeout=5):
            pass
    except Exception as exc:  # noqa: BLE001
        unavailable(f"moto S3 server ({type(exc).__name__}: {exc})")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS/fsspec variables pointing at moto (region left unset: s3fs' mkdir(bucket) fails with us-east-1).

    fsspec caches S3FileSystem instances by constructor arguments, not by the endpoint read from the
    environment: the cache is cleared before (an instance bound to another test's server) and after (one
    bound to this module's server, which stops) every test."""
    import s3fs

    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", moto_endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield moto_endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    import fsspec

    name = f"mledger-acc-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
    return name
