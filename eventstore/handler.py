"""Running a command: decide against the current state, append, let the read model follow — atomically.

Inside one write transaction the read model first catches up with the log (events appended by other
paths, or left unprojected by a crash), the command is decided against it, the events are appended,
and the read model applies them. So a command that returned is visible to the next read, and the
read model's checkpoint never disagrees with the log it was built from.

A stale decision (``ConcurrencyError``: the stream moved) is decided again against the new state;
the transaction that saw it is rolled back first, so a half-written batch is never committed.

This is the one write path: the caller's commands, the workers' outcomes (``ArtifactStored`` /
``ArtifactFailed``), gc's purge and a restore (``execute_in``: planned under the lock they append in) are all
decided here. Only an import (``Registry.append_batch``) appends prepared events, by design.

Commands that several threads of one process run at once share one write transaction and one COMMIT
(``eventstore.combining``, ``_run_batch``): results equal to running them one by one, in the batch's order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .combining import ALONE, Call, combiner_of
from .commands import Command, fingerprint
from .decider import Decision, decide
from .errors import ConcurrencyError, ModelLedgerError, StoreError
from .events import NewEvent, StoredEvent, stream_for
from .idempotency import recorded_under
from .recorder import Recorder, Transaction
from .state import StateView, Target, target_of

MAX_ATTEMPTS = 50
# A command folds at most this many unprojected events under its lock before deciding; a longer lag (a bulk
# import) is folded one committed page at a time, so other writers get the lock in between.
CATCH_UP_PAGE = 5_000


class ReadModel(Protocol):
    """The projection the handler keeps in step with the log (see ``projections.catalog``)."""

    def catch_up(self, tx: Transaction, limit: int | None = None) -> int:
        """Fold at most ``limit`` unprojected events; return the position the read model is at."""
        ...

    def apply(self, tx: Transaction, events: Sequence[StoredEvent]) -> None: ...

    def view(self, tx: Transaction) -> StateView: ...

    def current_view(self) -> AbstractContextManager[StateView]:
        """The state on a read snapshot of the current read model, without the writer lock: for a preview or a
        check made before work outside the log (a worker's "still waiting for bytes?"); what a command's own
        decision reads under the lock is what counts."""
        ...

    # Optional: ``prefetch(tx, target)``, called before ``catch_up`` with the command's ``Target``, so that the
    # state the command will read can be sent for in the same round trip as the catch-up's first read.


@dataclass(frozen=True)
class Outcome:
    events: list[StoredEvent]
    name: str
    version: int | None
    replayed: bool = False  # True when an idempotency key returned the first result
    record: Any = None  # what ``execute(..., finish=)`` read inside the transaction


def first_result(recorder: Recorder, key: str, request: Command) -> Outcome | None:
    """The outcome first recorded under ``key`` for this request, or None; ``IdempotencyError`` if the key
    was used for a different request."""
    first = recorder.recorded_result(key, fingerprint(request))
    if first is None:
        return None
    name, version = _target_of(first)
    return Outcome(first, name, version, replayed=True)


def _target_of(events: Sequence[StoredEvent]) -> tuple[str, int | None]:
    for e in events:
        if "version" in e.data and e.data.get("version") is not None:
            return e.data["name"], e.data["version"]
    return (events[0].data.get("name", ""), None) if events else ("", None)


@dataclass(frozen=True)
class _Command:
    """One caller's command and what ``execute`` was given with it."""

    command: Command
    meta: Mapping[str, Any]
    idempotency_key: str | None
    request: Command | None
    check: Callable[[Transaction], None] | None
    finish: Callable[[Transaction, Outcome], Any] | None
    target: Target | None


def execute(
    recorder: Recorder,
    read_model: ReadModel,
    command: Command,
    meta: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    request: Command | None = None,
    check: Callable[[Transaction], None] | None = None,
    finish: Callable[[Transaction, Outcome], Any] | None = None,
) -> Outcome:
    """``request``: the command as the caller asked for it, when ``command`` was completed since (a
    register whose artifact was ingested first); a retry is recognised by the request. ``check(tx)`` runs
    under the write lock before deciding (e.g. that the blobs a command refers to still exist); whatever it
    raises aborts the command. ``finish(tx, outcome)`` runs after the read model applied the new events,
    before the commit: what it returns (the record the caller will show) is ``outcome.record``, read without
    a second transaction.

    Commands that other threads of this process run on ``recorder`` at the same time share the write
    transaction (``eventstore.combining``; ``_run_batch``): each is decided after the ones before it, and
    every caller gets its own outcome, or its own error, once the one COMMIT returned."""
    call = Call(_Command(command, meta, idempotency_key, request, check, finish, target_of(command)))
    return combiner_of(recorder).run(call, lambda calls, take: _run_batch(recorder, read_model, calls, take),
                                     lambda: _execute_alone(recorder, read_model, call.args))


def _execute_alone(recorder: Recorder, read_model: ReadModel, one: _Command) -> Outcome:
    """One command in a write transaction of its own (a batch that failed after appending runs each of its
    commands so, and so does a command run from inside a batch)."""
    conflicts = 0
    folded = -1
    while conflicts < MAX_ATTEMPTS:
        try:
            with recorder.write_batched(
                    lambda tx: _prefetch(tx, read_model, one.target, one.idempotency_key), optimistic=True) as tx:
                lag = _fold_a_page(tx, read_model, folded)
                if lag is not None:
                    folded = lag
                    continue  # commit this page of the lag and fold the next in a new transaction
                return _decide_and_append(tx, read_model, one.command, one.meta,
                                          idempotency_key=one.idempotency_key, request=one.request,
                                          check=one.check, finish=one.finish)
        except ConcurrencyError:
            conflicts += 1
    raise StoreError(f"gave up after {MAX_ATTEMPTS} conflicting attempts")


def _fold_a_page(tx: Transaction, read_model: ReadModel, folded: int) -> int | None:
    """Fold at most a page of the catalog's lag: None when the catalog is now at the head, else the position it
    reached (commit that page, and fold the next in a new transaction). ``folded``: where the previous page
    ended, so a catalog that cannot move on fails instead of looping."""
    position = read_model.catch_up(tx, CATCH_UP_PAGE)
    if position >= tx.head():
        return None
    if position == folded:
        raise StoreError(f"the catalog cannot follow the log after #{position}")
    return position


class _Spoiled(Exception):
    """A command of a batch failed after it began to append: the batch's transaction is rolled back."""


def _run_batch(recorder: Recorder, read_model: ReadModel, calls: list[Call], take: Callable[[], list[Call]]) -> None:
    """Run ``calls`` (and those ``take()`` adds once the lock is held) in one write transaction, in order, each
    decided against the state the ones before it left; leave each ``done`` (its outcome, or the error it
    raised before appending) or, when the batch cannot commit as a whole, ``ALONE``.

    - A command that raises before it appends (a refusal of the decider, its ``check``, an idempotency key
      used for another request) gets its error; the batch goes on. Whatever its ``check`` wrote (small blobs
      a register deferred to its transaction) commits with the batch, referenced by nothing: what ``gc``
      frees, as after a crash between an ingest and its command.
    - One that fails once it began to append (a database error, a bug in the fold or in ``finish``), or an
      error of the store's (a ``StoreError``: on PostgreSQL it aborts the whole transaction), rolls the batch
      back, and every command of it runs alone: an innocent command never fails because of another.
    - An error of the transaction itself (the lock, the catch-up, the COMMIT) is every caller's: nothing was
      committed, as when alone (they retry with their keys). A conflict surfacing at the COMMIT (a
      pipelined statement's) means nothing was written: they run alone, and decide again."""
    folded = -1
    lead: _Command = calls[0].args
    while True:
        decided: list[tuple[Call, Any, BaseException | None]] | None = None
        try:
            with recorder.write_batched(
                    lambda tx: _prefetch(tx, read_model, lead.target, lead.idempotency_key), optimistic=True) as tx:
                for call in take():
                    one = call.args
                    # Sent now, read with the next read (PostgreSQL): one round trip for the batch's reads.
                    tx.prefetch(streams=[stream_for(one.target.name)] if one.target is not None else [],
                                idempotency_key=one.idempotency_key)
                lag = _fold_a_page(tx, read_model, folded)
                if lag is not None:
                    folded = lag
                    continue  # commit this page of the lag and fold the next in a new transaction
                decided = [_run_one(tx, read_model, call) for call in calls]
        except _Spoiled as spoiled:
            cause = spoiled.__cause__
            if len(calls) == 1 and cause is not None and not isinstance(cause, ConcurrencyError):
                calls[0].done(error=cause)  # alone already: running it again would only fail again
            else:
                _all_alone(calls)  # a conflict is decided again alone, as ever
            return
        except ConcurrencyError:
            _all_alone(calls)
            return
        except ModelLedgerError as exc:
            for call in calls:
                call.done(error=_copy(exc, call is calls[0]))
            return
        except BaseException as exc:
            if decided is None:
                raise  # the leader's own (an interrupt before deciding): the others run alone
            for call in calls:
                call.done(error=_copy(exc, call is calls[0]))
            return
        for call, outcome, error in decided:
            call.done(outcome, error)
        return


def _run_one(tx: Transaction, read_model: ReadModel, call: Call) -> tuple[Call, Any, BaseException | None]:
    one: _Command = call.args
    try:
        plan = _decide(tx, read_model, one.command, one.meta, idempotency_key=one.idempotency_key,
                       request=one.request, check=one.check)
    except ModelLedgerError as exc:
        if isinstance(exc, StoreError | ConcurrencyError):
            raise _Spoiled from exc
        return call, None, exc
    except Exception as exc:
        raise _Spoiled from exc
    if isinstance(plan, Outcome):
        return call, plan, None
    try:
        return call, _append(tx, read_model, plan, one.finish), None
    except Exception as exc:
        raise _Spoiled from exc


def _all_alone(calls: list[Call]) -> None:
    for call in calls:
        call.state = ALONE


def _copy(exc: BaseException, own: bool) -> BaseException:
    """The error for one caller: the leader's the original, the others' each a copy (one exception object
    raised in several threads would collect all their tracebacks)."""
    if own:
        return exc
    try:
        other = copy.copy(exc)
    except Exception:  # noqa: BLE001 - an exception that cannot be copied: the same object, then
        return exc
    return other.with_traceback(None)


def _prefetch(tx: Transaction, read_model: ReadModel, target: Target | None, idempotency_key: str | None) -> None:
    """Announce what deciding and projecting the command will read — its stream's version, its key's first
    result, its model's state and the catalog's checkpoint — before anything is read, so that a backend that
    pays a round trip per read gets all of it with the lock and the head (``Recorder.write_batched``)."""
    tx.prefetch(streams=[stream_for(target.name)] if target is not None else [], idempotency_key=idempotency_key)
    prefetch = getattr(read_model, "prefetch", None)
    if prefetch is not None and target is not None:
        prefetch(tx, target)


def execute_in(
    tx: Transaction,
    read_model: ReadModel,
    command: Command,
    meta: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    finish: Callable[[Transaction, Outcome], Any] | None = None,
) -> Outcome:
    """Decide and append ``command`` in a write transaction the caller already holds, with the read model
    caught up in it: for a command planned from the catalog under the same lock (gc's purge, a restore), so
    the plan and the decision see one state. A stale decision raises ``ConcurrencyError`` (the caller's
    transaction then rolls back). ``fingerprint``: the caller's own request's, when the command itself was
    planned (a retried gc plans differently, yet asks for the same thing)."""
    read_model.catch_up(tx)
    return _decide_and_append(tx, read_model, command, meta, idempotency_key=idempotency_key,
                              request_fingerprint=fingerprint, finish=finish)


def _decide_and_append(
    tx: Transaction,
    read_model: ReadModel,
    command: Command,
    meta: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    request: Command | None = None,
    check: Callable[[Transaction], None] | None = None,
    finish: Callable[[Transaction, Outcome], Any] | None = None,
    request_fingerprint: str | None = None,
) -> Outcome:
    plan = _decide(tx, read_model, command, meta, idempotency_key=idempotency_key, request=request, check=check,
                   request_fingerprint=request_fingerprint)
    return plan if isinstance(plan, Outcome) else _append(tx, read_model, plan, finish)


@dataclass(frozen=True)
class _Plan:
    """What a decision appends: its events, with the key and fingerprint they are recorded under."""

    decision: Decision
    events: list[NewEvent]
    idempotency_key: str | None
    fingerprint: str | None


def _decide(
    tx: Transaction,
    read_model: ReadModel,
    command: Command,
    meta: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    request: Command | None = None,
    check: Callable[[Transaction], None] | None = None,
    request_fingerprint: str | None = None,
) -> Outcome | _Plan:
    """Everything before the append: the key's first result (an ``Outcome``, replayed), the check, the
    decision (an ``Outcome`` too when it appends nothing). Writes nothing to the log or the catalog."""
    fp = request_fingerprint or (fingerprint(request or command) if idempotency_key is not None else None)
    event_meta = dict(meta)
    if idempotency_key is not None and not recorded_under(idempotency_key, event_meta):
        # An outcome recorded on behalf of a request already says so (``causation_id``); its
        # ``idempotency_key`` stays the request's own.
        event_meta["idempotency_key"] = idempotency_key
    if idempotency_key is not None:
        first = tx.idempotent_result(idempotency_key, fp)
        if first is not None:
            name, version = _target_of(first)
            return Outcome(first, name, version, replayed=True)
    if check is not None:
        check(tx)
    decision = decide(command, read_model.view(tx))
    new = [NewEvent(part.stream, t, d, event_meta) for part in decision.parts() for t, d in part.events]
    if not new:
        return Outcome([], decision.name, decision.version)
    return _Plan(decision, new, idempotency_key, fp)


def _append(tx: Transaction, read_model: ReadModel, plan: _Plan,
            finish: Callable[[Transaction, Outcome], Any] | None) -> Outcome:
    decision = plan.decision
    stored = tx.append(plan.events, expected=decision.expected_versions() or None,
                       idempotency_key=plan.idempotency_key, fingerprint=plan.fingerprint)
    read_model.apply(tx, stored)
    outcome = Outcome(stored, decision.name, decision.version)
    if finish is not None:
        # A second Outcome rather than ``dataclasses.replace`` (which looks the fields up again): once per command.
        outcome = Outcome(stored, decision.name, decision.version, record=finish(tx, outcome))
    return outcome
