"""What the evidence bundle's header says of the log (``projections.audit.export``), in PostgreSQL: how many
events it holds and the hash of the last, read in the export's own snapshot so the header and the rows agree."""

from __future__ import annotations

from typing import Any

_SUMMARY = "SELECT count(*), (SELECT hash FROM events ORDER BY position DESC LIMIT 1) FROM events"


def log_summary(conn: Any) -> tuple[int, str | None]:
    """``(events, last hash)``; ``(0, None)`` for an empty log."""
    count, last = conn.execute(_SUMMARY).fetchone()
    return count, last
