"""PostgreSQL for the backend suites (tests/contracts/databases.py): the server checked once per session,
a database with a random name per test, dropped after. A missing server follows tests/services.py's
policy (fails in CI, skips on a newcomer's machine)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from contracts.databases import ADMIN_URL, admin_connection, create_database, database_url, drop_database
from services import unavailable


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL, once the server has answered (else unavailable("PostgreSQL"))."""
    try:
        import psycopg
    except ImportError as exc:
        unavailable(f"PostgreSQL (psycopg is not installed: {exc}; pip install -e '.[postgres]')")
    try:
        with admin_connection() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {ADMIN_URL} ({type(exc).__name__}: {str(exc).strip()})")
    return ADMIN_URL


@pytest.fixture
def new_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """``new_postgres_database() -> url``: an empty database of its own, dropped when the test ends."""
    made: list[str] = []

    def make() -> str:
        made.append(create_database())
        return database_url(made[-1])

    try:
        yield make
    finally:
        for name in made:
            drop_database(name)
