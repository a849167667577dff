"""What the catalog says about blobs: which are still needed, which only dead versions reference.

Read inside the caller's write transaction (gc holds the write lock while it appends ``ArtifactPurged``
and deletes bytes, so no version can start referencing a blob in between): ``CatalogProjection.purge_plan``,
``referenced_digests`` and ``partial_folders`` take the transaction; the SQL is the dialect's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dialects import dialect_of


@dataclass(frozen=True)
class PurgePlan:
    digest: str
    size: int | None
    versions: tuple[tuple[str, int, str], ...]  # (name, version, that version's artifact digest)


def referenced_digests(conn: Any) -> set[str]:
    return dialect_of(conn).referenced_digests(conn)


def purge_plan(conn: Any, cutoff: str) -> list[PurgePlan]:
    sql = dialect_of(conn)
    return [PurgePlan(digest, size, tuple((n, v, d) for n, v, d in sql.purge_versions(conn, digest)))
            for digest, size in sql.purge_candidates(conn, cutoff)]


def partial_folders(conn: Any) -> set[str]:
    return dialect_of(conn).partial_folders(conn)
