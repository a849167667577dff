"""What the catalog says about blobs: which are still needed, which only dead versions reference.

Read inside the caller's write transaction (gc holds the write lock while it appends ``ArtifactPurged``
and deletes bytes, so no version can start referencing a blob in between).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class PurgePlan:
    digest: str
    size: int | None
    versions: tuple[tuple[str, int, str], ...]  # (name, version, that version's artifact digest)


def referenced_digests(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT DISTINCT digest FROM blob_refs")}


def purge_plan(conn: sqlite3.Connection, cutoff: str) -> list[PurgePlan]:
    """Blobs that no live version references, whose last reference ended at or before ``cutoff`` (a stored
    timestamp), with the not-yet-purged versions that referenced them."""
    rows = conn.execute(
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
        """,
        (cutoff,),
    ).fetchall()
    plans = []
    for digest, size in rows:
        versions = conn.execute(
            "SELECT v.name, v.version, json_extract(v.artifact, '$.digest') FROM blob_refs r"
            " JOIN versions v ON v.name = r.name AND v.version = r.version"
            " WHERE r.digest = ? AND v.status != 'purged' ORDER BY v.name, v.version",
            (digest,),
        ).fetchall()
        plans.append(PurgePlan(digest, size, tuple((n, ver, d) for n, ver, d in versions)))
    return plans


def partial_folders(conn: sqlite3.Connection) -> set[str]:
    """Manifest digests of the folder artifacts (not purged) whose event lists only their first files: the
    rest of their blobs are named by the manifest alone, which gc reads before freeing anything."""
    rows = conn.execute(
        "SELECT DISTINCT json_extract(artifact, '$.digest') FROM versions"
        " WHERE status != 'purged' AND json_extract(artifact, '$.kind') = 'directory'"
        " AND json_extract(artifact, '$.file_count') > json_array_length(artifact, '$.files')"
    ).fetchall()
    return {r[0] for r in rows if isinstance(r[0], str)}
