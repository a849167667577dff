"""The actors: artifact side effects, recorded as events.

Each message carries the log position of the event that asked for the work, nothing else. Every actor
is idempotent: its outcome is a command (``RecordArtifactStored`` / ``RecordArtifactFailed``) run through
the handler under an idempotency key derived from the request's position, and the decider records it only
while the version still waits for its bytes, so a redelivered or re-sent message appends nothing new.
"""

from __future__ import annotations

import importlib.metadata
import logging
import socket
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from eventstore import commands as c
from eventstore.decider import awaits_artifact
from eventstore.errors import ArtifactError, ModelLedgerError, ValidationError
from eventstore.events import ARTIFACT_REQUESTS, StoredEvent
from eventstore.handler import execute
from eventstore.recorder import Transaction

from . import broker as _broker  # noqa: F401  (sets the broker before any actor is declared)
from . import context
from .blobs import database_url_of, open_store
from .ingest import BlobsVanished, artifact_blobs, ingest_artifact

log = logging.getLogger("modelledger.workers")

INGEST_QUEUE = "mledger-ingest"


def _client() -> str:
    try:
        version = importlib.metadata.version("modelledger")
    except importlib.metadata.PackageNotFoundError:
        version = "dev"
    return f"modelledger/{version} worker@{socket.gethostname()}"


CLIENT = _client()
MAX_RETRIES = 3


def stored_key(position: int) -> str:
    """One outcome per request: the request is the event at ``position`` (a new version, or a request to
    fetch purged bytes again), so a redelivered job finds its outcome and a later request gets its own."""
    return f"artifact-stored:#{position}"


def failed_key(position: int) -> str:
    return f"artifact-failed:#{position}"


def _retries_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _meta(created: StoredEvent) -> dict[str, Any]:
    """The outcome is recorded on behalf of whoever asked for the work; the worker names itself apart."""
    meta = {k: created.meta[k] for k in ("actor", "run_id", "correlation_id", "idempotency_key")
            if k in created.meta}
    meta["causation_id"] = created.position
    meta["client"] = CLIENT
    return meta


def ingest_version(position: int, registry: str | None = None, *, for_caller: bool = False) -> str:
    """Copy the artifact of the version created at ``position`` into the store and record the outcome.
    Returns what happened: ``stored``, ``already``, ``failed`` or ``skipped``.

    ``for_caller``: this process runs the command that asked for the bytes, for its own caller (a
    ``retry``, ``undelete`` or ``restore`` of a Redis client): it reads the source with the caller's rights
    and records a failure at once. Otherwise the request came through a broker and the source is read only
    if this process may read it for others (``WorkerContext.may_read``: embedded, or ``MLEDGER_SOURCES``)."""
    ctx = context.current(registry)
    rec = ctx.recorder
    created = rec.event_at(position)
    if created is None or created.type not in ARTIFACT_REQUESTS:
        log.warning("ingest: position %s does not ask for an artifact; nothing to do", position)
        return "skipped"
    number = created.data["version"]
    if created.type == "ArtifactRequested":
        artifact = {"source": created.data["source"], "expected_digest": created.data.get("expected_digest")}
    else:
        artifact = created.data.get("artifact") or {}
    if not (for_caller or ctx.may_read(artifact.get("source") or "")):
        # The log names the source, which anyone who can append (an importer) chose: never read it on
        # their behalf. The version stays pending until a user runs `mledger retry` in their own process.
        log.warning("ingest: %s@%s: its source is not under MLEDGER_SOURCES (%s); left pending for "
                    "`mledger retry`", created.data["name"], number, ctx.policy.describe())
        return "skipped"
    # Read for someone else: a local source is opened from its allowed folder, never through a link out of it.
    beneath = None if for_caller or ctx.embedded else ctx.policy.local_prefix(artifact.get("source") or "")
    key = stored_key(position)
    if _already(ctx, created, key):
        context.notify(ctx.registry_id, created.data['name'], number)
        return "already"
    if artifact.get("digest"):
        # The version carried its parent's stored artifact: nothing to copy.
        context.notify(ctx.registry_id, created.data['name'], number)
        return "already"
    for _ in range(3):
        outcome = _ingest_once(ctx, rec, created, artifact, key, final=for_caller, beneath=beneath)
        if outcome != "vanished":
            return outcome
    raise ArtifactError(f"blobs of {created.data['name']}@{number} kept disappearing during ingest (gc?)")


def _ingest_once(ctx: context.WorkerContext, rec: Any, created: StoredEvent, artifact: dict[str, Any],
                 key: str, *, final: bool = False, beneath: str | None = None) -> str:
    number = created.data["version"]
    position = created.position
    try:
        store = open_store(ctx.artifacts, database=database_url_of(ctx.recorder))
        facts = ingest_artifact(store, artifact["source"], progress=context.progress_for(position), beneath=beneath)
        expected = artifact.get("expected_digest")
        if expected and facts["digest"] != expected:
            # Bytes fetched again must be the bytes the version was registered with.
            _record_failure(ctx, created, f"the source changed since registration: it now hashes to {facts['digest']},"
                                     f" the version recorded {expected}")
            return "failed"
    except BlobsVanished:
        return "vanished"
    except ModelLedgerError as exc:
        permanent = isinstance(exc, ValidationError) or "not found" in str(exc)
        if permanent or final or _retries_so_far() >= MAX_RETRIES:
            _record_failure(ctx, created, str(exc))
            return "failed"
        raise
    except Exception as exc:  # noqa: BLE001 - a driver error: retried, then recorded as the reason
        if final or _retries_so_far() >= MAX_RETRIES:
            _record_failure(ctx, created, f"{type(exc).__name__}: {exc}")
            return "failed"
        raise ArtifactError(f"ingest of {created.data['name']}@{number} failed: {exc}") from exc
    name = created.data["name"]

    def blobs_present(tx: Transaction) -> None:
        # gc removes blobs under the write lock, so this check under the same lock is race-free: a blob we
        # deduplicated against that gc removed since our copy means copying again (unless the outcome is moot).
        if (awaits_artifact(ctx.read_model.view(tx), name, number)
                and not all(store.exists(d) for d in artifact_blobs(facts))):
            raise BlobsVanished(name)

    try:
        recorded = execute(rec, ctx.read_model, c.RecordArtifactStored(position, name, number, facts),
                           _meta(created), idempotency_key=key, check=blobs_present)
    except BlobsVanished:
        return "vanished"
    except ValidationError as exc:
        # Facts the event's shape refuses (the decider holds outcomes to the shapes imports are held to): a
        # retry would learn the same, so the version fails with the reason instead of staying pending.
        _record_failure(ctx, created, f"the artifact's facts cannot be recorded: {exc}")
        return "failed"
    context.notify(ctx.registry_id, name, number)
    return "stored" if recorded.events and not recorded.replayed else "already"


def _already(ctx: context.WorkerContext, created: StoredEvent, key: str) -> bool:
    """Has this request's outcome been recorded, or does its version no longer wait for bytes? Read before
    copying anything, without the writer lock (on PostgreSQL, every host's writers'): a committed outcome and a
    version's status are what commits left; the decider asks again, under the lock, when the outcome is
    recorded."""
    if ctx.recorder.recorded_result(key, None) is not None:
        return True
    with ctx.read_model.current_view() as view:
        return not awaits_artifact(view, created.data["name"], created.data["version"])


class _StoredMeanwhile(Exception):
    """The request's bytes were stored after all: a failure is not recorded over it."""


def _record_failure(ctx: context.WorkerContext, created: StoredEvent, reason: str) -> None:
    name, number, position = created.data["name"], created.data["version"], created.position

    def not_stored(tx: Transaction) -> None:
        if tx.idempotent_result(stored_key(position), None) is not None:
            raise _StoredMeanwhile

    try:
        execute(ctx.recorder, ctx.read_model, c.RecordArtifactFailed(position, name, number, reason),
                _meta(created), idempotency_key=failed_key(position), check=not_stored)
    except _StoredMeanwhile:
        pass
    context.notify(ctx.registry_id, name, number)


@dramatiq.actor(queue_name=INGEST_QUEUE, max_retries=MAX_RETRIES, min_backoff=500, max_backoff=30_000,
                time_limit=6 * 3600 * 1000)
def ingest(position: int, registry: str | None = None) -> None:
    """``registry``: the id of the registry whose log holds ``position`` (a process may serve several)."""
    ingest_version(position, registry)


WEBHOOK_QUEUE = "mledger-webhooks"


@dramatiq.actor(queue_name=WEBHOOK_QUEUE, max_retries=20, min_backoff=1_000, max_backoff=300_000,
                time_limit=3600 * 1000)
def deliver_webhook(webhook_id: str, registry: str | None = None) -> None:
    """Deliver a webhook subscription's missed events from its cursor; a receiver that does not take one
    raises ``DeliveryError`` and the job is retried with back-off (and the sweep sends it again after that)."""
    from .webhooks import deliver, lease

    ctx = context.current(registry)
    meta = {"actor": "mledger-worker", "client": _client()}
    broker = _broker.current()
    client = getattr(broker, "client", None)
    if client is None:  # the in-process broker (embedded): one process, and its deliveries run in the caller
        deliver(ctx.recorder, webhook_id, meta)
        return
    with lease(client, broker.namespace, webhook_id) as keep:
        if keep is not None:  # else another worker is delivering this subscription now
            deliver(ctx.recorder, webhook_id, meta, keep=keep)
