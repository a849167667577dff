"""The reads a command's ``Target`` needs, in one statement (``projections.prefetch``): PostgreSQL's side.

One statement rather than one per table: in a batched transaction they would share the round trip anyway,
but each statement costs the client its own send and result (~30 µs of psycopg per statement, measured with
``scripts/profile_pg.py --cprofile``: the prefetch went from 5 statements to 1). The rows travel as JSON
arrays, in the columns' order; ``json`` keeps every value as the columns give it (``jsonb`` as its JSON,
``bigint`` as a number, ``boolean`` as true/false), so they read back as the separate queries' do.
"""

from __future__ import annotations

from typing import Any

from eventstore.state import Target
from projections.prefetch import PREFETCH_MODEL, PREFETCH_VERSION, Prefetched
from projections.projector import CHECKPOINT

_STATEMENT = (
    f"SELECT (SELECT json_build_array({', '.join(PREFETCH_MODEL)}) FROM models WHERE name = %(name)s),"  # noqa: S608
    " (SELECT json_agg(json_build_array(alias, version) ORDER BY alias) FROM aliases WHERE name = %(name)s),"
    # each number the command may read or create, with its row (NULLs when it has none): the version named
    # (a number, an alias's or the latest live one) and the next new one (a register's or an update's). A
    # LATERAL probe of each number's row by its key: with a plain join the generic plan hashed the two
    # numbers and scanned every version of the model for them (200 index rows for a model of 200 versions,
    # 0.12 ms of the statement's 0.19; EXPLAIN ANALYZE EXECUTE under force_generic_plan), so a command cost
    # more as its model grew. A number named twice (a new version named before it exists) comes back twice,
    # which the reader's dict takes once.
    f" (SELECT json_agg(json_build_array(k.version, {', '.join('v.' + c for c in PREFETCH_VERSION)})) FROM"
    " (VALUES (coalesce(%(version)s::bigint, CASE WHEN %(ref_alias)s::text IS NULL"
    " THEN (SELECT latest FROM models WHERE name = %(name)s)"
    " ELSE (SELECT version FROM aliases WHERE name = %(name)s AND alias = %(ref_alias)s) END)),"
    " ((SELECT last_version + 1 FROM models WHERE name = %(name)s))) AS k(version)"
    f" LEFT JOIN LATERAL (SELECT {', '.join(PREFETCH_VERSION)} FROM versions"  # noqa: S608
    " WHERE name = %(name)s AND version = k.version LIMIT 1) AS v ON true"
    " WHERE k.version IS NOT NULL),"
    " (SELECT max(seq) FROM alias_history WHERE name = %(name)s AND alias = %(alias)s),"
    " (SELECT position FROM projection_checkpoint WHERE name = %(checkpoint)s)"
)


def prefetch(conn: Any, target: Target) -> Prefetched:
    """Send the reads for ``target`` on ``conn`` (in a batched transaction: without waiting for them)."""
    cursor = conn.execute(_STATEMENT, {"name": target.name, "version": target.version, "ref_alias": target.ref_alias,
                                       "alias": target.alias, "checkpoint": CHECKPOINT})
    got: list[tuple[Any, ...]] = []

    def row() -> tuple[Any, ...]:
        if not got:
            got.append(cursor.fetchone())
        return got[0]

    return Prefetched(
        target,
        model=lambda: [row()[0]] if row()[0] is not None else [],
        aliases=lambda: row()[1] or [],
        versions=lambda: row()[2] or [],
        top=(lambda: [(row()[3],)]) if target.alias is not None else None,
        checkpoint=lambda: [(row()[4],)] if row()[4] is not None else [],
    )
