"""Fixtures for the workers tests: an S3 endpoint served by moto in this process."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import AWS_VARS, unavailable

# The package is not installed in the dev venv; make the repo importable for these tests.
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, once per session. The environment that points at it is set per test (``s3_env``),
    so it never leaks into other tests or their child processes."""
    from moto.server import ThreadedMotoServer  # in the test extra

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure means: no S3 server here
        unavailable(f"moto S3 server ({type(exc).__name__}: {exc})")
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test's environment points s3fs/boto at the moto server (undone by monkeypatch afterwards)."""
    import s3fs

    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", s3_endpoint)
    # Region left unset on purpose: s3fs' mkdir(bucket) fails with an explicit us-east-1.
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3_endpoint
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    import fsspec

    name = f"mledger-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return name
