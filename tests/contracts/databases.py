"""Throw-away PostgreSQL databases for the backend suites, on the machine's server (``MLEDGER_TEST_POSTGRES``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``): a random name each, dropped with whatever
connections a failed test (or a killed child) left open."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

ADMIN_URL = os.environ.get("MLEDGER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_connection():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def database_url(name: str) -> str:
    """A postgresql:// URL (what MLEDGER_DATABASE takes; libpq's key=value form is refused there)."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(ADMIN_URL)._replace(path="/" + name))


def create_database() -> str:
    """A new empty database; its name."""
    from psycopg import sql

    name = f"mledger_test_{uuid.uuid4().hex[:16]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    from psycopg import sql

    with admin_connection() as conn:
        # WITH (FORCE) terminates the connections still open on it first.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_schema(base: str) -> tuple[str, str]:
    """A new schema in the database ``base`` (a postgresql:// URL): ``(schema, url)``, where the URL's
    search_path names it (every statement of a registry is schema-relative, so it is a registry of its own).
    (A database per registry cost ~10 s each under load, as CREATE/DROP DATABASE both checkpoint; a schema
    costs milliseconds.)"""
    import psycopg
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema, f"{base}?options=-csearch_path%3D{schema}"


def drop_schema(base: str, schema: str) -> None:
    """Drop ``schema`` from ``base``, ending first the idle transactions a killed child left holding locks."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                     " AND pid <> pg_backend_pid() AND query NOT LIKE '%%pg_stat_activity%%'"
                     " AND state = 'idle in transaction'")
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def registry_schema(base: str) -> Iterator[str]:
    """A schema of its own in the database ``base`` for one test's registry: yields the URL whose search_path
    names it; dropped after (``create_schema``, ``drop_schema``)."""
    schema, url = create_schema(base)
    try:
        yield url
    finally:
        drop_schema(base, schema)
