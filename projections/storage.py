"""What the catalog says about blobs: which are still needed, which only dead versions reference.

Each function takes the connection to read on: gc's write transaction's (gc holds the write lock while it
appends ``ArtifactPurged`` and deletes bytes, so no version can start referencing a blob in between), or a
read snapshot for a dry run, which only reads. The SQL is the dialect's.
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
    """Blobs that no live version references, whose last reference ended at or before ``cutoff`` (a stored
    timestamp), with the not-yet-purged versions that referenced them."""
    sql = dialect_of(conn)
    return [PurgePlan(digest, size, tuple((n, v, d) for n, v, d in sql.purge_versions(conn, digest)))
            for digest, size in sql.purge_candidates(conn, cutoff)]


def partial_folders(conn: Any) -> set[str]:
    """Manifest digests of the folder artifacts (not purged) whose event lists only their first files: the
    rest of their blobs are named by the manifest alone, which gc reads before freeing anything."""
    return dialect_of(conn).partial_folders(conn)
