"""The catalog in PostgreSQL: its DDL (``schema``), the fold's reads and writes (``fold``) and the catalog's
questions (``queries``), with the same names as ``projections.sqlite`` (``projections.dialects``)."""

from __future__ import annotations

from typing import Any

from .beside import beside
from .fold import FoldStore
from .prefetch import prefetch
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
    version_with_aliases_later,
    versions_at,
    words_rows,
)
from .schema import VERSION, create, create_indexes, drop, stored_version

NAME = "postgresql"

__all__ = [
    "NAME", "VERSION", "FoldStore", "alias_history", "beside", "aliases_of", "best_version", "connection_of", "create", "create_indexes", "drop",
    "fold_store", "list_models", "model_exists", "model_row", "model_state_at", "models_at", "partial_folders",
    "pending_positions", "prefetch", "purge_candidates", "purge_versions", "purged_live_versions", "ready_blobs",
    "referenced_digests", "request_position", "search_versions", "stored_version", "table_rows", "version_at",
    "version_row", "version_rows", "version_with_aliases", "version_with_aliases_later", "versions_at",
    "words_rows",
]


def fold_store(conn: Any) -> FoldStore:
    return FoldStore(conn)


def connection_of(tx: object) -> Any:
    """The connection of an ``eventstore.postgres`` write transaction (the catalog lives in the log's database)."""
    return tx.connection  # type: ignore[attr-defined]
