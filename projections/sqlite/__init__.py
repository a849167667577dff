"""The catalog in SQLite: its DDL (``schema``), the fold's reads and writes (``fold``) and the catalog's
questions (``queries``). Every dialect module offers these same names (``projections.dialects``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from .beside import beside
from .fold import FoldStore
from .prefetched import prefetch
from .queries import (
    alias_history,
    aliases_of,
    best_version,
    list_models,
    model_exists,
    model_row,
    model_state_at,
    models_at,
    partial_folders,
    pending_positions,
    purge_candidates,
    purge_versions,
    purged_live_versions,
    ready_blobs,
    referenced_digests,
    request_position,
    search_versions,
    table_rows,
    version_at,
    version_row,
    version_rows,
    version_with_aliases,
    versions_at,
    words_rows,
)
from .schema import VERSION, create, create_indexes, drop, stored_version

NAME = "sqlite"

__all__ = [
    "NAME", "VERSION", "FoldStore", "alias_history", "beside", "aliases_of", "best_version", "connection_of", "create", "create_indexes", "drop",
    "fold_store", "list_models", "model_exists", "model_row", "model_state_at", "models_at", "partial_folders",
    "pending_positions", "prefetch", "purge_candidates", "purge_versions", "purged_live_versions", "ready_blobs",
    "referenced_digests", "request_position", "scratch", "search_versions", "stored_version", "table_rows",
    "version_at", "version_row", "version_rows", "version_with_aliases", "versions_at", "words_rows",
]


def fold_store(conn: sqlite3.Connection) -> FoldStore:
    return FoldStore(conn)


def connection_of(tx: object) -> sqlite3.Connection:
    """The connection of a ``eventstore.sqlite`` write transaction (the catalog lives in the log's file)."""
    return tx.connection  # type: ignore[attr-defined]


@contextmanager
def scratch(path: str = "") -> Iterator[sqlite3.Connection]:
    """A throw-away catalog (``""``: SQLite's anonymous temporary database, which spills to a private temp
    file when it grows, so a million-event catalog does not have to fit in memory)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        create(conn)
        conn.execute("COMMIT")
        yield conn
    finally:
        conn.close()
