"""Where this process's actors find the log and the artifact store.

Messages carry ids only (a log position), never paths or bytes: the process that runs the actors is
configured once — by the Registry for the embedded worker, by ``mledger worker`` for a Redis worker.
Waiters in the same process (embedded mode) are woken when an outcome is recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from eventstore.errors import StoreError
from eventstore.handler import ReadModel
from eventstore.recorder import Recorder

from .sources import SourcePolicy


@dataclass(frozen=True)
class WorkerContext:
    registry_id: str
    artifacts: str
    recorder: Recorder
    # The catalog: outcomes are decided against it and projected in the transaction that appends them
    # (``eventstore.handler``), like every other command.
    read_model: ReadModel
    # Embedded: the only messages this process's worker gets are the ones its own commands sent, for their
    # caller, so it reads their sources. A Redis worker reads only sources under ``policy``'s prefixes.
    embedded: bool = False
    policy: SourcePolicy = SourcePolicy()

    def may_read(self, source: str) -> bool:
        """May this process's worker read ``source`` for a message it received?"""
        return self.embedded or self.policy.allows(source)


_lock = threading.Lock()
_contexts: dict[str, WorkerContext] = {}
_default: str | None = None
_outcomes = threading.Condition()
_done: set[tuple[str, str, int]] = set()


def configure(recorder: Recorder, artifacts: str, read_model: ReadModel, *,
              embedded: bool = False, policy: SourcePolicy | None = None) -> WorkerContext:
    """Serve the registry of ``recorder`` in this process (several may be served at once, embedded)."""
    global _default
    registry_id = recorder.registry_id
    with _lock:
        ctx = _contexts[registry_id] = WorkerContext(registry_id, artifacts, recorder, read_model,
                                                     embedded, policy or SourcePolicy())
        _default = registry_id
        return ctx


def current(registry_id: str | None = None) -> WorkerContext:
    with _lock:
        key = registry_id or _default
        ctx = _contexts.get(key) if key else None
    if ctx is None:
        raise StoreError(f"this worker process does not serve registry {registry_id or '(none)'} "
                         "(set MLEDGER_HOME and run mledger worker)")
    return ctx


_progress: dict[int, Callable[[int], None]] = {}


def watch(position: int, callback: Callable[[int], None] | None) -> None:
    """Report the bytes of the ingest of ``position`` to ``callback`` (embedded mode: same process)."""
    with _lock:
        if callback is None:
            _progress.pop(position, None)
        else:
            _progress[position] = callback


def progress_for(position: int) -> Callable[[int], None] | None:
    with _lock:
        return _progress.get(position)


def notify(registry_id: str, name: str, version: int) -> None:
    with _outcomes:
        _done.add((registry_id, name, version))
        _outcomes.notify_all()


def wait_notified(registry_id: str, name: str, version: int, timeout: float) -> bool:
    """Block until an artifact outcome for ``name@version`` of the registry ``registry_id`` is recorded in
    this process, or timeout. Keyed by the registry's id, not a database path (any backend, any URL)."""
    key = (registry_id, name, version)
    with _outcomes:
        ok = _outcomes.wait_for(lambda: key in _done, timeout=timeout)
        _done.discard(key)
        return ok
