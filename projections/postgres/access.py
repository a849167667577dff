"""The token table in PostgreSQL (``projections.access`` folds into it): its DDL and its few statements.

The same table as SQLite's (``projections.sqlite.access``), in the log's database beside the catalog but
apart from it (its own tables and checkpoint: a catalog rebuild or the audit's replay never touches it), so
every server process and host reads one table instead of folding the log in its own memory. Names are
``COLLATE "C"`` as in the catalog: listed in the same order as on SQLite.
"""

from __future__ import annotations

from typing import Any

from .text import text_param

SCHEMA = (
    'CREATE TABLE IF NOT EXISTS access_tokens ('
    ' token text COLLATE "C" PRIMARY KEY, role text NOT NULL, prefix text NOT NULL, expires_at text,'
    ' secret_sha256 text NOT NULL, granted_at text NOT NULL, granted_by text NOT NULL,'
    ' revoked_at text, revoked_by text, position bigint NOT NULL)',
    "CREATE INDEX IF NOT EXISTS access_tokens_secret ON access_tokens (secret_sha256)",
    "CREATE TABLE IF NOT EXISTS access_checkpoint (id integer PRIMARY KEY CHECK (id = 1), position bigint NOT NULL)",
)
_COLUMNS = "token, role, prefix, expires_at, secret_sha256, granted_at, granted_by, revoked_at, revoked_by"
_GRANT = (
    f"INSERT INTO access_tokens ({_COLUMNS}, position)"  # noqa: S608 - fixed columns
    " VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, NULL, %s)"
    " ON CONFLICT (token) DO UPDATE SET role = excluded.role, prefix = excluded.prefix,"
    " expires_at = excluded.expires_at, secret_sha256 = excluded.secret_sha256, granted_at = excluded.granted_at,"
    " granted_by = excluded.granted_by, revoked_at = NULL, revoked_by = NULL, position = excluded.position"
)
_REVOKE = "UPDATE access_tokens SET revoked_at = %s, revoked_by = %s, position = %s WHERE token = %s"
_CHECKPOINT = ("INSERT INTO access_checkpoint (id, position) VALUES (1, %s)"
               " ON CONFLICT (id) DO UPDATE SET position = excluded.position")


def exists(conn: Any) -> bool:
    """Whether the tables are there: asked first, so a role without the right to create tables (a writer,
    docs/operations.md "Roles") never runs the DDL once the owner has made them."""
    return bool(conn.execute("SELECT to_regclass('access_tokens') IS NOT NULL AND to_regclass('access_checkpoint') IS NOT NULL").fetchone()[0])


def create(conn: Any) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def checkpoint(conn: Any) -> int:
    """The position the table has folded (0 before the first fold)."""
    row = conn.execute("SELECT position FROM access_checkpoint WHERE id = 1").fetchone()
    return row[0] if row else 0


def set_checkpoint(conn: Any, position: int) -> None:
    conn.execute(_CHECKPOINT, (position,))


def grant(conn: Any, row: tuple, position: int) -> None:
    """``row``: token, role, prefix, expires_at, secret_sha256, granted_at, granted_by."""
    conn.execute(_GRANT, (*row[:6], text_param(row[6]), position))


def revoke(conn: Any, token: str, revoked_at: str, revoked_by: str, position: int) -> None:
    conn.execute(_REVOKE, (revoked_at, text_param(revoked_by), position, token))


def find(conn: Any, secret_sha256: str) -> list[tuple]:
    return conn.execute(f"SELECT {_COLUMNS} FROM access_tokens WHERE secret_sha256 = %s",  # noqa: S608
                        (secret_sha256,)).fetchall()


def rows(conn: Any) -> list[tuple]:
    return conn.execute(f"SELECT {_COLUMNS} FROM access_tokens ORDER BY token").fetchall()  # noqa: S608
