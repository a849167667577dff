"""The catalog's tables in SQLite, kept in the log's file (so a command's events and the rows they produce
commit together). Everything here is derived: ``drop`` + replay rebuilds it exactly.

Two parts. The decision state — ``models``, ``versions``, ``aliases``, ``alias_history``, ``blob_refs`` — is
what the decider (``eventstore.state.StateView``) and gc read. The read-only catalog — ``tags``, ``metrics``,
``files``, the temporal states and the search index — only answers questions.
"""

from __future__ import annotations

import sqlite3

from eventstore.sqlscript import create_schema

VERSION = 11  # bump when the tables change shape: an older catalog is then rebuilt from the log

DECISION_TABLES = ("models", "versions", "aliases", "alias_history", "blob_refs")
CATALOG_TABLES = ("tags", "metrics", "files", "model_states", "version_states", "artifact_states", "model_words")
TABLES = (*DECISION_TABLES, *CATALOG_TABLES, "projection_checkpoint")
FTS_TABLES = ("models_fts", "versions_fts")

SCHEMA = """
CREATE TABLE IF NOT EXISTS projection_checkpoint (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
-- == the decision state ==================================================================================
CREATE TABLE IF NOT EXISTS models (
    name           TEXT PRIMARY KEY,
    stream_version INTEGER NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    tags           TEXT NOT NULL DEFAULT '{}',
    deleted        INTEGER NOT NULL DEFAULT 0,
    latest         INTEGER,
    last_version   INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    version_count  INTEGER NOT NULL DEFAULT 0,  -- kept, not counted: a listing reads one row per model
    deleted_at     TEXT
);
-- A version's row also holds its search words (FTS5's external content, below): a register writes them
-- with the row, not in a table of their own (schema 10's ``version_words`` and its unique index: 2 of a
-- register's pages). ``id`` names the row for the full-text index (an INTEGER PRIMARY KEY: a rowid that a
-- VACUUM keeps).
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
    metrics      TEXT NOT NULL DEFAULT '{}',
    artifact     TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    position     INTEGER NOT NULL,
    deleted_at   TEXT,
    requested_at INTEGER,  -- position of the event whose ingest job is the latest for this version
    words        TEXT NOT NULL DEFAULT '',  -- the search tokens of ``projections.search``, hex, space-separated
    UNIQUE (name, version)
);
-- Tables keyed by a composite primary key are WITHOUT ROWID: the key is the table, so a command's commit
-- writes one b-tree page per table instead of the table's and its key index's.
CREATE TABLE IF NOT EXISTS aliases (
    name    TEXT NOT NULL,
    alias   TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alias_history (
    name    TEXT NOT NULL,
    alias   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias, seq)
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
-- == the read-only catalog ===============================================================================
CREATE TABLE IF NOT EXISTS tags (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,  -- 0: a tag of the model itself
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (name, version, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    key     TEXT NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (name, version, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    path     TEXT NOT NULL,
    basename TEXT NOT NULL,
    PRIMARY KEY (name, version, path)
) WITHOUT ROWID;
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
-- The search index: the tokens of ``projections.search`` (hex-encoded, space-separated) of a model in a
-- table of its own, of a version in its row; indexed by FTS5 (external content, kept in step by triggers).
CREATE TABLE IF NOT EXISTS model_words (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE,
    words TEXT NOT NULL
);
"""

# The indexes only the catalog's questions read (the fold reads by primary key, and ``blob_refs_by_version``
# above, which a re-stored version's refs are cleared through). A rebuild creates them after the last page:
# building an index from the finished table costs less than keeping it in step row by row.
INDEXES = """
-- Only the versions still waiting for their bytes (the worker's sweep asks for them): a register that
-- commits its version ready, and every version once stored, writes no page of this index. The catalog's
-- other version reads go by name along the primary key. (Schema 10 also kept ``versions_live`` (name,
-- deleted, version) and ``versions_status`` (status): two of a register's 26 pages per commit, read by
-- no query the primary key does not answer.)
CREATE INDEX IF NOT EXISTS versions_pending ON versions (requested_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS aliases_by_alias ON aliases (alias);
-- (key, value, name): `list --tag k=v` walks models by name and probes each one's k=v rows here; on
-- (key, value) alone PostgreSQL hashed every k=v row instead (107,743 for task=ctr at 1,000,000
-- events, load 13: ~1 s for `list --tag task=ctr --limit 100`; 5.7 ms with the name in the index).
CREATE INDEX IF NOT EXISTS tags_by_kv ON tags (key, value, name);
CREATE INDEX IF NOT EXISTS metrics_by_key ON metrics (name, key, value);
-- A file is asked for by its path or by its base name; both probe the base name (a path's file has the
-- path's base name), so one index serves both and a register writes one page for it, not two.
CREATE INDEX IF NOT EXISTS files_by_basename ON files (basename);
"""

# FTS5 does not tokenise for us: the words are hex tokens (plain ASCII to its unicode61 tokenizer). Searches
# filter and never rank, and never ask for phrases: no column sizes, no positions (detail=none).
_FTS_TABLE = """
CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5 (
  words, content = "{content}", content_rowid = "id", columnsize = 0, detail = none
);
"""
_FTS_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS {fts}_ai AFTER INSERT ON {content} BEGIN
  INSERT INTO {fts} (rowid, words) VALUES (new.id, new.words);
END;
CREATE TRIGGER IF NOT EXISTS {fts}_au AFTER UPDATE OF words ON {content} BEGIN
  INSERT INTO {fts} ({fts}, rowid, words) VALUES ('delete', old.id, old.words);
  INSERT INTO {fts} (rowid, words) VALUES (new.id, new.words);
END;
CREATE TRIGGER IF NOT EXISTS {fts}_ad AFTER DELETE ON {content} BEGIN
  INSERT INTO {fts} ({fts}, rowid, words) VALUES ('delete', old.id, old.words);
END;
"""
_FTS_CONTENT = (("models_fts", "model_words"), ("versions_fts", "versions"))  # the index, the table it reads
_OLD_TABLES = ("models", "versions")  # catalogs before VERSION 9 kept FTS triggers on these
_OLD_CATALOG_TABLES = ("version_words",)  # schema 10's, dropped with the catalog it belonged to


def create(conn: sqlite3.Connection, *, indexes: bool = True) -> None:
    """Create the catalog's tables if missing; call inside a write transaction. ``indexes=False`` (a rebuild,
    which then folds the whole log in the same transaction) leaves out the indexes and the full-text index
    that only queries read: ``create_indexes`` adds them once the rows are in."""
    # Statement by statement, inside the open transaction (sqlite3's executescript would commit first).
    create_schema(conn, SCHEMA)
    if indexes:
        create_indexes(conn, fill=False)
    conn.execute("INSERT OR REPLACE INTO projection_checkpoint (name, position) VALUES ('schema', ?)", (VERSION,))


def create_indexes(conn: sqlite3.Connection, *, fill: bool = True) -> None:
    """The query indexes and the full-text index with its triggers; ``fill``: index the words already written
    (FTS5's ``rebuild`` reads its content table in one pass, instead of a trigger's insert per row)."""
    create_schema(conn, INDEXES + "".join(_FTS_TABLE.format(fts=fts, content=content)
                                          + _FTS_TRIGGERS.format(fts=fts, content=content)
                                          for fts, content in _FTS_CONTENT))
    if fill:
        for fts in FTS_TABLES:
            conn.execute(f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')")  # noqa: S608 - names from the constant


def stored_version(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT position FROM projection_checkpoint WHERE name = 'schema'").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def drop(conn: sqlite3.Connection) -> None:
    """Remove every derived table (the log is untouched)."""
    for fts in _OLD_TABLES:  # the triggers' names (on the word tables now, on the tables before VERSION 9)
        for suffix in ("ai", "au", "ad"):
            conn.execute(f"DROP TRIGGER IF EXISTS {fts}_fts_{suffix}")  # names from the constants above
    for fts in FTS_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {fts}")
    for table in (*TABLES, *_OLD_CATALOG_TABLES):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
