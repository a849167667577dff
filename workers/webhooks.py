"""Delivering a webhook subscription's events, in log order, from its cursor (``eventstore.webhooks``).

``deliver`` reads the log after the subscription's cursor, POSTs each event the subscription asked for to its
URL (signed as MLflow signs: ``X-MLflow-Signature``, ``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp``), and
records how far it got (``WebhookDelivered``) after each page and before giving up on a failure. A receiver
that is down makes the delivery fail; the dramatiq job (``deliver_webhook``) is retried with back-off, and
each retry starts again at the cursor — so when the receiver comes back it gets every missed event, in
order. A worker killed mid-delivery loses nothing: the next one starts at the last recorded cursor; the
events after it may reach the receiver a second time, under the same delivery id (``<webhook>-<position>``),
which is what a receiver deduplicates on.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from eventstore.errors import ArtifactError, ConflictError, NotFoundError
from eventstore.events import StoredEvent
from eventstore.recorder import Recorder
from eventstore.webhooks import (
    MLFLOW_EVENTS,
    ClaimDelivery,
    RecordDelivered,
    WebhookState,
    check_url,
    execute_webhook,
    fold,
    secret_for,
    sign,
    stream_of,
)

PAGE = 500
RECORD_AFTER_SKIPPED = 1_000  # a cursor that only skips events is recorded this seldom
# A cursor is also recorded after a second of sending (one WebhookDelivered event a second at most): a worker
# killed mid-page re-sends at most about a second's worth of events, not up to a page of 500.
RECORD_EVERY = 1.0
# How long a delivery holds its subscription's lease without renewing it: longer than one send can block
# (TIMEOUT), renewed before every send. A worker killed mid-delivery holds it this long at most.
TIMEOUT = 10.0
LEASE = TIMEOUT + 10.0


class DeliveryError(ArtifactError):
    """The receiver did not take an event (no answer, or not 2xx): the job is retried from the cursor."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would send the event (and its signature) to a URL the operator never allowed.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def mlflow_name(state: WebhookState, event: StoredEvent) -> str:
    for name, types in MLFLOW_EVENTS.items():
        if name in state.events and event.type in types:
            return name
    return event.type


def payload(state: WebhookState, event: StoredEvent) -> dict[str, Any]:
    """MLflow's envelope (entity, action, timestamp, data), with the log's own event beside it."""
    name = mlflow_name(state, event)
    entity, _, action = name.partition(".") if "." in name else (name, "", "")
    d = event.data
    data: dict[str, Any] = {"name": d.get("name")}
    if d.get("version") is not None:
        data["version"] = str(d["version"])
    for key in ("tags", "alias", "keys", "description"):
        if key in d:
            data[key] = d[key]
    if isinstance(d.get("artifact"), dict) and "source" in d["artifact"]:
        data["source"] = d["artifact"]["source"]
    return {"entity": entity, "action": action, "timestamp": event.recorded_at, "data": data,
            "position": event.position, "event": event.to_json()}


def post(state: WebhookState, event: StoredEvent, secret: str, timeout: float = TIMEOUT) -> None:
    body = json.dumps(payload(state, event), separators=(",", ":"), ensure_ascii=False)
    delivery_id = f"{state.webhook_id}-{event.position}"
    stamp = str(int(time.time()))
    request = urllib.request.Request(state.url, data=body.encode("utf-8"), method="POST", headers={
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(secret, delivery_id, stamp, body),
        "X-Mledger-Position": str(event.position),
    })
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"webhook {state.name}: {state.url} did not answer ({exc})") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook {state.name}: {state.url} answered {status} to event #{event.position}")


@contextmanager
def lease(client: Any, namespace: str, webhook_id: str) -> Iterator[Callable[[], None] | None]:
    """One delivery of a subscription at a time across every worker thread and process: the sweep sends a
    job for a subscription behind the log every interval, also while an earlier job is still sending, and two
    at once would send events twice and out of order (measured: with 2 threads and a 1 s sweep, events
    14-17 of 50 arrived twice, interleaved). A Redis key with an expiry, set only if absent; yields a
    ``keep`` that renews it (``DeliveryError`` if it was lost: someone else may be sending now), or None when
    another delivery holds it (that one sends; the sweep sends this job again later)."""
    key = f"{namespace}:webhook-lease:{webhook_id}"
    token = uuid.uuid4().hex
    ms = int(LEASE * 1000)
    if not client.set(key, token, nx=True, px=ms):
        yield None
        return
    # Compare-and-set in Redis itself, so a lease that expired and was taken by another worker is never
    # renewed or released by this one.
    renew = client.register_script(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0")
    release = client.register_script(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0")

    def keep() -> None:
        if not renew(keys=[key], args=[token, ms]):
            raise DeliveryError(f"webhook {webhook_id}: its delivery lease expired; another worker delivers it")

    try:
        yield keep
    finally:
        release(keys=[key], args=[token])


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _process_gone(holder: str) -> bool:
    """Is ``holder`` (``host:pid``) a process of this host that no longer exists? Only then may its claim be
    taken over before it expires (a pid reused since reads as alive: the claim then simply expires)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class Claim:
    """This delivery's claim on its subscription, in the log (``WebhookClaimed`` on the subscription's stream,
    appended under the stream's expected version): every process that delivers — `mledger webhook deliver`
    without a broker, beside Redis workers, or a worker — holds it before sending, so two deliveries never
    send the same events at once (measured before: two `webhook deliver` run together sent each of 40 events
    twice, tests/test_webhooks.py). Taken only once there is an event to send, so a delivery with nothing to
    send appends nothing; renewed before a send when less than half of ``LEASE`` is left; released at the end.
    A holder killed mid-delivery blocks the others until its claim expires (``LEASE``), or not at all when
    they run on its host and see it is gone."""

    def __init__(self, recorder: Recorder, webhook_id: str, meta: Mapping[str, Any]) -> None:
        self.recorder, self.webhook_id, self.meta = recorder, webhook_id, meta
        self.token = uuid.uuid4().hex
        self.holder = f"{socket.gethostname()}:{os.getpid()}"[:300]
        self.until = 0

    @property
    def held(self) -> bool:
        return self.until > 0

    def _claim(self, until: int, *, renew: bool = False, replaces: str = "") -> WebhookState | None:
        command = ClaimDelivery(self.webhook_id, self.token, until, _ms(time.time()), self.holder, renew, replaces)
        return execute_webhook(self.recorder, command, self.meta)[1]

    def take(self, state: WebhookState) -> WebhookState | None:
        """The subscription as it stands once claimed (another delivery may have moved its cursor), or None
        when another delivery holds it now."""
        replaces = state.claim if state.claim and _process_gone(state.claim_holder) else ""
        until = _ms(time.time() + LEASE)
        try:
            claimed = self._claim(until, replaces=replaces)
        except (ConflictError, NotFoundError):  # held by another delivery; or the subscription was deleted
            return None
        self.until = until
        return claimed

    def keep(self) -> None:
        if _ms(time.time()) < self.until - _ms(LEASE / 2):
            return
        until = _ms(time.time() + LEASE)
        try:
            self._claim(until, renew=True)
        except ConflictError:
            self.until = 0
            raise DeliveryError(f"webhook {self.webhook_id}: its delivery claim expired; another delivery sends "
                                "it") from None
        self.until = until

    def release(self) -> None:
        if self.until:
            self.until = 0
            self._claim(0)


def deliver(recorder: Recorder, webhook_id: str, meta: Mapping[str, Any], *,
            send: Callable[[WebhookState, StoredEvent, str], None] = post, limit: int | None = None,
            keep: Callable[[], None] | None = None) -> int:
    """Deliver what the subscription has not had yet; returns how many events were delivered (0 while
    another delivery holds its ``Claim``). Raises ``DeliveryError`` (after recording the progress made) when
    the receiver does not take one. ``keep`` (a ``lease``'s) is called before every send."""
    state = fold(recorder.read(stream=stream_of(webhook_id)))
    if state is None or state.deleted or state.status != "ACTIVE":
        return 0
    check_url(state.url)  # the allow-list may have shrunk since the subscription was made
    secret = secret_for(webhook_id)
    claim = Claim(recorder, webhook_id, meta)
    try:
        return _deliver(recorder, state, secret, claim, meta, send=send, limit=limit, keep=keep)
    finally:
        claim.release()


def _deliver(recorder: Recorder, state: WebhookState, secret: str, claim: Claim, meta: Mapping[str, Any], *,
             send: Callable[[WebhookState, StoredEvent, str], None], limit: int | None,
             keep: Callable[[], None] | None) -> int:
    webhook_id = state.webhook_id
    cursor = recorded = state.cursor
    delivered = pending = skipped = 0
    last_record = time.monotonic()

    def record() -> None:
        nonlocal recorded, pending, skipped, last_record
        if cursor > recorded and (pending or skipped >= RECORD_AFTER_SKIPPED):
            execute_webhook(recorder, RecordDelivered(webhook_id, cursor, pending), meta)
            recorded, pending, skipped = cursor, 0, 0
            last_record = time.monotonic()

    try:
        while limit is None or delivered < limit:
            page = list(recorder.read(since=cursor, limit=PAGE))
            if not page:
                break
            moved = False
            for event in page:
                if state.wants(event):
                    if not claim.held:
                        claimed = claim.take(state)
                        if claimed is None or claimed.deleted or claimed.status != "ACTIVE":
                            return delivered  # another delivery sends it now (or it was just switched off)
                        moved = claimed.cursor != recorded  # another delivery got further meanwhile
                        state = claimed
                        if moved:
                            cursor = recorded = state.cursor
                            pending = skipped = 0
                            break
                    if keep is not None:
                        keep()
                    claim.keep()
                    send(state, event, secret)
                    delivered += 1
                    pending += 1
                else:
                    skipped += 1
                cursor = event.position
                if pending and time.monotonic() - last_record >= RECORD_EVERY:
                    record()
                if limit is not None and delivered >= limit:
                    break
            if not moved:
                record()
    finally:
        record()  # what went through before a failure is not sent again
    return delivered


def behind(recorder: Recorder, states: list[WebhookState]) -> list[str]:
    """Active subscriptions whose cursor is behind the head (what the worker's sweep sends jobs for)."""
    head = recorder.head()
    return [s.webhook_id for s in states if s.status == "ACTIVE" and s.cursor < head]
