"""The reads a command's ``Target`` needs, sent in one go (``projections.prefetch``): PostgreSQL's side."""

from __future__ import annotations

from typing import Any

from eventstore.state import Target
from projections.prefetch import PREFETCH_MODEL, PREFETCH_VERSION, Prefetched
from projections.projector import CHECKPOINT

_MODEL = f"SELECT {', '.join(PREFETCH_MODEL)} FROM models WHERE name = %s"  # noqa: S608
_ALIASES = "SELECT alias, version FROM aliases WHERE name = %s ORDER BY alias"
# Each number the command may read or create, with its row (NULLs when it has none): the version named (a
# number, an alias's or the latest live one) and the next new one (a register's or an update's).
_VERSIONS = (
    f"SELECT k.version, {', '.join('v.' + c for c in PREFETCH_VERSION)} FROM ("  # noqa: S608
    " SELECT coalesce(%(version)s::bigint, CASE WHEN %(alias)s::text IS NULL"
    " THEN (SELECT latest FROM models WHERE name = %(name)s)"
    " ELSE (SELECT version FROM aliases WHERE name = %(name)s AND alias = %(alias)s) END)"
    " UNION SELECT last_version + 1 FROM models WHERE name = %(name)s"
    ") AS k(version) LEFT JOIN versions v ON v.name = %(name)s AND v.version = k.version"
    " WHERE k.version IS NOT NULL"
)
_TOP = "SELECT max(seq) FROM alias_history WHERE name = %s AND alias = %s"
_CHECKPOINT = "SELECT position FROM projection_checkpoint WHERE name = %s"


def prefetch(conn: Any, target: Target) -> Prefetched:
    """Send the reads for ``target`` on ``conn`` (in a batched transaction: without waiting for them)."""
    name = target.name
    model = conn.execute(_MODEL, (name,))
    aliases = conn.execute(_ALIASES, (name,))
    versions = conn.execute(_VERSIONS, {"name": name, "version": target.version, "alias": target.ref_alias})
    top = conn.execute(_TOP, (name, target.alias)) if target.alias is not None else None
    checkpoint = conn.execute(_CHECKPOINT, (CHECKPOINT,))
    return Prefetched(target, model.fetchall, aliases.fetchall, versions.fetchall,
                      top.fetchall if top is not None else None, checkpoint.fetchall)
