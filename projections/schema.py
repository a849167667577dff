"""The SQLite catalog's tables, under the name tools and tests have always imported; the DDL itself lives in
``projections.sqlite.schema`` (and PostgreSQL's in ``projections.postgres.schema``)."""

from __future__ import annotations

from .sqlite.schema import (
    CATALOG_TABLES,
    DECISION_TABLES,
    FTS_TABLES,
    TABLES,
    VERSION,
    create,
    drop,
    stored_version,
)

__all__ = ["CATALOG_TABLES", "DECISION_TABLES", "FTS_TABLES", "TABLES", "VERSION", "create", "drop", "stored_version"]
