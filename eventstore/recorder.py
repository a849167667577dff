"""The recorder interface: the only thing callers know about where events are kept.

A backend (``eventstore.sqlite`` today; PostgreSQL could follow) implements ``Recorder`` and
``Transaction``. Callers append inside ``recorder.write()``, which holds the store's write lock for the
whole decide → append → project step, and read with ``read``/``head``/``position_at``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from .events import NewEvent, StoredEvent


@dataclass(frozen=True)
class GuardProblem:
    """A guard of the log (a trigger refusing UPDATE, DELETE or REPLACE) that is not as the schema defines it:
    ``missing``, ``altered`` (``found`` holds its definition now) or ``extra`` (not in the schema at all)."""

    name: str
    change: Literal["missing", "altered", "extra"]
    found: str = ""

    def __str__(self) -> str:
        if self.change == "missing":
            return f"{self.name} missing"
        return f"{self.name} {self.change}: {_shorten(self.found)}"


@dataclass(frozen=True)
class KeyProblem:
    """An idempotency key that does not point at events recorded under it (``position``: where it fails)."""

    key: str
    position: int
    problem: str

    def __str__(self) -> str:
        return f"idempotency key {self.key!r}: {self.problem}"


def guard_refusal(problems: Sequence[GuardProblem]) -> str | None:
    """Why a store whose guards were changed refuses appends (None when they are in place)."""
    if not problems:
        return None
    return (f"the registry's append-only guards were changed ({'; '.join(map(str, problems))}): nothing is "
            "appended until they are restored; see `mledger audit`, then `mledger audit --restore-guards`")


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Transaction(ABC):
    """A write transaction. A backend's transaction also holds its own driver handle, which only that
    backend's catalog dialect (``projections.sqlite`` / ``projections.postgres``) uses, so a projection's rows
    and checkpoint commit together with the events."""

    @abstractmethod
    def head(self) -> int:
        """The last committed position (0 for an empty log)."""

    @abstractmethod
    def log_rows(self, since: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` stored rows after position ``since``, in position order, as the log keeps them
        (``eventstore.sealing.COLUMNS``: text, not events), read in this transaction: for a reader that decodes
        only what it needs, a page at a time (the catalog's rebuild)."""

    @abstractmethod
    def stream_version(self, stream: str) -> int:
        """The last version of ``stream`` (0 if it has no events)."""

    @abstractmethod
    def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected: Mapping[str, int] | None = None,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> list[StoredEvent]:
        """Append atomically with the rest of the transaction.

        ``expected[stream]`` is the stream version the caller decided against; a stale one raises
        ``ConcurrencyError`` (the caller re-decides). An ``idempotency_key`` is recorded with the batch, whose
        events must say so in their meta (``eventstore.idempotency``; ``ValidationError`` otherwise). While
        the store's guards are changed (``Recorder.guard_problems``) nothing is appended (``IntegrityError``).
        """

    @abstractmethod
    def idempotent_result(self, key: str, fingerprint: str | None) -> list[StoredEvent] | None:
        """The events first appended under ``key``; ``IdempotencyError`` if the fingerprint differs."""

    def prefetch(self, *, streams: Sequence[str] = (), idempotency_key: str | None = None) -> None:
        """A hint: this transaction will ask for these streams' versions and this key's first result. A
        backend that pays a round trip per read (PostgreSQL) sends those reads now, to come back with the
        next one; the others need not do anything."""
        return None

    def recall(self, key: Hashable) -> Any:
        """What ``remember(key, ...)`` kept at this process's last commit, when this transaction is decided from
        what that commit left instead of reading (an optimistic ``write_batched``): the reader uses it as the
        state at ``head()``; the backend checks under its lock, before anything commits, that no other writer
        came in between, and else raises ``ConcurrencyError`` (the caller decides again). None: read as usual
        (always, for a backend whose reads cost nothing)."""
        return None

    def remembers(self) -> bool:
        """Whether ``remember`` keeps anything in this transaction: a reader asks before preparing what it would
        keep (the catalog notes the rows its fold writes only then)."""
        return False

    def remember(self, key: Hashable, make: Callable[[Any], Any]) -> bool:
        """Keep ``make(previous)`` for the next transaction's ``recall(key)``: called once this transaction has
        committed, with what was kept under ``key`` before if this transaction began from the state that
        described (no other commit in between; else None). ``make`` returns what is exact after this commit (or
        None: nothing to keep). A key not remembered again is forgotten at the next commit. Whether it will be
        kept: False (and ``make`` never called) for a backend that does not decide from memory, so the caller
        need not prepare what ``make`` reads."""
        return False

    @abstractmethod
    def read(self, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        """Events with position > since, inside this transaction's snapshot."""

    @abstractmethod
    def append_rows(self, rows: Sequence[tuple[Any, ...]],
                    keys: Sequence[tuple[str, str | None, int, int]] = ()) -> int:
        """Append rows sealed elsewhere verbatim (a copy of another log: ``Recorder.raw_rows`` form), with the
        idempotency keys of their batches (``Recorder.raw_keys`` form); the new head. The rows must continue
        this log exactly — positions, stream versions, time, canonical text and hash chain
        (``eventstore.copying.check_rows``) — else ``IntegrityError`` and nothing is appended."""


class Recorder(ABC):
    dialect: str
    """The SQL dialect of the backend's database (``"sqlite"``, ``"postgresql"``): which catalog module the
    composition root pairs with it (``projections.dialects``)."""

    read_only: bool = False
    """Opened only to read (a SQLite file this user cannot write): nothing may be created, migrated or folded.
    A PostgreSQL role that can only SELECT is not known in advance: its writes fail as read-only instead."""

    registry_id: str
    """A random id made when the store is created and kept with it: the same across reopening, from any
    process or host (workers and brokers key their state by it)."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Transaction]:
        """An exclusive write transaction: commits on normal exit, rolls back on an exception."""

    @contextmanager
    def write_batched(self, first: Callable[[Transaction], None] | None = None, *,
                      optimistic: bool = False) -> Iterator[Transaction]:
        """``write()`` for one command (``eventstore.handler``): the same lock and guarantees, but a backend
        may send the statements whose results nobody reads yet together with the next read or the COMMIT
        (PostgreSQL's pipeline mode), so an error of one of them can surface later in the transaction or at
        its end — still as the project's error, with nothing committed. ``first(tx)`` runs at the start,
        before anything is read (it announces the reads to come: ``Transaction.prefetch``); a backend may run
        it again on a fresh connection. Not for DDL.

        ``optimistic``: the caller runs its body again when this raises ``ConcurrencyError`` (the handler does):
        a backend may then decide it from what this process's last commit left (``Transaction.recall``), with
        no read before the writes, and raise ``ConcurrencyError`` at the end, nothing committed, when another
        writer came in between."""
        with self.write() as tx:
            if first is not None:
                first(tx)
            yield tx

    @abstractmethod
    def read_snapshot(self) -> AbstractContextManager[Any]:
        """A consistent read-only snapshot; yields the backend connection."""

    def recorded_result(self, key: str, fingerprint: str | None) -> list[StoredEvent] | None:
        """``Transaction.idempotent_result`` outside a write: the events first appended under ``key`` once their
        batch has committed (``IdempotencyError`` for another request). A committed key's batch never changes, so
        a backend may read it without the writer lock (and should: a retry's look-up before an ingest then
        neither waits for writers nor holds them up). None is no promise: another writer may record the key
        meanwhile, and the command's own check, under the lock, decides. This default reads under the lock."""
        with self.write() as tx:
            return tx.idempotent_result(key, fingerprint)

    def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected: Mapping[str, int] | None = None,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> list[StoredEvent]:
        with self.write() as tx:
            if idempotency_key is not None:
                first = tx.idempotent_result(idempotency_key, fingerprint)
                if first is not None:
                    return first
            return tx.append(events, expected=expected, idempotency_key=idempotency_key, fingerprint=fingerprint)

    @abstractmethod
    def read(self, since: int = 0, limit: int | None = None, stream: str | None = None) -> Iterator[StoredEvent]:
        """Events with position > since in position order (optionally one stream's)."""

    def read_streams(self, prefix: str, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        """Events with position > since, in position order, of the streams whose name starts with ``prefix``
        (every ``webhook-<id>``, say). This default reads the whole log; a backend answers from its
        ``(stream, version)`` index instead, reading only those streams' events."""
        count = 0
        for e in self.read(since):
            if limit is not None and count >= limit:
                return
            if e.stream.startswith(prefix):
                count += 1
                yield e

    @abstractmethod
    def head(self) -> int:
        """The last committed position."""

    @abstractmethod
    def event_at(self, position: int) -> StoredEvent | None: ...

    @abstractmethod
    def position_at(self, timestamp: str) -> int:
        """The last position recorded at or before ``timestamp`` (ISO-8601 UTC); 0 if none."""

    @abstractmethod
    def guard_problems(self) -> list[GuardProblem]:
        """How the guards that keep the log append-only differ from the schema's, compared by definition
        (an empty list: all in place). A backend never re-creates a guard by itself on an existing store."""

    @abstractmethod
    def restore_guards(self) -> list[GuardProblem]:
        """Put the guards back as the schema defines them (drop altered and extra ones, create the missing);
        returns what was wrong. Appends are refused while guards are wrong, until this is run."""

    @abstractmethod
    def key_problems(self) -> Iterator[KeyProblem]:
        """Every idempotency key that does not point at existing events recorded under it (see
        ``eventstore.idempotency``): a key beyond the head is the trace of a truncated log."""

    @abstractmethod
    def stream_version(self, stream: str) -> int:
        """The last committed version of ``stream`` (0 if it has no events)."""

    @abstractmethod
    def raw_rows(self, since: int = 0, limit: int | None = None) -> list[tuple[Any, ...]]:
        """Rows with position > since exactly as stored, no upcasting (for the chain check and audit):
        (position, stream, version, type, schema_version, data, meta, recorded_at, hash), data and meta as
        the canonical JSON text the hash covers."""

    @abstractmethod
    def log_summary(self) -> tuple[int, int, str | None]:
        """``(rows, last position, last hash)`` read in one snapshot (``(0, 0, None)`` for an empty log): what
        an export's header states, with the bound its rows are read up to, so the two agree however many
        events are appended while it runs."""

    @abstractmethod
    def raw_keys(self) -> list[tuple[str, str | None, int, int]]:
        """Every idempotency key as stored: (key, fingerprint, first_position, last_position), in position
        order (a copy carries them with their batches, so a retry after moving still appends once)."""

    @abstractmethod
    def close(self) -> None: ...


def stream_range(prefix: str) -> tuple[str, str]:
    """The half-open range [low, high) of stream names that start with ``prefix`` (non-empty), as an index
    on the stream name reads it: ``webhook-`` → (``webhook-``, ``webhook.``)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)
