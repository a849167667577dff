"""The catalog's questions in PostgreSQL: current records, searches, the past, gc's plan, the digest's rows.

The same questions as ``projections.sqlite.queries``, with the same answers: searches use the GIN-indexed
``tsvector`` of ``projections.search``'s tokens, every word a required prefix lexeme. JSON columns come back
parsed (``jsonb``), flags as booleans; ``projections.rows`` takes either.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from projections.rows import MODEL_COLUMNS, VERSION_COLUMNS
from projections.search import NAME_MARK

from .text import text_param

_V = ", ".join("v." + c.strip() for c in VERSION_COLUMNS.split(","))
_M = ", ".join("m." + c.strip() for c in MODEL_COLUMNS.split(","))


def _prefix(word: str) -> str:
    """One word as a prefix lexeme, quoted so that nothing in it is read as tsquery syntax."""
    return "'" + text_param(word).replace("\\", "\\\\").replace("'", "''") + "':*"


def ts_query(words: Sequence[str]) -> str:
    """Search words (``projections.search.query_words``) → a ``tsquery``: each word a required prefix lexeme."""
    return " & ".join(_prefix(w) for w in words)


def version_ts_query(words: Sequence[str]) -> str:
    """The ``tsquery`` of the version index (``projections.search.version_index_tokens``): each word begins an
    own token or a marked name token, and at least one word an own token (a version whose words all come from
    its name is found through its model, whose own words hold the name — so the index is not asked for every
    version of a model whose name a word begins)."""
    each = " & ".join(f"({_prefix(w)} | {_prefix(NAME_MARK + w)})" for w in words)
    return f"{each} & ({own_ts_query(words)})"


def own_ts_query(words: Sequence[str]) -> str:
    """Some word begins one of a version's own tokens: the part of ``version_ts_query`` the GIN index is asked
    (``_VERSIONS_OWN``)."""
    return " | ".join(_prefix(w) for w in words)


# The versions some word finds by their own tokens, from the GIN index; the whole ``version_ts_query`` is then
# checked on those rows alone (OFFSET 0: the planner neither flattens this subquery nor pushes that check into
# its index condition). Asked the whole query at once, the index gathered every entry of every prefix in it
# before intersecting them — a prefix is matched by collecting all its lexemes' rows first — and so every version
# of every model a name word begins: `list --search model-05` at 1,000,000 events read the ~10,700 versions of the
# 100 `model-05NN` models to find none (EXPLAIN ANALYZE: see docs/performance.md, the 1,000,000-event section).
_VERSIONS_OWN = "(SELECT name, version, words FROM version_search WHERE words @@ %s::tsquery OFFSET 0)"


# -- the decision state ------------------------------------------------------------------------------------

def model_row(conn: Any, name: str) -> tuple | None:
    return conn.execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE name = %s", (name,)).fetchone()  # noqa: S608


def model_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM models WHERE name = %s", (name,)).fetchone() is not None


def version_row(conn: Any, name: str, number: int) -> tuple | None:
    return conn.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = %s AND version = %s",  # noqa: S608
                        (name, number)).fetchone()


# A version's row and its model's aliases in one statement (the aliases as JSON pairs, in alias order): a
# register's record is read inside its batched transaction, where each statement costs the client its own
# send and result (~30-60 µs of psycopg's work) and the server a Bind and an Execute; the row is NULLs when
# the version does not exist (the aliases come back all the same, from the one-row FROM).
_VERSION_WITH_ALIASES = (
    f"SELECT {_V}, (SELECT json_agg(json_build_array(a.alias, a.version) ORDER BY a.alias)"  # noqa: S608
    " FROM aliases a WHERE a.name = %(name)s)"
    " FROM (VALUES (1)) AS one(x) LEFT JOIN versions v ON v.name = %(name)s AND v.version = %(number)s")


def _version_and_aliases(row: tuple) -> tuple[tuple | None, dict[str, int]]:
    *version, aliases = row
    return (tuple(version) if version[0] is not None else None), {a: n for a, n in aliases or ()}


def version_with_aliases(conn: Any, name: str, number: int) -> tuple[tuple | None, dict[str, int]]:
    """``version_row`` and ``aliases_of`` in one statement: one round trip, in a command's batched transaction
    or not."""
    return _version_and_aliases(conn.execute(_VERSION_WITH_ALIASES, {"name": name, "number": number}).fetchone())


def version_with_aliases_later(conn: Any, name: str, number: int) -> Callable[[], tuple[tuple | None, dict[str, int]]]:
    """``version_with_aliases``, sent now and read when the returned function is called: in a command's batched
    transaction the read goes out with its COMMIT and comes back in that round trip (a register's record: one
    round trip fewer), and the row stays with its cursor after the transaction ends."""
    cursor = conn.execute(_VERSION_WITH_ALIASES, {"name": name, "number": number})
    return lambda: _version_and_aliases(cursor.fetchone())


def version_rows(conn: Any, name: str, *, include_deleted: bool = True) -> list[tuple]:
    sql = f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = %s"  # noqa: S608
    if not include_deleted:
        sql += " AND NOT deleted"
    return conn.execute(sql + " ORDER BY version", (name,)).fetchall()


def aliases_of(conn: Any, name: str) -> dict[str, int]:
    return dict(conn.execute("SELECT alias, version FROM aliases WHERE name = %s ORDER BY alias", (name,)).fetchall())


def alias_history(conn: Any, name: str, alias: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT version FROM alias_history WHERE name = %s AND alias = %s ORDER BY seq", (name, alias))]


def purged_live_versions(conn: Any, name: str) -> list[tuple]:
    return conn.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = %s AND NOT deleted"  # noqa: S608
                        " AND status = 'purged' ORDER BY version", (name,)).fetchall()


def request_position(conn: Any, name: str, number: int) -> int | None:
    row = conn.execute("SELECT requested_at FROM versions WHERE name = %s AND version = %s", (name, number)).fetchone()
    return None if row is None else row[0]


def pending_positions(conn: Any, cutoff: str, limit: int) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT requested_at FROM versions WHERE status = 'pending' AND created_at <= %s"
        " ORDER BY requested_at LIMIT %s", (cutoff, limit))]


# -- searches ------------------------------------------------------------------------------------------------

def list_models(conn: Any, *, words: Sequence[str] | None, tags: Mapping[str, str], file: str | None,
                alias: str | None, include_deleted: bool, limit: int | None) -> list[tuple]:
    """Rows of MODEL_COLUMNS then the model's aliases (an object), for the models meeting every filter."""
    if words is not None and not words:
        return []  # no word to look for: nothing matches
    where: list[str] = []
    params: list[Any] = []
    if not include_deleted:
        where.append("NOT m.deleted")
    if words is not None:
        q = ts_query(words)
        # Models that match by their own words are left out of the version branch before its join checks that
        # a version is live (EXPLAIN ANALYZE at 1,000,000 events: that join was ~60 % of a keyword listing).
        where.append(
            "(m.name IN (SELECT name FROM model_search WHERE words @@ %s::tsquery)"  # noqa: S608
            f" OR m.name IN (SELECT v.name FROM {_VERSIONS_OWN} s JOIN versions v ON v.name = s.name"
            " AND v.version = s.version WHERE s.words @@ %s::tsquery AND NOT v.deleted"
            " AND s.name NOT IN (SELECT name FROM model_search WHERE words @@ %s::tsquery)))")
        params += [q, own_ts_query(words), version_ts_query(words), q]
    for key, value in tags.items():
        # A scalar subquery with LIMIT 1, not EXISTS: PostgreSQL keeps it a per-model probe of
        # tags_by_kv (key, value, name) while it walks models by name, whatever its statistics say. As EXISTS,
        # right after a long catch-up (no ANALYZE yet) it hashed every k=v row first: task=ctr at 1,000,000
        # events, 107,743 rows, 40 ms median and 458 ms p90 for `list --tag task=ctr --limit 100`.
        where.append(
            "(SELECT 1 FROM tags t LEFT JOIN versions v ON v.name = t.name AND v.version = t.version"
            " WHERE t.key = %s AND t.value = %s AND t.name = m.name AND (t.version = 0 OR NOT v.deleted)"
            " LIMIT 1) IS NOT NULL")
        params += [key, value]
    if file is not None:
        where.append(
            "EXISTS (SELECT 1 FROM files f JOIN versions v ON v.name = f.name AND v.version = f.version"
            " WHERE f.name = m.name AND (f.basename = %s OR f.path = %s) AND NOT v.deleted)")
        params += [text_param(file), text_param(file)]
    if alias is not None:
        where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.name = m.name AND a.alias = %s)")
        params.append(alias)
    sql = (f"SELECT {_M}, (SELECT jsonb_object_agg(alias, version) FROM aliases a WHERE a.name = m.name)"  # noqa: S608
           " FROM models m")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY m.name"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(int(limit))
    return conn.execute(sql, params).fetchall()


def search_versions(conn: Any, *, words: Sequence[str] | None, name: str | None, tags: Mapping[str, str],
                    file: str | None, alias: str | None, limit: int | None) -> list[tuple]:
    """Rows of VERSION_COLUMNS of the live versions of live models meeting every filter."""
    if words is not None and not words:
        return []
    where = ["NOT v.deleted", "NOT m.deleted"]
    params: list[Any] = []
    if name is not None:
        where.append("v.name = %s")
        params.append(name)
    if words is not None:
        where.append(
            f"((v.name, v.version) IN (SELECT name, version FROM {_VERSIONS_OWN} s"  # noqa: S608
            " WHERE s.words @@ %s::tsquery)"
            " OR m.name IN (SELECT name FROM model_search WHERE words @@ %s::tsquery))")
        params += [own_ts_query(words), version_ts_query(words), ts_query(words)]
    for key, value in tags.items():
        where.append("EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version IN (0, v.version)"
                     " AND t.key = %s AND t.value = %s)")
        params += [key, value]
    if file is not None:
        where.append("EXISTS (SELECT 1 FROM files f WHERE f.name = v.name AND f.version = v.version"
                     " AND (f.basename = %s OR f.path = %s))")
        params += [text_param(file), text_param(file)]
    if alias is not None:
        where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.name = v.name AND a.version = v.version"
                     " AND a.alias = %s)")
        params.append(alias)
    sql = (f"SELECT {_V} FROM versions v JOIN models m ON m.name = v.name"  # noqa: S608
           f" WHERE {' AND '.join(where)} ORDER BY v.name, v.version")
    if limit is not None:
        sql += " LIMIT %s"
        params.append(int(limit))
    return conn.execute(sql, params).fetchall()


def best_version(conn: Any, name: str, metric: str, *, minimize: bool, tags: Mapping[str, str]) -> int | None:
    order = "ASC" if minimize else "DESC"
    where = ["mt.name = %s", "mt.key = %s", "NOT v.deleted"]
    params: list[Any] = [name, text_param(metric)]
    for key, value in tags.items():
        where.append("EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version IN (0, v.version)"
                     " AND t.key = %s AND t.value = %s)")
        params += [key, value]
    row = conn.execute(
        "SELECT v.version FROM metrics mt JOIN versions v ON v.name = mt.name AND v.version = mt.version"  # noqa: S608
        f" WHERE {' AND '.join(where)} ORDER BY mt.value {order}, v.version DESC LIMIT 1", params).fetchone()
    return None if row is None else row[0]


# -- the past --------------------------------------------------------------------------------------------------
# The states are stored as JSON text (``projections.postgres.schema``): each one returned is cast to jsonb, so
# it comes back as every other JSON column does (jsonb's key order and numbers), the same answer as before.

def model_state_at(conn: Any, name: str, position: int) -> Any:
    row = conn.execute("SELECT state::jsonb FROM model_states WHERE name = %s AND position <= %s"
                       " ORDER BY position DESC LIMIT 1", (name, position)).fetchone()
    return None if row is None else row[0]


_PAST_VERSIONS = (
    f"SELECT {_V}, (SELECT state::jsonb FROM version_states s WHERE s.name = v.name"  # noqa: S608
    " AND s.version = v.version AND s.position <= %s ORDER BY s.position DESC LIMIT 1),"
    " (SELECT artifact::jsonb FROM artifact_states a WHERE a.name = v.name"
    " AND a.version = v.version AND a.position <= %s ORDER BY a.position DESC LIMIT 1)"
    " FROM versions v WHERE v.name = %s AND v.position <= %s")


def version_at(conn: Any, name: str, number: int, position: int) -> tuple | None:
    return conn.execute(_PAST_VERSIONS + " AND v.version = %s", (position, position, name, position, number)).fetchone()


def versions_at(conn: Any, name: str, position: int) -> list[tuple]:
    return conn.execute(_PAST_VERSIONS + " ORDER BY v.version", (position, position, name, position)).fetchall()


_MODELS_AT = ("SELECT m.name, (SELECT state::jsonb FROM model_states s WHERE s.name = m.name AND s.position <= %s"
              " ORDER BY s.position DESC LIMIT 1) FROM models m WHERE m.name > %s ORDER BY m.name LIMIT %s")


def models_at(conn: Any, position: int, batch: int = 100) -> Iterator[tuple[str, Any]]:
    """(name, state as of ``position``) of every model, by name, read lazily: a batch of models at a time (by
    key, along ``models_pkey``), so a caller that stops early (``list(limit=100)``) pays one index probe into
    ``model_states`` per model it reads, not one per model of the registry. Reading all 1,000 models' states
    up front made ``list --as-of`` 2.5x slower at 1,000,000 events than at 10,000 (cold index pages)."""
    after = ""  # before every name: names are never empty, and ``name`` compares as bytes (COLLATE "C")
    while True:
        rows = conn.execute(_MODELS_AT, (position, after, batch)).fetchall()
        for name, state in rows:
            if state is not None:
                yield name, state
        if len(rows) < batch:
            return
        after = rows[-1][0]
        batch = min(batch * 4, 2_000)


# -- gc and audit ------------------------------------------------------------------------------------------------

def referenced_digests(conn: Any) -> set[str]:
    return {r[0] for r in conn.execute("SELECT DISTINCT digest FROM blob_refs")}


def purge_candidates(conn: Any, cutoff: str) -> list[tuple[str, int | None]]:
    return conn.execute(
        """
        WITH refs AS (
            SELECT r.digest, r.name, r.version, r.size, v.status,
                   (NOT v.deleted AND NOT m.deleted) AS live,
                   CASE WHEN v.deleted THEN v.deleted_at ELSE m.deleted_at END AS ended_at
            FROM blob_refs r
            JOIN versions v ON v.name = r.name AND v.version = r.version
            JOIN models m ON m.name = r.name
        )
        SELECT digest, max(size) FROM refs
        GROUP BY digest
        HAVING NOT bool_or(live) AND max(ended_at) <= %s AND bool_or(status <> 'purged')
        ORDER BY digest
        """, (cutoff,)).fetchall()


def purge_versions(conn: Any, digest: str) -> list[tuple[str, int, Any]]:
    return conn.execute(
        "SELECT v.name, v.version, v.artifact->>'digest' FROM blob_refs r"
        " JOIN versions v ON v.name = r.name AND v.version = r.version"
        " WHERE r.digest = %s AND v.status <> 'purged' ORDER BY v.name, v.version", (digest,)).fetchall()


def partial_folders(conn: Any) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT artifact->>'digest' FROM versions"
        " WHERE status <> 'purged' AND artifact->>'kind' = 'directory'"
        " AND jsonb_typeof(artifact->'file_count') = 'number' AND jsonb_typeof(artifact->'files') = 'array'"
        " AND (artifact->>'file_count')::numeric > jsonb_array_length(artifact->'files')").fetchall()
    return {r[0] for r in rows if isinstance(r[0], str)}


_CURSORS = itertools.count()


def _stream(conn: Any, sql: str, params: tuple = ()) -> Iterator[tuple]:
    """Rows fetched a thousand at a time from a server-side cursor (the caller's transaction holds it)."""
    with conn.cursor(name=f"mledger_rows_{next(_CURSORS)}") as cur:
        cur.itersize = 1_000
        cur.execute(sql, params)
        yield from cur


def ready_blobs(conn: Any) -> Iterator[tuple[str, str, int, int]]:
    yield from _stream(
        conn,
        "SELECT r.digest, r.name, r.version, v.position FROM blob_refs r"
        " JOIN versions v ON v.name = r.name AND v.version = r.version"
        " WHERE v.status = 'ready' ORDER BY v.position, r.name, r.version, r.digest")


def table_rows(conn: Any, table: str, columns: Sequence[str], order: str) -> Iterator[tuple]:
    """Every row of a catalog table in ``order`` (names from ``projections.digest``, never from input)."""
    yield from _stream(conn, f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")  # noqa: S608


def words_rows(conn: Any) -> Iterator[tuple]:
    """(name, version or 0, sorted tokens) of the search index, for comparing two indexes."""
    for name, words in conn.execute("SELECT name, tsvector_to_array(words) FROM model_search ORDER BY name"):
        yield name, 0, sorted(words)
    for name, number, words in conn.execute(
            "SELECT name, version, tsvector_to_array(words) FROM version_search ORDER BY name, version"):
        yield name, number, sorted(words)
