"""The current catalog: keeping it in step with the log, and answering queries from it — in any dialect.

``CatalogProjection`` is the read model the command handler drives (catch up, view, apply).
``Catalog`` answers the questions people ask: one version by reference, a model with its versions, and
searches by keyword (``projections.search``), tags, artifact file name and alias.
Every read first catches up with the log, so a command that returned is always visible (and a crash
between an append and its projection heals on the next read).

No SQL here: the recorder names its dialect (``Recorder.dialect``) and the dialect module
(``projections.sqlite`` / ``projections.postgres``) holds the tables, the fold's statements and the queries.
The catalog lives in the log's own database and is written inside the command's transaction, so its rows
and its checkpoint commit with the events.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from eventstore.clock import FORMAT
from eventstore.decider import resolve
from eventstore.errors import NotFoundError, StoreError
from eventstore.events import StoredEvent
from eventstore.names import parse_ref, validate_alias, validate_name, validate_tags
from eventstore.recorder import Recorder, Transaction
from eventstore.state import Target

from .dialects import dialect_for, dialect_of
from .digest import catalog_digest_rows
from .past import PastCatalog
from .prefetch import Prefetched, PrefetchedStore, kept_after, recalled
from .projector import HANDLERS, PAUSE_AT, collector_paused, fold, log_events
from .records import ModelRecord, VersionRecord
from .rows import CatalogStateView, model_record, sorted_aliases, version_record
from .search import query_words
from .storage import PurgePlan

PAGE = 5_000
# A rebuild's page: it holds the write lock for the whole log anyway, and each page rewrites the rows of every
# model it touches and costs a pipeline of statements (a round trip on PostgreSQL). On SQLite's CPU time the
# two sizes were level (30,000 events: 90 µs per event at 20,000, 91–98 at 5,000, load ~5).
REBUILD_PAGE = 20_000

__all__ = ["Catalog", "CatalogProjection", "PurgePlan", "catalog_digest_rows"]


class CatalogProjection:
    """The catalog as a read model of the log (see ``eventstore.handler.ReadModel``)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.sql: ModuleType = dialect_for(getattr(recorder, "dialect", "sqlite"))
        # A command's prefetched rows, by its write transaction (``prefetch``; used up by its ``apply``).
        self._prefetched: weakref.WeakKeyDictionary[Transaction, Prefetched] = weakref.WeakKeyDictionary()
        # Looked at in a read snapshot first: opening a registry whose catalog is current writes nothing, so
        # a reader that cannot write (a PostgreSQL role that can only SELECT) opens it too.
        with recorder.read_snapshot() as conn:
            current = self.sql.stored_version(conn) == self.sql.VERSION
        if not current:
            try:
                self._upgrade()
            except StoreError as exc:
                if "read-only" not in str(exc):
                    raise
                raise StoreError(f"the catalog's tables are not the ones this version of modelledger reads "
                                 f"(catalog schema {self.sql.VERSION}) and cannot be rebuilt here: {exc}") from None
        self.ensure_current()

    def _upgrade(self) -> None:
        """Replace a catalog of another shape (or none) with one of this code's, folded from the log.

        A short log is folded in place, in one write transaction. A long one is folded beside the stored
        catalog (``<dialect>.beside``: a file of its own in SQLite, a schema of its own in PostgreSQL), a page
        at a time WITHOUT the write lock, so other writers keep appending; then, under the lock, the tail is
        folded in and the new tables take the old ones' place. The lock is held for the tail and the swap, not
        for the whole rebuild."""
        if self.recorder.read_only:  # a SQLite home opened read-only: nothing can be made
            raise StoreError("the registry database is read-only here")
        if self.recorder.head() > PAGE:
            with self.sql.beside(self.recorder) as side:
                with self.recorder.read_snapshot() as conn:
                    if self.sql.stored_version(conn) == self.sql.VERSION:
                        return  # another builder swapped its catalog in while this one waited for it
                position = side.checkpoint()
                while self.recorder.head() - position > PAGE:
                    page = list(self.recorder.read(since=position, limit=PAGE))
                    position = side.fold(page, position)
                with self.recorder.write() as tx:
                    if self.sql.stored_version(self._conn(tx)) != self.sql.VERSION:
                        side.swap(tx, list(tx.read(since=side.checkpoint())))
            return
        with self.recorder.write() as tx:
            conn = self._conn(tx)
            if self.sql.stored_version(conn) != self.sql.VERSION:
                self.sql.drop(conn)
                self.sql.create(conn)

    def _conn(self, tx: Transaction) -> Any:
        return self.sql.connection_of(tx)

    def prefetch(self, tx: Transaction, target: Target) -> None:
        """Send for the rows a command on ``target`` will read and the checkpoint (``projections.prefetch``),
        where the dialect pays a round trip per read; they come back with the transaction's first round trip
        and serve the catch-up, the decision and the command's fold in ``tx``."""
        send = getattr(self.sql, "prefetch", None)
        if send is None:
            return
        # An optimistic command (``Transaction.recall``): the rows kept after this process's last commit, if they
        # cover the target — nothing read; the recorder makes sure under its lock that they are still the rows.
        kept = tx.recall(_memo_key(target.name))
        got = recalled(target, kept, tx.head()) if kept is not None else None
        self._prefetched[tx] = got if got is not None else send(self._conn(tx), target)

    def catch_up(self, tx: Transaction, limit: int | None = None) -> int:
        """Fold the events after the checkpoint (at most ``limit`` of them) into the catalog, a page at a time."""
        store = self.sql.fold_store(self._conn(tx))
        prefetched = self._prefetched.get(tx)
        position = store.checkpoint() if prefetched is None else prefetched.stored_checkpoint()
        head = tx.head() if limit is None else min(tx.head(), position + limit)
        if prefetched is not None:
            if position < head:
                del self._prefetched[tx]  # read before the lag was folded: stale
            else:
                prefetched.checkpoint = position
        # A long lag (a bulk import): its pages' reads too with the collector paused (``collector_paused``).
        with collector_paused() if head - position >= PAUSE_AT else nullcontext():
            while position < head:
                page = list(tx.read(since=position, limit=min(PAGE, head - position)))
                if not page:
                    break
                position = fold(store, page, position)
            page = []  # freed before the collector is back on (see ``rebuild``)
        return position

    def apply(self, tx: Transaction, events: list[StoredEvent]) -> None:
        store = self.sql.fold_store(self._conn(tx))
        prefetched = self._prefetched.pop(tx, None)
        # The rows the fold writes are noted only where the transaction keeps a memo of them (an optimistic
        # backend's): elsewhere every command would pay the wrapper and a ``remember`` per model for nothing.
        watched = _Watched(store) if tx.remembers() else store
        if prefetched is not None and prefetched.checkpoint is not None:
            # The rows the command read are still the catalog's (nothing else wrote it under this lock):
            # its fold reads them from there, and starts where the catch-up found the checkpoint.
            position = fold(PrefetchedStore(watched, prefetched), events, prefetched.checkpoint)
        else:
            position = fold(watched, events, store.checkpoint())
        if isinstance(watched, _Watched):
            self._remember(tx, prefetched.target if prefetched is not None else None, watched.touched, position)

    def _remember(self, tx: Transaction, target: Target | None, touched: dict[str, tuple[set[int], set[str]]],
                  position: int) -> None:
        """Keep the rows of the command's model for the next command on it (``Transaction.remember``): read again
        after the fold's writes, in this transaction (the read rides the commit's round trip). Every other model
        the fold touched is forgotten (a batch's earlier command may have kept it)."""
        for name, (versions, stacks) in touched.items():
            if target is None or name != target.name:
                tx.remember(_memo_key(name), _forgotten)
                continue
            later: list[Prefetched] = []

            def make(previous: Any, later: list[Prefetched] = later, versions: set[int] = versions,
                     stacks: set[str] = stacks) -> Any:
                return kept_after(later[0], previous, versions, stacks, position) if later else None

            if tx.remember(_memo_key(name), make):
                later.append(self.sql.prefetch(self._conn(tx), target))

    def version_record(self, tx: Transaction, name: str, number: int) -> VersionRecord:
        """One version as the catalog holds it inside ``tx`` (after ``apply``: the command's own result)."""
        return _version_record(self._conn(tx), name, number)

    def version_record_later(self, tx: Transaction, name: str, number: int) -> Callable[[], VersionRecord]:
        """``version_record``, its reads sent now and read when the returned function is called (after the
        transaction, if need be): where a read costs a round trip (PostgreSQL's batched command), they come
        back with the COMMIT's; elsewhere the record is read now."""
        conn = self._conn(tx)
        later = getattr(self.sql, "version_with_aliases_later", None)
        if later is None:
            record = _version_record(conn, name, number)
            return lambda: record
        rows = later(conn, name, number)

        def record_later() -> VersionRecord:
            row, aliases = rows()
            if row is None:
                raise NotFoundError(f"model {name!r} has no version {number}")
            return version_record(row, aliases)

        return record_later

    def view(self, tx: Transaction) -> CatalogStateView:
        return CatalogStateView(self._conn(tx), self._prefetched.get(tx))

    @contextmanager
    def current_view(self) -> Iterator[CatalogStateView]:
        """The decider's view of the current catalog on a read snapshot, without the writer lock (a preview, a
        worker's check before it copies bytes): on PostgreSQL that lock is every host's writers'. Writers fold
        inline, so a snapshot's catalog is the log's state at its head; one that lags is caught up first."""
        self.ensure_current()
        with self.recorder.read_snapshot() as conn:
            yield CatalogStateView(conn)

    # -- keeping up ------------------------------------------------------------------------------------
    def checkpoint(self) -> int:
        with self.recorder.read_snapshot() as conn:
            return self.sql.fold_store(conn).checkpoint()

    def lag(self) -> int:
        with self.recorder.read_snapshot() as conn:
            return self.recorder.head() - self.sql.fold_store(conn).checkpoint()

    def ensure_current(self) -> None:
        """Apply whatever the log holds beyond the checkpoint (cheap when there is nothing to do). A long
        lag (a bulk import) is folded in one commit per page, so other writers never wait for all of it.

        A read never writes unless the catalog lags. When it lags and this connection cannot write (a read-only
        SQLite home, a PostgreSQL role that can only SELECT), the read fails with the lag named rather than
        answer from a catalog that misses events: a stale answer that looks current is the one a user cannot
        detect. Writers fold inline, so a catalog lags only after a bulk import or a crash, until the next
        command (or ``mledger projections rebuild``) by someone who can write."""
        folded = -1
        while (lag := self.lag()) > 0:
            try:
                with self.recorder.write() as tx:
                    position = self.catch_up(tx, limit=PAGE)
            except StoreError as exc:
                if "read-only" not in str(exc):  # the backends' own wording (eventstore/sqlite.py, postgres.py)
                    raise
                if self._lag_is_outside_the_catalog(lag):
                    return
                raise StoreError(f"the catalog is {lag} event(s) behind the log and cannot be brought level "
                                 f"here ({exc}); not answering from a stale catalog: run any command (or "
                                 "`mledger projections rebuild`) where the registry can be written") from None
            if position == folded:
                raise StoreError(f"the catalog cannot follow the log after #{position}")
            folded = position

    def _lag_is_outside_the_catalog(self, lag: int) -> bool:
        """Whether the events beyond the checkpoint are all of kinds the catalog does not fold (token grants
        and revocations, webhook subscriptions and cursors: appended without the catalog's inline fold). Then
        the catalog already says what it would say after folding them, so a read that cannot write may answer:
        on a read-only home, one `mledger token create` elsewhere must not make every read fail."""
        if lag > PAGE:
            return False
        pending = list(self.recorder.read(since=self.checkpoint(), limit=lag + 1))
        return len(pending) == lag and not any(e.type in HANDLERS for e in pending)

    def rebuild(self) -> int:
        """Drop every catalog table and replay the whole log, atomically; returns the events applied.

        The log's rows are read as the log keeps them (``Transaction.log_rows``, ``projector.log_events``:
        no ``StoredEvent`` per event), and the indexes only queries read are built after the last page."""
        with self.recorder.write() as tx:
            conn = self._conn(tx)
            self.sql.drop(conn)
            self.sql.create(conn, indexes=False)
            store = self.sql.fold_store(conn)
            position, head = 0, tx.head()
            # The read of each page too (a decoded event per row, kept for the page): see ``collector_paused``.
            with collector_paused():
                while position < head:
                    page = log_events(tx.log_rows(position, min(REBUILD_PAGE, head - position)))
                    if not page:
                        break
                    position = fold(store, page, position)
                # Freed while the collector is still off: the page was allocated while it was, so it is all in
                # the youngest generation, and the first allocation after ``gc.enable`` walked every object of
                # it (``gc_collect_main`` under the COMMIT: 3.7 % of a 20,000-event rebuild's samples, py-spy).
                page = []
            self.sql.create_indexes(conn)
            return position


def _memo_key(name: str) -> tuple[str, str]:
    return ("catalog", name)


def _forgotten(previous: Any) -> None:
    return None


class _Watched:
    """A dialect's ``FoldStore`` that notes what the fold wrote: for each model, the version numbers and alias
    stacks it touched (the rows a memo of the model must drop: ``kept_after``)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.touched: dict[str, tuple[set[int], set[str]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _of(self, name: str) -> tuple[set[int], set[str]]:
        return self.touched.setdefault(name, (set(), set()))

    def write(self, changes: Any) -> Any:
        for row in changes.models_new:
            self._of(row[0])
        for row in changes.models_changed:  # ``ModelRow.mutable``: the name last
            self._of(row[-1])
        for row in changes.versions_new:
            self._of(row[0])[0].add(row[1])
        for row in changes.versions_changed:  # ``VersionRow.mutable``: the key last
            self._of(row[-2])[0].add(row[-1])
        for rows in (changes.aliases_set, changes.aliases_removed, changes.alias_history_cut, changes.alias_history):
            for row in rows:
                self._of(row[0])[1].add(row[1])
        return self.store.write(changes)


def _version_record(conn: Any, name: str, number: int) -> VersionRecord:
    sql = dialect_of(conn)
    both = getattr(sql, "version_with_aliases", None)  # where a read costs a round trip: both in one
    row, aliases = both(conn, name, number) if both is not None else (sql.version_row(conn, name, number), None)
    if row is None:
        raise NotFoundError(f"model {name!r} has no version {number}")
    return version_record(row, sql.aliases_of(conn, name) if aliases is None else aliases)


class Catalog:
    """Read-only queries over the current catalog."""

    def __init__(self, projection: CatalogProjection) -> None:
        self.projection = projection
        self.recorder = projection.recorder
        self.sql = projection.sql

    @contextmanager
    def _read(self) -> Iterator[Any]:
        self.projection.ensure_current()
        with self.recorder.read_snapshot() as conn:
            yield conn

    def at(self, position: int) -> PastCatalog:
        """The catalog right after the event at ``position``."""
        return PastCatalog(self._read, position)

    # -- single things -----------------------------------------------------------------------------
    def get(self, ref: str) -> VersionRecord:
        """One version: ``NAME``, ``NAME@7`` or ``NAME@alias``. An explicit number also finds a deleted one."""
        parsed = parse_ref(ref)
        with self._read() as conn:
            _, state = resolve(CatalogStateView(conn), parsed, allow_deleted=parsed.version is not None)
            return _version_record(conn, parsed.name, state.version)

    def model(self, name: str, *, versions: bool = True, include_deleted: bool = True) -> ModelRecord:
        validate_name(name)
        with self._read() as conn:
            row = self.sql.model_row(conn, name)
            if row is None:
                raise NotFoundError(f"no model named {name!r}")
            aliases = self.sql.aliases_of(conn, name)
            records = None
            if versions:
                records = tuple(version_record(r, aliases)
                                for r in self.sql.version_rows(conn, name, include_deleted=include_deleted))
            return model_record(row, aliases, records)

    def exists(self, name: str) -> bool:
        with self._read() as conn:
            return self.sql.model_exists(conn, name)

    # -- searches ----------------------------------------------------------------------------------
    def list(
        self,
        *,
        search: str | None = None,
        tags: Mapping[str, str] | None = None,
        file: str | None = None,
        alias: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[ModelRecord]:
        """Models matching every filter given. A filter is met by the model itself or by any of its live
        versions (a tag on version 3 makes the model match)."""
        words = query_words(search) if search is not None else None
        wanted = validate_tags(dict(tags or {}))
        if alias is not None:
            validate_alias(alias)
        if words == []:
            return []  # no word to look for: nothing matches
        with self._read() as conn:
            rows = self.sql.list_models(conn, words=words, tags=wanted, file=file, alias=alias,
                                        include_deleted=include_deleted, limit=limit)
            return [model_record(row, sorted_aliases(row[-1])) for row in rows]

    def search(
        self,
        *,
        keyword: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        file: str | None = None,
        alias: str | None = None,
        limit: int | None = None,
    ) -> list[VersionRecord]:
        """Live versions of live models matching every filter (a model's own tags count for its versions)."""
        words = query_words(keyword) if keyword is not None else None
        if name is not None:
            validate_name(name)
        wanted = validate_tags(dict(tags or {}))
        if alias is not None:
            validate_alias(alias)
        if words == []:
            return []
        with self._read() as conn:
            rows = self.sql.search_versions(conn, words=words, name=name, tags=wanted, file=file, alias=alias,
                                            limit=limit)
            alias_cache: dict[str, dict[str, int]] = {}
            out = []
            for row in rows:
                if row[0] not in alias_cache:
                    alias_cache[row[0]] = self.sql.aliases_of(conn, row[0])
                out.append(version_record(row, alias_cache[row[0]]))
            return out

    def best(self, name: str, metric: str, *, minimize: bool = False,
             tags: Mapping[str, str] | None = None) -> VersionRecord:
        """The live version with the highest (or lowest) value of ``metric``; ties go to the newest."""
        validate_name(name)
        wanted = validate_tags(dict(tags or {}))
        with self._read() as conn:
            if not self.sql.model_exists(conn, name):
                raise NotFoundError(f"no model named {name!r}")
            number = self.sql.best_version(conn, name, metric, minimize=minimize, tags=wanted)
            if number is None:
                raise NotFoundError(f"no live version of {name!r} has the metric {metric!r}")
            return _version_record(conn, name, number)

    def request_position(self, name: str, number: int) -> int:
        """The log position of the latest event asking for this version's artifact."""
        with self._read() as conn:
            position = self.sql.request_position(conn, name, number)
        if position is None:
            raise NotFoundError(f"model {name!r} has no version {number}")
        return position

    def pending_positions(self, older_than: float = 0.0, limit: int = 10_000) -> list[int]:
        """Log positions of the versions whose artifact outcome is still missing, oldest first — what the
        sweep re-drives. ``older_than`` (seconds) leaves just-created versions to their own message."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=older_than)).strftime(FORMAT)
        with self._read() as conn:
            return self.sql.pending_positions(conn, cutoff, limit)

    def digest(self) -> str:
        """SHA-256 over every catalog row in canonical order: equal digests, equal catalogs (on any dialect)."""
        h = hashlib.sha256()
        with self._read() as conn:
            for line in catalog_digest_rows(conn):
                h.update(line.encode("utf-8"))
                h.update(b"\n")
        return h.hexdigest()
