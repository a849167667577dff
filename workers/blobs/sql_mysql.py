"""The blob tables in MySQL or MariaDB (``mysql://user[:password]@host[:port]/database``) through PyMySQL
(the ``mysql`` extra): ``LONGBLOB`` chunks of 1 MiB, below the server's default ``max_allowed_packet``."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any
from urllib.parse import unquote, urlsplit

from eventstore.errors import ValidationError

PARALLEL = True

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blob_uploads (upload VARCHAR(32) PRIMARY KEY, started DOUBLE NOT NULL) "
    "ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS blob_chunks (upload VARCHAR(32) NOT NULL, seq INT NOT NULL, data LONGBLOB NOT NULL, "
    "PRIMARY KEY (upload, seq)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS blob_store (digest VARCHAR(71) PRIMARY KEY, upload VARCHAR(32) NOT NULL, "
    "size BIGINT NOT NULL, chunk INT NOT NULL, created DOUBLE NOT NULL) ENGINE=InnoDB",
)
INSERT_BLOB = "INSERT IGNORE INTO blob_store (digest, upload, size, chunk, created) VALUES (%s, %s, %s, %s, %s)"
PUT_IN = None  # DatabaseBlobStore.put_in: the blob's row, then its chunks if the row was new


def parts(url: str) -> dict[str, Any]:
    u = urlsplit(url)
    database = u.path.lstrip("/")
    if not u.hostname or not database or "/" in database:
        raise ValidationError("a MySQL blob store is mysql://user[:password]@host[:port]/database")
    return {"host": u.hostname, "port": u.port or 3306, "user": unquote(u.username or "root"),
            "password": unquote(u.password or ""), "database": unquote(database)}


def describe(url: str) -> str:
    p = parts(url)
    return f"MySQL database {p['database']} at {p['host']}:{p['port']}"


def q(statement: str) -> str:
    return statement.replace("?", "%s")


def binary(data: bytes) -> Any:
    return data


def connect(url: str) -> Any:
    try:
        import pymysql
    except ImportError:
        raise ValidationError("a mysql:// blob store needs PyMySQL: pip install 'modelledger[mysql]'") from None
    return pymysql.connect(**parts(url), autocommit=True, connect_timeout=10, charset="utf8mb4")


def has_tables(conn: Any) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() "
                    "AND table_name = 'blob_store'")
        return cur.fetchone() is not None


def create_schema(conn: Any) -> None:
    if has_tables(conn):
        return
    with conn.cursor() as cur:
        for statement in SCHEMA:  # DDL commits by itself in MySQL; IF NOT EXISTS makes a race harmless
            cur.execute(statement)


def begin(conn: Any) -> None:
    conn.begin()


def commit(conn: Any) -> None:
    conn.commit()


def rollback(conn: Any) -> None:
    conn.rollback()


# InnoDB has no secure delete: a deleted chunk stays in its page until purge frees the space and a
# later write reuses it (``OPTIMIZE TABLE blob_chunks`` rebuilds the table without them).
# docs/operations.md ("gc") says so.
def erasing(conn: Any) -> Any:
    return nullcontext()


def settle_deletes(conn: Any) -> bool:
    return False
