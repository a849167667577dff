"""Combining (group commit): the commands several threads of one process run on one recorder at once share one
write transaction and one COMMIT.

Each write transaction pays its lock hand-over, BEGIN, COMMIT and (SQLite) fsync, or (PostgreSQL) its round
trips, whatever it holds. With 8 HTTP clients on a 2-process server each process has ~4 commands in flight,
and they queued on the writer lock (``eventstore/writelock.py``) to pay that one after another. Here the
first thread to arrive leads: it takes the write lock, then takes along every command its process's other
threads queued meanwhile (``take``), and commits once; each waiting caller gets its own result after that
COMMIT returned (durable before the answer, as alone). What a batch does with its commands — decide each
against the state its predecessors left, fall back to running them alone — is ``eventstore.handler``'s;
this module only queues the callers and hands the lead on.

- A lone writer never waits for company: it leads at once, and takes what is queued when it holds the lock
  (nothing, when it is alone).
- A batch holds at most ``MAX_BATCH`` commands; the rest wait for the next leader, so one leader's caller is
  not kept waiting by an endless stream behind it.
- When a batch is done, the lead passes to the first queued caller (woken by its own lock, as the writer
  lock's threads are), who takes the lock for the next batch while the results are handed out.
- A caller that may not wait (``writelock.without_waiting``: the HTTP server's event loop) and finds another
  thread leading gets ``WouldWait`` at once instead of a place in the queue.
- A command run inside a batch (its ``check`` or ``finish`` calling ``execute`` again) is not queued behind
  its own leader: it runs alone, as before (and meets the recorder's nested-transaction error).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .writelock import WouldWait, acquire_interruptibly, waiting_allowed

MAX_BATCH = 64

# What a queued caller is told when it wakes.
WAITING, DONE, LEAD, ALONE = "waiting", "done", "lead", "alone"


class Call:
    """One caller's command, queued for a leader: its arguments (``args``, whatever the batch runner reads)
    and, once run, its ``outcome`` or ``error``; ``state`` says which (``ALONE``: run it alone)."""

    __slots__ = ("args", "error", "outcome", "signal", "state")

    def __init__(self, args: Any) -> None:
        self.args = args
        self.outcome: Any = None
        self.error: BaseException | None = None
        self.state = WAITING
        self.signal = threading.Lock()  # released when the caller may go on (a result, the lead, or alone)
        self.signal.acquire()

    def done(self, outcome: Any = None, error: BaseException | None = None) -> None:
        self.outcome, self.error, self.state = outcome, error, DONE

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.outcome


BatchRunner = Callable[[list[Call], Callable[[], list[Call]]], None]
"""``run(calls, take)``: run ``calls`` (the leader's own first) as one batch, after calling ``take()`` once the
write lock is held to add the calls queued meanwhile; leave each call ``done`` or ``ALONE``."""


_leading = threading.local()  # .active: this thread is running a batch


class Combiner:
    """The queue of one recorder's callers in this process (``combiner_of``)."""

    def __init__(self, limit: int = MAX_BATCH) -> None:
        self.limit = limit
        self._guard = threading.Lock()
        self._queue: deque[Call] = deque()
        self._leading = False
        self._leader: Call | None = None  # the call whose thread has the lead now
        # How many batches were committed and how many commands they held (what a benchmark reports).
        self.batches = 0
        self.commands = 0

    def run(self, call: Call, batch: BatchRunner, alone: Callable[[], Any]) -> Any:
        """Run ``call`` in a batch (led by this thread, or by another of this process's), or ``alone()``
        when the batch says so; its outcome, or its error raised."""
        if getattr(_leading, "active", False):
            return alone()
        # What this caller holds when an interrupt (Ctrl-C, in the main thread) lands, at whatever bytecode:
        # nothing, a place in the queue (WAITING) or the lead (LEAD). Either is given back, or every later
        # command of the process waits forever for a caller that has gone (seen: a SIGINT between the queue's
        # append and the wait left a stale call in the queue, the lead was passed to it, and nobody led again).
        holds: str | None = None
        try:
            with self._guard:
                if not self._leading:
                    holds = LEAD
                    self._leading, self._leader = True, call
                elif not waiting_allowed():
                    # The HTTP server's event loop (``without_waiting``) must not sleep behind another thread's
                    # batch: it is told at once, with nothing done, and runs the command in a worker thread.
                    raise WouldWait("another thread of this process is writing the registry")
                else:
                    holds = WAITING
                    self._queue.append(call)
            if holds == WAITING:
                acquire_interruptibly(call.signal)  # a Ctrl-C to another thread interrupts it too
                holds = LEAD if call.state == LEAD else None
            if holds == LEAD:
                self._lead(call, batch)  # hands the lead on, whatever the batch does
                holds = None
        except BaseException:
            if holds is not None:
                self._leave(call)
            raise
        if call.state == ALONE:
            return alone()
        return call.result()

    def _lead(self, call: Call, batch: BatchRunner) -> None:
        calls = [call]

        def take() -> list[Call]:
            with self._guard:
                room = self.limit - len(calls)
                fresh = [self._queue.popleft() for _ in range(min(room, len(self._queue)))]
            calls.extend(fresh)
            return fresh

        try:
            call.state = WAITING
            _leading.active = True
            batch(calls, take)
        except BaseException as exc:
            # Not a command's error (those the batch hands to each call) but the leader's own (an interrupt):
            # the calls it took along run alone; the leader's caller gets it.
            for other in calls[1:]:
                if other.state != DONE:
                    other.state = ALONE
            call.done(error=exc)
        finally:
            _leading.active = False
            with self._guard:
                self.batches += 1
                self.commands += len(calls)
                successor = self._pass_lead()
            if successor is not None:
                successor.signal.release()
            for other in calls[1:]:
                if other.state == WAITING:
                    other.state = ALONE
                other.signal.release()
        if call.state == WAITING:
            call.state = ALONE

    def leading(self) -> bool:
        """Whether a thread leads a batch now (or waits for the write lock to)."""
        with self._guard:
            return self._leading

    def _pass_lead(self) -> Call | None:
        """(Under the guard.) The lead to the first queued caller (to be woken), or to nobody."""
        successor = self._queue.popleft() if self._queue else None
        self._leader = successor
        if successor is None:
            self._leading = False
        else:
            successor.state = LEAD
        return successor

    def _leave(self, call: Call) -> None:
        """A caller that stops (interrupted): out of the queue; if it has the lead (came to it, or taken and not
        yet handed on), on to the next. (A call a leader already took along is run regardless, as an
        interrupted COMMIT's would be.)"""
        with self._guard:
            successor = None
            if call in self._queue:
                self._queue.remove(call)
            elif self._leader is call:
                call.state = ALONE
                successor = self._pass_lead()
        if successor is not None:
            successor.signal.release()

    def queued(self) -> int:
        """How many callers wait for a leader now."""
        with self._guard:
            return len(self._queue)


_combiners: weakref.WeakKeyDictionary[Any, Combiner] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def combiner_of(recorder: Any) -> Combiner:
    """The combiner of ``recorder`` in this process (one per recorder object: the HTTP server's threads share
    one registry, and with it one recorder)."""
    found = _combiners.get(recorder)
    if found is None:
        with _guard:
            found = _combiners.setdefault(recorder, Combiner())
    return found


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads: a queue or a lead of theirs would wait forever."""
    global _guard, _combiners
    _guard = threading.Lock()
    _combiners = weakref.WeakKeyDictionary()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
