"""Appending rows that were sealed elsewhere (``Transaction.append_rows``): a log copied to another database
keeps its positions, stream versions, recorded times and hashes, so the copy IS the same history.

The rows are not trusted: before a backend inserts them, ``check_rows`` verifies that they continue the
target's log exactly (next position, next stream versions, time not going backwards, canonical text, hash
chained to the target's head), and that every idempotency key travelling with them points at a batch of
these rows recorded under it. A break raises ``IntegrityError`` and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from .errors import IntegrityError
from .idempotency import batch_problem
from .verify import verify_rows

# An idempotency key as stored: (key, fingerprint, first_position, last_position).
KeyRow = tuple[str, str | None, int, int]


def check_rows(rows: Sequence[tuple], keys: Sequence[KeyRow], *, head: int, head_hash: str, head_at: str,
               versions: Mapping[str, int]) -> None:
    """``IntegrityError`` unless ``rows`` (``sealing.COLUMNS`` order) continue a log whose head is
    (``head``, ``head_hash``, ``head_at``) and whose streams are at ``versions``; and unless every key of
    ``keys`` names a range of ``rows`` whose events were recorded under it."""
    report = verify_rows(rows, start_position=head, start_hash=head_hash, start_recorded_at=head_at,
                         start_versions=dict(versions))
    if not report.ok:
        raise IntegrityError(f"the copied rows do not continue this log at #{report.position}: {report.problem}")
    if not keys:
        return
    if not rows:
        raise IntegrityError("idempotency keys can only be copied with the events recorded under them")
    first_row, last_row = rows[0][0], rows[-1][0]
    for key, _fingerprint, first, last in keys:
        if first < first_row or last > last_row:
            raise IntegrityError(f"idempotency key {key!r} points at #{first}..#{last}, outside the copied rows "
                                 f"#{first_row}..#{last_row}")
        found = ((row[0], _meta(row[6])) for row in rows[first - first_row:last - first_row + 1])
        wrong = batch_problem(key, first, last, found, last_row)
        if wrong is not None:
            raise IntegrityError(f"idempotency key {key!r} {wrong[1]}")


def stream_names(rows: Sequence[tuple]) -> set[str]:
    return {row[1] for row in rows}


def _meta(text: object) -> object:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
