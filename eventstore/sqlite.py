"""The SQLite backend of the recorder: one file, WAL, one ``events`` table.

Conventions carry the meaning (as in message-db): ``position`` is the rowid, assigned as head + 1 inside a
``BEGIN IMMEDIATE`` transaction, so positions are gapless and in commit order; ``UNIQUE(stream, version)``
turns a stale writer into an IntegrityError — the optimistic-concurrency signal; triggers (the guards) refuse
UPDATE, DELETE and REPLACE inside the database. Guards are created with a new database and never re-created,
so a dropped or altered one stays visible to ``audit`` and stops appends. They stop mistakes and casual edits,
not someone who owns the file (who can bypass or re-create them): anchors kept elsewhere catch that
(``docs/operations.md``). The SQL of the log lives in this module (the export's header query aside).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from .canonical import GENESIS_HASH
from .clock import normalize_timestamp, utc_now
from .copying import KeyRow, check_rows, stream_names
from .errors import ConcurrencyError, IdempotencyError, IntegrityError, StoreError, ValidationError
from .events import NewEvent, StoredEvent
from .idempotency import batch_problem, check_keyed_batch, key_problems_of
from .permissions import create_file, make_root, modes_under
from .recorder import GuardProblem, KeyProblem, Recorder, Transaction, guard_refusal, stream_range
from .sealing import event_from_row, seal
from .sqlscript import create_schema, run_script
from .writelock import WouldWait, WriteLock, waiting_allowed

TABLES = """
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    meta           TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    UNIQUE (stream, version)
);
CREATE TABLE IF NOT EXISTS registry_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key            TEXT PRIMARY KEY,
    fingerprint    TEXT,
    first_position INTEGER NOT NULL,
    last_position  INTEGER NOT NULL
);
"""

# The guards that keep the log append-only, by name, exactly as SQLite keeps them in sqlite_master (which is
# how registries made before guards were checked hold them, so they compare equal). They are created with a
# brand-new database and never again: re-creating them on open would put back, before any audit looks, a
# guard that someone dropped to edit the log. ``audit`` compares their definitions (``guard_problems``).
# events_no_replace: INSERT OR REPLACE deletes the conflicting row without firing DELETE triggers (unless the
# connection enabled recursive_triggers, which another client would not): refuse any insert that would collide.
GUARDS: dict[str, str] = {
    "events_no_update": "CREATE TRIGGER events_no_update BEFORE UPDATE ON events\n"
                        "BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END",
    "events_no_delete": "CREATE TRIGGER events_no_delete BEFORE DELETE ON events\n"
                        "BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END",
    "events_no_replace": "CREATE TRIGGER events_no_replace BEFORE INSERT ON events\n"
                         "WHEN NEW.position <= (SELECT max(position) FROM events)\n"
                         "  OR EXISTS (SELECT 1 FROM events WHERE stream = NEW.stream AND version = NEW.version)\n"
                         "BEGIN SELECT RAISE(ABORT, 'events are append-only: REPLACE refused'); END",
    "idempotency_no_replace": "CREATE TRIGGER idempotency_no_replace BEFORE INSERT ON idempotency\n"
                              "WHEN EXISTS (SELECT 1 FROM idempotency WHERE key = NEW.key)\n"
                              "BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: REPLACE refused'); END",
    "idempotency_no_update": "CREATE TRIGGER idempotency_no_update BEFORE UPDATE ON idempotency\n"
                             "BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: UPDATE refused'); END",
    "idempotency_no_delete": "CREATE TRIGGER idempotency_no_delete BEFORE DELETE ON idempotency\n"
                             "BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: DELETE refused'); END",
}
GUARDED_TABLES = ("events", "idempotency")

_SELECT = "SELECT position, stream, version, type, schema_version, data, meta, recorded_at, hash FROM events"
_INSERT = (
    "INSERT INTO events (position, stream, version, type, schema_version, data, meta, recorded_at, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


def translate(exc: sqlite3.Error) -> StoreError:
    """Driver errors become the project's own, with a message a user can act on."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(f"the registry database stayed locked by another writer: {text}")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"the registry database is read-only: {text}")
    if "disk" in text and ("full" in text or "I/O" in text):
        return StoreError(f"the registry database could not be written (disk full or I/O error): {text}")
    return StoreError(f"registry database error: {text}")


def normalise_sql(sql: str) -> str:
    """A definition as compared: runs of white space are one space (SQLite already drops ``IF NOT EXISTS`` and
    upper-cases ``CREATE TRIGGER``). Anything else that differs — a ``WHEN 0``, another body — is a change."""
    return " ".join(sql.split())


def guard_problems_of(conn: sqlite3.Connection) -> list[GuardProblem]:
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND lower(tbl_name) IN (?, ?) ORDER BY name",
        GUARDED_TABLES,
    ).fetchall()
    present = {name: sql or "" for name, sql in rows}
    problems: list[GuardProblem] = []
    for name, want in GUARDS.items():
        have = present.pop(name, None)
        if have is None:
            problems.append(GuardProblem(name, "missing"))
        elif normalise_sql(have) != normalise_sql(want):
            problems.append(GuardProblem(name, "altered", normalise_sql(have)))
    problems += [GuardProblem(name, "extra", normalise_sql(sql)) for name, sql in present.items()]
    return problems




def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def cannot_write(path: Path) -> bool:
    """Whether an existing registry file can only be read here: its folder is on a read-only mount, or this
    user may not write the file or its folder (SQLite's WAL needs to create ``-wal`` and ``-shm`` beside it).
    ``os.access`` answers for the real user, and a read-only mount stops root too."""
    return path.is_file() and (_read_only(path.parent) or not os.access(path, os.W_OK))


def open_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection that can only read ``path`` (``mode=ro``: SQLite refuses every write on it).

    A WAL database needs its ``-shm`` index to be read: ``mode=ro`` uses it when it exists (a writer elsewhere
    has the file open, or left it), and then sees every commit, the WAL's included. A registry closed cleanly
    has no ``-wal`` and no ``-shm`` (the last writer checkpointed everything into the file), and a folder that
    cannot be written cannot get a ``-shm``: that file is then opened ``immutable`` — read as it is, without
    locks, which is exact because nothing waits in a WAL. (A writer reaching the same file through another,
    writable path while this reads is not seen: a read-only home is read as it stood.) A ``-wal`` without its
    ``-shm`` may hold commits that are not in the file yet: refused, with what to do."""
    uri = path.resolve().as_uri()
    conn = None
    try:
        conn = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None, timeout=timeout,
                               check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the file is opened on first use
        return conn
    except sqlite3.OperationalError:
        if conn is not None:
            conn.close()
        wal = Path(str(path) + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(f"the registry {path} is read-only here and its write-ahead log ({wal.name}) holds "
                             "changes not yet in the database file, which SQLite cannot read without creating "
                             f"{path.name}-shm: open it once where it can be written (any command), then read it "
                             "here") from None
        try:
            return sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None, timeout=timeout,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise translate(exc) from None






def _idempotent_result(conn: sqlite3.Connection, key: str, fingerprint: str | None,
                       head: Callable[[], int]) -> list[StoredEvent] | None:
    """The events first appended under ``key`` (``Transaction.idempotent_result``), read on ``conn``; ``head``:
    the log's last position as ``conn`` sees it (read only when the key is found)."""
    row = conn.execute(
        "SELECT fingerprint, first_position, last_position FROM idempotency WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    if fingerprint is not None and row[0] is not None and row[0] != fingerprint:
        raise IdempotencyError(f"idempotency key {key!r} was already used for a different request")
    rows = conn.execute(
        _SELECT + " WHERE position BETWEEN ? AND ? ORDER BY position", (row[1], row[2])
    ).fetchall()
    events = [event_from_row(r) for r in rows]
    # The log truncated (or rewritten) under the key: say so, rather than hand back no or other events.
    wrong = batch_problem(key, row[1], row[2], ((e.position, e.meta) for e in events), head())
    if wrong is not None:
        raise IntegrityError(f"idempotency key {key!r} {wrong[1]}: the log was truncated or rewritten "
                             "(run `mledger audit`)")
    return events


class SQLiteTransaction(Transaction):
    def __init__(self, connection: sqlite3.Connection, refusal: str | None = None) -> None:
        self.connection = connection
        self._head: tuple[int, str, str] | None = None
        self._refusal = refusal  # why appends are refused (guards changed), or None

    def _last(self) -> tuple[int, str, str]:
        if self._head is None:
            row = self.connection.execute(
                "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1"
            ).fetchone()
            self._head = (row[0], row[1], row[2]) if row else (0, GENESIS_HASH, "")
        return self._head

    def head(self) -> int:
        return self._last()[0]

    def stream_version(self, stream: str) -> int:
        row = self.connection.execute("SELECT max(version) FROM events WHERE stream = ?", (stream,)).fetchone()
        return row[0] or 0

    def log_rows(self, since: int, limit: int) -> list[tuple[Any, ...]]:
        return self.connection.execute(_SELECT + " WHERE position > ? ORDER BY position LIMIT ?",
                                       (since, limit)).fetchall()

    def idempotent_result(self, key: str, fingerprint: str | None) -> list[StoredEvent] | None:
        return _idempotent_result(self.connection, key, fingerprint, self.head)

    def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected: Mapping[str, int] | None = None,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> list[StoredEvent]:
        if not events:
            return []
        if self._refusal is not None:
            raise IntegrityError(self._refusal)
        if idempotency_key is not None:
            check_keyed_batch(events, idempotency_key)
        position, previous_hash, previous_at = self._last()
        now = utc_now()
        # recorded_at never goes backwards, even if the wall clock does.
        recorded_at = now if now > previous_at else previous_at
        versions: dict[str, int] = {}
        for stream, want in (expected or {}).items():
            actual = self.stream_version(stream)
            if actual != want:
                raise ConcurrencyError(f"stream {stream} is at version {actual}, the command was decided at {want}")
            versions[stream] = actual
        for stream in {event.stream for event in events}.difference(versions):
            versions[stream] = self.stream_version(stream)
        rows, stored = seal(events, head=position, head_hash=previous_hash, recorded_at=recorded_at,
                            versions=versions)
        try:
            self.connection.executemany(_INSERT, rows)
            if idempotency_key is not None:
                self.connection.execute(
                    "INSERT INTO idempotency (key, fingerprint, first_position, last_position) VALUES (?, ?, ?, ?)",
                    (idempotency_key, fingerprint, rows[0][0], rows[-1][0]),
                )
        except sqlite3.IntegrityError as exc:
            self._head = None
            raise ConcurrencyError(f"another writer appended first ({exc})") from None
        self._head = (rows[-1][0], rows[-1][-1], recorded_at)
        return stored

    def append_rows(self, rows: Sequence[tuple], keys: Sequence[KeyRow] = ()) -> int:
        if not rows:
            return self.head()
        if self._refusal is not None:
            raise IntegrityError(self._refusal)
        head, head_hash, head_at = self._last()
        versions = {stream: self.stream_version(stream) for stream in stream_names(rows)}
        check_rows(rows, keys, head=head, head_hash=head_hash, head_at=head_at, versions=versions)
        try:
            self.connection.executemany(_INSERT, rows)
            self.connection.executemany(
                "INSERT INTO idempotency (key, fingerprint, first_position, last_position) VALUES (?, ?, ?, ?)",
                keys)
        except sqlite3.IntegrityError as exc:
            self._head = None
            raise ConcurrencyError(f"another writer appended first ({exc})") from None
        self._head = (rows[-1][0], rows[-1][8], rows[-1][7])
        return rows[-1][0]

    def read(self, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        sql = _SELECT + " WHERE position > ? ORDER BY position"
        params: tuple = (since,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (since, limit)
        for row in self.connection.execute(sql, params):
            yield event_from_row(row)


LOG_SUMMARY = ("SELECT count(*), max(position), (SELECT hash FROM events ORDER BY position DESC LIMIT 1)"
               " FROM events")


class SQLiteRecorder(Recorder):
    """``SQLiteRecorder(path)``. Each thread gets its own connection (sqlite3 connections are not shared)."""

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str | None = None, timeout: float = 30.0,
                 read_only: bool | None = None):
        """``read_only``: open the file only to read it (never create, migrate or write); None (the default):
        so when this user cannot write it (``cannot_write``: a read-only mount, another user's home)."""
        self.path = Path(path)
        mode = (synchronous or os.environ.get("MLEDGER_SYNCHRONOUS") or "FULL").upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValidationError(f"MLEDGER_SYNCHRONOUS must be one of {', '.join(SYNCHRONOUS_MODES)}, not {mode!r}")
        self.synchronous = mode
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.read_only = cannot_write(self.path) if read_only is None else read_only
        if self.read_only:
            self._open_read_only()
            return
        # Writers queue on this before BEGIN IMMEDIATE (eventstore/writelock.py); a read-only home has none.
        self._writers = WriteLock(self.path)
        try:
            # Private unless shared (eventstore/permissions.py): made here with explicit modes, so SQLite's own
            # 0644 & ~umask never applies; it gives -wal and -shm the database file's mode.
            make_root(self.path.parent)
            if not self.path.exists():
                create_file(self.path, modes_under(self.path.parent).file)
        except OSError as exc:
            if not self.path.exists():
                raise StoreError(f"cannot create the registry in {self.path.parent}: {exc.strerror}") from None
        conn = self.connection()
        try:
            with self._immediate(conn):
                fresh = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone() is None
                # Statement by statement inside the open transaction (sqlite3's own executescript would
                # COMMIT first).
                (create_schema if fresh else run_script)(conn, TABLES)
                if fresh:
                    for guard in GUARDS.values():
                        conn.execute(guard)
                conn.execute("INSERT OR IGNORE INTO registry_meta (key, value) VALUES ('id', ?)",
                             (uuid.uuid4().hex,))
                self.registry_id = conn.execute("SELECT value FROM registry_meta WHERE key = 'id'").fetchone()[0]
                # Checked once per open (one read of sqlite_master): a store whose guards were changed is
                # read and audited as usual, but refuses appends (see ``docs/operations.md``).
                self._refusal = None if fresh else guard_refusal(guard_problems_of(conn))
        except sqlite3.Error as exc:
            raise translate(exc) from None

    def _open_read_only(self) -> None:
        """Open an existing registry to read it: nothing is created, migrated or written (``write`` refuses)."""
        if not self.path.is_file():
            raise StoreError(f"there is no registry at {self.path} to read")
        try:
            conn = self.connection()
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone() is None:
                raise StoreError(f"{self.path} holds no registry (and is read-only here, so none can be made)")
            row = conn.execute("SELECT value FROM registry_meta WHERE key = 'id'").fetchone()
            if row is None:
                raise StoreError(f"{self.path} holds a registry without its id (and is read-only here)")
            self.registry_id = row[0]
            problems = guard_problems_of(conn)
        except sqlite3.Error as exc:
            raise translate(exc) from None
        # Appends are refused anyway; a changed guard is still named by ``audit`` (guard_problems).
        self._refusal = guard_refusal(problems)

    def _refuse_write(self) -> StoreError:
        return StoreError(f"the registry database {self.path} is read-only here (opened read-only: this user "
                          "cannot write it or its folder); reads work, writes need a writable home")

    # -- connections -------------------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None and self.read_only:
            conn = open_read_only(self.path, self.timeout)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            except sqlite3.Error as exc:
                conn.close()
                raise translate(exc) from None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.timeout, check_same_thread=False)
                # What sqlite_utils.Database(conn) did here before (dropped: its import was most of a cold
                # start, see sqlscript.py): recursive triggers on (so a REPLACE also fires the DELETE
                # guards), and WAL, set outside any transaction.
                conn.execute("PRAGMA recursive_triggers = on")
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = wal")
                # WAL leaves synchronous as it was (FULL here): set it explicitly, per connection.
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            except sqlite3.Error as exc:
                if _read_only(self.path.parent):
                    raise StoreError(f"the registry folder {self.path.parent} is read-only") from None
                raise translate(exc) from None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _immediate(self, conn: sqlite3.Connection) -> Iterator[None]:
        # The writers of this database queue on a lock that wakes the next one as soon as this one is done
        # (SQLite's busy handler would sleep 1, 2, 5, 10, ... ms between tries: eventstore/writelock.py),
        # held until COMMIT or ROLLBACK has returned. BEGIN IMMEDIATE still takes SQLite's write lock up
        # front (programs that do not know the lock file are excluded by it): a deferred BEGIN that reads
        # then writes fails with SQLITE_BUSY_SNAPSHOT under concurrent writers, whatever the busy timeout.
        with self._writers.held(self.timeout):
            if waiting_allowed():
                conn.execute("BEGIN IMMEDIATE")
            else:
                self._begin_now(conn)
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (disk full, I/O error) may leave the transaction open: end it before
                # the queue's next writer goes for SQLite's lock, which this connection would still hold.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _begin_now(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE without SQLite's busy handler (``writelock.without_waiting``): SQLite's write lock
        held by a program that does not queue on the lock file (a blob upload's own transaction, the
        ``sqlite3`` shell) raises ``WouldWait`` at once instead of sleeping up to the timeout."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                raise WouldWait(f"SQLite's write lock of {self.path} is taken") from None
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def write(self) -> AbstractContextManager[SQLiteTransaction]:
        return self.write_batched()

    @contextmanager
    def write_batched(self, first: Callable[[Transaction], None] | None = None, *,
                      optimistic: bool = False) -> Iterator[SQLiteTransaction]:
        """``write()``, with ``first(tx)`` run at its start. SQLite sends nothing ahead (a read is a function
        call), so the two are one: the generic ``Recorder.write_batched`` wrapped ``write()`` in one more
        generator per command."""
        if self.read_only:
            raise self._refuse_write()
        conn = self.connection()
        if conn.in_transaction:
            raise StoreError("nested write transaction on the same connection")
        try:
            with self._immediate(conn):
                tx = SQLiteTransaction(conn, self._refusal)
                if first is not None:
                    first(tx)
                yield tx
        except sqlite3.Error as exc:
            raise translate(exc) from None

    def recorded_result(self, key: str, fingerprint: str | None) -> list[StoredEvent] | None:
        # A read transaction: a committed key's batch, without the write lock (WAL: writers go on meanwhile).
        with self.read_snapshot() as conn:
            try:
                return _idempotent_result(conn, key, fingerprint, self.head)  # head: on this snapshot's connection
            except sqlite3.Error as exc:
                raise translate(exc) from None

    @contextmanager
    def read_snapshot(self) -> Iterator[sqlite3.Connection]:
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(exc) from None

    # -- reads -------------------------------------------------------------------------------------
    def read(self, since: int = 0, limit: int | None = None, stream: str | None = None) -> Iterator[StoredEvent]:
        conn = self.connection()
        where, params = "position > ?", [since]
        if stream is not None:
            where += " AND stream = ?"
            params.append(stream)
        sql = f"{_SELECT} WHERE {where} ORDER BY position"  # noqa: S608 - fixed fragments only
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from None
        for row in rows:
            yield event_from_row(row)

    def read_streams(self, prefix: str, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        # "+position": the (stream, version) index finds the streams; the position key would walk the log.
        sql = f"{_SELECT} WHERE stream >= ? AND stream < ? AND +position > ? ORDER BY position LIMIT ?"  # noqa: S608
        try:
            rows = self.connection().execute(sql, (*stream_range(prefix), since, -1 if limit is None else limit)
                                             ).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from None
        for row in rows:
            yield event_from_row(row)

    def head(self) -> int:
        try:
            row = self.connection().execute("SELECT max(position) FROM events").fetchone()
        except sqlite3.Error as exc:
            raise translate(exc) from None
        return row[0] or 0

    def event_at(self, position: int) -> StoredEvent | None:
        row = self.connection().execute(_SELECT + " WHERE position = ?", (position,)).fetchone()
        return event_from_row(row) if row else None

    def stream_version(self, stream: str) -> int:
        row = self.connection().execute("SELECT max(version) FROM events WHERE stream = ?", (stream,)).fetchone()
        return row[0] or 0

    def position_at(self, timestamp: str) -> int:
        # recorded_at is monotonic in position, so a binary search over positions needs no index.
        target = normalize_timestamp(timestamp)
        conn = self.connection()
        lo, hi = 0, self.head()
        while lo < hi:
            mid = (lo + hi + 1) // 2
            row = conn.execute("SELECT recorded_at FROM events WHERE position = ?", (mid,)).fetchone()
            if row is not None and row[0] <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def raw_rows(self, since: int = 0, limit: int | None = None) -> list[tuple[Any, ...]]:
        """Rows exactly as stored (no upcasting), for audit."""
        sql = "SELECT position, stream, version, type, schema_version, data, meta, recorded_at, hash FROM events"
        sql += " WHERE position > ? ORDER BY position"
        params: list[Any] = [since]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self.connection().execute(sql, params).fetchall()

    def log_summary(self) -> tuple[int, int, str | None]:
        try:  # one statement: one read snapshot
            row = self.connection().execute(LOG_SUMMARY).fetchone()
        except sqlite3.Error as exc:
            raise translate(exc) from None
        return row[0], row[1] or 0, row[2]

    def raw_keys(self) -> list[KeyRow]:
        try:
            return self.connection().execute(
                "SELECT key, fingerprint, first_position, last_position FROM idempotency"
                " ORDER BY first_position, key").fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from None

    # -- guards and keys ---------------------------------------------------------------------------
    def guard_problems(self) -> list[GuardProblem]:
        try:
            return guard_problems_of(self.connection())
        except sqlite3.Error as exc:
            raise translate(exc) from None

    def restore_guards(self) -> list[GuardProblem]:
        if self.read_only:
            raise self._refuse_write()
        conn = self.connection()
        try:
            with self._immediate(conn):
                problems = guard_problems_of(conn)
                for problem in problems:
                    if problem.change != "missing":
                        # The name comes from sqlite_master, quoted: never spliced in as SQL.
                        conn.execute(f"DROP TRIGGER {_quote_identifier(problem.name)}")
                    if problem.name in GUARDS:
                        conn.execute(GUARDS[problem.name])
        except sqlite3.Error as exc:
            raise translate(exc) from None
        self._refusal = None
        return problems

    def key_problems(self) -> Iterator[KeyProblem]:
        conn = self.connection()
        try:
            head = self.head()
            # One pass: each key with the events of its range (a rowid range per key), keys in key order.
            cursor = conn.execute(
                "SELECT i.key, i.first_position, i.last_position, e.position, e.meta FROM idempotency i"
                " LEFT JOIN events e ON e.position BETWEEN i.first_position AND i.last_position"
                " ORDER BY i.key, e.position"
            )
            yield from key_problems_of(_paged(cursor), head)
        except sqlite3.Error as exc:
            raise translate(exc) from None

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
        writers = getattr(self, "_writers", None)  # a read-only home has none
        if writers is not None:
            writers.close()


def _paged(cursor: sqlite3.Cursor, size: int = 1_000) -> Iterator[tuple]:
    while rows := cursor.fetchmany(size):
        yield from rows


def occupied(path: str | os.PathLike[str]) -> str | None:
    """Why the SQLite file at ``path`` cannot receive a copied log (it holds events, or is not a registry);
    None when it does not exist, is empty, or is a registry without events. Opens it read-only."""
    path = Path(path)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return None
    if not path.is_file():
        return f"{path} is not a file"
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "events" not in tables:
                return f"{path} is a SQLite database but not a registry" if tables else None
            head = conn.execute("SELECT max(position) FROM events").fetchone()[0] or 0
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{path} cannot be read as a SQLite database ({exc})"
    return f"{path} already holds {head} event(s)" if head else None
