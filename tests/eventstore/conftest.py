"""PostgreSQL for the backend suites: the machine's server (``MLEDGER_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/postgres``), a database with a random name per test, dropped after
(its leftover connections terminated). A missing server follows tests/services.py's policy."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from services import unavailable

ADMIN_URL = os.environ.get("MLEDGER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL, once the server has answered (else unavailable("PostgreSQL"))."""
    try:
        import psycopg
    except ImportError as exc:
        unavailable(f"PostgreSQL (psycopg is not installed: {exc}; pip install -e '.[postgres]')")
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {ADMIN_URL} ({type(exc).__name__}: {str(exc).strip()})")
    return ADMIN_URL


def database_url(name: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(ADMIN_URL, dbname=name)


def drop_database(name: str) -> None:
    from psycopg import sql

    with _admin() as conn:
        # WITH (FORCE) terminates the connections a failed test (or a killed child) left behind.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def new_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """``new_postgres_database() -> url``: an empty database of its own, dropped when the test ends."""
    from psycopg import sql

    made: list[str] = []

    def make() -> str:
        name = f"mledger_test_{uuid.uuid4().hex[:16]}"
        with _admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return database_url(name)

    try:
        yield make
    finally:
        for name in made:
            drop_database(name)
