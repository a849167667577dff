"""Tables of the current catalog, kept in the same SQLite file as the log (so a command's events and the
rows they produce commit together). Everything here is derived: ``drop`` + replay rebuilds it exactly.
All the SQL that shapes the catalog lives in this module and in ``projector``/``catalog``."""

from __future__ import annotations

import sqlite3

from eventstore.sqlscript import create_schema

VERSION = 8  # bump when the tables change shape: an older catalog is then rebuilt from the log

TABLES = ("models", "versions", "aliases", "alias_history", "tags", "metrics", "files", "blob_refs",
          "model_states", "version_states", "artifact_states", "projection_checkpoint")
FTS_TABLES = ("models_fts", "versions_fts")

SCHEMA = """
CREATE TABLE IF NOT EXISTS projection_checkpoint (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
-- An explicit INTEGER PRIMARY KEY: the FTS index refers to rows by rowid, which VACUUM may renumber
-- unless it is a declared column.
CREATE TABLE IF NOT EXISTS models (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    stream_version INTEGER NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    tags           TEXT NOT NULL DEFAULT '{}',
    tag_text       TEXT NOT NULL DEFAULT '',
    deleted        INTEGER NOT NULL DEFAULT 0,
    latest         INTEGER,
    last_version   INTEGER NOT NULL DEFAULT 0,
    version_count  INTEGER NOT NULL DEFAULT 0,  -- kept, not counted: a listing reads one row per model
    deleted_at     TEXT,
    created_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    parent       INTEGER,
    status       TEXT NOT NULL,
    deleted      INTEGER NOT NULL DEFAULT 0,
    description  TEXT NOT NULL DEFAULT '',
    params       TEXT NOT NULL DEFAULT '{}',
    structure    TEXT NOT NULL DEFAULT '{}',
    optimizer    TEXT NOT NULL DEFAULT '{}',
    tags         TEXT NOT NULL DEFAULT '{}',
    tag_text     TEXT NOT NULL DEFAULT '',
    metrics      TEXT NOT NULL DEFAULT '{}',
    artifact     TEXT NOT NULL DEFAULT '{}',
    deleted_at   TEXT,
    requested_at INTEGER,  -- position of the event whose ingest job is the latest for this version
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    position     INTEGER NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX IF NOT EXISTS versions_live ON versions (name, deleted, version);
CREATE INDEX IF NOT EXISTS versions_status ON versions (status);
CREATE TABLE IF NOT EXISTS aliases (
    name    TEXT NOT NULL,
    alias   TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_by_alias ON aliases (alias);
CREATE TABLE IF NOT EXISTS alias_history (
    name    TEXT NOT NULL,
    alias   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,  -- 0: a tag of the model itself
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (name, version, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_kv ON tags (key, value);
CREATE TABLE IF NOT EXISTS metrics (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    key     TEXT NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (name, version, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metrics_by_key ON metrics (name, key, value);
CREATE TABLE IF NOT EXISTS files (
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    path     TEXT NOT NULL,
    basename TEXT NOT NULL,
    PRIMARY KEY (name, version, path)
) WITHOUT ROWID;
-- Every blob a version's artifact needs (the file, or the manifest and each file of a folder): what gc
-- and audit ask about.
CREATE TABLE IF NOT EXISTS blob_refs (
    digest   TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    size     INTEGER,
    PRIMARY KEY (digest, name, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_refs_by_version ON blob_refs (name, version);
-- Tables keyed by a composite primary key are WITHOUT ROWID: the key is the table, so a command's commit
-- writes one b-tree page per table instead of the table's and its key index's.
-- The temporal part of the catalog: the state of a model / of a version's mutable fields after every event
-- that touched it. "As of position P" is then the newest state at or before P: one index probe per
-- entity, whatever the length of the history. (A version's content — params, structure, optimizer,
-- parent, description — never changes after it is created, so only the mutable fields are kept here.)
CREATE TABLE IF NOT EXISTS model_states (
    name     TEXT NOT NULL,
    position INTEGER NOT NULL,
    state    TEXT NOT NULL,  -- JSON array: the MODEL_COLUMNS after the name (tags nested), then the aliases
    PRIMARY KEY (name, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS version_states (
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL,
    state    TEXT NOT NULL,  -- JSON array: status, deleted, tags, metrics (nested objects)
    PRIMARY KEY (name, version, position)
) WITHOUT ROWID;
-- A version's artifact record is the biggest of its mutable fields and changes only when it is created,
-- stored or failed: kept apart, a tag or a metric does not copy it into a new state row.
CREATE TABLE IF NOT EXISTS artifact_states (
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL,
    artifact TEXT NOT NULL,
    PRIMARY KEY (name, version, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_basename ON files (basename);
CREATE INDEX IF NOT EXISTS files_by_path ON files (path);
"""

# Full-text search: external-content FTS5 tables kept in step by triggers that fire only when a searchable
# column changes, so status or metric updates cost no index work. Searches filter and never rank, so the
# per-row column sizes (bm25's input, one more page written per change) are not kept: columnsize=0.
_FTS_TABLE = """
CREATE VIRTUAL TABLE IF NOT EXISTS {t}_fts USING fts5 (
  name, description, tag_text,
  tokenize = "unicode61 remove_diacritics 2 tokenchars '._-'",
  content = "{t}", content_rowid = "id", columnsize = 0
);
"""
_FTS_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS {t}_fts_ai AFTER INSERT ON {t} BEGIN
  INSERT INTO {t}_fts (rowid, name, description, tag_text) VALUES (new.rowid, new.name, new.description, new.tag_text);
END;
CREATE TRIGGER IF NOT EXISTS {t}_fts_au AFTER UPDATE OF description, tag_text ON {t} BEGIN
  INSERT INTO {t}_fts ({t}_fts, rowid, name, description, tag_text)
    VALUES ('delete', old.rowid, old.name, old.description, old.tag_text);
  INSERT INTO {t}_fts (rowid, name, description, tag_text) VALUES (new.rowid, new.name, new.description, new.tag_text);
END;
CREATE TRIGGER IF NOT EXISTS {t}_fts_ad AFTER DELETE ON {t} BEGIN
  INSERT INTO {t}_fts ({t}_fts, rowid, name, description, tag_text)
    VALUES ('delete', old.rowid, old.name, old.description, old.tag_text);
END;
"""


def create(conn: sqlite3.Connection) -> None:
    """Create the catalog's tables if missing; call inside a write transaction."""
    # Statement by statement, inside the open transaction (sqlite3's executescript would commit first).
    create_schema(conn, SCHEMA + "".join(_FTS_TABLE.format(t=t) + _FTS_TRIGGERS.format(t=t)
                                         for t in ("models", "versions")))
    conn.execute("INSERT OR REPLACE INTO projection_checkpoint (name, position) VALUES ('schema', ?)", (VERSION,))


def stored_version(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT position FROM projection_checkpoint WHERE name = 'schema'").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def drop(conn: sqlite3.Connection) -> None:
    """Remove every derived table (the log is untouched)."""
    for table in ("models", "versions"):
        for suffix in ("ai", "au", "ad"):
            conn.execute(f"DROP TRIGGER IF EXISTS {table}_fts_{suffix}")
    for fts in FTS_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {fts}")  # identifiers from the constant above
    for table in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
