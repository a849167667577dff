"""The catalog's tables in PostgreSQL, in the log's database (so a command's events and the rows they produce
commit in one transaction, and every host reads its own writes). Everything here is derived: ``drop`` +
replay rebuilds it exactly.

The same tables as SQLite's (``projections.sqlite.schema``), with PostgreSQL's types: JSON columns are
``jsonb`` (the temporal states excepted: see ``model_states``), flags ``boolean``, the search index a ``tsvector`` per model and version under a GIN index (its
lexemes are the tokens of ``projections.search``, stored as they are: PostgreSQL does not re-tokenise an
``array_to_tsvector``). Text keys are ``COLLATE "C"``: compared byte by byte as SQLite and Python compare
them, so listings and the digest's rows come in the same order on both.
"""

from __future__ import annotations

from typing import Any

VERSION = 3  # bump when the tables change shape: an older catalog is then rebuilt from the log

DECISION_TABLES = ("models", "versions", "aliases", "alias_history", "blob_refs")
CATALOG_TABLES = ("tags", "metrics", "files", "model_states", "version_states", "artifact_states", "model_search",
                  "version_search")
TABLES = (*DECISION_TABLES, *CATALOG_TABLES, "projection_checkpoint")

SCHEMA = """
CREATE TABLE IF NOT EXISTS projection_checkpoint (
    name     text COLLATE "C" PRIMARY KEY,
    position bigint NOT NULL
);
-- == the decision state ==================================================================================
CREATE TABLE IF NOT EXISTS models (
    name           text COLLATE "C" PRIMARY KEY,
    stream_version bigint NOT NULL,
    description    text NOT NULL DEFAULT '',
    tags           jsonb NOT NULL DEFAULT '{}',
    deleted        boolean NOT NULL DEFAULT false,
    latest         bigint,
    last_version   bigint NOT NULL DEFAULT 0,
    created_at     text COLLATE "C" NOT NULL,
    created_by     text NOT NULL,
    updated_at     text COLLATE "C" NOT NULL,
    version_count  bigint NOT NULL DEFAULT 0,
    deleted_at     text COLLATE "C"
);
CREATE TABLE IF NOT EXISTS versions (
    name         text COLLATE "C" NOT NULL,
    version      bigint NOT NULL,
    parent       bigint,
    status       text NOT NULL,
    deleted      boolean NOT NULL DEFAULT false,
    description  text NOT NULL DEFAULT '',
    params       jsonb NOT NULL DEFAULT '{}',
    structure    jsonb NOT NULL DEFAULT '{}',
    optimizer    jsonb NOT NULL DEFAULT '{}',
    tags         jsonb NOT NULL DEFAULT '{}',
    metrics      jsonb NOT NULL DEFAULT '{}',
    artifact     jsonb NOT NULL DEFAULT '{}',
    created_at   text COLLATE "C" NOT NULL,
    created_by   text NOT NULL,
    position     bigint NOT NULL,
    deleted_at   text COLLATE "C",
    requested_at bigint,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name    text COLLATE "C" NOT NULL,
    alias   text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS alias_history (
    name    text COLLATE "C" NOT NULL,
    alias   text COLLATE "C" NOT NULL,
    seq     bigint NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (name, alias, seq)
);
CREATE TABLE IF NOT EXISTS blob_refs (
    digest  text COLLATE "C" NOT NULL,
    name    text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    size    bigint,
    PRIMARY KEY (digest, name, version)
);
CREATE INDEX IF NOT EXISTS blob_refs_by_version ON blob_refs (name, version);
-- == the read-only catalog ===============================================================================
CREATE TABLE IF NOT EXISTS tags (
    name    text COLLATE "C" NOT NULL,
    version bigint NOT NULL,  -- 0: a tag of the model itself
    key     text COLLATE "C" NOT NULL,
    value   text COLLATE "C" NOT NULL,
    PRIMARY KEY (name, version, key)
);
CREATE TABLE IF NOT EXISTS metrics (
    name    text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    key     text COLLATE "C" NOT NULL,
    value   double precision NOT NULL,
    PRIMARY KEY (name, version, key)
);
CREATE TABLE IF NOT EXISTS files (
    name     text COLLATE "C" NOT NULL,
    version  bigint NOT NULL,
    path     text COLLATE "C" NOT NULL,
    basename text COLLATE "C" NOT NULL,
    PRIMARY KEY (name, version, path)
);
-- The temporal part: the state after every event that touched a model / a version's mutable fields; "as of
-- P" is the newest state at or before P, one index probe per entity.
-- The states are JSON kept as text (the fold's canonical JSON, its escaped NULs already replaced as for
-- jsonb): written after nearly every event, read one per entity probed, and never searched inside. As jsonb
-- the server parsed every state the fold wrote (~2 per event): its CPU per event in a rebuild went from
-- 19.0-20.5 to 17.0 us as text (scripts/bench_fold.py's 20,000-event log, server backend's CPU time, same
-- run). A read casts the state it returns to jsonb (``projections.postgres.queries``), so an answer is the
-- value jsonb gives, as before. Their keys are unique indexes made with the query indexes (``INDEXES``).
CREATE TABLE IF NOT EXISTS model_states (
    name     text COLLATE "C" NOT NULL,
    position bigint NOT NULL,
    state    text NOT NULL
);
CREATE TABLE IF NOT EXISTS version_states (
    name     text COLLATE "C" NOT NULL,
    version  bigint NOT NULL,
    position bigint NOT NULL,
    state    text  NOT NULL
);
CREATE TABLE IF NOT EXISTS artifact_states (
    name     text COLLATE "C" NOT NULL,
    version  bigint NOT NULL,
    position bigint NOT NULL,
    artifact text  NOT NULL
);
-- The search index: the tokens of ``projections.search`` as a tsvector's lexemes; a search is all its words
-- as prefix lexemes ('word':*), which the GIN index answers.
CREATE TABLE IF NOT EXISTS model_search (
    name  text COLLATE "C" PRIMARY KEY,
    words tsvector NOT NULL
);
CREATE TABLE IF NOT EXISTS version_search (
    name    text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    words   tsvector NOT NULL,
    PRIMARY KEY (name, version)
);
"""

# The indexes only the catalog's questions read (the fold reads by primary key, and ``blob_refs_by_version``
# above). A rebuild creates them after the last page: building an index, a GIN index above all, from the
# finished table costs less than keeping it in step row by row.
# The temporal states' keys too: written by inserts only (never an upsert, never a read by the fold), so a
# rebuild can leave them to the end. A unique index built over the finished rows cost the server 1.8 µs a
# row against 2.4-2.9 µs kept in step row by row (scripts/bench_state_keys.py: 60,000 state rows by COPY,
# median of 6 rounds, /proc's CPU of the backend); a rebuild writes ~2 state rows an event. The names are the primary keys' of a catalog made
# before: there, ``IF NOT EXISTS`` finds them and adds nothing.
INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS model_states_pkey ON model_states (name, position);
CREATE UNIQUE INDEX IF NOT EXISTS version_states_pkey ON version_states (name, version, position);
CREATE UNIQUE INDEX IF NOT EXISTS artifact_states_pkey ON artifact_states (name, version, position);
CREATE INDEX IF NOT EXISTS versions_live ON versions (name, deleted, version);
CREATE INDEX IF NOT EXISTS versions_pending ON versions (requested_at) WHERE status = 'pending';
-- (key, value, name): `list --tag k=v` walks models by name and probes each one's k=v rows here; on
-- (key, value) alone PostgreSQL hashed every k=v row instead (107,743 for task=ctr at 1,000,000
-- events, load 13: ~1 s for `list --tag task=ctr --limit 100`; 5.7 ms with the name in the index).
CREATE INDEX IF NOT EXISTS tags_by_kv ON tags (key, value, name);
CREATE INDEX IF NOT EXISTS metrics_by_key ON metrics (name, key, value);
CREATE INDEX IF NOT EXISTS files_by_basename ON files (basename);
CREATE INDEX IF NOT EXISTS files_by_path ON files (path);
CREATE INDEX IF NOT EXISTS model_search_words ON model_search USING gin (words);
CREATE INDEX IF NOT EXISTS version_search_words ON version_search USING gin (words);
"""


def create(conn: Any, *, indexes: bool = True) -> None:
    """Create the catalog's tables if missing; call inside a write transaction (which holds the log's writer
    lock, so two first opens cannot race on CREATE). ``indexes=False`` (a rebuild, which then folds the
    whole log in the same transaction) leaves out the indexes only queries read: ``create_indexes`` adds
    them once the rows are in."""
    conn.execute(SCHEMA)
    if indexes:
        create_indexes(conn)
    conn.execute("INSERT INTO projection_checkpoint (name, position) VALUES ('schema', %s)"
                 " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position", (VERSION,))


def stored_version(conn: Any) -> int | None:
    if not conn.execute("SELECT to_regclass('projection_checkpoint') IS NOT NULL").fetchone()[0]:
        return None
    row = conn.execute("SELECT position FROM projection_checkpoint WHERE name = 'schema'").fetchone()
    return row[0] if row else None


def drop(conn: Any) -> None:
    """Remove every derived table (the log is untouched)."""
    conn.execute("DROP TABLE IF EXISTS " + ", ".join(TABLES))  # names from the constant above


def create_indexes(conn: Any) -> None:
    """The indexes only queries read, over the rows already written."""
    conn.execute(INDEXES)
