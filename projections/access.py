"""The token table the HTTP server reads: every token's newest grant and revocation, looked up by the hash
of a presented secret.

It is a projection of the ``TokenGranted``/``TokenRevoked`` events (eventstore/access.py) kept in the
registry's own database, beside the catalog but apart from it (its own tables and checkpoint, so a catalog
rebuild or the audit's replay comparison never touches it). Every lookup first folds whatever the log gained
since the table's checkpoint, so a revocation appended by any process is seen by every server process (and,
on PostgreSQL, every host) at its next request: no process keeps token state of its own.

The SQL is the dialect's (``projections/sqlite/access.py``, ``projections/postgres/access.py``); this module
holds the fold and the lookups, the same on both.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from eventstore.access import TokenState
from eventstore.events import TOKEN_EVENTS, StoredEvent
from eventstore.recorder import Recorder

from .dialects import dialect_part

PAGE = 5_000


class TokenTable:
    """The registry's token table (any backend): caught up from the log before every lookup."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.sql = dialect_part(recorder.dialect, "access")
        self._created = False
        # This process has seen that the log holds no token event between the table's checkpoint (as it
        # was then) and this position: the table is current up to here without a fold. Folding after every
        # write instead cost a write transaction (lock, commit, fsync) in the next request's lookup: a
        # write then a lookup took +2-4 ms over the write alone on PostgreSQL, now +0.5 ms; SQLite
        # +0.45-0.6 ms, now +0.1-0.2 ms (2,000 lookups, 200 tag+lookup pairs, this machine at load 3-6).
        self._current_to = 0

    def catch_up(self) -> int:
        """Bring the table up to the log's head; the position it is current to. Nothing new: one read of the
        head. New events without a token event among them: one read of them, nothing written. A grant or
        a revocation among them: folded under the log's write lock (two processes never fold the same
        events twice) and the checkpoint moved."""
        if not self._created:
            with self.recorder.read_snapshot() as conn:
                there = self.sql.exists(conn)
            if not there:
                with self.recorder.write() as tx:
                    self.sql.create(tx.connection)  # type: ignore[attr-defined]
            self._created = True
        head = self.recorder.head()
        if head <= self._current_to:
            return head
        start = self._current_to
        if not start:  # this process's first look: start from the table's checkpoint
            with self.recorder.read_snapshot() as conn:
                start = self.sql.checkpoint(conn)
        if start >= head:
            self._current_to = start
            return start
        # Committed positions are gapless and appear in order (one writer at a time), so this is a prefix.
        tail = list(self.recorder.read(since=start, limit=PAGE))
        if len(tail) < PAGE and not any(e.type in TOKEN_EVENTS for e in tail):
            self._current_to = tail[-1].position if tail else start
            return self._current_to
        with self.recorder.write() as tx:
            conn = tx.connection  # type: ignore[attr-defined]
            position = self.sql.checkpoint(conn)  # another process may have folded it meanwhile
            while batch := list(tx.read(since=position, limit=PAGE)):
                self._apply(conn, batch)
                position = batch[-1].position
            self.sql.set_checkpoint(conn, position)
        self._current_to = position
        return position

    def _apply(self, conn: object, events: Iterable[StoredEvent]) -> None:
        for e in events:
            if e.type not in TOKEN_EVENTS:
                continue
            d, actor = e.data, str(e.meta.get("actor", ""))
            if e.type == "TokenGranted":
                self.sql.grant(conn, (d["token"], d["role"], d["prefix"], d["expires_at"], d["secret_sha256"],
                                      e.recorded_at, actor), e.position)
            else:
                self.sql.revoke(conn, d["token"], e.recorded_at, actor, e.position)

    def find(self, secret_sha256: str) -> TokenState | None:
        """The token whose secret hashes to ``secret_sha256`` (revoked and expired ones too: the caller
        refuses them), after catching up with the log."""
        self.catch_up()
        with self.recorder.read_snapshot() as conn:
            rows = self.sql.find(conn, secret_sha256)
        for row in rows:
            # The index found it; the comparison that decides is constant-time all the same.
            if hmac.compare_digest(row[4], secret_sha256):
                return TokenState(*row)
        return None

    def list(self) -> list[TokenState]:
        self.catch_up()
        with self.recorder.read_snapshot() as conn:
            return [TokenState(*r) for r in self.sql.rows(conn)]

    def get(self, token: str) -> TokenState | None:
        return next((t for t in self.list() if t.token == token), None)


def token_table(recorder: Recorder) -> TokenTable:
    """The token table for this registry's backend."""
    return TokenTable(recorder)
