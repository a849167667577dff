"""The actors: artifact side effects, recorded as events.

Each message carries the log position of the event that asked for the work, nothing else. Every actor
is idempotent: its outcome is appended under an idempotency key derived from the version, inside a write
transaction that first checks for it, so a redelivered or re-sent message appends nothing new.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from eventstore.errors import ArtifactError, ModelLedgerError, ValidationError
from eventstore.events import VERSION_CREATING, NewEvent, StoredEvent
from eventstore.recorder import Transaction

from . import broker as _broker  # noqa: F401  (sets the broker before any actor is declared)
from . import context
from .ingest import ingest_artifact
from .store import BlobStore

log = logging.getLogger("modelledger.workers")

INGEST_QUEUE = "mledger-ingest"
MAX_RETRIES = 3


def stored_key(stream: str, version: int) -> str:
    return f"artifact-stored:{stream}:{version}"


def failed_key(stream: str, version: int, message_id: str) -> str:
    return f"artifact-failed:{stream}:{version}:{message_id}"


def _retries_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _message_id() -> str:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else "direct"


def _stored_event(created: StoredEvent, artifact: dict[str, Any]) -> NewEvent:
    keep = ("digest", "size", "kind", "format", "files", "unsafe", "imports", "detail", "structure")
    data = {"name": created.data["name"], "version": created.data["version"],
            **{k: artifact[k] for k in keep if k in artifact}}
    return NewEvent(created.stream, "ArtifactStored", data, _meta(created))


def _meta(created: StoredEvent) -> dict[str, Any]:
    """The outcome is recorded on behalf of whoever asked for the work; the worker names itself apart."""
    meta = {k: created.meta[k] for k in ("actor", "run_id", "correlation_id") if k in created.meta}
    meta["causation_id"] = created.position
    meta["client"] = f"mledger-worker@{socket.gethostname()}"
    return meta


def ingest_version(position: int) -> str:
    """Copy the artifact of the version created at ``position`` into the store and record the outcome.
    Returns what happened: ``stored``, ``already``, ``failed`` or ``skipped``."""
    ctx = context.current()
    rec = context.recorder()
    created = rec.event_at(position)
    if created is None or created.type not in VERSION_CREATING:
        log.warning("ingest: position %s is not a version-creating event; nothing to do", position)
        return "skipped"
    stream, number = created.stream, created.data["version"]
    artifact = created.data.get("artifact") or {}
    key = stored_key(stream, number)
    with rec.write() as tx:
        if tx.idempotent_result(key, None) is not None:
            context.notify(ctx.db_path, position)
            return "already"
    if artifact.get("digest"):
        # The version carried its parent's stored artifact: nothing to copy.
        context.notify(ctx.db_path, position)
        return "already"
    for _ in range(3):
        outcome = _ingest_once(ctx, rec, created, artifact, key)
        if outcome != "vanished":
            return outcome
    raise ArtifactError(f"blobs of {created.data['name']}@{number} kept disappearing during ingest (gc?)")


def _ingest_once(ctx: context.WorkerContext, rec: Any, created: StoredEvent, artifact: dict[str, Any],
                 key: str) -> str:
    number = created.data["version"]
    position = created.position
    try:
        facts = ingest_artifact(ctx.artifacts, artifact["source"], progress=context.progress_for(position))
    except ModelLedgerError as exc:
        permanent = isinstance(exc, ValidationError) or "not found" in str(exc)
        if permanent or _retries_so_far() >= MAX_RETRIES:
            _record_failure(created, str(exc))
            return "failed"
        raise
    except Exception as exc:  # noqa: BLE001 - a driver error: retried, then recorded as the reason
        if _retries_so_far() >= MAX_RETRIES:
            _record_failure(created, f"{type(exc).__name__}: {exc}")
            return "failed"
        raise ArtifactError(f"ingest of {created.data['name']}@{number} failed: {exc}") from exc
    store = BlobStore(ctx.artifacts)
    with rec.write() as tx:
        if tx.idempotent_result(key, None) is not None:
            outcome = "already"
        elif not all(store.exists(d) for d in _blobs(facts)):
            # gc removed a blob we deduplicated against, between our copy and this commit (gc deletes
            # under the write lock, so checking here is race-free): copy again.
            return "vanished"
        else:
            _append(ctx, tx, _stored_event(created, facts), key)
            outcome = "stored"
    context.notify(ctx.db_path, position)
    return outcome


def _blobs(facts: dict[str, Any]) -> set[str]:
    return {facts["digest"], *(f["digest"] for f in facts.get("files") or ())}


def _append(ctx: context.WorkerContext, tx: Transaction, event: NewEvent, key: str) -> None:
    if ctx.read_model is not None:
        ctx.read_model.catch_up(tx)
    stored = tx.append([event], idempotency_key=key)
    if ctx.read_model is not None:
        ctx.read_model.apply(tx, stored)


def _record_failure(created: StoredEvent, reason: str) -> None:
    ctx = context.current()
    rec = context.recorder()
    stream, number = created.stream, created.data["version"]
    with rec.write() as tx:
        if tx.idempotent_result(stored_key(stream, number), None) is None:
            meta = _meta(created)
            data = {"name": created.data["name"], "version": number, "reason": reason[:1000]}
            key = failed_key(stream, number, _message_id())
            if tx.idempotent_result(key, None) is None:
                _append(ctx, tx, NewEvent(stream, "ArtifactFailed", data, meta), key)
    context.notify(ctx.db_path, created.position)


@dramatiq.actor(queue_name=INGEST_QUEUE, max_retries=MAX_RETRIES, min_backoff=500, max_backoff=30_000,
                time_limit=6 * 3600 * 1000)
def ingest(position: int) -> None:
    ingest_version(position)
