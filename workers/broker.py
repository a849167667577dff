"""The one module that chooses the dramatiq broker. Every actor module imports it first.

``@dramatiq.actor`` binds the broker at decoration time and, if none is set, silently creates a
RedisBroker on 127.0.0.1:6379. So this module sets the broker at import — from ``MLEDGER_BROKER``:
``embedded`` (default) → a StubBroker served by an in-process Worker; ``redis://...`` → a RedisBroker —
and ``use()`` moves every declared actor to another broker (the CLI's ``--broker``, tests).

RedisBroker settings, chosen on purpose:
- ``heartbeat_timeout`` 30 s (default 60 s): a killed worker's unacked messages become eligible for
  redelivery after 30 s of silence. Shorter would risk redelivering a long ingest whose worker is alive
  but busy (heartbeats ride on fetches); redelivery is harmless anyway — every actor is idempotent.
- ``maintenance_chance`` 10,000 per million (1 %, default 0.1 %): maintenance is what actually requeues a
  dead worker's messages; at the default it can take minutes of idle polling to run (385 s was seen).
Crash recovery does not rely on either: the sweep re-sends every version whose outcome is missing.
"""

from __future__ import annotations

import os
import threading

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from .broker_url import is_embedded_url

HEARTBEAT_TIMEOUT_MS = 30_000
MAINTENANCE_CHANCE = 10_000  # out of 1,000,000 Redis commands
NAMESPACE = "mledger"

_lock = threading.RLock()
_worker: dramatiq.Worker | None = None
_key: tuple[str, str] | None = None


def make_broker(url: str, namespace: str = NAMESPACE) -> dramatiq.Broker:
    if is_embedded_url(url):  # ValidationError for anything but embedded or a Redis URL
        made: dramatiq.Broker = StubBroker()
    else:
        from dramatiq.brokers.redis import RedisBroker

        made = RedisBroker(url=url, namespace=namespace, heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
                           maintenance_chance=MAINTENANCE_CHANCE)
    # Actors read their retry count from the current message to record the final failure once.
    made.add_middleware(CurrentMessage())
    return made


def current() -> dramatiq.Broker:
    return dramatiq.get_broker()


def is_embedded(broker: dramatiq.Broker | None = None) -> bool:
    return isinstance(broker or current(), StubBroker)


def use(target: str | dramatiq.Broker, namespace: str = NAMESPACE) -> dramatiq.Broker:
    """Make ``target`` the broker of every declared actor (a URL or a broker instance). The same URL and
    namespace as the current broker's keep it (and its in-process worker)."""
    global _worker, _key
    with _lock:
        key = (target, namespace) if isinstance(target, str) else None
        old = dramatiq.get_broker()
        if key is not None and key == _key:
            return old
        if key is not None and key[0] == "embedded" and isinstance(old, StubBroker):
            _key = key  # one in-process StubBroker serves every embedded registry of the process
            return old
        new = make_broker(target, namespace) if isinstance(target, str) else target
        if new is old:
            return new
        stop_embedded_worker()
        dramatiq.set_broker(new)
        for name in list(old.actors):
            actor = old.get_actor(name)
            actor.broker = new
            new.declare_actor(actor)
        _key = key
        return new


def ensure_embedded_worker(threads: int = 2) -> dramatiq.Worker:
    """Start (once) the in-process worker that serves the StubBroker."""
    global _worker
    with _lock:
        if _worker is None:
            broker = current()
            # Without process_boot, TimeLimit's timer thread never starts and time limits never fire.
            broker.emit_after("process_boot")
            _worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
            _worker.start()
        return _worker


def stop_embedded_worker() -> None:
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None


dramatiq.set_broker(make_broker(os.environ.get("MLEDGER_BROKER") or "embedded"))
