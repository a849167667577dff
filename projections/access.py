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
from eventstore.access import fold as fold_token
from eventstore.events import TOKEN_EVENTS, TOKEN_STREAM_PREFIX, StoredEvent
from eventstore.recorder import Recorder

from .dialects import dialect_part


class TokenTable:
    """The registry's token table (any backend): caught up from the log before every lookup."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.sql = dialect_part(recorder.dialect, "access")
        self._created = False

    def _ensure(self) -> None:
        if not self._created:
            with self.recorder.read_snapshot() as conn:
                there = self.sql.exists(conn)
            if not there:
                with self.recorder.write() as tx:
                    self.sql.create(tx.connection)  # type: ignore[attr-defined]
            self._created = True

    def catch_up(self) -> int:
        """Fold the token events the log gained since the checkpoint; the position the table is current to.

        Token events live on their own streams (``token-<name>``), so "is the table current?" is one probe of
        the recorder's streams index (``read_streams``, limit 1) after the checkpoint: two indexed reads
        and no write when no token changed, however many other events were appended meanwhile. (Before, every
        request after any write took the write lock and committed a new checkpoint: one more fsynced
        transaction per write request; docs/performance.md, "The HTTP server".) The fold itself runs under
        the log's write lock, so two processes never fold the same events twice, and a grant or revocation
        committed by any process is seen by the next lookup of every process (and, on PostgreSQL, host)."""
        self._ensure()
        with self.recorder.read_snapshot() as conn:
            done = self.sql.checkpoint(conn)
        if next(self.recorder.read_streams(TOKEN_STREAM_PREFIX, since=done, limit=1), None) is None:
            return done
        with self.recorder.write() as tx:
            conn = tx.connection  # type: ignore[attr-defined]
            position = self.sql.checkpoint(conn)  # another process may have folded it meanwhile
            # Read through the recorder, not this transaction: positions are assigned in commit order, so
            # an event committed after this read has a later position and is folded by the next catch-up.
            events = self._token_events(since=position)
            self._apply(conn, events)
            if events:
                position = events[-1].position
            self.sql.set_checkpoint(conn, position)
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

    def _token_events(self, *, since: int) -> list[StoredEvent]:
        """The token events after ``since``, in log order (the recorder finds them through its streams'
        index: ``Recorder.read_streams``)."""
        return [e for e in self.recorder.read_streams(TOKEN_STREAM_PREFIX, since=since) if e.type in TOKEN_EVENTS]

    def _folded(self) -> dict[str, TokenState]:
        """Every token as its events tell it, folded here from the log without writing anything: what a
        read-only registry answers with (token events are few: one probe of the token streams' index)."""
        events = self._token_events(since=0)
        streams: dict[str, list[StoredEvent]] = {}
        for e in events:
            streams.setdefault(e.data["token"], []).append(e)
        return {name: state for name, events in streams.items() if (state := fold_token(events)) is not None}

    def find(self, secret_sha256: str) -> TokenState | None:
        """The token whose secret hashes to ``secret_sha256`` (revoked and expired ones too: the caller
        refuses them), after catching up with the log."""
        if self.recorder.read_only:
            return next((t for t in self._folded().values()
                         if hmac.compare_digest(t.secret_sha256, secret_sha256)), None)
        self.catch_up()
        with self.recorder.read_snapshot() as conn:
            rows = self.sql.find(conn, secret_sha256)
        for row in rows:
            # The index found it; the comparison that decides is constant-time all the same.
            if hmac.compare_digest(row[4], secret_sha256):
                return TokenState(*row)
        return None

    def list(self) -> list[TokenState]:
        if self.recorder.read_only:
            return sorted(self._folded().values(), key=lambda t: t.token)
        self.catch_up()
        with self.recorder.read_snapshot() as conn:
            return [TokenState(*r) for r in self.sql.rows(conn)]

    def get(self, token: str) -> TokenState | None:
        return next((t for t in self.list() if t.token == token), None)


def token_table(recorder: Recorder) -> TokenTable:
    """The token table for this registry's backend."""
    return TokenTable(recorder)
