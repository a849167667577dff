"""The blob tables in PostgreSQL (``postgresql://…``, or the registry's own database): ``bytea`` chunks."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

PARALLEL = True

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blob_uploads (upload TEXT PRIMARY KEY, started DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blob_chunks (upload TEXT NOT NULL, seq INTEGER NOT NULL, data BYTEA NOT NULL, "
    "PRIMARY KEY (upload, seq))",
    "CREATE TABLE IF NOT EXISTS blob_store (digest TEXT PRIMARY KEY, upload TEXT NOT NULL, size BIGINT NOT NULL, "
    "chunk INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL)",
)
INSERT_BLOB = ("INSERT INTO blob_store (digest, upload, size, chunk, created) VALUES (%s, %s, %s, %s, %s) "
               "ON CONFLICT (digest) DO NOTHING")
# ``DatabaseBlobStore.put_in``: a blob written inside the log's transaction in one statement whose result is not
# read (the chunks go in only if the blob's row was new), so it rides the command's pipeline. One chunk (every
# blob of the small tier) as a plain parameter: a bytea[] costs psycopg ~50 µs more CPU to adapt than a bytea.
PUT_IN = ("WITH b AS (INSERT INTO blob_store (digest, upload, size, chunk, created) VALUES (%s, %s, %s, %s, %s) "
          "ON CONFLICT (digest) DO NOTHING RETURNING upload) "
          "INSERT INTO blob_chunks (upload, seq, data) SELECT b.upload, 0, %s::bytea FROM b")
PUT_IN_CHUNKS = ("WITH b AS (INSERT INTO blob_store (digest, upload, size, chunk, created) "
                 "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (digest) DO NOTHING RETURNING upload) "
                 "INSERT INTO blob_chunks (upload, seq, data) SELECT b.upload, c.seq, c.data "
                 "FROM b, unnest(%s::integer[], %s::bytea[]) AS c(seq, data)")
# Concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's catalog: serialise it.
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7244190335061)"


def describe(url: str) -> str:
    from psycopg import conninfo

    try:
        info = conninfo.conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - only a description
        return "PostgreSQL"
    return f"PostgreSQL database {info.get('dbname', '?')} at {info.get('host', 'localhost')}"


def q(statement: str) -> str:
    return statement.replace("?", "%s")


def binary(data: bytes) -> Any:
    return data


def connect(url: str) -> Any:
    import psycopg

    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def has_tables(conn: Any) -> bool:
    return conn.execute("SELECT to_regclass('blob_store') IS NOT NULL").fetchone()[0]


def create_schema(conn: Any) -> None:
    if has_tables(conn):
        return
    with conn.transaction():
        conn.execute(SCHEMA_LOCK)
        for statement in SCHEMA:
            conn.execute(statement)


def begin(conn: Any) -> None:
    conn.execute("BEGIN")


def commit(conn: Any) -> None:
    conn.execute("COMMIT")


def rollback(conn: Any) -> None:
    conn.execute("ROLLBACK")


# PostgreSQL has no secure delete: a deleted chunk's tuple stays in its page until VACUUM frees the
# space and a later write reuses it (``VACUUM FULL blob_chunks`` rewrites the table without them).
# docs/operations.md ("gc") says so.
def erasing(conn: Any) -> Any:
    return nullcontext()


def settle_deletes(conn: Any) -> bool:
    return False
