"""The token table the HTTP server reads: every token's newest grant and revocation, looked up by the hash
of a presented secret.

It is a projection of the ``TokenGranted``/``TokenRevoked`` events (eventstore/access.py) kept in the
registry's own database, beside the catalog but apart from it (its own tables and checkpoint, so a catalog
rebuild or the audit's replay comparison never touches it). Every lookup first folds whatever the log gained
since the table's checkpoint, so a revocation appended by any process is seen by every server process at
its next request: no process keeps token state of its own.

On SQLite the table is kept in the registry's file (``TokenTable``). On any other backend (PostgreSQL) the
same fold is kept in the server process's memory (``FoldedTokens``), caught up from the log before every
lookup — the same guarantee (a revocation is seen at the next request by every process), at the price of
reading the log once when a process starts. A PostgreSQL table beside its catalog is the next step.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterable

from eventstore.access import TokenState
from eventstore.events import TOKEN_EVENTS, TOKEN_STREAM_PREFIX, StoredEvent
from eventstore.recorder import Recorder
from eventstore.sqlite import SQLiteRecorder, translate

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS access_tokens ("
    " token TEXT PRIMARY KEY, role TEXT NOT NULL, prefix TEXT NOT NULL, expires_at TEXT,"
    " secret_sha256 TEXT NOT NULL, granted_at TEXT NOT NULL, granted_by TEXT NOT NULL,"
    " revoked_at TEXT, revoked_by TEXT, position INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS access_tokens_secret ON access_tokens (secret_sha256)",
    "CREATE TABLE IF NOT EXISTS access_checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " position INTEGER NOT NULL)",
)
_COLUMNS = "token, role, prefix, expires_at, secret_sha256, granted_at, granted_by, revoked_at, revoked_by"
PAGE = 5_000
# Every stream ``token-<name>``: the half-open range ['token-', 'token.') of the events' (stream, version) index.
_TOKEN_RANGE = (TOKEN_STREAM_PREFIX, TOKEN_STREAM_PREFIX[:-1] + chr(ord(TOKEN_STREAM_PREFIX[-1]) + 1))
_LATEST_TOKEN_EVENT = "SELECT max(position) FROM events WHERE stream >= ? AND stream < ?"
# (``+position``: keeps SQLite on the stream index; on the rowid it would scan every event since the checkpoint.)
_TOKEN_POSITIONS = "SELECT position FROM events WHERE stream >= ? AND stream < ? AND +position > ? ORDER BY position"


def _state(row: tuple) -> TokenState:
    return TokenState(*row)


class FoldedTokens:
    """The token table as a fold kept in this process (any backend): caught up from the log at every lookup."""

    def __init__(self, recorder: Recorder) -> None:
        import threading

        self.recorder = recorder
        self._position = 0
        self._tokens: dict[str, TokenState] = {}
        self._lock = threading.Lock()

    def catch_up(self) -> int:
        with self._lock:
            head = self.recorder.head()
            while self._position < head:
                batch = list(self.recorder.read(since=self._position, limit=PAGE))
                if not batch:
                    break
                for e in batch:
                    if e.type not in TOKEN_EVENTS:
                        continue
                    d, actor = e.data, str(e.meta.get("actor", ""))
                    if e.type == "TokenGranted":
                        self._tokens[d["token"]] = TokenState(d["token"], d["role"], d["prefix"], d["expires_at"],
                                                              d["secret_sha256"], e.recorded_at, actor)
                    elif d["token"] in self._tokens:
                        t = self._tokens[d["token"]]
                        self._tokens[d["token"]] = TokenState(t.token, t.role, t.prefix, t.expires_at,
                                                              t.secret_sha256, t.granted_at, t.granted_by,
                                                              e.recorded_at, actor)
                self._position = batch[-1].position
            return self._position

    def find(self, secret_sha256: str) -> TokenState | None:
        self.catch_up()
        for t in list(self._tokens.values()):
            if hmac.compare_digest(t.secret_sha256, secret_sha256):
                return t
        return None

    def list(self) -> list[TokenState]:
        self.catch_up()
        return sorted(self._tokens.values(), key=lambda t: t.token)

    def get(self, token: str) -> TokenState | None:
        self.catch_up()
        return self._tokens.get(token)


def token_table(recorder: Recorder) -> TokenTable | FoldedTokens:
    """The token table for this registry's backend."""
    return TokenTable(recorder) if recorder.dialect == "sqlite" else FoldedTokens(recorder)  # type: ignore[arg-type]


class TokenTable:
    def __init__(self, recorder: SQLiteRecorder) -> None:
        self.recorder = recorder
        self._created = False

    def _ensure(self, conn: sqlite3.Connection) -> None:
        if not self._created:
            for statement in SCHEMA:
                conn.execute(statement)
            self._created = True

    def _checkpoint(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT position FROM access_checkpoint WHERE id = 1").fetchone()
        return row[0] if row else 0

    def catch_up(self) -> int:
        """Fold the token events the log gained since the checkpoint; the position the table is current to.

        Token events live on their own streams (``token-<name>``), so "is the table current?" is one probe of
        the events' ``(stream, version)`` index over those streams against the checkpoint: two indexed reads
        and no write when no token changed, however many other events were appended meanwhile. (Before, every
        request after any write took the write lock, read every new event and committed a new checkpoint:
        one more fsynced transaction per write request; measured in docs/performance.md, "The HTTP server".)
        A grant or revocation committed by any process is therefore seen by the next lookup of every process.
        """
        try:
            conn = self.recorder.connection()
            if not self._created:
                with self.recorder.write() as tx:
                    self._ensure(tx.connection)
            checkpoint = self._checkpoint(conn)
            latest = self._latest_token_event(conn)
            if latest <= checkpoint:
                return checkpoint
            with self.recorder.write() as tx:
                position = self._checkpoint(tx.connection)  # another process may have folded it meanwhile
                rows = tx.connection.execute(_TOKEN_POSITIONS, (*_TOKEN_RANGE, position)).fetchall()
                events = [e for (p,) in rows if (e := self.recorder.event_at(p)) is not None]
                self._apply(tx.connection, events)
                if events:
                    position = events[-1].position
                tx.connection.execute("INSERT INTO access_checkpoint (id, position) VALUES (1, ?)"
                                      " ON CONFLICT (id) DO UPDATE SET position = excluded.position", (position,))
            return position
        except sqlite3.Error as exc:
            raise translate(exc) from None

    def current(self) -> bool:
        """Whether the table holds every token event in the log (two indexed reads, nothing written): then a
        lookup needs no ``catch_up``. The HTTP server asks this on its event loop and moves to a thread only
        when a fold (a write) is needed."""
        if not self._created:
            return False
        try:
            conn = self.recorder.connection()
            return self._latest_token_event(conn) <= self._checkpoint(conn)
        except sqlite3.Error as exc:
            raise translate(exc) from None

    @staticmethod
    def _latest_token_event(conn: sqlite3.Connection) -> int:
        row = conn.execute(_LATEST_TOKEN_EVENT, _TOKEN_RANGE).fetchone()
        return row[0] or 0

    @staticmethod
    def _apply(conn: sqlite3.Connection, events: Iterable[StoredEvent]) -> None:
        for e in events:
            if e.type not in TOKEN_EVENTS:
                continue
            d, actor = e.data, str(e.meta.get("actor", ""))
            if e.type == "TokenGranted":
                conn.execute(
                    f"INSERT INTO access_tokens ({_COLUMNS}, position) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)"  # noqa: S608
                    " ON CONFLICT (token) DO UPDATE SET role = excluded.role, prefix = excluded.prefix,"
                    " expires_at = excluded.expires_at, secret_sha256 = excluded.secret_sha256,"
                    " granted_at = excluded.granted_at, granted_by = excluded.granted_by, revoked_at = NULL,"
                    " revoked_by = NULL, position = excluded.position",
                    (d["token"], d["role"], d["prefix"], d["expires_at"], d["secret_sha256"], e.recorded_at,
                     actor, e.position))
            else:
                conn.execute("UPDATE access_tokens SET revoked_at = ?, revoked_by = ?, position = ?"
                             " WHERE token = ?", (e.recorded_at, actor, e.position, d["token"]))

    def find(self, secret_sha256: str, *, caught_up: bool = False) -> TokenState | None:
        """The token whose secret hashes to ``secret_sha256`` (revoked and expired ones too: the caller
        refuses them), after catching up with the log (unless the caller just saw ``current()``)."""
        if not caught_up:
            self.catch_up()
        try:
            rows = self.recorder.connection().execute(
                f"SELECT {_COLUMNS} FROM access_tokens WHERE secret_sha256 = ?",  # noqa: S608 - fixed columns
                (secret_sha256,)).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from None
        for row in rows:
            # The index found it; the comparison that decides is constant-time all the same.
            if hmac.compare_digest(row[4], secret_sha256):
                return _state(row)
        return None

    def list(self) -> list[TokenState]:
        self.catch_up()
        try:
            rows = self.recorder.connection().execute(
                f"SELECT {_COLUMNS} FROM access_tokens ORDER BY token").fetchall()  # noqa: S608
        except sqlite3.Error as exc:
            raise translate(exc) from None
        return [_state(r) for r in rows]

    def get(self, token: str) -> TokenState | None:
        return next((t for t in self.list() if t.token == token), None)

