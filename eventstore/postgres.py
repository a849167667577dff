"""The PostgreSQL backend of the recorder: the same log as ``eventstore.sqlite``, on a shared server.

``PostgresRecorder("postgresql://user@host/db")``. The rows, the envelope and the hash chain are SQLite's
(``eventstore.sealing``), so a log has the same hashes on either backend. Conventions:

- ``position`` is head + n, assigned under ``LOCK TABLE events IN EXCLUSIVE MODE`` taken first in every
  write transaction (in a command's, by its first statement, ``mledger_command_head``): one writer at a time,
  positions gapless and in commit order (never from a sequence: sequences leave gaps on rollback). Readers
  are not blocked.
- ``UNIQUE(stream, version)`` turns a stale writer into ``ConcurrencyError``; statement triggers refuse
  UPDATE, DELETE and TRUNCATE of events and idempotency keys inside the database.
- ``recorded_at`` is max(this host's clock, the last event's), so it never goes backwards even across
  hosts whose clocks disagree.
- LISTEN/NOTIFY is only a wake-up (``wait_for_change``): a notification can be lost, so readers always
  read from a stored position.
- Driver errors become ``StoreError`` / ``ConcurrencyError`` with a one-line message, here and nowhere else.

The SQL lives in ``eventstore.postgres_sql``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
import psycopg.sql
from psycopg import conninfo as pg_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from . import postgres_sql as sql
from .canonical import GENESIS_HASH
from .clock import normalize_timestamp, utc_now
from .copying import KeyRow, check_rows, stream_names
from .errors import ConcurrencyError, IdempotencyError, IntegrityError, StoreError
from .events import NewEvent, StoredEvent
from .idempotency import batch_problem, check_keyed_batch, key_problems_of
from .recorder import GuardProblem, KeyProblem, Recorder, Transaction, guard_refusal, stream_range
from .sealing import event_from_row, seal

# psycopg logs a lost connection (and its pool every failed reconnection attempt) as warnings; the caller
# gets one StoreError instead, and a command-line user must see one line, not a log record per retry.
logging.getLogger("psycopg").setLevel(logging.CRITICAL)


def describe(url: str) -> str:
    """``host:port/dbname`` of a connection string, never its password (for messages)."""
    try:
        info = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unparsable PostgreSQL URL)"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{host}:{port}/{info.get('dbname') or info.get('user') or ''}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate(exc: psycopg.Error, where: str, *, committing: bool = False) -> StoreError:
    """A driver error as the project's own, with a message a user can act on."""
    text = _first_line(exc)
    if isinstance(exc, PoolTimeout):
        return StoreError(f"cannot reach the registry database {where}: no connection could be made ({text})")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return StoreError(f"the registry database {where} stayed locked by another writer: {text}")
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.InsufficientPrivilege):
        return StoreError(f"the registry database {where} is read-only for this role: {text}")
    if isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.OutOfMemory):
        return StoreError(f"the registry database {where} could not be written (server out of space): {text}")
    lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not isinstance(
        exc, psycopg.errors.QueryCanceled)
    if lost and committing:
        return StoreError(f"the connection to the registry database {where} was lost while committing: the "
                          f"change may or may not be recorded; retry with the same idempotency key ({text})")
    if lost:
        return StoreError(f"lost the connection to the registry database {where}: {text}")
    return StoreError(f"registry database error ({where}): {text}")


def _idempotent(rows: list[tuple], key: str, fingerprint: str | None, head: int) -> list[StoredEvent] | None:
    """Rows of ``IDEMPOTENT_RESULT`` (fingerprint, range, then the events first appended under ``key``)."""
    if not rows:
        return None
    stored_fingerprint, first, last = rows[0][0], rows[0][1], rows[0][2]
    if fingerprint is not None and stored_fingerprint is not None and stored_fingerprint != fingerprint:
        raise IdempotencyError(f"idempotency key {key!r} was already used for a different request")
    events = [event_from_row(row[3:]) for row in rows if row[3] is not None]
    # The log truncated (or rewritten) under the key: say so, rather than hand back no or other events.
    wrong = batch_problem(key, first, last, ((e.position, e.meta) for e in events), head)
    if wrong is not None:
        raise IntegrityError(f"idempotency key {key!r} {wrong[1]}: the log was truncated or rewritten "
                             "(run `mledger audit`)")
    return events


# pg_get_triggerdef names the table with its schema (public, or the schema a registry lives in when the
# URL sets a search_path): compared without it.
_QUALIFIED_TABLE = re.compile(r' ON (?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\.')


def normalise_definition(text: str) -> str:
    """A guard's definition as compared: runs of white space are one space, the table unqualified."""
    return " ".join(_QUALIFIED_TABLE.sub(" ON ", text).split())


def guard_problems_of(conn: psycopg.Connection) -> list[GuardProblem]:
    present = {name: (definition, enabled)
               for name, definition, enabled in conn.execute(sql.TRIGGERS, (list(sql.GUARDED_TABLES),)).fetchall()}
    problems: list[GuardProblem] = []
    for name, want in sql.GUARDS.items():
        have = present.pop(name, None)
        if have is None:
            problems.append(GuardProblem(name, "missing"))
        elif normalise_definition(have[0]) != normalise_definition(want):
            problems.append(GuardProblem(name, "altered", normalise_definition(have[0])))
        elif have[1] == "D":
            problems.append(GuardProblem(name, "altered", "disabled (ALTER TABLE ... DISABLE TRIGGER)"))
    problems += [GuardProblem(name, "extra", normalise_definition(d)) for name, (d, _) in present.items()]
    for function, (want_body, _) in sql.CHECKED_FUNCTIONS.items():
        body = conn.execute(sql.FUNCTION_BODY, (function,)).fetchone()
        if body is None:
            problems.append(GuardProblem(function + "()", "missing"))
        elif normalise_definition(body[0]) != want_body:
            problems.append(GuardProblem(function + "()", "altered", normalise_definition(body[0])))
    return problems




def batch(conn: psycopg.Connection) -> AbstractContextManager[Any]:
    """Statements sent together: a pipeline of their own, unless the connection already runs one (a batched
    write transaction, ``PostgresRecorder.write_batched``); then they ride it, and go out with whatever the
    transaction sends next, without a round trip of their own."""
    return nullcontext() if conn.pgconn.pipeline_status else conn.pipeline()


@dataclass(frozen=True)
class Memo:
    """What this process's last own command commit left, exact at its head (``PostgresRecorder.write_batched``):
    the head (position, hash, recorded_at), the stream versions it read or wrote under the lock, and what the
    read model kept (``Transaction.remember``: the catalog's rows of the model it commanded). The next command
    decides from it without reading; its first statement (``sql.COMMAND_CHECK``) makes sure, under the lock,
    that the head is still this one."""

    head: tuple[int, str, str]
    versions: Mapping[str, int]
    kept: Mapping[Hashable, Any]


# Stream versions a memo carries over from the one before (a command reads and writes one or two): bounded, so a
# long-lived process commanding many models does not grow it without end.
MEMO_VERSIONS = 1_024


class PostgresTransaction(Transaction):
    def __init__(self, connection: psycopg.Connection, last: tuple | psycopg.Cursor | None, *, where: str,
                 versions: dict[str, int] | None = None, commit_with_append: bool = False,
                 refusal: str | None = None, command: bool = False, memo: Memo | None = None,
                 optimistic: bool = False, keeps: bool = False) -> None:
        self._conn = connection
        # ``memo``: the recorder's memo when this transaction began (what ``remember`` merges with, if nothing was
        # committed in between); ``optimistic``: decided from it (``recall``), the head not read but checked by
        # the first statement sent (``sql.COMMAND_CHECK``, with the command's idempotency key); ``keeps``: what
        # ``remember`` is given is kept (the recorder runs optimistic commands).
        self._memo = memo
        self._optimistic = optimistic and memo is not None
        self._keeps = keeps
        self._kept: dict[Hashable, Callable[[Any], Any]] = {}
        self._check_unsent = self._optimistic
        self._check_key: str | None = None  # the idempotency key the check makes sure is unrecorded
        self._check_key_answered = False
        self._check_cursor: psycopg.Cursor | None = None
        self._start: tuple | None = None  # (position, hash) of the head this transaction began from
        self.appended = 0  # events appended (``Recorder.write_batched`` keeps no memo of a failed batch)
        self._refusal = refusal  # why appends are refused (guards changed), or None
        self._where = where
        # (position, hash, recorded_at) of the head, read under the writer lock; in a batched transaction the
        # cursor of that read, fetched when first needed (with everything sent before it). ``command``: a
        # batched command's transaction, whose head read (``sql.COMMAND_HEAD``, with its stream's version) is
        # sent by the first ``prefetch`` (or the first read of the head), not yet.
        self._last_cursor: psycopg.Cursor | None = last if isinstance(last, psycopg.Cursor) else None
        self._last_row: tuple = () if self._last_cursor is not None or command else _head_row(last)  # type: ignore[arg-type]
        self._head_unsent = command
        self._head_stream: str | None = None  # the stream whose version rides the command's head read
        self._versions: dict[str, int] = dict(versions or {})  # exact while this transaction holds the lock
        self._pending_versions: list[tuple[list[str], psycopg.Cursor]] = []  # prefetched, not yet read
        self._pending_keys: dict[str, psycopg.Cursor] = {}  # idempotency keys' first results, prefetched
        # Recorder.append's own transaction: its one append also commits, in the same round trip.
        self._commit_with_append = commit_with_append
        if self._optimistic:
            assert memo is not None
            self._last_row, self._head_unsent, self._start = tuple(memo.head), False, tuple(memo.head[:2])
            self._versions = dict(memo.versions)

    @property
    def connection(self) -> psycopg.Connection:
        """The transaction's connection, for the catalog's statements. In a batched command the writer lock is
        taken by the head read (``sql.COMMAND_HEAD``): it is sent first if it was not yet, so that nothing runs
        on the connection before the lock."""
        if self._check_unsent:
            self._send_check()
        if self._head_unsent:
            self._send_head(None)
        return self._conn

    @property
    def _last(self) -> tuple:
        if self._head_unsent:
            self._send_head(None)
        if self._last_cursor is not None:
            row, self._last_cursor = self._last_cursor.fetchone(), None
            if self._head_stream is not None:
                self._versions.setdefault(self._head_stream, row[3])
            self._last_row = _head_row(row[:3] if row is not None and row[0] is not None else None)
        if self._start is None:
            self._start = self._last_row[:2]
        return self._last_row

    def _send_check(self) -> None:
        """An optimistic command's first statement: the lock, and the check that the head is still the memo's
        and the command's key unrecorded (``sql.COMMAND_CHECK``), sent without waiting."""
        self._check_unsent = False
        position, head_hash = self._last_row[0], self._last_row[1]
        self._check_cursor = self._conn.execute(sql.COMMAND_CHECK, (position, head_hash, self._check_key))

    def verify(self) -> psycopg.Error | None:
        """After an optimistic transaction's body raised: its check, sent now if nothing was (a decision that
        read and wrote nothing) and waited for. None if it passed (or the transaction is not optimistic): the
        body's error is its own. Else an error: ``SerializationFailure`` when the check refused (another writer
        came in between, the key was recorded) or could not be told (its result was already taken, with an
        error, by a read of the body's: psycopg then has none left for it) — the command is run again the
        two-trip way, which is always safe, nothing having been committed; the lock not had
        (``LockNotAvailable``) and a lost connection as themselves."""
        if not self._optimistic:
            return None
        try:
            if self._check_unsent:
                self._send_check()
            if self._check_cursor is None:  # its send failed (a connection the server had dropped)
                return psycopg.OperationalError("the check could not be sent")
            self._check_cursor.fetchone()
        except (psycopg.errors.LockNotAvailable, psycopg.OperationalError) as exc:
            return exc
        except psycopg.Error as exc:
            return exc if isinstance(exc, psycopg.errors.SerializationFailure) else \
                psycopg.errors.SerializationFailure(f"the check's result is lost ({_first_line(exc)})")
        return None

    def send_check(self) -> None:
        """Before the Sync: the check goes out first, even when the decision sent nothing."""
        if self._check_unsent:
            self._send_check()

    def recall(self, key: Hashable) -> Any:
        if not self._optimistic or self._memo is None:
            return None
        return self._memo.kept.get(key)

    def remembers(self) -> bool:
        return self._keeps

    def began_off_memo(self) -> bool:
        """Whether this transaction began from another head than its memo's (a commit by someone else since):
        optimism would have missed here."""
        return self._memo is not None and self._start is not None and tuple(self._memo.head[:2]) != self._start

    def remember(self, key: Hashable, make: Callable[[Any], Any]) -> bool:
        if not self._keeps:
            return False
        before = self._kept.get(key)
        # Twice in one transaction (a batch's commands on one model): the later change goes on from the earlier.
        self._kept[key] = make if before is None else (lambda previous: make(before(previous)))
        return True

    def memo_after_commit(self) -> Memo | None:
        """What the next command may decide from, after this transaction committed (None: nothing to keep)."""
        if self._start is None or self._last_cursor is not None or self._head_unsent:
            return None
        base = self._memo if self._memo is not None and tuple(self._memo.head[:2]) == self._start else None
        versions = dict(base.versions) if base is not None and len(base.versions) < MEMO_VERSIONS else {}
        versions.update(self._versions)
        kept: dict[Hashable, Any] = {}
        for key, make in self._kept.items():
            value = make(base.kept.get(key) if base is not None else None)
            if value is not None:
                kept[key] = value
        return Memo(tuple(self._last_row), versions, kept)  # type: ignore[arg-type]

    def _send_head(self, stream: str | None) -> None:
        """A command's head read, with ``stream``'s version (``sql.COMMAND_HEAD``), sent without waiting."""
        self._head_unsent, self._head_stream = False, stream
        self._last_cursor = self._conn.execute(sql.COMMAND_HEAD, (stream,))

    @_last.setter
    def _last(self, value: tuple) -> None:
        self._last_row, self._last_cursor = value, None

    def head(self) -> int:
        return self._last[0]

    def log_rows(self, since: int, limit: int) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql.READ_LIMIT, (since, limit)).fetchall()

    def prefetch(self, *, streams: Sequence[str] = (), idempotency_key: str | None = None) -> None:
        """Send the reads of these streams' versions and of the key's first result now, without waiting:
        in a batched transaction they come back with the next read anything makes (one round trip)."""
        if self._check_unsent and idempotency_key is not None and self._check_key is None:
            self._check_key, idempotency_key = idempotency_key, None  # the check makes sure it is unrecorded
        missing = sorted({s for s in streams if s not in self._versions})
        if self._head_unsent:  # a command's first read: the head, and its stream's version with it
            self._send_head(missing.pop(0) if missing else None)
        if missing:
            self._pending_versions.append((missing, self.connection.execute(sql.STREAM_VERSIONS, (missing,))))
        if idempotency_key is not None and idempotency_key not in self._pending_keys:
            self._pending_keys[idempotency_key] = self.connection.execute(sql.IDEMPOTENT_RESULT, (idempotency_key,))

    def _take_pending(self) -> None:
        pending, self._pending_versions = self._pending_versions, []
        for streams, cursor in pending:
            found = dict(cursor.fetchall())
            for stream in streams:
                self._versions.setdefault(stream, found.get(stream, 0))

    def stream_version(self, stream: str) -> int:
        if self._head_stream is not None:
            self._last  # noqa: B018 - the head read carries a stream's version: take it first
        if self._pending_versions:
            self._take_pending()
        if stream not in self._versions:
            self._versions[stream] = self.connection.execute(sql.STREAM_VERSION, (stream,)).fetchone()[0]
        return self._versions[stream]

    def _load_versions(self, streams: set[str]) -> None:
        if self._head_stream is not None:
            self._last  # noqa: B018 - the head read carries a stream's version: take it first
        if self._pending_versions:
            self._take_pending()
        missing = [s for s in streams if s not in self._versions]
        if len(missing) == 1:
            self.stream_version(missing[0])
        elif missing:
            found = dict(self.connection.execute(sql.STREAM_VERSIONS, (missing,)).fetchall())
            for stream in missing:
                self._versions[stream] = found.get(stream, 0)

    def idempotent_result(self, key: str, fingerprint: str | None) -> list[StoredEvent] | None:
        if key == self._check_key and not self._check_key_answered:
            # Optimistic: the check refuses the whole transaction if the key is recorded (then the command runs
            # again the two-trip way, which returns the first result).
            self._check_key_answered = True
            return None
        cursor = self._pending_keys.pop(key, None) or self.connection.execute(sql.IDEMPOTENT_RESULT, (key,))
        return _idempotent(cursor.fetchall(), key, fingerprint, self.head())

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
        expected = expected or {}
        self._load_versions({e.stream for e in events} | set(expected))
        for stream, want in expected.items():
            actual = self._versions[stream]
            if actual != want:
                raise ConcurrencyError(f"stream {stream} is at version {actual}, the command was decided at {want}")
        position, previous_hash, previous_at = self._last
        now = utc_now()
        # recorded_at never goes backwards, even if this host's clock is behind the last writer's.
        recorded_at = now if now > previous_at else previous_at
        versions = dict(self._versions)
        rows, stored = seal(events, head=position, head_hash=previous_hash, recorded_at=recorded_at,
                            versions=versions)
        committing, self._commit_with_append = self._commit_with_append, False
        try:
            # One round trip: the rows, the key, the wake-up (and the COMMIT) go out together; in a batched
            # transaction none of their own (they go out with the catalog's rows and the COMMIT). A command's
            # few rows, its key and the wake-up are one statement (``sql.append_statement``).
            with batch(self.connection):
                if len(rows) <= sql.APPEND_ONE_STATEMENT:
                    params = [value for row in rows for value in row]
                    if idempotency_key is not None:
                        params += (idempotency_key, fingerprint, rows[0][0], rows[-1][0])
                    params.append(str(rows[-1][0]))
                    self.connection.execute(sql.append_statement(len(rows), idempotency_key is not None), params)
                else:
                    with self.connection.cursor() as cur:
                        cur.executemany(sql.INSERT, rows)
                    if idempotency_key is not None:
                        self.connection.execute(sql.INSERT_IDEMPOTENCY,
                                                (idempotency_key, fingerprint, rows[0][0], rows[-1][0]))
                    self.connection.execute(sql.NOTIFY, (str(rows[-1][0]),))
                if committing:
                    self.connection.execute(sql.COMMIT)
        except psycopg.errors.UniqueViolation as exc:
            raise ConcurrencyError(f"another writer appended first ({_first_line(exc)})") from None
        except psycopg.Error as exc:
            if committing:
                raise translate(exc, self._where, committing=True) from None
            raise
        self._versions = versions
        self._last = (rows[-1][0], rows[-1][8], recorded_at)
        self.appended += len(rows)
        return stored

    def append_rows(self, rows: Sequence[tuple], keys: Sequence[KeyRow] = ()) -> int:
        if not rows:
            return self.head()
        if self._refusal is not None:
            raise IntegrityError(self._refusal)
        streams = stream_names(rows)
        self._load_versions(streams)
        position, head_hash, head_at = self._last
        check_rows(rows, keys, head=position, head_hash=head_hash, head_at=head_at,
                   versions={s: self._versions[s] for s in streams})
        try:
            with batch(self.connection):
                with self.connection.cursor() as cur:
                    cur.executemany(sql.INSERT, rows)
                    if keys:
                        cur.executemany(sql.INSERT_IDEMPOTENCY, keys)
                self.connection.execute(sql.NOTIFY, (str(rows[-1][0]),))
        except psycopg.errors.UniqueViolation as exc:
            raise ConcurrencyError(f"another writer appended first ({_first_line(exc)})") from None
        for row in rows:
            self._versions[row[1]] = row[2]
        self._last = (rows[-1][0], rows[-1][8], rows[-1][7])
        return rows[-1][0]

    def read(self, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        if limit is None:
            rows = self.connection.execute(sql.READ, (since,)).fetchall()
        else:
            rows = self.connection.execute(sql.READ_LIMIT, (since, limit)).fetchall()
        for row in rows:
            yield event_from_row(row)


class PostgresRecorder(Recorder):
    """``PostgresRecorder(url)``: a pool of connections, each thread borrowing one per call; inside a
    ``write()`` or ``read_snapshot()`` the thread's calls use that transaction's connection (so a read
    sees the writes of its own transaction, as on SQLite)."""

    dialect = "postgresql"

    def __init__(self, url: str, *, lock_timeout: float = 30.0, connect_timeout: float = 10.0,
                 pool_size: int = 4) -> None:
        self.url = url
        self.where = describe(url)
        # What the workers key this registry's outcomes by (a SQLite recorder's file): a label, no password.
        self.path = f"postgresql://{self.where}"
        self.lock_timeout = lock_timeout
        self._local = threading.local()
        self._listen_lock = threading.Lock()
        self._listener: psycopg.Connection | None = None
        self._connect_kwargs: dict[str, Any] = {"autocommit": True,
                                                "connect_timeout": max(1, round(connect_timeout))}
        self._refusal: str | None = None
        self._outdated: str | None = None  # why commands cannot run yet (an older schema this role cannot upgrade)
        # Optimistic one-trip commands (``write_batched``): whether the check function is there (a role that could
        # not upgrade a schema-2 registry has none), the memo of the last own commit, and the back-off after a
        # miss: the next ``_skip`` commands go the two-trip way, ``_backoff`` doubling from 2 to 64 per miss in a
        # row, so a contended multi-writer workload does not pay a wasted pipeline per command.
        self._one_trip = False
        self._memo_lock = threading.Lock()
        self._memo: Memo | None = None
        self._skip = 0
        self._backoff = 0
        self.one_trip_counts = {"hits": 0, "misses": 0, "two_trip": 0}  # for tests and profiles
        self.registry_id = self._prepare()
        self.pool = ConnectionPool(url, kwargs=self._connect_kwargs, min_size=1, max_size=pool_size,
                                   configure=self._configure, timeout=connect_timeout, open=False,
                                   name=f"mledger {self.where}")
        self.pool.open(wait=False)

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the registry database {self.where}: {_first_line(exc)}") from None

    def _configure(self, conn: psycopg.Connection) -> None:
        # A writer waits this long for another writer's lock, then fails with StoreError (SQLite's busy timeout).
        conn.execute(sql.SET_LOCK_TIMEOUT, (f"{max(1, round(self.lock_timeout * 1000))}ms",))

    def _prepare(self) -> str:
        """Create the schema if this database has none (or upgrade an older one); the registry id."""
        conn = self._connect()
        try:
            with conn:
                present = conn.execute(sql.SCHEMA_PRESENT).fetchone()[0]
                current = present and (conn.execute(sql.META_GET, ("schema",)).fetchone() or [None])[0]
                if current != sql.SCHEMA_VERSION:
                    try:
                        _create_or_upgrade(conn)
                    except psycopg.errors.InsufficientPrivilege:
                        if not present:
                            raise
                        # A role that may not create functions (a writer, a reader) on a registry of an older
                        # version: it reads as before; its commands say what to do (``write_batched``). Schema 2
                        # lacks only the optimistic check: its commands run, the two-trip way.
                        if current not in sql.TWO_TRIP_SCHEMAS:
                            self._outdated = (f"the registry database {self.where} has an older schema ({current})"
                                              f" than this version's ({sql.SCHEMA_VERSION}): open it once as its"
                                              " owner to upgrade it (docs/operations.md)")
                if present:
                    # Checked once per open; an existing store's guards are never re-created by an open
                    # (that would hide a guard someone dropped to edit the log): appends are refused instead.
                    self._refusal = guard_refusal(guard_problems_of(conn))
                body = conn.execute(sql.FUNCTION_BODY, (sql.COMMAND_CHECK_FUNCTION,)).fetchone()
                # Only the check as this version wrote it: a missing or altered one means two trips, as before.
                self._one_trip = body is not None and normalise_definition(body[0]) == sql.COMMAND_CHECK_BODY
                return conn.execute(sql.META_GET, ("id",)).fetchone()[0]
        except psycopg.Error as exc:
            raise translate(exc, self.where) from None

    def _query(self, statement: str, params: tuple = ()) -> list[tuple]:
        """Rows of one statement: on this thread's open transaction if there is one (it sees its own
        writes), else on a pooled connection, once more on a fresh one if the server had dropped it."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                return conn.execute(statement, params).fetchall()
            except psycopg.Error as exc:
                raise translate(exc, self.where) from None
        for retry in (True, False):
            conn = self._getconn()
            try:
                rows = conn.execute(statement, params).fetchall()
            except psycopg.Error as exc:
                self.pool.putconn(conn)
                if retry and conn.broken:
                    self._drop_broken()
                    continue
                raise translate(exc, self.where) from None
            self.pool.putconn(conn)
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _getconn(self) -> psycopg.Connection:
        try:
            return self.pool.getconn()
        except psycopg.Error as exc:
            raise translate(exc, self.where) from None

    def _drop_broken(self) -> None:
        # A server restart (or pg_terminate_backend) breaks every idle pooled connection at once: check them
        # all now, so that it costs one retry, not one failed call per pooled connection.
        self.pool.check()

    def _begin(self, begin: Sequence[tuple[str, tuple]]) -> tuple[psycopg.Connection, list[psycopg.Cursor]]:
        """A pooled connection with a transaction open: ``begin`` (BEGIN and what must come first) in one
        round trip, and a cursor on each statement's result. Nothing has been written yet, so a
        connection the server had dropped is replaced once, transparently."""
        for retry in (True, False):
            conn = self._getconn()
            try:
                with conn.pipeline():
                    cursors = [conn.execute(statement, params) for statement, params in begin]
                return conn, cursors
            except psycopg.Error as exc:
                _rollback(conn)
                self.pool.putconn(conn)
                if retry and conn.broken:
                    self._drop_broken()
                    continue
                raise translate(exc, self.where) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _transaction(self, begin: Sequence[tuple[str, tuple]]
                     ) -> Iterator[tuple[psycopg.Connection, list[psycopg.Cursor]]]:
        """COMMIT on normal exit (unless the body committed), else ROLLBACK; meanwhile the thread's calls
        use this connection."""
        if getattr(self._local, "conn", None) is not None:
            raise StoreError("nested transaction on the same thread")
        conn, cursors = self._begin(begin)
        try:
            self._local.conn = conn
            try:
                yield conn, cursors
            except BaseException:
                _rollback(conn)
                raise
            finally:
                self._local.conn = None
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    conn.execute(sql.COMMIT)
                except psycopg.Error as exc:
                    raise translate(exc, self.where, committing=True) from None
        except psycopg.Error as exc:
            raise translate(exc, self.where) from None
        finally:
            self.pool.putconn(conn)

    _WRITE = ((sql.BEGIN, ()), (sql.LOCK, ()), (sql.LAST, ()))

    @contextmanager
    def write(self) -> Iterator[PostgresTransaction]:
        self._forget()  # it moves the head without the catalog's memo: the next command reads, not misses
        with self._transaction(self._WRITE) as (conn, cursors):
            yield PostgresTransaction(conn, cursors[2].fetchone(), where=self.where, refusal=self._refusal)

    @contextmanager
    def write_batched(self, first: Callable[[Transaction], None] | None = None, *,
                      optimistic: bool = False) -> Iterator[PostgresTransaction]:
        """``write()`` in pipeline mode, for a command (``eventstore.handler``): a statement goes out when it is
        made and the client waits only when it reads a result — for everything sent before it, in one round
        trip. The lock, the head and what ``first(tx)`` sends for (the stream's version, the key's first
        result, the catalog's rows: ``prefetch``) come back together; the rows and the catalog's writes go
        out with the Sync that commits them: two round trips for a tag, against one per statement. The same
        lock and checks as ``write()``; an error of a statement nobody read surfaces at the next read or at
        the Sync, as the same project error, and nothing is committed. Nothing has been written before that
        first round trip, so a connection the server had dropped is replaced then, transparently (``first``
        runs again on the new one).

        No BEGIN and no COMMIT statement: the pipeline's statements up to its one Sync are a transaction of
        their own (PostgreSQL's implicit transaction of the extended protocol), the writer lock taken by the
        first of them (``sql.COMMAND_HEAD``, a function: LOCK TABLE as a statement wants a BEGIN). Two
        statements fewer (and the LOCK's): ~30 µs of psycopg's work each on the client, a Bind and an Execute
        on the server. So nothing may Sync the pipeline before the end — no nested ``conn.pipeline()``
        (``batch`` and the catalog's writes ride the open one) and no ``conn.transaction()`` on the
        connection: either would commit the command half-way.

        ``optimistic`` (the handler, which decides again on ``ConcurrencyError``): with a memo of this process's
        last own command (``Memo``), one round trip instead of two. Nothing is read first: the command is decided
        from the memo (``Transaction.recall``), and its first statement (``sql.COMMAND_CHECK``) takes the same
        lock and makes sure the head is still the memo's and the key unrecorded; the writes and the Sync follow
        in the same pipeline. If the check refuses, the pipeline aborts, nothing is committed, and this raises
        ``ConcurrencyError``: the handler runs the command again, the two-trip way (the memo is gone), and backs
        off from optimism for a few commands. The check under the lock makes the head the memo's, so positions,
        hashes and recorded_at are what the two-trip path would give."""
        if getattr(self._local, "conn", None) is not None:
            raise StoreError("nested transaction on the same thread")
        if self._outdated is not None:
            raise StoreError(self._outdated)
        memo, hopeful, keeps = self._take_memo(optimistic)
        conn, tx, pipeline = self._begin_optimistic(first, memo) if hopeful else \
            self._begin_batched(first, memo, keeps)
        try:
            self._local.conn = conn
            try:
                yield tx
            except BaseException:
                self._local.conn = None
                # Decided from the memo: what the body raised (a refusal, a read that failed) may come of a memo
                # gone stale. The check says: if it refused, the command runs again (nothing was committed).
                refused = tx.verify() if hopeful else None
                _rollback_batched(conn, pipeline)
                if refused is not None:
                    if isinstance(refused, psycopg.errors.LockNotAvailable):
                        _forget_prepared(conn)
                        raise translate(refused, self.where) from None  # the lock not had: nothing was decided
                    self._missed(conn)
                    raise ConcurrencyError(f"decided from a stale memo ({_first_line(refused)})") from None
                raise
            self._local.conn = None
            try:
                if hopeful:
                    tx.send_check()
                pipeline.close()  # the Sync: every pending result; it commits the implicit transaction
            except IndexError:
                raise _lost_commit_error(conn, self.where) from None
            except psycopg.Error as exc:
                exc = _commit_error(conn, exc)
                _rollback_batched(conn, pipeline)
                if hopeful and isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.PipelineAborted):
                    self._missed(conn)
                    raise ConcurrencyError(f"another writer appended since this process's last command"
                                           f" ({_first_line(exc)})") from None
                if optimistic and _lost(exc) and self._landed(tx) is False:
                    # The connection died before the server committed (a restart, a cut): nothing was recorded,
                    # so the handler (which decides again on ConcurrencyError) runs the command again on a fresh
                    # one, as the two-trip path's first round trip would. Where it landed, or cannot be told, the
                    # caller hears that it may be recorded, and retries with its idempotency key.
                    self._drop_broken()
                    raise ConcurrencyError(f"the connection was lost before the commit ({_first_line(exc)})") from None
                if hopeful:
                    _forget_prepared(conn)
                if _appended_first(exc):
                    raise ConcurrencyError(f"another writer appended first ({_first_line(exc)})") from None
                raise translate(exc, self.where, committing=True) from None
            self._keep(tx, hopeful)
        except psycopg.Error as exc:
            if _appended_first(exc):
                raise ConcurrencyError(f"another writer appended first ({_first_line(exc)})") from None
            raise translate(exc, self.where) from None
        finally:
            self._local.conn = None
            self.pool.putconn(conn)

    # -- the memo of optimistic commands -----------------------------------------------------------
    def _forget(self) -> None:
        with self._memo_lock:
            self._memo = None

    def _take_memo(self, optimistic: bool) -> tuple[Memo | None, bool, bool]:
        """The memo (taken: a command running meanwhile on another thread reads, rather than decide from the same
        memo and miss), whether to decide from it, and whether this transaction should leave one: not while
        backing off, unless the next command will try again (the catalog's rows are read again for it after the
        fold: a statement a contended writer need not pay at every command)."""
        with self._memo_lock:
            memo, self._memo = self._memo, None
            if memo is not None and optimistic and self._one_trip and self._skip > 0:
                self._skip -= 1
                self.one_trip_counts["two_trip"] += 1
                return memo, False, self._skip == 0
            if memo is None or not optimistic or not self._one_trip:  # (a command run again after a miss, too)
                return memo, False, self._one_trip and self._skip == 0
            return memo, True, True

    def _keep(self, tx: PostgresTransaction, hopeful: bool) -> None:
        """After a commit: the memo for the next command (what it may decide from)."""
        try:
            memo = tx.memo_after_commit() if self._one_trip else None
        except Exception:  # noqa: BLE001 - a memo that cannot be made: the next command reads, as before
            memo = None
        with self._memo_lock:
            self._memo = memo
            if hopeful:
                self.one_trip_counts["hits"] += 1
                self._backoff = 0
            elif tx.began_off_memo():
                # A two-trip command whose head was not the memo's: optimism would have missed here. Counted as a
                # miss for the back-off, at no cost, so that writers contending all the time (8 processes on one
                # model) stop trying instead of paying a wasted pipeline once per 2..64 commands.
                self._backoff = min(64, max(2, self._backoff * 2))
                self._skip = max(self._skip, self._backoff)

    def _missed(self, conn: psycopg.Connection) -> None:
        """A refused optimistic command (its pipeline aborted and rolled back): back off, and put the connection's
        prepared statements back in step (``_forget_prepared``)."""
        with self._memo_lock:
            self._memo = None
            self.one_trip_counts["misses"] += 1
            self._backoff = min(64, max(2, self._backoff * 2))
            self._skip = self._backoff
        if conn.broken:
            self._drop_broken()
        _forget_prepared(conn)

    def _landed(self, tx: PostgresTransaction) -> bool | None:
        """Whether an optimistic command whose connection was lost at its Sync committed: its last event's hash
        at its position, read on a fresh connection under the writer lock (a commit still in flight finishes
        first). None: it cannot be told (no connection, or the lock not had)."""
        if not tx.appended:
            return False  # it wrote no event: running it again is harmless
        position, own_hash = tx._last_row[0], tx._last_row[1]
        try:
            # A connection of its own, not the pool's: this command still holds one, and with every other taken
            # (a pool of one) the check waited out the pool's timeout and could tell nothing.
            with self._connect() as conn:
                self._configure(conn)
                with conn.transaction():
                    conn.execute(sql.LOCK)
                    row = conn.execute(sql.HASH_AT, (position,)).fetchone()
        except (StoreError, psycopg.Error):
            return None
        return row is not None and row[0] == own_hash

    def _begin_optimistic(self, first: Callable[[Transaction], None] | None, memo: Memo | None
                          ) -> tuple[psycopg.Connection, PostgresTransaction, ExitStack]:
        """A pooled connection in pipeline mode, and ``first(tx)`` run against the memo: nothing sent yet, no
        round trip (the check is the first statement, when something is sent)."""
        conn = self._getconn()
        pipeline = ExitStack()
        try:
            pipeline.enter_context(conn.pipeline())
            tx = PostgresTransaction(conn, None, where=self.where, refusal=self._refusal, memo=memo,
                                     optimistic=True, keeps=True)
            if first is not None:
                self._local.conn = conn
                first(tx)
            return conn, tx, pipeline
        except BaseException as exc:
            _rollback_batched(conn, pipeline)
            if isinstance(exc, psycopg.Error):
                self._missed(conn)
                self.pool.putconn(conn)
                raise ConcurrencyError(f"the optimistic start failed ({_first_line(exc)})") from None
            self.pool.putconn(conn)
            raise
        finally:
            self._local.conn = None

    def _begin_batched(self, first: Callable[[Transaction], None] | None, memo: Memo | None = None,
                       keeps: bool = False) -> tuple[psycopg.Connection, PostgresTransaction, ExitStack]:
        """A pooled connection in pipeline mode with BEGIN, the lock and the head sent, ``first(tx)`` run, and
        the first round trip made (the head read)."""
        for retry in (True, False):
            conn = self._getconn()
            pipeline = ExitStack()
            try:
                pipeline.enter_context(conn.pipeline())
                # No BEGIN: the pipeline's statements up to its Sync are one (implicit) transaction; the lock
                # is taken by the head read, which the first prefetch sends with the command's stream version.
                tx = PostgresTransaction(conn, None, where=self.where, refusal=self._refusal, command=True,
                                         memo=memo, keeps=keeps)
                if first is not None:
                    self._local.conn = conn
                    first(tx)
                tx.head()
                return conn, tx, pipeline
            except BaseException as exc:
                _rollback_batched(conn, pipeline)
                self.pool.putconn(conn)
                if not isinstance(exc, psycopg.Error):
                    raise
                if retry and conn.broken:
                    self._drop_broken()
                    continue
                raise translate(exc, self.where) from None
            finally:
                self._local.conn = None
        raise AssertionError("unreachable")  # pragma: no cover

    def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected: Mapping[str, int] | None = None,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> list[StoredEvent]:
        """``Recorder.append`` in two round trips: the lock, the head, the streams' versions and the key's
        first result in one; the rows, the key, the wake-up and the COMMIT in the other."""
        if not events:
            return super().append(events, expected=expected, idempotency_key=idempotency_key,
                                  fingerprint=fingerprint)
        self._forget()
        streams = sorted({e.stream for e in events} | set(expected or {}))
        begin = [*self._WRITE, (sql.STREAM_VERSIONS, (streams,))]
        if idempotency_key is not None:
            begin.append((sql.IDEMPOTENT_RESULT, (idempotency_key,)))
        with self._transaction(begin) as (conn, cursors):
            found = dict(cursors[3].fetchall())
            last = cursors[2].fetchone()
            if idempotency_key is not None:
                first = _idempotent(cursors[4].fetchall(), idempotency_key, fingerprint, last[0] if last else 0)
                if first is not None:
                    return first
            tx = PostgresTransaction(conn, last, where=self.where, versions={s: found.get(s, 0) for s in streams},
                                     commit_with_append=True, refusal=self._refusal)
            return tx.append(events, expected=expected, idempotency_key=idempotency_key, fingerprint=fingerprint)

    def recorded_result(self, key: str, fingerprint: str | None) -> list[StoredEvent] | None:
        # One statement, no lock, no transaction of its own; and the memo stays (``write()`` dropped it: a keyed
        # register looked its key up that way, then ran two trips instead of one — 2.2 against 1.4 ms a register).
        rows = self._query(sql.IDEMPOTENT_RESULT, (key,))
        # The head is read after the key's rows, so it is at least what they saw (a truncation check).
        return _idempotent(rows, key, fingerprint, self.head()) if rows else None

    @contextmanager
    def read_snapshot(self) -> Iterator[psycopg.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._transaction(((sql.BEGIN_SNAPSHOT, ()),)) as (conn, _):
            yield conn

    # -- reads -------------------------------------------------------------------------------------
    def read(self, since: int = 0, limit: int | None = None, stream: str | None = None) -> Iterator[StoredEvent]:
        if stream is None:
            rows = self._query(*((sql.READ, (since,)) if limit is None else (sql.READ_LIMIT, (since, limit))))
        elif limit is None:
            rows = self._query(sql.READ_STREAM, (since, stream))
        else:
            rows = self._query(sql.READ_STREAM_LIMIT, (since, stream, limit))
        for row in rows:
            yield event_from_row(row)

    def read_streams(self, prefix: str, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        for row in self._query(sql.READ_STREAMS, (*stream_range(prefix), since, limit)):  # LIMIT NULL: all
            yield event_from_row(row)

    def head(self) -> int:
        return self._query(sql.HEAD)[0][0]

    def event_at(self, position: int) -> StoredEvent | None:
        rows = self._query(sql.EVENT_AT, (position,))
        return event_from_row(rows[0]) if rows else None

    def stream_version(self, stream: str) -> int:
        return self._query(sql.STREAM_VERSION, (stream,))[0][0]

    def position_at(self, timestamp: str) -> int:
        rows = self._query(sql.POSITION_AT, (normalize_timestamp(timestamp),))
        return rows[0][0] if rows else 0

    def raw_rows(self, since: int = 0, limit: int | None = None) -> list[tuple[Any, ...]]:
        if limit is None:
            return self._query(sql.READ, (since,))
        return self._query(sql.READ_LIMIT, (since, limit))

    def log_summary(self) -> tuple[int, int, str | None]:
        count, last, last_hash = self._query(sql.LOG_SUMMARY)[0]
        return count, last, last_hash

    def raw_keys(self) -> list[KeyRow]:
        return [tuple(row) for row in self._query(sql.KEYS)]

    # -- wake-ups ----------------------------------------------------------------------------------
    def wait_for_change(self, after_position: int, timeout: float) -> int:
        """Block until the head passes ``after_position`` or ``timeout`` seconds pass; the head.

        A notification only wakes the wait: the head is always read from the table, after LISTEN is in
        place, so an append that committed before the wait began (or a lost notification) is not missed.
        """
        deadline = time.monotonic() + timeout
        with self._listen_lock:
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = self._connect()
                    self._listener.execute(sql.LISTEN)
                while True:
                    head = self._listener.execute(sql.HEAD).fetchone()[0]
                    remaining = deadline - time.monotonic()
                    if head > after_position or remaining <= 0:
                        return head
                    for _ in self._listener.notifies(timeout=remaining, stop_after=1):
                        pass
            except psycopg.Error as exc:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                raise translate(exc, self.where) from None

    # -- guards and keys ---------------------------------------------------------------------------
    def guard_problems(self) -> list[GuardProblem]:
        with self.read_snapshot() as conn:
            try:
                return guard_problems_of(conn)
            except psycopg.Error as exc:
                raise translate(exc, self.where) from None

    def restore_guards(self) -> list[GuardProblem]:
        with self._transaction(((sql.BEGIN, ()), (sql.LOCK, ()))) as (conn, _):
            try:
                problems = guard_problems_of(conn)
                for problem in problems:
                    if problem.change == "extra":
                        # The name comes from pg_trigger, quoted by psycopg: never spliced in as SQL.
                        conn.execute(psycopg.sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                            psycopg.sql.Identifier(problem.name),
                            psycopg.sql.Identifier(_table_of(conn, problem.name))))
                for _, create in sql.CHECKED_FUNCTIONS.values():
                    conn.execute(create)
                for definition in sql.GUARDS.values():
                    # CREATE OR REPLACE also turns on a guard someone disabled.
                    conn.execute(definition.replace("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER", 1))
            except psycopg.Error as exc:
                raise translate(exc, self.where) from None
        self._refusal = None
        return problems

    def key_problems(self) -> Iterator[KeyProblem]:
        head = self.head()
        return key_problems_of(self._query(sql.KEYS_WITH_EVENTS), head)

    def close(self) -> None:
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self.pool.close()


def _create_or_upgrade(conn: psycopg.Connection) -> None:
    """The whole schema on an empty database; on an older registry only what was added since
    (``sql.UPGRADES``): its guards are left as they are — re-creating them would hide one someone dropped —
    and checked by the open as usual."""
    with conn.transaction():
        conn.execute(sql.SCHEMA_LOCK, (sql.SCHEMA_LOCK_KEY,))
        # again under the lock: a concurrent first open may have done it meanwhile
        current = conn.execute(sql.SCHEMA_PRESENT).fetchone()[0] and (
            conn.execute(sql.META_GET, ("schema",)).fetchone() or [None])[0]
        if current in sql.UPGRADES:
            conn.execute(sql.UPGRADES[current])
        elif current != sql.SCHEMA_VERSION:
            conn.execute(sql.SCHEMA)
            conn.execute(sql.META_INIT, ("id", uuid.uuid4().hex))
        conn.execute(sql.META_SET, ("schema", sql.SCHEMA_VERSION))


def _forget_prepared(conn: psycopg.Connection) -> None:
    """Put a connection's prepared statements back in step with psycopg's cache after an aborted pipeline.

    Measured: after a refused optimistic command, "prepared statement _pg3_1 does not exist" a few commands later
    (3 runs of 3 with 400 commands by two contending writers, one pooled connection each; tests/
    test_postgres_one_trip.py's back-off test too): the aborted pipeline's statements (a Parse skipped, a
    ROLLBACK that makes psycopg queue a DEALLOCATE ALL for its next statement) leave psycopg's idea of what is
    prepared and the server's apart. A DEALLOCATE ALL alone was worse (psycopg only drops its cache on seeing one
    the first time it runs the text). So: psycopg's cache emptied (``PrepareManager.clear``, psycopg 3.1-3.3's
    own reset on ``rollback()``), and the server's, outside any pipeline; if that fails, the connection is closed
    (the pool replaces it). One round trip per miss."""
    if conn.closed or conn.broken:
        return  # the pool replaces it
    try:
        conn._prepared.clear()
        conn.execute(sql.DEALLOCATE_ALL, prepare=False)
    except (psycopg.Error, AttributeError):
        conn.close()


def _lost(exc: psycopg.Error) -> bool:
    """The connection failed: a client-side error (no SQLSTATE: not the server's answer to a statement)."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and exc.sqlstate is None and \
        not isinstance(exc, psycopg.errors.PipelineAborted)


def _appended_first(exc: psycopg.Error) -> bool:
    """A unique violation of the log's own keys (position, stream version, idempotency key): another writer
    appended first — a conflict to decide again, like the append's own check."""
    return isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.table_name in sql.GUARDED_TABLES


def _commit_error(conn: psycopg.Connection, exc: psycopg.Error) -> psycopg.Error:
    """What failed at the Sync that ends a batched command. An error of the implicit COMMIT itself (a deferred
    constraint) answers the Sync rather than a statement: psycopg raises it, then fails to leave pipeline mode
    with the Sync's own result uncollected ("cannot exit pipeline mode while busy"), and raises that instead,
    the real error as its context. The real one is what the caller is told (it was not a lost connection:
    nothing was committed); the connection, left in pipeline mode, is closed so the pool replaces it."""
    cause = exc.__context__
    if isinstance(exc, psycopg.OperationalError) and isinstance(cause, psycopg.Error) and not conn.closed \
            and conn.pgconn.pipeline_status:
        conn.close()
        return cause
    return exc


def _lost_commit_error(conn: psycopg.Connection, where: str) -> StoreError:
    """The other face of ``_commit_error``'s case: when the error that answers the Sync arrives in the same read
    as the Sync's own result, psycopg 3.3 finds one result more than it queued and raises ``IndexError: pop from
    an empty deque``, the server's message dropped (seen under load in 4 of 10 runs of test_combining's commit
    test). The server only answers a Sync with an error when the implicit COMMIT failed, so nothing was
    committed; the connection, its pipeline state unknown, is closed so the pool replaces it."""
    if not conn.closed:
        conn.close()
    return StoreError(f"{where}: the server refused the commit (its message was lost in psycopg's pipeline;"
                      " the server's log has it); nothing was committed")


def _rollback_batched(conn: psycopg.Connection, pipeline: ExitStack) -> None:
    """End a batched transaction that failed: the ROLLBACK rides the pipeline (one round trip with its Sync);
    if a statement had failed, the pipeline skipped it, and it is sent again on its own."""
    if not conn.closed:
        try:
            conn.execute(sql.ROLLBACK)
        except psycopg.Error:
            pass
    try:
        pipeline.close()  # leaves pipeline mode, also on a connection that is gone
    except psycopg.Error:
        pass
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        _rollback(conn)


def _head_row(row: tuple | None) -> tuple:
    return tuple(row) if row else (0, GENESIS_HASH, "")


def _rollback(conn: psycopg.Connection) -> None:
    """Roll back, unless the connection is already gone (then the server has rolled back)."""
    if conn.closed:
        return
    try:
        conn.execute(sql.ROLLBACK)
    except psycopg.Error:
        pass



def _table_of(conn: psycopg.Connection, trigger: str) -> str:
    row = conn.execute(sql.TRIGGER_TABLE, (trigger, list(sql.GUARDED_TABLES))).fetchone()
    return row[0] if row else "events"


def occupied(url: str) -> str | None:
    """Why the database at ``url`` cannot receive a copied log (it holds events, or other tables than a
    registry's), or None when it is empty or an empty registry. Reads only."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            tables = [row[0] for row in conn.execute(sql.TABLES_HERE).fetchall()]
            if not tables:
                return None
            if "events" not in tables or "registry_meta" not in tables:
                return f"{describe(url)} holds other tables than a registry's ({', '.join(sorted(tables)[:5])})"
            head = conn.execute(sql.HEAD).fetchone()[0]
    except psycopg.Error as exc:
        raise translate(exc, describe(url)) from None
    return f"{describe(url)} already holds {head} event(s)" if head else None
