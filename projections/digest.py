"""Every catalog row as a canonical line, the same on every dialect: what ``Catalog.digest()`` hashes and what
the audit compares a replay with.

A row is read through its dialect and normalised before it is written as canonical JSON: a JSON column (text
in SQLite, ``jsonb`` in PostgreSQL) becomes the value it holds, a boolean becomes 0 or 1, and a number is
written by value, JSON booleans staying booleans (``jsonb`` keeps a number's value, not its spelling: ``1e16`` comes back as
``10000000000000000`` and ``-0.0`` as ``0``). So the same log folded by SQLite and by PostgreSQL gives the
same lines, and the same digest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from eventstore.canonical import canonical_json

from .dialects import dialect_of
from .rows import MODEL_COLUMNS, VERSION_COLUMNS, obj

_MODEL = tuple(c.strip() for c in MODEL_COLUMNS.split(","))
_VERSION = tuple(c.strip() for c in VERSION_COLUMNS.split(","))

# (table, columns, order, JSON columns, prefix the line with the table's name)
TABLES: tuple[tuple[str, tuple[str, ...], str, frozenset[str], bool], ...] = (
    ("models", _MODEL, "name", frozenset({"tags"}), False),
    ("versions", _VERSION, "name, version",
     frozenset({"params", "structure", "optimizer", "tags", "metrics", "artifact"}), False),
    ("aliases", ("name", "alias", "version"), "name, alias", frozenset(), True),
    ("alias_history", ("name", "alias", "seq", "version"), "name, alias, seq", frozenset(), True),
    ("tags", ("name", "version", "key", "value"), "name, version, key", frozenset(), True),
    ("metrics", ("name", "version", "key", "value"), "name, version, key", frozenset(), True),
    ("files", ("name", "version", "path", "basename"), "name, version, path", frozenset(), True),
    ("blob_refs", ("digest", "name", "version", "size"), "digest, name, version", frozenset(), True),
    ("model_states", ("name", "position", "state"), "name, position", frozenset({"state"}), True),
    ("version_states", ("name", "version", "position", "state"), "name, version, position",
     frozenset({"state"}), True),
    ("artifact_states", ("name", "version", "position", "artifact"), "name, version, position",
     frozenset({"artifact"}), True),
)


def column(value: Any) -> Any:
    """A column's value as the digest sees it: a boolean column (PostgreSQL's) as 0/1, numbers by value."""
    return int(value) if isinstance(value, bool) else normal(value)


def normal(value: Any) -> Any:
    """A JSON value with its numbers by value (whole floats as integers), recursively; booleans stay."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    return value


def catalog_digest_rows(conn: Any) -> Iterator[str]:
    """Every catalog row in a canonical order, for comparing two catalogs (audit, rebuild tests, dialects).
    Order is by the row's key; keys are text compared byte by byte on both dialects (SQLite's BINARY
    collation, PostgreSQL's ``COLLATE "C"`` columns)."""
    sql = dialect_of(conn)
    for table, columns, order, json_columns, prefixed in TABLES:
        flags = [c in json_columns for c in columns]
        for row in sql.table_rows(conn, table, columns, order):
            values = [normal(obj(v)) if is_json else column(v) for v, is_json in zip(row, flags, strict=True)]
            yield canonical_json([table, *values] if prefixed else values)
