"""Fixtures for the artifact side-effect acceptance tests: the real Redis (db 15 only), moto's S3 server,
and a guard that puts the process back on the embedded broker after every test.

Service policy: a service that does not answer makes its tests *fail* when ``MLEDGER_REQUIRE_SERVICES=1``
or ``CI=true`` is set, and skip otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from services import AWS_VARS

# -- S3 (moto server), adapted from tests/workers/conftest.py --------------------------------------------

@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS/fsspec variables pointing at moto (region left unset: s3fs' mkdir(bucket) fails with us-east-1).

    fsspec caches S3FileSystem instances by constructor arguments, not by the endpoint read from the
    environment: the cache is cleared before (an instance bound to another test's server) and after (one
    bound to this module's server, which stops) every test."""
    import s3fs

    for var in AWS_VARS:
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
