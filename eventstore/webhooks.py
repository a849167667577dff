"""Webhook subscriptions as events in the log, each with its own stream ``webhook-<id>`` and its own cursor.

A subscription is created, updated and deleted by events (``WebhookCreated``, ``WebhookUpdated``,
``WebhookDeleted``), so the audit trail shows who subscribed what to where, and when. Its delivery cursor is
in the same stream: ``WebhookDelivered {through: P}`` records that every event up to position P that the
subscription asked for reached the receiver (a 2xx answer), and ``WebhookReplayed {through: P}`` moves the
cursor back for a receiver that asks for a replay. A worker that dies mid-delivery therefore loses nothing:
the next delivery starts after the last recorded ``through``, at worst sending an event again under the same
delivery id (receivers deduplicate on it).

The signing secret is not in the log (the log is exported and audited): it is derived from the operator's
``MLEDGER_WEBHOOK_KEY`` and the subscription's id (HMAC-SHA256), shown once to whoever creates the
subscription, and recomputed by the delivering worker. The log keeps its SHA-256, so a receiver's secret can
be checked against the subscription without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .errors import ConcurrencyError, ConflictError, NotFoundError, StoreError, ValidationError
from .events import NewEvent, StoredEvent
from .recorder import Recorder

STREAM_PREFIX = "webhook-"
KEY_ENV = "MLEDGER_WEBHOOK_KEY"
URLS_ENV = "MLEDGER_WEBHOOK_URLS"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_ATTEMPTS = 20

# MLflow's webhook event names (entity.action) → the log's event types that make them. Our own event types
# are accepted as names too (``Tagged``, ``ModelDeleted``, ...).
MLFLOW_EVENTS: dict[str, frozenset[str]] = {
    "registered_model.created": frozenset({"ModelRegistered"}),
    "model_version.created": frozenset({"VersionRegistered", "ParamsUpdated", "StructureUpdated", "OptimizerUpdated"}),
    "model_version_tag.set": frozenset({"Tagged"}),
    "model_version_tag.deleted": frozenset({"Untagged"}),
    "model_version_alias.created": frozenset({"AliasAssigned"}),
    "model_version_alias.deleted": frozenset({"AliasRemoved"}),
}
WEBHOOK_EVENTS = frozenset({"WebhookCreated", "WebhookUpdated", "WebhookDeleted", "WebhookDelivered",
                            "WebhookReplayed", "WebhookClaimed"})


def stream_of(webhook_id: str) -> str:
    return STREAM_PREFIX + webhook_id


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValidationError(f"invalid webhook name {str(name)[:40]!r}: letters, digits, '.', '_', '-' (at most 64)")
    return name


def validate_events(events: Iterable[Any]) -> list[str]:
    from .events import SCHEMA_VERSIONS

    out = sorted(set(events))
    if not out:
        raise ValidationError("a webhook needs at least one event (e.g. model_version.created)")
    for e in out:
        if e not in MLFLOW_EVENTS and e not in SCHEMA_VERSIONS:
            raise ValidationError(f"unknown event {str(e)[:60]!r}: one of {', '.join(sorted(MLFLOW_EVENTS))} or an "
                                  "event type of the log")
    return out


def allowed_urls(value: str | None = None) -> list[str]:
    raw = os.environ.get(URLS_ENV, "") if value is None else value
    return [p.strip() for p in raw.split(",") if p.strip()]


def check_url(url: Any, allowed: list[str] | None = None) -> str:
    """A delivery URL only under a prefix the operator allowed (``MLEDGER_WEBHOOK_URLS``): a webhook is the
    server making requests on someone's behalf."""
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url) or len(url) > 2048:
        raise ValidationError("a webhook URL is http(s)://host/...")
    prefixes = allowed_urls() if allowed is None else allowed
    if not any(url.startswith(p) for p in prefixes):
        raise ValidationError(f"the operator did not allow webhooks to {url[:200]!r} ({URLS_ENV})")
    return url


def secret_for(webhook_id: str, key: str | None = None) -> str:
    key = key if key is not None else os.environ.get(KEY_ENV, "")
    if len(key) < 16:
        raise ValidationError(f"webhooks need {KEY_ENV} (at least 16 characters) on every server and worker")
    return "whs_" + hmac.new(key.encode(), webhook_id.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """MLflow's webhook signature: ``v1,`` + base64(HMAC-SHA256(secret, "id.timestamp.payload"))."""
    import base64

    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{payload}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# -- commands and state ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CreateWebhook:
    name: str
    url: str
    events: tuple[str, ...]
    description: str = ""
    webhook_id: str = ""  # set by the caller (a new uuid); a retry under an idempotency key keeps the first


@dataclass(frozen=True)
class UpdateWebhook:
    webhook_id: str
    url: str | None = None
    events: tuple[str, ...] | None = None
    status: str | None = None  # ACTIVE | DISABLED
    description: str | None = None


@dataclass(frozen=True)
class DeleteWebhook:
    webhook_id: str


@dataclass(frozen=True)
class RecordDelivered:
    webhook_id: str
    through: int
    delivered: int


@dataclass(frozen=True)
class ClaimDelivery:
    """Take (``until`` > 0), renew (``renew``) or release (``until`` 0) the right to send a subscription's
    events: one delivery at a time, whatever process it runs in (``WebhookClaimed``). ``claim``: the
    delivery's random id; ``holder``: ``host:pid``; ``until`` and ``now`` in milliseconds since the epoch, by
    the delivering process's clock (the decider reads none). ``replaces``: a claim whose holder the caller
    saw is dead (a process of its own host that no longer exists), taken over before it expires."""

    webhook_id: str
    claim: str
    until: int
    now: int
    holder: str = ""
    renew: bool = False
    replaces: str = ""


@dataclass(frozen=True)
class Replay:
    webhook_id: str
    since: int  # deliver again every matching event after this position


@dataclass(frozen=True)
class WebhookState:
    webhook_id: str
    name: str
    url: str
    events: tuple[str, ...]
    description: str
    status: str
    secret_sha256: str
    created_at: str
    created_by: str
    updated_at: str
    cursor: int = 0  # every matching event up to here was delivered
    deleted: bool = False
    stream_version: int = 0
    claim: str = ""  # the delivery that holds the right to send (``WebhookClaimed``) until ``claim_until``
    claim_until: int = 0  # milliseconds since the epoch; 0: released
    claim_holder: str = ""  # host:pid

    def wants(self, event: StoredEvent) -> bool:
        if event.type in WEBHOOK_EVENTS or event.type in ("TokenGranted", "TokenRevoked"):
            return False
        for name in self.events:
            types = MLFLOW_EVENTS.get(name)
            if types is None:
                if event.type == name:
                    return True
            elif event.type in types:
                # MLflow's tag events are about versions: a model's own tags are not model_version_tag.*
                if name.startswith("model_version_tag") and event.data.get("version") is None:
                    continue
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.webhook_id, "name": self.name, "url": self.url, "events": list(self.events),
                "description": self.description, "status": self.status, "created_at": self.created_at,
                "created_by": self.created_by, "updated_at": self.updated_at, "delivered_through": self.cursor}


def fold(events: Iterable[StoredEvent], state: WebhookState | None = None) -> WebhookState | None:
    """A subscription's state after ``events`` of its stream (continuing from ``state`` when given)."""
    for e in events:
        d = e.data
        if e.type == "WebhookCreated":
            state = WebhookState(d["webhook"], d["webhook_name"], d["url"], tuple(d["events"]), d.get("description", ""),
                                 "ACTIVE", d["secret_sha256"], e.recorded_at, str(e.meta.get("actor", "")),
                                 e.recorded_at, d.get("since", 0))
        elif state is None:
            continue
        elif e.type == "WebhookUpdated":
            state = replace(state, url=d.get("url", state.url), events=tuple(d.get("events", state.events)),
                            status=d.get("status", state.status),
                            description=d.get("description", state.description), updated_at=e.recorded_at)
        elif e.type == "WebhookDeleted":
            state = replace(state, deleted=True, status="DISABLED", updated_at=e.recorded_at)
        elif e.type in ("WebhookDelivered", "WebhookReplayed"):
            state = replace(state, cursor=d["through"])
        elif e.type == "WebhookClaimed":
            state = replace(state, claim=d["claim"], claim_until=d["until"], claim_holder=d.get("holder", ""))
        state = replace(state, stream_version=e.version)
    return state


def decide(command: Any, current: WebhookState | None, head: int) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(command, CreateWebhook):
        if current is not None:
            raise ConflictError(f"webhook {command.webhook_id} exists")
        return [("WebhookCreated", {
            "webhook": command.webhook_id, "webhook_name": validate_name(command.name), "url": check_url(command.url),
            "events": validate_events(command.events), "description": _text(command.description),
            "secret_sha256": hashlib.sha256(secret_for(command.webhook_id).encode()).hexdigest(),
            "since": head,  # a new subscription hears what happens from now on (replay asks for older events)
        })]
    if current is None or current.deleted:
        raise NotFoundError(f"no webhook {getattr(command, 'webhook_id', '')!r}")
    wid = current.webhook_id
    if isinstance(command, UpdateWebhook):
        change: dict[str, Any] = {}
        if command.url is not None and command.url != current.url:
            change["url"] = check_url(command.url)
        if command.events is not None and tuple(validate_events(command.events)) != current.events:
            change["events"] = validate_events(command.events)
        if command.status is not None and command.status != current.status:
            if command.status not in ("ACTIVE", "DISABLED"):
                raise ValidationError("status is ACTIVE or DISABLED")
            change["status"] = command.status
        if command.description is not None and command.description != current.description:
            change["description"] = _text(command.description)
        return [("WebhookUpdated", {"webhook": wid, **change})] if change else []
    if isinstance(command, DeleteWebhook):
        return [("WebhookDeleted", {"webhook": wid})]
    if isinstance(command, RecordDelivered):
        if command.through <= current.cursor:
            return []  # another worker recorded it first
        return [("WebhookDelivered", {"webhook": wid, "through": command.through, "delivered": command.delivered})]
    if isinstance(command, ClaimDelivery):
        return _decide_claim(command, current)
    if isinstance(command, Replay):
        if not 0 <= command.since <= head:
            raise ValidationError(f"replay from a position between 0 and the head ({head})")
        return [("WebhookReplayed", {"webhook": wid, "through": command.since})]
    raise ValidationError(f"unknown webhook command {type(command).__name__}")


def _decide_claim(command: ClaimDelivery, current: WebhookState) -> list[tuple[str, dict[str, Any]]]:
    ours = current.claim == command.claim
    live = bool(current.claim) and current.claim_until > command.now
    if not command.until:  # a release: only of our own claim, which may have been taken over since
        return [("WebhookClaimed", {"webhook": current.webhook_id, "claim": command.claim, "until": 0,
                                    "holder": command.holder})] if ours and current.claim_until else []
    if command.renew and not ours:
        raise ConflictError(f"webhook {current.name}: this delivery's claim expired and was taken over")
    if live and not ours and current.claim != command.replaces:
        raise ConflictError(f"webhook {current.name} is being delivered by {current.claim_holder or 'another'} "
                            "now")
    return [("WebhookClaimed", {"webhook": current.webhook_id, "claim": command.claim, "until": command.until,
                                "holder": command.holder})]


def _text(value: Any, limit: int = 1000) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError(f"a description is text of at most {limit} characters")
    return value


def new_id() -> str:
    return uuid.uuid4().hex


def execute_webhook(recorder: Recorder, command: Any, meta: Mapping[str, Any], *,
                    idempotency_key: str | None = None) -> tuple[list[StoredEvent], WebhookState | None, bool]:
    """Decide ``command`` against its subscription's stream and append, atomically: (events, state, replayed)."""
    from .canonical import canonical_bytes
    from .commands import fingerprint  # noqa: F401 - the same notion, for dataclass commands
    from .schemas import check_decided

    wid = command.webhook_id
    if not re.fullmatch(r"[0-9a-f]{32}", wid or ""):
        raise ValidationError(f"invalid webhook id {str(wid)[:40]!r}")
    stream = stream_of(wid)
    request = {"command": type(command).__name__, **{k: v for k, v in vars(command).items()}}
    fp = hashlib.sha256(canonical_bytes(request)).hexdigest() if idempotency_key is not None else None
    event_meta = dict(meta)
    if idempotency_key is not None:
        event_meta["idempotency_key"] = idempotency_key
    for _ in range(MAX_ATTEMPTS):
        try:
            with recorder.write() as tx:
                if idempotency_key is not None:
                    first = tx.idempotent_result(idempotency_key, fp)
                    if first is not None:
                        return first, fold(recorder.read(stream=stream)), True
                history = list(recorder.read(stream=stream))
                current = fold(history)
                decided = decide(command, current, tx.head())
                if not decided:
                    return [], current, False
                for event_type, data in decided:
                    check_decided(event_type, data)
                new = [NewEvent(stream, t, d, event_meta) for t, d in decided]
                stored = tx.append(new, expected={stream: history[-1].version if history else 0},
                                   idempotency_key=idempotency_key, fingerprint=fp)
                return stored, fold(history + stored), False
        except ConcurrencyError:
            continue
    raise StoreError(f"gave up after {MAX_ATTEMPTS} conflicting attempts")


class _Subscriptions:
    """The subscriptions of one recorder's log, folded as far as ``position`` (the last subscription event
    folded): the log is append-only, so each listing reads only the subscription events since the previous
    one, found through the streams' index (``Recorder.read_streams``), never the rest of the log. Before,
    every listing read the whole log (measured 1.9 s a listing at 200,000 events, linear in the log;
    scripts/bench_webhooks.py), then the first listing of each process did (each `mledger webhook` command)."""

    def __init__(self) -> None:
        self.position = 0
        self.last_hash = ""  # of the event at ``position``: tells that the log is still the one folded
        self.states: dict[str, WebhookState | None] = {}
        self.lock = threading.Lock()


_INDEXES: weakref.WeakKeyDictionary[Recorder, _Subscriptions] = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()
_PAGE = 10_000


def subscriptions(recorder: Recorder) -> list[WebhookState]:
    """Every live subscription, in name order: the process's index of them, brought up to the log's head."""
    with _INDEXES_LOCK:
        index = _INDEXES.setdefault(recorder, _Subscriptions())
    with index.lock:
        if index.position:
            last = recorder.event_at(index.position)
            if last is None or last.hash != index.last_hash:  # the log was replaced (a restored backup)
                index.position, index.last_hash, index.states = 0, "", {}
        while True:
            page = list(recorder.read_streams(STREAM_PREFIX, since=index.position, limit=_PAGE))
            for e in page:
                index.states[e.stream] = fold([e], index.states.get(e.stream))
            if page:
                index.position, index.last_hash = page[-1].position, page[-1].hash
            if len(page) < _PAGE:
                break
        states = list(index.states.values())
    return sorted((s for s in states if s is not None and not s.deleted), key=lambda s: (s.name, s.webhook_id))
