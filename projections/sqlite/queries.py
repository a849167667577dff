"""The catalog's questions in SQLite: current records, searches, the past, gc's plan, the digest's rows.

Every function takes the connection of the caller's snapshot or transaction. JSON columns come back as text
(``projections.rows`` parses them); the neutral catalog never sees SQL.
"""

from __future__ import annotations

import json
import posixpath
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from projections.rows import MODEL_COLUMNS, VERSION_COLUMNS
from projections.search import NAME_MARK, hex_token

_V = ", ".join("v." + c.strip() for c in VERSION_COLUMNS.split(","))
_M = ", ".join("m." + c.strip() for c in MODEL_COLUMNS.split(","))


def fts_query(words: Sequence[str]) -> str:
    """Search words (``projections.search.query_words``) → an FTS5 query: each word's hex as a required prefix."""
    return " ".join('"' + hex_token(w) + '"*' for w in words)


def version_fts_query(words: Sequence[str]) -> str:
    """The FTS5 query of the version index (``projections.search.version_index_tokens``): each word begins an
    own token or a marked name token, and at least one word an own token (as ``postgres.queries.
    version_ts_query``: a version whose words all come from its name is found through its model)."""
    def prefix(word: str) -> str:
        return '"' + hex_token(word) + '"*'
    each = " AND ".join(f"({prefix(w)} OR {prefix(NAME_MARK + w)})" for w in words)
    return f"{each} AND ({' OR '.join(prefix(w) for w in words)})"


# -- the decision state ------------------------------------------------------------------------------------

def model_row(conn: sqlite3.Connection, name: str) -> tuple | None:
    return conn.execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()  # noqa: S608


def model_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None


def version_row(conn: sqlite3.Connection, name: str, number: int) -> tuple | None:
    return conn.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = ? AND version = ?",  # noqa: S608
                        (name, number)).fetchone()


# A version and its model's aliases in one statement (the aliases as a JSON array of [alias, version], in
# alias order): what a record needs, read by a register before its COMMIT and by every ``get``.
_VERSION_WITH_ALIASES = (
    f"SELECT {VERSION_COLUMNS}, (SELECT json_group_array(json_array(alias, version)) FROM"  # noqa: S608
    " (SELECT alias, version FROM aliases WHERE name = ?1 ORDER BY alias)) FROM versions WHERE name = ?1 AND version = ?2"
)


_JSON_COLUMNS = frozenset(i for i, c in enumerate(VERSION_COLUMNS.split(","))
                          if c.strip() in ("params", "structure", "optimizer", "tags", "metrics", "artifact"))


def version_with_aliases(conn: sqlite3.Connection, name: str, number: int) -> tuple[tuple | None, dict[str, int]]:
    """``version_row`` and ``aliases_of`` in one statement; (None, {}) when there is no such version."""
    row = conn.execute(_VERSION_WITH_ALIASES, (name, number)).fetchone()
    if row is None:
        return None, {}
    # The JSON columns that hold an empty object (most of a new version's: structure, optimizer, tags,
    # metrics) are handed over as a new dict each (``projections.rows`` takes text or parsed values alike):
    # json.loads("{}") four times was a few per cent of a register's record.
    values = tuple({} if i in _JSON_COLUMNS and v == "{}" else v for i, v in enumerate(row[:-1]))
    return values, dict(json.loads(row[-1]))


def version_rows(conn: sqlite3.Connection, name: str, *, include_deleted: bool = True) -> list[tuple]:
    sql = f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?"  # noqa: S608
    if not include_deleted:
        sql += " AND deleted = 0"
    return conn.execute(sql + " ORDER BY version", (name,)).fetchall()


def aliases_of(conn: sqlite3.Connection, name: str) -> dict[str, int]:
    return dict(conn.execute("SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,)).fetchall())


def alias_history(conn: sqlite3.Connection, name: str, alias: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT version FROM alias_history WHERE name = ? AND alias = ? ORDER BY seq", (name, alias))]


def purged_live_versions(conn: sqlite3.Connection, name: str) -> list[tuple]:
    return conn.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = ? AND deleted = 0"  # noqa: S608
                        " AND status = 'purged' ORDER BY version", (name,)).fetchall()


def request_position(conn: sqlite3.Connection, name: str, number: int) -> int | None:
    row = conn.execute("SELECT requested_at FROM versions WHERE name = ? AND version = ?", (name, number)).fetchone()
    return None if row is None else row[0]


def pending_positions(conn: sqlite3.Connection, cutoff: str, limit: int) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT requested_at FROM versions WHERE status = 'pending' AND created_at <= ?"
        " ORDER BY requested_at LIMIT ?", (cutoff, limit))]


def file_basename(file: str) -> str:
    """The base name every file matching ``file`` (a path or a base name) has: the one index the files
    table keeps is on it (``schema.INDEXES``), so both kinds of question probe it."""
    return posixpath.basename(file)


# -- searches ------------------------------------------------------------------------------------------------

def list_models(conn: sqlite3.Connection, *, words: Sequence[str] | None, tags: Mapping[str, str],
                file: str | None, alias: str | None, include_deleted: bool, limit: int | None) -> list[tuple]:
    """Rows of MODEL_COLUMNS then the model's aliases (JSON), for the models meeting every filter."""
    if words is not None and not words:
        return []  # no word to look for: nothing matches
    where: list[str] = []
    params: list[Any] = []
    if not include_deleted:
        where.append("m.deleted = 0")
    if words is not None:
        q = fts_query(words)
        where.append(
            "(m.name IN (SELECT w.name FROM model_words w WHERE w.id IN"
            " (SELECT rowid FROM models_fts WHERE models_fts MATCH ?))"
            " OR m.name IN (SELECT v.name FROM versions v"
            " WHERE v.id IN (SELECT rowid FROM versions_fts WHERE versions_fts MATCH ?) AND v.deleted = 0))")
        params += [q, version_fts_query(words)]
    for key, value in tags.items():
        where.append(
            "EXISTS (SELECT 1 FROM tags t LEFT JOIN versions v ON v.name = t.name AND v.version = t.version"
            " WHERE t.name = m.name AND t.key = ? AND t.value = ? AND (t.version = 0 OR v.deleted = 0))")
        params += [key, value]
    if file is not None:
        where.append(
            "EXISTS (SELECT 1 FROM files f JOIN versions v ON v.name = f.name AND v.version = f.version"
            " WHERE f.name = m.name AND f.basename = ? AND (f.basename = ? OR f.path = ?) AND v.deleted = 0)")
        params += [file_basename(file), file, file]
    if alias is not None:
        where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.name = m.name AND a.alias = ?)")
        params.append(alias)
    # A model's aliases come with its row (one query for the whole listing).
    sql = (f"SELECT {_M}, (SELECT json_group_object(alias, version) FROM aliases a WHERE a.name = m.name)"  # noqa: S608
           " FROM models m")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY m.name"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return conn.execute(sql, params).fetchall()


def search_versions(conn: sqlite3.Connection, *, words: Sequence[str] | None, name: str | None,
                    tags: Mapping[str, str], file: str | None, alias: str | None, limit: int | None) -> list[tuple]:
    """Rows of VERSION_COLUMNS of the live versions of live models meeting every filter."""
    if words is not None and not words:
        return []
    where = ["v.deleted = 0", "m.deleted = 0"]
    params: list[Any] = []
    if name is not None:
        where.append("v.name = ?")
        params.append(name)
    if words is not None:
        q = fts_query(words)
        where.append(
            "(v.id IN (SELECT rowid FROM versions_fts WHERE versions_fts MATCH ?)"
            " OR m.name IN (SELECT w.name FROM model_words w WHERE w.id IN"
            " (SELECT rowid FROM models_fts WHERE models_fts MATCH ?)))")
        params += [version_fts_query(words), q]
    for key, value in tags.items():
        if name is not None:
            # One model's versions with k=v (or all of them, when the model's own tag is k=v), as a list the
            # versions are looked up by: their primary key, the matching versions only. The correlated EXISTS
            # below made SQLite read every version of the model and probe the tags twice per version (100 of
            # 1,000: 1.5-2.3 ms -> 0.22 ms, the same rows; docs/performance.md, "A named search by tag").
            where.append("v.version IN (SELECT t.version FROM tags t WHERE t.name = ? AND t.key = ? AND t.value = ?"
                         " UNION ALL SELECT a.version FROM versions a WHERE a.name = ? AND EXISTS (SELECT 1 FROM tags"
                         " t0 WHERE t0.name = ? AND t0.version = 0 AND t0.key = ? AND t0.value = ?))")
            params += [name, key, value, name, name, key, value]
            continue
        where.append("EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version IN (0, v.version)"
                     " AND t.key = ? AND t.value = ?)")
        params += [key, value]
    if file is not None:
        where.append("EXISTS (SELECT 1 FROM files f WHERE f.name = v.name AND f.version = v.version"
                     " AND f.basename = ? AND (f.basename = ? OR f.path = ?))")
        params += [file_basename(file), file, file]
    if alias is not None:
        where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.name = v.name AND a.version = v.version"
                     " AND a.alias = ?)")
        params.append(alias)
    sql = (f"SELECT {_V} FROM versions v JOIN models m ON m.name = v.name"  # noqa: S608
           f" WHERE {' AND '.join(where)} ORDER BY v.name, v.version")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return conn.execute(sql, params).fetchall()


def best_version(conn: sqlite3.Connection, name: str, metric: str, *, minimize: bool,
                 tags: Mapping[str, str]) -> int | None:
    order = "ASC" if minimize else "DESC"
    where = ["mt.name = ?", "mt.key = ?", "v.deleted = 0"]
    params: list[Any] = [name, metric]
    for key, value in tags.items():
        where.append("EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version IN (0, v.version)"
                     " AND t.key = ? AND t.value = ?)")
        params += [key, value]
    row = conn.execute(
        "SELECT v.version FROM metrics mt JOIN versions v ON v.name = mt.name AND v.version = mt.version"  # noqa: S608
        f" WHERE {' AND '.join(where)} ORDER BY mt.value {order}, v.version DESC LIMIT 1", params).fetchone()
    return None if row is None else row[0]


# -- the past --------------------------------------------------------------------------------------------------

def model_state_at(conn: sqlite3.Connection, name: str, position: int) -> Any:
    row = conn.execute("SELECT state FROM model_states WHERE name = ? AND position <= ?"
                       " ORDER BY position DESC LIMIT 1", (name, position)).fetchone()
    return None if row is None else row[0]


_PAST_VERSIONS = (
    f"SELECT {_V}, (SELECT state FROM version_states s WHERE s.name = v.name"  # noqa: S608
    " AND s.version = v.version AND s.position <= ? ORDER BY s.position DESC LIMIT 1),"
    " (SELECT artifact FROM artifact_states a WHERE a.name = v.name"
    " AND a.version = v.version AND a.position <= ? ORDER BY a.position DESC LIMIT 1)"
    " FROM versions v WHERE v.name = ? AND v.position <= ?")


def version_at(conn: sqlite3.Connection, name: str, number: int, position: int) -> tuple | None:
    """VERSION_COLUMNS, then its state and artifact as of ``position``; None if it did not exist then."""
    return conn.execute(_PAST_VERSIONS + " AND v.version = ?", (position, position, name, position, number)).fetchone()


def versions_at(conn: sqlite3.Connection, name: str, position: int) -> list[tuple]:
    return conn.execute(_PAST_VERSIONS + " ORDER BY v.version", (position, position, name, position)).fetchall()


def models_at(conn: sqlite3.Connection, position: int) -> Iterator[tuple[str, Any]]:
    """(name, state as of ``position``) of every model, by name, read lazily."""
    rows = conn.execute(
        "SELECT m.name, (SELECT state FROM model_states s WHERE s.name = m.name AND s.position <= ?"
        " ORDER BY s.position DESC LIMIT 1) FROM models m ORDER BY m.name", (position,))
    for name, state in rows:
        if state is not None:
            yield name, state


# -- gc and audit ------------------------------------------------------------------------------------------------

def referenced_digests(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT DISTINCT digest FROM blob_refs")}


def purge_candidates(conn: sqlite3.Connection, cutoff: str) -> list[tuple[str, int | None]]:
    """(digest, size) of the blobs no live version references, whose last reference ended at or before
    ``cutoff``, and that some not-yet-purged version still names."""
    return conn.execute(
        """
        WITH refs AS (
            SELECT r.digest, r.name, r.version, r.size, v.status,
                   (v.deleted = 0 AND m.deleted = 0) AS live,
                   CASE WHEN v.deleted = 1 THEN v.deleted_at ELSE m.deleted_at END AS ended_at
            FROM blob_refs r
            JOIN versions v ON v.name = r.name AND v.version = r.version
            JOIN models m ON m.name = r.name
        )
        SELECT digest, max(size) FROM refs
        GROUP BY digest
        HAVING max(live) = 0 AND max(ended_at) <= ? AND sum(status != 'purged') > 0
        ORDER BY digest
        """, (cutoff,)).fetchall()


def purge_versions(conn: sqlite3.Connection, digest: str) -> list[tuple[str, int, Any]]:
    """(name, version, that version's artifact digest) of the not-yet-purged versions naming ``digest``."""
    return conn.execute(
        "SELECT v.name, v.version, json_extract(v.artifact, '$.digest') FROM blob_refs r"
        " JOIN versions v ON v.name = r.name AND v.version = r.version"
        " WHERE r.digest = ? AND v.status != 'purged' ORDER BY v.name, v.version", (digest,)).fetchall()


def partial_folders(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT json_extract(artifact, '$.digest') FROM versions"
        " WHERE status != 'purged' AND json_extract(artifact, '$.kind') = 'directory'"
        " AND json_type(artifact, '$.file_count') = 'integer' AND json_type(artifact, '$.files') = 'array'"
        " AND json_extract(artifact, '$.file_count') > json_array_length(artifact, '$.files')").fetchall()
    return {r[0] for r in rows if isinstance(r[0], str)}


def ready_blobs(conn: sqlite3.Connection) -> Iterator[tuple[str, str, int, int]]:
    """(digest, name, version, created at) of every blob of every ready version, oldest version first."""
    cursor = conn.execute(
        "SELECT r.digest, r.name, r.version, v.position FROM blob_refs r"
        " JOIN versions v ON v.name = r.name AND v.version = r.version"
        " WHERE v.status = 'ready' ORDER BY v.position, r.name, r.version, r.digest")
    while rows := cursor.fetchmany(1_000):
        yield from rows


def table_rows(conn: sqlite3.Connection, table: str, columns: Sequence[str], order: str) -> Iterator[tuple]:
    """Every row of a catalog table in ``order`` (names from ``projections.digest``, never from input)."""
    cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")  # noqa: S608
    while rows := cursor.fetchmany(1_000):
        yield from rows


def words_rows(conn: sqlite3.Connection) -> Iterator[tuple]:
    """(name, version or 0, sorted tokens) of the search index, for comparing two indexes."""
    for name, words in conn.execute("SELECT name, words FROM model_words ORDER BY name"):
        yield name, 0, sorted(bytes.fromhex(w).decode("utf-8") for w in words.split())
    for name, number, words in conn.execute("SELECT name, version, words FROM versions ORDER BY name, version"):
        yield name, number, sorted(bytes.fromhex(w).decode("utf-8") for w in words.split())
