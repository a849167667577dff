"""The token table in SQLite (``projections.access`` folds into it): its DDL and its few statements.

Kept in the registry's file beside the catalog but apart from it: its own tables and checkpoint, so a catalog
rebuild or the audit's replay comparison never touches it.
"""

from __future__ import annotations

import sqlite3

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS access_tokens ("
    " token TEXT PRIMARY KEY, role TEXT NOT NULL, prefix TEXT NOT NULL, expires_at TEXT,"
    " secret_sha256 TEXT NOT NULL, granted_at TEXT NOT NULL, granted_by TEXT NOT NULL,"
    " revoked_at TEXT, revoked_by TEXT, position INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS access_tokens_secret ON access_tokens (secret_sha256)",
    "CREATE TABLE IF NOT EXISTS access_checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " position INTEGER NOT NULL)",
)
_COLUMNS = "token, role, prefix, expires_at, secret_sha256, granted_at, granted_by, revoked_at, revoked_by"
_GRANT = (
    f"INSERT INTO access_tokens ({_COLUMNS}, position) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)"  # noqa: S608
    " ON CONFLICT (token) DO UPDATE SET role = excluded.role, prefix = excluded.prefix,"
    " expires_at = excluded.expires_at, secret_sha256 = excluded.secret_sha256, granted_at = excluded.granted_at,"
    " granted_by = excluded.granted_by, revoked_at = NULL, revoked_by = NULL, position = excluded.position"
)
_REVOKE = "UPDATE access_tokens SET revoked_at = ?, revoked_by = ?, position = ? WHERE token = ?"
_CHECKPOINT = ("INSERT INTO access_checkpoint (id, position) VALUES (1, ?)"
               " ON CONFLICT (id) DO UPDATE SET position = excluded.position")


def exists(conn: sqlite3.Connection) -> bool:
    """Whether the tables are there: asked first, so a role without the right to create tables (a writer,
    docs/operations.md "Roles") never runs the DDL once the owner has made them."""
    return bool(conn.execute("SELECT count(*) = 2 FROM sqlite_master WHERE type = 'table' AND name IN ('access_tokens', 'access_checkpoint')").fetchone()[0])


def create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def checkpoint(conn: sqlite3.Connection) -> int:
    """The position the table has folded (0 before the first fold)."""
    row = conn.execute("SELECT position FROM access_checkpoint WHERE id = 1").fetchone()
    return row[0] if row else 0


def set_checkpoint(conn: sqlite3.Connection, position: int) -> None:
    conn.execute(_CHECKPOINT, (position,))


def grant(conn: sqlite3.Connection, row: tuple, position: int) -> None:
    """``row``: token, role, prefix, expires_at, secret_sha256, granted_at, granted_by."""
    conn.execute(_GRANT, (*row, position))


def revoke(conn: sqlite3.Connection, token: str, revoked_at: str, revoked_by: str, position: int) -> None:
    conn.execute(_REVOKE, (revoked_at, revoked_by, position, token))


def find(conn: sqlite3.Connection, secret_sha256: str) -> list[tuple]:
    return conn.execute(f"SELECT {_COLUMNS} FROM access_tokens WHERE secret_sha256 = ?",  # noqa: S608
                        (secret_sha256,)).fetchall()


def rows(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute(f"SELECT {_COLUMNS} FROM access_tokens ORDER BY token").fetchall()  # noqa: S608
