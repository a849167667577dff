"""The Python SDK: ``Registry.open()`` and one method per operation of the CLI.

This is the composition root: it wires the recorder (eventstore), the catalog (projections) and the
artifact side (workers) together, and adds the envelope's meta (actor, run id, correlation id). The rules
live below it — in the decider and the projector.
"""

from __future__ import annotations

import copy
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache, cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any

from eventstore import commands as c
from eventstore.access import (
    CreateToken,
    RevokeToken,
    TokenState,
    execute_access,
    expiry_after,
    new_secret,
    secret_hash,
    validate_prefix,
    validate_role,
    validate_token_name,
)
from eventstore.decider import Decision, decide, precheck
from eventstore.errors import (
    ArtifactError,
    ModelLedgerError,
    NotFoundError,
    PurgedError,
    StoreError,
    ValidationError,
)
from eventstore.events import (
    ARTIFACT_REQUESTS,
    STREAM_PREFIX,
    VERSION_CREATING,
    NewEvent,
    StoredEvent,
    stream_for,
)
from eventstore.handler import Outcome, execute, execute_in, first_result
from eventstore.mirror import MirrorModel
from eventstore.names import parse_ref, validate_name
from eventstore.recorder import GuardProblem
from eventstore.schemas import check_events
from eventstore.webhooks import WebhookState
from projections.access import TokenTable, token_table
from projections.catalog import Catalog, CatalogProjection
from projections.diff import diff_versions
from projections.past import PastCatalog
from projections.records import ModelRecord, VersionRecord
from projections.restore import plan_model
from projections.storage import partial_folders, purge_plan, referenced_digests
from workers import context
from workers.broker_url import is_embedded_url
from workers.sources import SourcePolicy

from . import __version__
from .config import Config
from .database import open_recorder

if TYPE_CHECKING:
    from dramatiq import Broker

    from eventstore.anchor import Anchor
    from projections.audit import AuditReport, ExportSummary
    from workers.blobs import BlobStore

RefLike = str | VersionRecord
DEFAULT_TIMEOUT = 3600.0


# -- loaded on first use ---------------------------------------------------------------------------------
# A read (show, list, log, history, diff, best) needs neither the broker (dramatiq, redis, asyncio) nor the
# ingest and the blob store (fsspec, s3fs, the format sniffers), nor the audit. Importing them made a cold
# `mledger show` several times as slow as the read itself (python -X importtime; docs/performance.md, "Cold
# start"), so this module imports them only where a command first needs them: in the three functions
# below, in ``Registry.broker`` and in ``Registry.store()`` — nowhere else. tests/test_coldstart.py fails
# when one of them comes back into a read.

@cache
def _ingest() -> ModuleType:
    """``workers.ingest``: reading a source into the store (fsspec, the format sniffers). Kept once loaded: a
    register asks for it three times, and an import statement costs a trip through importlib each time."""
    from workers import ingest

    return ingest


def _actors() -> ModuleType:
    """``workers.actors``: the ingest actor (importing it sets up dramatiq's broker, ``workers.broker``)."""
    from workers import actors

    return actors


def _audit() -> ModuleType:
    """``projections.audit``: the checks, anchors and the evidence bundle."""
    from projections import audit

    return audit


def _ref(ref: RefLike) -> str:
    return ref.ref if isinstance(ref, VersionRecord) else str(ref)


def _can_fetch(source: str, fetchable: Callable[[str], bool] | None) -> bool:
    """Can purged bytes be fetched again from ``source``: the caller may have it read, and it can be read."""
    return (fetchable is None or fetchable(source)) and _ingest().source_readable(source)


class _BlobsVanished(ModelLedgerError):
    pass


def _source_of(request: StoredEvent) -> str:
    """The source an artifact request names (a new version's artifact, or a re-fetch)."""
    if request.type == "ArtifactRequested":
        return str(request.data.get("source") or "")
    artifact = request.data.get("artifact")
    return str(artifact.get("source") or "") if isinstance(artifact, dict) else ""


def _keyed(meta: dict[str, Any], key: str | None, request: dict[str, Any],
           dry_run: bool) -> tuple[str | None, str | None]:
    """For the writes that append outside the handler (restore, gc): the key (recorded in ``meta``) and the
    request's fingerprint; a dry run appends nothing, so it records no key."""
    if key is None or dry_run:
        return None, None
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise ValidationError("an idempotency key is 1 to 1024 characters")
    meta["idempotency_key"] = key
    import hashlib

    from eventstore.canonical import canonical_bytes

    return key, hashlib.sha256(canonical_bytes(request)).hexdigest()


def _compact_changes(change: dict[str, Any]) -> dict[str, Any]:
    """Only the parts of a diff that say something."""
    return {k: v for k, v in change.items() if k not in ("a", "b") and v not in ({}, [], None)
            and not (isinstance(v, dict) and not any(x for x in v.values()))}


def _digests_present(digests: set[str], store: BlobStore, what: str) -> Callable[[Any], None]:
    """The ``check`` of a command that names stored blobs: under the write lock, make sure they still exist (gc
    deletes blobs under the same lock, so the check is race-free). Small blobs a tiered store deferred to the
    command's transaction are written by its ``finish`` (``Registry._in_transaction``), not here."""

    def check(tx: Any) -> None:
        if not all(store.exists(d) for d in digests):
            raise _BlobsVanished(what)

    return check


def _nothing() -> None:
    return None


class _Precheck:
    """``precheck(command)`` once, when first called: the checks that need no state, for the moments they must
    come before the command's own decision (see ``Registry._create``)."""

    def __init__(self, command: c.Command) -> None:
        self.command: c.Command | None = command

    def __call__(self) -> None:
        command, self.command = self.command, None
        if command is not None:
            precheck(command)


class Registry:
    """An open registry. Use ``Registry.open()`` (same configuration as the CLI) and ``close()`` it,
    or use it as a context manager."""

    def __init__(self, config: Config, *, client: str = "sdk") -> None:
        self.config = config
        self.client = f"modelledger/{__version__} {client}"
        self.recorder = open_recorder(config.location)  # MLEDGER_DATABASE: SQLite or PostgreSQL
        self.projection = CatalogProjection(self.recorder)
        self._catalog = Catalog(self.projection)
        self.embedded = is_embedded_url(config.broker)  # ValidationError for a broker we cannot make
        self._sent: set[tuple[str, int]] = set()
        self._store: BlobStore | None = None
        self.registry_id = self.recorder.registry_id
        if "workers.broker" in sys.modules:
            # This process already set up dramatiq (a worker, a test or script sending jobs itself): bind the
            # actors to this registry's broker now, as an open always did; otherwise the first send does.
            self.broker  # noqa: B018 - the cached property's side effect
        self.sources = SourcePolicy.parse(config.sources)
        # No sweep at open: a pending version left by a crash (or imported) is not this caller's request,
        # and its source is read only when a user asks for it (`mledger retry`); see docs/architecture.md.
        context.configure(self.recorder, config.artifacts, self.projection, embedded=self.embedded,
                          policy=self.sources)

    @cached_property
    def broker(self) -> Broker:
        """The dramatiq broker of this registry's ingest jobs, with the actors declared on it. Bound when first
        needed (a send, ``mledger worker``): dramatiq's broker is one per process, and ``use`` moves every
        declared actor to it."""
        _actors()  # declares the actors, on the broker workers.broker sets up at import
        from workers.broker import use

        # One Redis namespace per registry, so registries sharing a Redis never take each other's jobs.
        return use(self.config.broker, namespace=f"mledger-{self.registry_id[:12]}")

    @classmethod
    def open(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        artifacts: str | None = None,
        broker: str | None = None,
        actor: str | None = None,
        client: str = "sdk",
        database: str | None = None,
    ) -> Registry:
        """The registry the configuration names. With ``MLEDGER_URL`` set (and no ``home`` or ``database``
        given), the team server there, as the holder of ``MLEDGER_TOKEN``: a ``RemoteRegistry`` with these same
        methods."""
        if home is None and database is None and os.environ.get("MLEDGER_URL"):
            from .remote import RemoteRegistry

            return RemoteRegistry.open()  # type: ignore[return-value]
        return cls(Config.load(home, artifacts=artifacts, broker=broker, actor=actor, database=database),
                   client=client)

    def close(self) -> None:
        if self._store is not None and hasattr(self._store, "close"):
            self._store.close()  # a database blob store's connection
        self.recorder.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acting_as(self, actor: str, client: str) -> Registry:
        """This open registry, recording ``actor`` and ``client`` in the meta of what it appends: the HTTP
        server shares one registry between the holders of many tokens, each the actor of their own writes."""
        other = copy.copy(self)
        other.config = replace(self.config, actor=actor)
        other.client = f"modelledger/{__version__} {client}"
        return other

    def with_store(self, store: BlobStore) -> Registry:
        """This open registry writing blobs through ``store``: the HTTP server passes the tiered store's
        ``deferring()`` view holding a small file a register carried in its body, so the command's
        transaction writes those bytes with the version's events (one commit, as a local register)."""
        other = copy.copy(self)
        other._store = store
        return other

    # -- writing -----------------------------------------------------------------------------------
    def _meta(self, run_id: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "actor": self.config.actor,
            "client": self.client,
            "correlation_id": str(uuid.uuid4()),
        }
        run = run_id or os.environ.get("MLEDGER_RUN_ID")
        if run:
            meta["run_id"] = run
        return meta

    def execute(self, command: c.Command, *, idempotency_key: str | None = None,
                run_id: str | None = None) -> Outcome:
        """Decide and append one command; the lower-level door the named methods below go through."""
        return execute(self.recorder, self.projection, command, self._meta(run_id), idempotency_key=idempotency_key)

    def _record_in(self, tx: Any, outcome: Outcome) -> Callable[[], VersionRecord] | None:
        """The command's version as the catalog holds it inside ``tx``, read when called (on PostgreSQL the
        reads ride the COMMIT's round trip: ``CatalogProjection.version_record_later``)."""
        if outcome.version is None:
            return None
        return self.projection.version_record_later(tx, outcome.name, outcome.version)

    def _produced(self, outcome: Outcome) -> VersionRecord:
        assert outcome.version is not None
        return self._catalog.get(f"{outcome.name}@{outcome.version}")

    def register(
        self,
        name: str,
        artifact: str | Mapping[str, Any],
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        structure: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        run_id: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VersionRecord:
        """Register a new version of ``name`` (creating the model on first use) from a file, a folder or
        a URL. Returns the version once its artifact is stored (``wait=False``: at once, ``pending``).
        With an idempotency key, a retry returns the first result and appends nothing. ``artifact`` may also
        be the facts of bytes already in the store (``modelledger.server.uploads``: an HTTP upload)."""
        stored = dict(artifact) if isinstance(artifact, Mapping) else None
        source_text = str(stored.get("source", "")) if stored is not None else str(artifact)
        command = c.Register(name, {"source": source_text}, description, dict(tags or {}), dict(params or {}),
                             dict(structure or {}), dict(optimizer or {}))
        checked = _Precheck(command)
        if idempotency_key is not None:
            checked()  # a retry is recognised by its request: a valid one
            first = first_result(self.recorder, idempotency_key, command)
            if first is not None:
                return self._finish(first, wait, timeout)
        try:
            source, one_file = (source_text, True) if stored is not None else _ingest().checked_source(source_text)
            if not one_file:
                checked()  # a folder or a URL: refused before anything of it is read
        except ModelLedgerError:
            checked()  # bad input is named first, as before the source was looked at
            raise

        def build(art: dict[str, Any]) -> c.Command:
            return c.Register(name, art, description, command.tags, command.params, command.structure,
                              command.optimizer)

        return self._create(build, source, command, idempotency_key, run_id, wait, timeout, progress, stored,
                            checked)

    def update(
        self,
        ref: RefLike,
        *,
        params: Mapping[str, Any] | None = None,
        structure: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        artifact: str | Mapping[str, Any] | None = None,
        description: str | None = None,
        structure_patch: bool = False,
        optimizer_patch: bool = False,
        idempotency_key: str | None = None,
        run_id: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VersionRecord:
        """Derive a new version from ``ref``: params merge (RFC 7386), structure/optimizer replace unless
        ``*_patch``; the parent's artifact is carried over unless a new one is given."""
        stored = dict(artifact) if isinstance(artifact, Mapping) else None
        source_text = str(stored.get("source", "")) if stored is not None else str(artifact)
        command = c.Update(_ref(ref), None if params is None else dict(params),
                           None if structure is None else dict(structure),
                           None if optimizer is None else dict(optimizer), structure_patch, optimizer_patch,
                           None if artifact is None else {"source": source_text}, description)
        precheck(command)
        if idempotency_key is not None:
            first = first_result(self.recorder, idempotency_key, command)
            if first is not None:
                return self._finish(first, wait, timeout)
        if artifact is None:
            return self._finish(self.execute(command, idempotency_key=idempotency_key, run_id=run_id),
                                wait, timeout, progress)
        source = source_text if stored is not None else _ingest().check_source(source_text)

        def build(art: dict[str, Any]) -> c.Command:
            return c.Update(command.ref, command.params, command.structure, command.optimizer, structure_patch,
                            optimizer_patch, art, description)

        return self._create(build, source, command, idempotency_key, run_id, wait, timeout, progress, stored)

    def _create(self, build: Callable[[dict[str, Any]], c.Command], source: str, request: c.Command,
                idempotency_key: str | None, run_id: str | None, wait: bool, timeout: float | None,
                progress: Callable[[int], None] | None, stored: dict[str, Any] | None = None,
                checked: Callable[[], None] | None = None) -> VersionRecord:
        """Append a command that creates a version with a new artifact.

        Embedded: the artifact is ingested first (the ingest actor's own code, in this thread) and the
        version is appended already stored — ``VersionRegistered`` + ``ArtifactStored`` in one commit. If
        the process dies in between, the blob it wrote is referenced by nothing and ``gc`` frees it.
        Redis: a source under ``MLEDGER_SOURCES`` is appended ``pending`` and its ingest job goes through the
        outbox (the worker may read it); any other source is copied by this process, as embedded — a worker
        never reads a file only because the log names it. ``stored``: the artifact's bytes are already in the
        store (uploaded), these are their facts: nothing is read.

        ``checked``: the command's stateless checks (``precheck``), when they have not run yet. The decision in
        the command's transaction makes the same checks, so they run here only before something would be
        written outside that transaction (a blob of the file tier: the view's ``before_large``) or when the
        ingest fails (bad input is named first); a refused command writes nothing, its small blobs being
        written by ``finish``, after the decision. Running them twice was ~5 % of a small register's CPU."""
        checked = checked or _nothing
        if stored is not None:
            try:
                check, finish = self._in_transaction(stored, self.store())
                outcome = execute(self.recorder, self.projection, build(stored), self._meta(run_id),
                                  idempotency_key=idempotency_key, request=request, check=check, finish=finish)
            except _BlobsVanished:
                checked()
                raise ArtifactError("the uploaded blobs were removed by gc before the version was recorded; "
                                    "upload them again") from None
            return outcome.record() if outcome.record is not None else self._produced(outcome)
        if not self.embedded and self.sources.allows(source):
            outcome = self.execute(build({"source": source}), idempotency_key=idempotency_key, run_id=run_id)
            return self._finish(outcome, wait, timeout, progress)
        ingest = _ingest()
        for _ in range(3):
            # Small blobs kept in the registry's database wait in this view and are written by ``finish``,
            # inside the command's transaction: bytes and events commit together, once.
            store = self.store()
            if hasattr(store, "deferring"):
                store = store.deferring(before_large=checked)
            else:
                checked()
            try:
                facts = ingest.ingest_artifact(store, source, progress=progress)
            except ingest.BlobsVanished:
                continue  # gc freed a blob we deduplicated against before the sniff; copy again
            except ModelLedgerError:
                checked()
                raise
            check, finish = self._in_transaction(facts, store)
            try:
                outcome = execute(self.recorder, self.projection, build(facts), self._meta(run_id),
                                  idempotency_key=idempotency_key, request=request, check=check, finish=finish)
            except _BlobsVanished:
                continue  # gc freed a blob we deduplicated against; copy again
            return outcome.record() if outcome.record is not None else self._produced(outcome)
        raise ArtifactError(f"the blobs of {source} kept disappearing while registering it (is gc running?)")

    def _in_transaction(self, facts: dict[str, Any], store: BlobStore
                        ) -> tuple[Callable[[Any], None], Callable[[Any, Outcome], Any]]:
        """The hooks of the command recording ``facts`` in its transaction. ``check`` (under the write lock,
        before deciding): the blobs it deduplicated against still exist (gc deletes blobs under the same lock,
        so the check is race-free). ``finish`` (once its events are appended, before the COMMIT): the small
        blobs a tiered store deferred to this transaction are written, so a command the decider refuses
        writes none; then the record is read."""
        deferred = set(store.deferred) if hasattr(store, "commit_deferred") else set()
        check = _digests_present(_ingest().artifact_blobs(facts) - deferred, store, str(facts.get("source", "")))

        def finish(tx: Any, outcome: Outcome) -> Callable[[], VersionRecord] | None:
            if deferred:
                store.commit_deferred(tx)
            return self._record_in(tx, outcome)

        return check, finish

    # -- side effects ------------------------------------------------------------------------------
    def _finish(self, outcome: Outcome, wait: bool, timeout: float | None,
                progress: Callable[[int], None] | None = None) -> VersionRecord:
        """After commit: send the ingest job of the new version if it is pending, then wait for its outcome
        (always in embedded mode, unless ``wait=False`` with a Redis broker)."""
        self._dispatch(outcome.events, wait, timeout, progress, replayed=outcome.replayed, for_caller=False)
        return self._produced(outcome)

    def _dispatch(self, events: Sequence[StoredEvent], wait: bool, timeout: float | None = None,
                  progress: Callable[[int], None] | None = None, *, replayed: bool = False,
                  for_caller: bool = True) -> None:
        """The events table is the outbox: for every event just committed that asks for an artifact, send
        its ingest job (ids only); then wait for the outcomes when asked to.

        Who reads the source: a worker only when ``MLEDGER_SOURCES`` allows it; otherwise this process, and
        only for a request its caller made (``for_caller``: retry, undelete, restore). A version that merely
        carries a pending parent's source (an update) is left pending for `mledger retry`."""
        requests = [e for e in events if e.type in ARTIFACT_REQUESTS]
        pending = [e for e in requests if self._catalog.get(f"{e.data['name']}@{e.data['version']}").status
                   == "pending"]
        if replayed:
            pending = []  # the first attempt sent it
        by_worker = [e for e in pending if not self.embedded and self.sources.allows(_source_of(e))]
        here = [e for e in pending if e not in by_worker and for_caller]
        for e in here:
            if not self.embedded:
                # A Redis client reads the caller's source itself, with the caller's rights.
                _actors().ingest_version(e.position, self.registry_id, for_caller=True)
        if self.embedded:
            self._send_all(here, True, progress)
        else:
            self._send_all(by_worker, wait, progress)
        if wait or self.embedded:
            for e in here + by_worker:
                try:
                    self.wait(f"{e.data['name']}@{e.data['version']}", timeout)
                finally:
                    context.watch(e.position, None)

    def _send_all(self, pending: Sequence[StoredEvent], must_wait: bool,
                  progress: Callable[[int], None] | None) -> None:
        for e in pending:
            if self.embedded and progress is not None:
                context.watch(e.position, progress)
            try:
                self._send_ingest(e.position)
            except ModelLedgerError as exc:
                if not must_wait:
                    continue  # committed; the sweep of `mledger worker` sends it later
                ref = f"{e.data['name']}@{e.data['version']}"
                raise ArtifactError(f"{ref} is recorded (pending) but its ingest could not be queued "
                                    f"({exc}); `mledger worker` completes it once the broker is back") from None

    def _send_ingest(self, position: int) -> None:
        request = self.recorder.event_at(position)
        if request is not None:
            self._sent.add((request.data.get("name"), request.data.get("version")))
        self.broker  # noqa: B018 - the actors go to this registry's broker (bound on first use)
        try:
            _actors().ingest.send(position, self.registry_id)
        except Exception as exc:  # noqa: BLE001 - redis/connection errors, translated here once
            raise StoreError(f"the broker did not take the job: {type(exc).__name__}: {exc}") from None
        if self.embedded:
            from workers.broker import ensure_embedded_worker

            ensure_embedded_worker()

    def wait(self, ref: RefLike, timeout: float | None = None) -> VersionRecord:
        """Block until the version's artifact is stored (or failed); ``ArtifactError`` on failure."""
        limit = DEFAULT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.002
        while True:
            version = self._catalog.get(_ref(ref))
            if version.status == "failed":
                raise ArtifactError(f"{version.ref}: the artifact could not be stored: "
                                    f"{version.artifact.get('error', 'unknown reason')}")
            if version.status != "pending":
                return version
            left = deadline - time.monotonic()
            if left <= 0:
                raise ArtifactError(f"{version.ref} is still pending after {limit:g} s (is a worker running? "
                                    f"`mledger worker`; or fetch it with your rights: `mledger retry {version.ref}`)")
            if self.embedded and (version.name, version.version) not in self._sent:
                # Nothing of this process is working on it (another process may be). Its source is not
                # read here: only the caller who asks (`mledger retry`) reads it, with their rights.
                time.sleep(min(0.05, left))
            elif self.embedded:
                context.wait_notified(self.registry_id, version.name, version.version, min(left, 0.5))
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.02)  # a poll is a few indexed reads: keep latency low

    def sweep(self, older_than: float = 0.0) -> int:
        """Re-send the ingest job of every version whose outcome is missing (a lost message, a broker
        outage, a crash between commit and send). Returns how many were sent.

        Only requests whose source ``MLEDGER_SOURCES`` allows are re-sent: the others (imports, a crashed
        client's own copy) wait for `mledger retry` by a user, read with that user's rights."""
        sent = 0
        for position in self._catalog.pending_positions(older_than=older_than):
            request = self.recorder.event_at(position)
            if self.embedded or request is None or not self.sources.allows(_source_of(request)):
                continue
            self._send_ingest(position)
            sent += 1
        return sent

    # -- artifacts ---------------------------------------------------------------------------------
    def store(self) -> BlobStore:
        """The artifact store (one object per registry: opening an fsspec filesystem is not free)."""
        if self._store is None:
            # fsspec (and s3fs for s3://): see "the artifact side" above
            from workers.blobs import database_url_of, open_store

            # A new registry keeps its small blobs in its database (MLEDGER_SMALL_BLOBS; workers/blobs/). New means
            # no model has an event yet: a served home's first events are usually token grants, and an empty log
            # as the test missed exactly the registries a server creates. One probe of the stream index.
            new = next(iter(self.recorder.read_streams(STREAM_PREFIX, limit=1)), None) is None
            self._store = open_store(self.config.artifacts, statcache=self.config.statcache_path,
                                     database=database_url_of(self.recorder), new_registry=new)
        return self._store

    def pull(self, ref: RefLike, dest: str, *, overwrite: bool = False,
             progress: Callable[[int], None] | None = None) -> VersionRecord:
        """Write the version's artifact (file or folder) to ``dest`` (a path or URL), verifying every digest;
        on failure nothing is left at ``dest``."""
        version = self.get(ref)
        art = version.artifact
        if version.status == "purged":
            raise PurgedError(f"{version.ref}: its artifact ({art.get('digest')}) was purged by gc; the record "
                              "remains (restore can re-ingest it from its source)")
        if version.status != "ready" or not art.get("digest"):
            raise ArtifactError(f"{version.ref} has no stored artifact (status {version.status})")
        self.store().pull(art["digest"], art.get("kind", "file"), dest, overwrite=overwrite, progress=progress,
                          protected=(str(self.config.home),))
        return version

    def gc(self, grace_seconds: float = 7 * 86400, *, dry_run: bool = False,
           idempotency_key: str | None = None) -> dict[str, Any]:
        """Free the blobs that no live version references and whose last reference ended more than
        ``grace_seconds`` ago (and blobs nothing references, older than that). Appends ``ArtifactPurged``
        for each version that loses bytes. Holds the write lock throughout, so no command can start
        referencing a blob while it is being removed. ``dry_run``: only reads (a read-only home answers it)."""
        if grace_seconds < 0:
            raise ValidationError("the grace period cannot be negative")
        store = self.store()
        now = time.time()
        meta = self._meta()
        key, fp = _keyed(meta, idempotency_key, {"command": "Gc", "grace_seconds": grace_seconds}, dry_run)
        self.projection.ensure_current()
        if dry_run:
            # A dry run only reads: one snapshot, no write lock, so it also answers on a read-only home.
            with self.recorder.read_snapshot() as conn:
                return self._gc_plan(conn, now, grace_seconds)[0]
        with self.recorder.write() as tx:
            self.projection.catch_up(tx)
            first = tx.idempotent_result(key, fp) if key is not None else None
            if first is not None:
                return {"dry_run": False, "grace_seconds": grace_seconds,
                        "versions": [f"{e.data['name']}@{e.data['version']}" for e in first],
                        "blobs": 0, "orphan_blobs": 0, "bytes": 0, "events": [e.to_json() for e in first],
                        "replayed": True}
            report, purge, sizes = self._gc_plan(self.projection.sql.connection_of(tx), now, grace_seconds)
            report["dry_run"], report["bytes"] = False, 0
            outcome = execute_in(tx, self.projection, purge, meta, idempotency_key=key, fingerprint=fp)
            # Still under the write lock, after ArtifactPurged is appended and projected: no command can start
            # using a blob between the decision and its removal.
            freed = 0
            for digest, size in sizes.items():
                if store.delete(digest, tx):  # blobs in the registry's database: freed in this commit
                    freed += size or 0
            report["bytes"] = freed
            report["events"] = [e.to_json() for e in outcome.events]
        if freed:
            # Committed: now the copy a database keeps of what it freed (SQLite's write-ahead log) goes too.
            store.settle_deletes()
        return report

    def _gc_plan(self, conn: Any, now: float, grace_seconds: float
                 ) -> tuple[dict[str, Any], c.PurgeArtifacts, dict[str, int | None]]:
        """What gc would free, read on ``conn`` (the write transaction's, or a dry run's snapshot): the dry
        run's report, the purge command and the size of each blob to delete."""
        store = self.store()
        cutoff = datetime.fromtimestamp(now - grace_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        plans = purge_plan(conn, cutoff)
        referenced = referenced_digests(conn)
        unlisted = self._unlisted_blobs(conn, {p.digest for p in plans}, referenced)
        orphans = [(d, size) for d, size, mtime in store.iter_blobs()
                   if d not in referenced and mtime <= now - grace_seconds]
        by_version: dict[tuple[str, int], dict[str, Any]] = {}
        for plan in plans:
            for name, number, artifact_digest in plan.versions:
                entry = by_version.setdefault((name, number), {"name": name, "version": number,
                                                               "digest": artifact_digest, "blobs": []})
                entry["blobs"].append(plan.digest)
        purge = c.PurgeArtifacts(tuple(c.PurgedVersion(e["name"], e["version"], e["digest"], tuple(e["blobs"]))
                                       for _, e in sorted(by_version.items())))
        sizes: dict[str, int | None] = {p.digest: p.size for p in plans}
        sizes.update(unlisted)
        sizes.update(dict(orphans))
        for digest in sizes:
            # The catalog does not know a folder's manifest size: ask the store what each blob weighs.
            try:
                sizes[digest] = store.size_of(digest)
            except ModelLedgerError:
                sizes[digest] = 0  # already gone
        report: dict[str, Any] = {
            "dry_run": True,
            "grace_seconds": grace_seconds,
            "versions": [f"{n}@{v}" for n, v in sorted(by_version)],
            "blobs": len(sizes),
            "orphan_blobs": len(orphans),
            "bytes": sum(size or 0 for size in sizes.values()),
            "events": [],
        }
        return report, purge, sizes

    def _unlisted_blobs(self, conn: Any, purging: set[str], referenced: set[str]) -> dict[str, int]:
        """A large folder's event lists only its first files; the rest are named by its manifest. Adds those
        of every folder that stays to ``referenced`` (so they are not orphans) and returns those of the
        folders being purged now that nothing else needs."""
        store = self.store()
        freed: dict[str, int] = {}
        for digest in sorted(partial_folders(conn)):
            try:
                files = store.manifest(digest)
            except ModelLedgerError as exc:
                # Without the manifest we cannot tell which blobs the folder needs: free nothing unnamed.
                raise StoreError(f"gc stopped: the manifest of a folder artifact is unreadable ({exc})") from None
            if digest in purging:
                freed.update({f.digest: f.size for f in files})
            else:
                referenced.update(f.digest for f in files)
        return {d: size for d, size in freed.items() if d not in referenced}

    # Every write takes ``idempotency_key``: a retry with the same key (after a timeout, say) returns the
    # events the first attempt appended and appends nothing, so a retried rollback never rolls back twice.
    def tag(self, ref: RefLike, tags: Mapping[str, str] | None = None, *, idempotency_key: str | None = None,
            **more: str) -> list[StoredEvent]:
        """Set tags on a model (``NAME``... as a bare name) or on a version (``NAME@N``/``NAME@alias``)."""
        return self.execute(c.Tag(_ref(ref), {**dict(tags or {}), **more}), idempotency_key=idempotency_key).events

    def describe(self, ref: RefLike, description: str, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        """Change the description of a model (a bare name) or a version: one ``Described`` event, no new
        version (nothing if it already says that)."""
        return self.execute(c.Describe(_ref(ref), description), idempotency_key=idempotency_key).events

    def untag(self, ref: RefLike, *keys: str, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self.execute(c.Untag(_ref(ref), tuple(keys)), idempotency_key=idempotency_key).events

    def metrics(self, ref: RefLike, metrics: Mapping[str, float] | None = None, *,
                idempotency_key: str | None = None, **more: float) -> list[StoredEvent]:
        return self.execute(c.RecordMetrics(_ref(ref), {**dict(metrics or {}), **more}),
                            idempotency_key=idempotency_key).events

    def alias(self, ref: RefLike, alias: str, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self.execute(c.AssignAlias(_ref(ref), alias), idempotency_key=idempotency_key).events

    def unalias(self, name: str, alias: str, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self.execute(c.RemoveAlias(name, alias), idempotency_key=idempotency_key).events

    def rollback(self, name: str, alias: str, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        """Move ``alias`` back to the version it pointed to before (skipping deleted ones)."""
        return self.execute(c.RollbackAlias(name, alias), idempotency_key=idempotency_key).events

    def delete(self, ref: RefLike, reason: str = "", *, idempotency_key: str | None = None) -> list[StoredEvent]:
        """Logical delete of a version (``NAME@N``) or a whole model (``NAME``); bytes stay until gc."""
        return self.execute(c.Delete(_ref(ref), reason), idempotency_key=idempotency_key).events

    def undelete(self, ref: RefLike, *, wait: bool = True, timeout: float | None = None,
                 idempotency_key: str | None = None,
                 fetchable: Callable[[str], bool] | None = None) -> list[StoredEvent]:
        """Bring back a deleted version or a deleted model. A version whose bytes gc purged gets them back
        from its source when that can still be read; otherwise (an upload, a file since removed) it comes
        back without them, still ``purged``: its record is kept, ``pull`` says the bytes are gone, and
        `retry` fetches them later where the source can be read. ``fetchable(source)``: whether this caller
        may have a source read at all (a server: only those its operator allowed), asked first."""
        text = _ref(ref)
        readable = tuple(s for s in self.purged_sources(text) if _can_fetch(s, fetchable))
        # The request is the reference alone: a retry under the same key asks for the same undelete,
        # whatever could be read then.
        outcome = execute(self.recorder, self.projection, c.Undelete(text, readable), self._meta(),
                          idempotency_key=idempotency_key, request=c.Undelete(text))
        self._dispatch(outcome.events, wait, timeout, replayed=outcome.replayed)
        return outcome.events

    def purged_sources(self, ref: RefLike) -> list[str]:
        """The recorded sources of the purged artifacts that undeleting ``ref`` brings back: the version's,
        or those of the model's versions that are not deleted themselves."""
        text = _ref(ref)
        try:
            parsed = parse_ref(text)
            versions = ([v for v in self._catalog.model(parsed.name).versions or () if not v.deleted]
                        if parsed.is_model else [self._catalog.get(text)])
        except ModelLedgerError:
            return []  # the command itself says what is wrong with the reference
        return sorted({v.artifact["source"] for v in versions if v.status == "purged" and v.artifact.get("source")})

    def retry(self, ref: RefLike, *, wait: bool = True, timeout: float | None = None,
              idempotency_key: str | None = None) -> VersionRecord:
        """Ingest a failed (or stuck) version's artifact again from its source, or fetch again the bytes of
        one that came back from an undelete or a restore without them (``purged``)."""
        try:
            version = self._catalog.get(_ref(ref))
        except ModelLedgerError:
            version = None  # the command itself says what is wrong with the reference
        source = version.artifact.get("source") if version is not None else None
        if version is not None and version.status == "purged" and not version.deleted and source \
                and not _can_fetch(source, None):
            # Refused before anything is appended: the version stays "purged", which is what it is.
            raise ArtifactError(f"{version.ref}: gc purged its bytes and their source {source} cannot be read "
                                "here; nothing was changed (register the artifact again for a new version)")
        outcome = self.execute(c.RetryArtifact(_ref(ref)), idempotency_key=idempotency_key)
        self._dispatch(outcome.events, wait, timeout)
        return self._produced(outcome)

    def restore(self, name: str | None = None, *, as_of: str | int, dry_run: bool = False, wait: bool = True,
                timeout: float | None = None, idempotency_key: str | None = None,
                fetchable: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """Append, in one atomic batch, the compensating events that make the current catalog (one model,
        or all) equal to the catalog as of ``as_of``. Purged artifacts are re-ingested from their source
        when it is still readable (and ``fetchable``, as for ``undelete``), and reported as missing otherwise."""
        position = self.position_of(as_of)
        if name is not None:
            validate_name(name)

        def readable(source: str) -> bool:
            return _can_fetch(source, fetchable)

        restore_id = str(uuid.uuid4())
        meta = self._meta() | {"restore": {"id": restore_id, "as_of": position}}
        key, fp = _keyed(meta, idempotency_key, {"command": "Restore", "name": name, "as_of": position}, dry_run)
        past = self._catalog.at(position)
        self.projection.ensure_current()
        with self.recorder.write() as tx:
            self.projection.catch_up(tx)
            first = tx.idempotent_result(key, fp) if key is not None else None
            if first is not None:
                return {"restore_id": first[0].meta.get("restore", {}).get("id"), "as_of": position,
                        "dry_run": False, "models": sorted({e.data["name"] for e in first}), "reingest": [],
                        "missing": [], "events": [e.to_json() for e in first], "replayed": True}
            names = [name] if name is not None else [m.name for m in self._catalog.list(include_deleted=True)]
            view = self.projection.view(tx)
            plans = []
            for model_name in names:
                now = self._catalog.model(model_name)
                then = past.model(model_name) if past.exists(model_name) else None
                state = view.model(model_name)
                plans.append((state.stream_version if state else 0,
                              plan_model(now, then, source_readable=readable, reason=f"restore to #{position}")))
            planned = [p for _, p in plans]
            report: dict[str, Any] = {
                "restore_id": restore_id, "as_of": position, "dry_run": dry_run,
                "models": [p.name for p in planned if p.events],
                "reingest": [f"{p.name}@{n}" for p in planned for n, _, _ in p.reingest],
                "missing": [ref for p in planned for ref in p.missing],
            }
            if dry_run:
                report["events"] = [{"stream": stream_for(p.name), "type": t, "data": d}
                                    for p in planned for t, d in p.events]
                return report
            command = c.Restore(position, tuple(c.RestoreModel(p.name, version, tuple(p.events))
                                                for version, p in plans if p.events))
            stored = execute_in(tx, self.projection, command, meta, idempotency_key=key, fingerprint=fp).events
        report["events"] = [e.to_json() for e in stored]
        self._dispatch(stored, wait, timeout)
        return report

    def mirror(self, command: MirrorModel, *, idempotency_key: str | None = None) -> Outcome:
        """Make a model what another registry says it is (``eventstore.mirror``; ``mledger import mlflow``):
        only the differences are appended, in one batch. The versions' bytes were copied into the store
        first; a check under the write lock makes sure gc has not freed them since."""
        digests: set[str] = set()
        for v in command.versions:
            if v.artifact is not None:
                digests |= _ingest().artifact_blobs(v.artifact)
        check = _digests_present(digests, self.store(), command.name) if digests else None
        return execute(self.recorder, self.projection, command, self._meta(), idempotency_key=idempotency_key,
                       check=check)

    def preview(self, command: c.Command | MirrorModel) -> Decision:
        """What ``command`` would append now (decided on a read snapshot of the current catalog: nothing appended,
        no writer held up — an import's ``--dry-run`` previews every model it reads)."""
        with self.projection.current_view() as view:
            return decide(command, view)

    # -- access tokens of the HTTP server (eventstore/access.py) -------------------------------------
    def create_token(self, name: str, role: str, *, prefix: str = "", expires_in: float | None = None,
                     idempotency_key: str | None = None) -> tuple[TokenState, str | None]:
        """Grant a token; returns it and its secret — the only time the secret exists outside its holder
        (the log keeps its SHA-256). A retry under the same idempotency key returns the token and no secret."""
        validate_role(role)
        validate_prefix(prefix)
        if prefix and role != "writer":
            raise ValidationError("--prefix limits a writer; a reader reads and an admin changes everything")
        if expires_in is not None and expires_in <= 0:
            raise ValidationError("--expires must be a positive duration")
        secret = new_secret()
        command = CreateToken(validate_token_name(name), role, secret_hash(secret), prefix,
                              expiry_after(expires_in))
        request = {"command": "CreateToken", "token": name, "role": role, "prefix": prefix, "expires_in": expires_in}
        outcome = execute_access(self.recorder, command, self._meta(), idempotency_key=idempotency_key,
                                 request=request)
        assert outcome.state is not None
        return outcome.state, None if outcome.replayed else secret

    def revoke_token(self, name: str, reason: str = "", *,
                     idempotency_key: str | None = None) -> list[StoredEvent]:
        """Revoke a token: every server process refuses it from its next request on."""
        command = RevokeToken(validate_token_name(name), reason)
        return execute_access(self.recorder, command, self._meta(), idempotency_key=idempotency_key,
                              request={"command": "RevokeToken", "token": name, "reason": reason}).events

    def tokens(self) -> list[TokenState]:
        return self.token_table.list()

    @cached_property
    def token_table(self) -> TokenTable:
        return token_table(self.recorder)

    # -- webhooks (eventstore/webhooks.py, workers/webhooks.py) ---------------------------------------
    def create_webhook(self, name: str, url: str, events: Sequence[str], *, description: str = "",
                       idempotency_key: str | None = None) -> tuple[WebhookState, str]:
        """Subscribe ``url`` to ``events`` (MLflow's names such as ``model_version.created``, or event types of
        the log) from now on; returns the subscription and its signing secret (derived from the operator's
        ``MLEDGER_WEBHOOK_KEY``; the log keeps only its SHA-256)."""
        from eventstore.webhooks import CreateWebhook, execute_webhook, new_id, secret_for

        command = CreateWebhook(name, url, tuple(events), description, new_id())
        stored, state, replayed = execute_webhook(self.recorder, command, self._meta(), idempotency_key=idempotency_key)
        assert state is not None
        return state, secret_for(state.webhook_id)

    def webhooks(self) -> list[WebhookState]:
        from eventstore.webhooks import subscriptions

        return subscriptions(self.recorder)

    def webhook(self, ref: str) -> WebhookState:
        """A subscription by id or by name."""
        found = [w for w in self.webhooks() if ref in (w.webhook_id, w.name)]
        if not found:
            raise NotFoundError(f"no webhook {ref!r}")
        if len(found) > 1:
            raise ValidationError(f"several webhooks are named {ref!r}: give the id")
        return found[0]

    def change_webhook(self, command: Any, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        """``UpdateWebhook``, ``DeleteWebhook`` or ``Replay`` (eventstore/webhooks.py)."""
        from eventstore.webhooks import execute_webhook

        return execute_webhook(self.recorder, command, self._meta(), idempotency_key=idempotency_key)[0]

    def deliver_webhooks(self, ref: str | None = None) -> dict[str, int]:
        """Deliver every subscription's missed events in this process (no broker needed); a receiver that does
        not take an event raises ``ArtifactError`` after the progress made is recorded."""
        from workers.webhooks import deliver, lease

        states = [self.webhook(ref)] if ref is not None else self.webhooks()
        meta = self._meta()
        if self.embedded:
            return {s.name: deliver(self.recorder, s.webhook_id, meta) for s in states}
        # Beside Redis workers: the same lease as theirs, so a subscription is never sent by two at once (one a
        # worker is delivering now counts 0 here; the worker sends it).
        broker: Any = self.broker
        counts: dict[str, int] = {}
        for s in states:
            with lease(broker.client, broker.namespace, s.webhook_id) as keep:
                counts[s.name] = deliver(self.recorder, s.webhook_id, meta, keep=keep) if keep is not None else 0
        return counts

    def send_webhook_jobs(self) -> int:
        """What the worker's sweep does: a delivery job for every active subscription behind the log."""
        from workers.webhooks import behind

        ids = behind(self.recorder, self.webhooks())
        if ids and not self.embedded:
            actors = _actors()
            for webhook_id in ids:
                actors.deliver_webhook.send(webhook_id, self.registry_id)
        return len(ids)

    def append_batch(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        """Append prepared events as one atomic batch, bypassing the decider (imports, migrations,
        benchmarks). Each event must have its type's shape (``ValidationError`` otherwise, nothing
        appended); the catalog folds them in on the next read."""
        return self.recorder.append(check_events(events))

    # -- reading -----------------------------------------------------------------------------------
    def catalog(self, as_of: str | int | None = None) -> Catalog | PastCatalog:
        """The current catalog, or (``as_of``: ``#N``, a position, or an ISO-8601 timestamp) a read-only
        view of the catalog as it was right after that event."""
        if as_of is None:
            return self._catalog
        return self._catalog.at(self.position_of(as_of))

    def position_of(self, as_of: str | int) -> int:
        """``#N`` or N → N; a timestamp → the last position recorded at or before it."""
        head = self.recorder.head()
        if isinstance(as_of, int) and not isinstance(as_of, bool):
            position = as_of
        elif isinstance(as_of, str) and as_of.strip().startswith("#"):
            digits = as_of.strip()[1:]
            if not (digits.isascii() and digits.isdigit()):  # int() would also take '１' or '٣'
                raise ValidationError(f"--as-of {as_of!r}: after '#' give a position number")
            position = int(digits)
        elif isinstance(as_of, str):
            return self.recorder.position_at(as_of)
        else:
            raise ValidationError(f"--as-of takes an ISO-8601 timestamp or #N, not {as_of!r}")
        if position < 0 or position > head:
            raise ValidationError(f"position #{position} is not in the log (it ends at #{head})")
        return position

    def get(self, ref: RefLike) -> VersionRecord:
        return self._catalog.get(_ref(ref))

    def model(self, name: str) -> ModelRecord:
        return self._catalog.model(name)

    def history(self, ref: RefLike, *, as_of: str | int | None = None) -> list[StoredEvent]:
        """The events of a model (``NAME``) or of one version (``NAME@N`` / ``NAME@alias``), oldest first
        (up to ``as_of`` when given; an alias is resolved as of then)."""
        text = _ref(ref)
        parsed = parse_ref(text)
        name = validate_name(parsed.name)
        catalog = self.catalog(as_of)
        catalog.model(name, versions=False)  # NotFound for an unknown model
        until = catalog.position if isinstance(catalog, PastCatalog) else None
        events = [e for e in self.recorder.read(stream=stream_for(name)) if until is None or e.position <= until]
        if parsed.is_model:
            return events
        number = catalog.get(text).version
        return [e for e in events if e.data.get("version") == number]

    def changes(self, events: Sequence[StoredEvent]) -> list[dict[str, Any]]:
        """For each event, what it changed: the version (or model) just before it against just after it."""
        out = []
        for e in events:
            name, number = e.data.get("name"), e.data.get("version")
            before, after = self._catalog.at(e.position - 1), self._catalog.at(e.position)
            try:
                if isinstance(number, int):
                    old = before.get(f"{name}@{number}") if e.type not in VERSION_CREATING else None
                    new = after.get(f"{name}@{number}")
                    if old is None:
                        # A new version: what it changed relative to its parent's content.
                        parent = new.parent and before.get(f"{name}@{new.parent}")
                        full = diff_versions(parent, new) if parent else {}
                        change = {k: full[k] for k in ("params", "structure", "optimizer") if k in full}
                    else:
                        change = diff_versions(old, new)
                else:
                    old_m = before.model(name, versions=False) if before.exists(name) else None
                    new_m = after.model(name, versions=False)
                    change = {k: {"old": getattr(old_m, k) if old_m else None, "new": getattr(new_m, k)}
                              for k in ("description", "tags", "aliases", "deleted")
                              if old_m is None or getattr(old_m, k) != getattr(new_m, k)}
            except ModelLedgerError:
                change = {}
            out.append({"event": e.to_json(), "changes": _compact_changes(change)})
        return out

    def diff(self, a: RefLike, b: RefLike, *, a_as_of: str | int | None = None,
             b_as_of: str | int | None = None) -> dict[str, Any]:
        """What differs from version ``a`` to version ``b`` (each optionally as of another time): content as
        nested key paths, metrics side by side, tags, aliases, artifact files, and their lineage."""
        left, right = self.catalog(a_as_of).get(_ref(a)), self.catalog(b_as_of).get(_ref(b))
        return diff_versions(left, right, lineage=lambda name, n: self._catalog.get(f"{name}@{n}").parent)

    # -- audit -------------------------------------------------------------------------------------
    def audit(self, *, deep: bool = False, expected_hash: str | None = None,
              expect: Iterable[str | Anchor] = ()) -> AuditReport:
        """Check the hash chain, gapless positions, time order, canonical stored text, the append-only guards,
        the idempotency keys against the events they point at, that a replay of the whole log gives exactly
        the stored catalog, and that every ready version's blobs exist (deep: and rehash to their digest).
        ``expected_hash``: the log must end at this hash; ``expect``: anchors ``#N:hash`` (``anchor()``, kept
        elsewhere) that must still hold — what catches a truncated or rewritten-and-rebuilt log."""
        audit = _audit()
        expected_hash, anchors = audit.expectations(expected_hash, expect)  # bad input: refused before any work
        self.projection.ensure_current()
        store = self.store()
        return audit.audit(self.recorder, blob_exists=store.exists,
                           blob_rehash=store.verify if deep else None, expected_hash=expected_hash, expect=anchors)

    def anchor(self) -> Anchor:
        """The head's position and hash (``#N:hash``): keep it outside the registry; ``audit(expect=[...])``
        later proves the first N events are unchanged."""
        return _audit().anchor(self.recorder)

    def restore_guards(self) -> list[GuardProblem]:
        """Put the append-only guards back as the schema defines them (after finding out, with ``audit``, why
        they changed); returns what was wrong. Appends are refused until then."""
        return self.recorder.restore_guards()

    def export_log(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> ExportSummary:
        """Write the evidence bundle: the log as JSON Lines with its final hash, verifiable without us.
        An existing file at ``path`` is replaced only with ``overwrite`` (never a folder or special file)."""
        return _audit().export(self.recorder, path, overwrite=overwrite)

    @staticmethod
    def verify_export(path: str | os.PathLike[str], expected_final_hash: str | None = None,
                      expect: Iterable[str | Anchor] = ()) -> AuditReport:
        return _audit().verify_export(path, expected_final_hash=expected_final_hash, expect=expect)

    def log(self, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        return self.recorder.read(since=since, limit=limit)

    def head(self) -> int:
        return self.recorder.head()

    def rebuild_projections(self) -> int:
        return self.projection.rebuild()

    def models(self, **filters: Any) -> list[ModelRecord]:
        return self._catalog.list(**filters)

    def search(self, **filters: Any) -> list[VersionRecord]:
        return self._catalog.search(**filters)

